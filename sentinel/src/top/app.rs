//! `top`'s UI state and key handling, without any terminal I/O: the event
//! loop (`tui.rs`) feeds it keys and frames and carries out the `Action`s it
//! returns; `ui.rs` only reads it. Everything here is testable with
//! hand-built frames and key events.
//!
//! The row lists a view shows (filtered, sorted, tree-ordered) are derived
//! once per frame or per key that changes them, never per draw, so a host
//! with thousands of processes costs one sort a second.
use std::{cell::Cell, cmp::Ordering, collections::HashMap};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{
    frame::{ContainerRow, Flag, Frame, ProcRow, Subject},
    replay,
};
use crate::event::{Event, Severity};

/// What the event loop must do after a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing beyond redrawing.
    None,
    Quit,
    /// Tell the feed which subject's detail the frames should carry.
    Want(Option<Subject>),
    /// The user confirmed a signal; the loop checks the pid's identity and
    /// sends it.
    Signal(SignalRequest),
    /// Move through recorded time (a replay only).
    Travel(Travel),
}

/// A move through a recording (`sentinel top --at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Travel {
    /// By this many frames; negative goes back.
    Frames(i32),
    /// By this many seconds, to the frame at or before the time reached
    /// (at least one frame, so a gap in the recording is crossed).
    Seconds(i32),
    First,
    /// The newest frame, including those written since the replay began.
    Last,
}

/// The time-travel keys: `←`/`→` (or `[`/`]`) a frame, `⇧←`/`⇧→` (or
/// `{`/`}`) a minute, `(`/`)` an hour, `g`/`G` the first and last frame.
/// Home/End and PgUp/PgDn keep moving the selection, as in the live view.
fn travel_key(key: KeyEvent) -> Option<Travel> {
    let shift = key.modifiers.contains(KeyModifiers::SHIFT);
    Some(match key.code {
        KeyCode::Left if shift => Travel::Seconds(-60),
        KeyCode::Right if shift => Travel::Seconds(60),
        KeyCode::Left | KeyCode::Char('[') => Travel::Frames(-1),
        KeyCode::Right | KeyCode::Char(']') => Travel::Frames(1),
        KeyCode::Char('{') => Travel::Seconds(-60),
        KeyCode::Char('}') => Travel::Seconds(60),
        KeyCode::Char('(') => Travel::Seconds(-3600),
        KeyCode::Char(')') => Travel::Seconds(3600),
        KeyCode::Char('g') => Travel::First,
        KeyCode::Char('G') => Travel::Last,
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct SignalRequest {
    pub pid: u32,
    /// The start time the row had: a different one now means the pid was
    /// reused and the signal must not go out.
    pub start: u64,
    pub sig: Sig,
    pub comm: String,
}

/// The signals the confirmation offers, in the order it cycles through
/// them; TERM first because it is the polite default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Term,
    Kill,
    Int,
    Hup,
    Stop,
    Cont,
}

impl Sig {
    pub const ALL: [Sig; 6] = [
        Sig::Term,
        Sig::Kill,
        Sig::Int,
        Sig::Hup,
        Sig::Stop,
        Sig::Cont,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Sig::Term => "SIGTERM",
            Sig::Kill => "SIGKILL",
            Sig::Int => "SIGINT",
            Sig::Hup => "SIGHUP",
            Sig::Stop => "SIGSTOP",
            Sig::Cont => "SIGCONT",
        }
    }

    pub fn number(self) -> i32 {
        match self {
            Sig::Term => libc::SIGTERM,
            Sig::Kill => libc::SIGKILL,
            Sig::Int => libc::SIGINT,
            Sig::Hup => libc::SIGHUP,
            Sig::Stop => libc::SIGSTOP,
            Sig::Cont => libc::SIGCONT,
        }
    }

    fn step(self, by: isize) -> Sig {
        let n = Sig::ALL.len() as isize;
        let at = Sig::ALL.iter().position(|s| *s == self).unwrap_or(0) as isize;
        Sig::ALL[(at + by).rem_euclid(n) as usize]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Processes,
    Containers,
    Events,
    Detail,
}

/// The process table's columns, in screen order. The same list drives the
/// header, the cells (`ui.rs`) and sorting, so a column is defined once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcCol {
    Pid,
    User,
    Command,
    Container,
    Rss,
    Grow,
    Cpu,
    Faults,
    Blocked,
    Wait,
    Read,
    Write,
    Flags,
}

impl ProcCol {
    pub const ALL: [ProcCol; 13] = [
        ProcCol::Pid,
        ProcCol::User,
        ProcCol::Command,
        ProcCol::Container,
        ProcCol::Rss,
        ProcCol::Grow,
        ProcCol::Cpu,
        ProcCol::Faults,
        ProcCol::Blocked,
        ProcCol::Wait,
        ProcCol::Read,
        ProcCol::Write,
        ProcCol::Flags,
    ];

    pub fn title(self) -> &'static str {
        match self {
            ProcCol::Pid => "PID",
            ProcCol::User => "USER",
            ProcCol::Command => "COMMAND",
            ProcCol::Container => "CONTAINER",
            ProcCol::Rss => "RSS",
            ProcCol::Grow => "GROW/m",
            ProcCol::Cpu => "CPU%",
            ProcCol::Faults => "FLT/s",
            ProcCol::Blocked => "BLK",
            ProcCol::Wait => "WAIT",
            ProcCol::Read => "READ/s",
            ProcCol::Write => "WRITE/s",
            ProcCol::Flags => "FLAGS",
        }
    }

    /// Names sort A to Z; amounts biggest first, as people look for the top.
    fn default_desc(self) -> bool {
        !matches!(
            self,
            ProcCol::Pid | ProcCol::User | ProcCol::Command | ProcCol::Container
        )
    }

    fn cmp(self, a: &ProcRow, b: &ProcRow, desc: bool) -> Ordering {
        let dir = |o: Ordering| if desc { o.reverse() } else { o };
        match self {
            ProcCol::Pid => dir(a.pid.cmp(&b.pid)),
            ProcCol::User => dir(a.user.cmp(&b.user)),
            ProcCol::Command => dir(a.comm.cmp(&b.comm)),
            ProcCol::Container => known_first(a.container.as_ref(), b.container.as_ref(), desc),
            ProcCol::Rss => dir(a.rss.cmp(&b.rss)),
            ProcCol::Grow => known_first(a.rss_growth_per_min, b.rss_growth_per_min, desc),
            ProcCol::Cpu => known_first(a.cpu_pct, b.cpu_pct, desc),
            ProcCol::Faults => known_first(a.faults_per_s, b.faults_per_s, desc),
            ProcCol::Blocked => dir(a.blocked.cmp(&b.blocked)),
            ProcCol::Wait => known_first(a.longest_wait_s, b.longest_wait_s, desc),
            ProcCol::Read => known_first(a.read_per_s, b.read_per_s, desc),
            ProcCol::Write => known_first(a.write_per_s, b.write_per_s, desc),
            ProcCol::Flags => dir(flag_rank(&a.flags).cmp(&flag_rank(&b.flags))),
        }
    }
}

/// The container table's columns, in screen order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContCol {
    Name,
    Procs,
    Rss,
    Anon,
    Grow,
    Cpu,
    Faults,
    Blocked,
    Wait,
    Read,
    Write,
    Flags,
}

impl ContCol {
    pub const ALL: [ContCol; 12] = [
        ContCol::Name,
        ContCol::Procs,
        ContCol::Rss,
        ContCol::Anon,
        ContCol::Grow,
        ContCol::Cpu,
        ContCol::Faults,
        ContCol::Blocked,
        ContCol::Wait,
        ContCol::Read,
        ContCol::Write,
        ContCol::Flags,
    ];

    pub fn title(self) -> &'static str {
        match self {
            ContCol::Name => "NAME",
            ContCol::Procs => "PROCS",
            ContCol::Rss => "RSS",
            ContCol::Anon => "ANON",
            ContCol::Grow => "GROW/m",
            ContCol::Cpu => "CPU%",
            ContCol::Faults => "FLT/s",
            ContCol::Blocked => "BLK",
            ContCol::Wait => "WAIT",
            ContCol::Read => "READ/s",
            ContCol::Write => "WRITE/s",
            ContCol::Flags => "FLAGS",
        }
    }

    fn default_desc(self) -> bool {
        self != ContCol::Name
    }

    fn cmp(self, a: &ContainerRow, b: &ContainerRow, desc: bool) -> Ordering {
        let dir = |o: Ordering| if desc { o.reverse() } else { o };
        match self {
            ContCol::Name => dir(a.name.cmp(&b.name)),
            ContCol::Procs => dir(a.procs.cmp(&b.procs)),
            ContCol::Rss => dir(a.rss.cmp(&b.rss)),
            ContCol::Anon => dir(a.anon.cmp(&b.anon)),
            ContCol::Grow => known_first(a.rss_growth_per_min, b.rss_growth_per_min, desc),
            ContCol::Cpu => known_first(a.cpu_pct, b.cpu_pct, desc),
            ContCol::Faults => known_first(a.faults_per_s, b.faults_per_s, desc),
            ContCol::Blocked => dir(a.blocked.cmp(&b.blocked)),
            ContCol::Wait => known_first(a.longest_wait_s, b.longest_wait_s, desc),
            ContCol::Read => known_first(a.read_per_s, b.read_per_s, desc),
            ContCol::Write => known_first(a.write_per_s, b.write_per_s, desc),
            ContCol::Flags => dir(flag_rank(&a.flags).cmp(&flag_rank(&b.flags))),
        }
    }
}

/// Unknown values (no rate yet, not in a container) go last whichever the
/// direction: a sort is for finding the extremes among what is known.
fn known_first<T: PartialOrd>(a: Option<T>, b: Option<T>, desc: bool) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => {
            let o = a.partial_cmp(&b).unwrap_or(Ordering::Equal);
            if desc { o.reverse() } else { o }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn flag_rank(flags: &[Flag]) -> (Option<Severity>, usize) {
    (worst(flags), flags.len())
}

/// The worst severity among a row's flags: what its colour says.
pub fn worst(flags: &[Flag]) -> Option<Severity> {
    flags.iter().map(|f| f.severity).max()
}

/// A sort column (index into the view's `ALL`) and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub col: usize,
    pub desc: bool,
}

/// A row of a derived list: the index into the frame's vector, and its
/// depth in the tree (0 when flat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRef {
    pub idx: u32,
    pub depth: u16,
}

/// The cursor of one list, and the first row on screen. The offset lives in
/// a `Cell` because only drawing knows how many rows fit, and `draw` gets
/// the app by shared reference.
#[derive(Debug, Default)]
pub struct ListPos {
    pub cursor: usize,
    pub offset: Cell<usize>,
}

/// What the selection is, so it stays on the same process, cgroup or event
/// when a new frame reorders the rows.
#[derive(Debug, Clone, Default, PartialEq)]
enum Key {
    #[default]
    None,
    Proc(u32, u64),
    Cgroup(u64),
    Event(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Search,
    Filter,
}

#[derive(Debug, Clone)]
pub enum Popup {
    Help,
    Kill(SignalRequest),
    Event(Box<Event>),
}

/// The cgroup the Processes view is narrowed to.
#[derive(Debug, Clone, PartialEq)]
pub struct Zoom {
    pub cgroup_id: u64,
    pub path: String,
    pub name: String,
}

/// The subject the Detail view shows, and where Esc goes back to.
#[derive(Debug, Clone, PartialEq)]
pub struct Focus {
    pub subject: Subject,
    pub back: View,
    /// Shown until the feed delivers the subject's Detail.
    pub title: String,
}

/// Buffers the derivations reuse from frame to frame, so a refresh does not
/// allocate in proportion to the process count.
#[derive(Debug, Default)]
struct Scratch {
    order: Vec<u32>,
    keep: Vec<bool>,
    parent: Vec<u32>,
    first_child: Vec<u32>,
    next_sibling: Vec<u32>,
    seen: Vec<bool>,
    stack: Vec<(u32, u16)>,
    by_pid: HashMap<u32, u32>,
}

const NONE: u32 = u32::MAX;

pub struct App {
    /// The frame on screen. While paused, newer ones wait in `pending`.
    pub(super) frame: Frame,
    pub(super) have_frame: bool,
    pending: Option<Frame>,
    pub(super) view: View,
    pub(super) focus: Option<Focus>,
    pub(super) zoom: Option<Zoom>,
    pub(super) proc_sort: Sort,
    pub(super) cont_sort: Sort,
    pub(super) tree: bool,
    pub(super) show_kernel: bool,
    pub(super) paused: bool,
    /// The frames are a recording (`sentinel top --at`): the time-travel
    /// keys work, pause and signals do not.
    pub(super) replay: bool,
    pub(super) filter: String,
    pub(super) search: String,
    pub(super) input: Option<Input>,
    /// Where the cursor was when `/` was pressed: typing searches from
    /// there, Esc returns there.
    search_origin: usize,
    pub(super) popup: Option<Popup>,
    /// The derived lists the views show.
    pub(super) procs: Vec<RowRef>,
    pub(super) conts: Vec<RowRef>,
    /// Indices into `frame.events`, newest first.
    pub(super) events: Vec<u32>,
    pub(super) procs_pos: ListPos,
    pub(super) conts_pos: ListPos,
    pub(super) events_pos: ListPos,
    procs_key: Key,
    conts_key: Key,
    events_key: Key,
    /// First blocked thread shown in Detail.
    pub(super) detail_scroll: usize,
    /// Rows the last draw had room for (PgUp/PgDn move by this).
    pub(super) page: Cell<usize>,
    /// The outcome of the last action (a signal sent, a search that found
    /// nothing); cleared by the next key.
    pub(super) status: Option<String>,
    /// Why the feed stopped; cleared by the next frame.
    pub(super) feed_error: Option<String>,
    /// Seconds since the last frame, when that is suspiciously long.
    pub(super) stale_s: Option<u64>,
    scratch: Scratch,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    pub fn new() -> App {
        App {
            frame: Frame::default(),
            have_frame: false,
            pending: None,
            view: View::Processes,
            focus: None,
            zoom: None,
            proc_sort: Sort {
                col: proc_col_index(ProcCol::Rss),
                desc: true,
            },
            cont_sort: Sort {
                col: cont_col_index(ContCol::Rss),
                desc: true,
            },
            tree: false,
            show_kernel: false,
            paused: false,
            replay: false,
            filter: String::new(),
            search: String::new(),
            input: None,
            search_origin: 0,
            popup: None,
            procs: Vec::new(),
            conts: Vec::new(),
            events: Vec::new(),
            procs_pos: ListPos::default(),
            conts_pos: ListPos::default(),
            events_pos: ListPos::default(),
            procs_key: Key::None,
            conts_key: Key::None,
            events_key: Key::None,
            detail_scroll: 0,
            page: Cell::new(20),
            status: None,
            feed_error: None,
            stale_s: None,
            scratch: Scratch::default(),
        }
    }

    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    pub fn view(&self) -> View {
        self.view
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    pub fn replay(&self) -> bool {
        self.replay
    }

    /// A new frame from the feed. Returns whether the screen changed (a
    /// paused display keeps the frame for later).
    pub fn on_frame(&mut self, frame: Frame) -> bool {
        // A frame means the feed works again, paused or not.
        let recovered = self.feed_error.take().is_some() | self.stale_s.take().is_some();
        self.replay = replay::is_replay(&frame.mode);
        if self.paused {
            self.pending = Some(frame);
            return recovered;
        }
        self.frame = frame;
        self.have_frame = true;
        self.rederive();
        true
    }

    /// The feed failed: say so and keep showing the last frame.
    pub fn on_feed_error(&mut self, msg: String) {
        self.feed_error = Some(msg);
    }

    /// How long no frame came (None: all is well). Returns whether that
    /// changes what the screen says.
    pub fn set_stale(&mut self, secs: Option<u64>) -> bool {
        let changed = self.stale_s != secs;
        self.stale_s = secs;
        changed
    }

    /// Reports the outcome of an action (the loop's signal result).
    pub fn set_status(&mut self, msg: impl Into<String>) {
        self.status = Some(msg.into());
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        // Raw mode turns Ctrl-C into a key; it quits from anywhere.
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        self.status = None;
        if let Some(popup) = self.popup.take() {
            return self.popup_key(popup, key);
        }
        if let Some(input) = self.input {
            self.input_key(input, key);
            return Action::None;
        }
        // Ctrl and Alt chords are not commands; a stray one must not kill.
        if key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
        {
            return Action::None;
        }
        self.command_key(key)
    }

    fn command_key(&mut self, key: KeyEvent) -> Action {
        if self.replay
            && let Some(t) = travel_key(key)
        {
            return Action::Travel(t);
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::F(10) => return Action::Quit,
            KeyCode::F(1) | KeyCode::Char('h' | '?') => self.popup = Some(Popup::Help),
            KeyCode::Char('/') => {
                self.input = Some(Input::Search);
                self.search.clear();
                self.search_origin = self.pos().map_or(0, |p| p.cursor);
            }
            KeyCode::Char('\\') => self.input = Some(Input::Filter),
            KeyCode::Char('n') | KeyCode::F(3) => self.search_next(1),
            KeyCode::Char('<') => self.move_sort(-1),
            KeyCode::Char('>') | KeyCode::F(6) => self.move_sort(1),
            KeyCode::Char('I') => self.invert_sort(),
            KeyCode::Char('M') => self.sort_by(ProcCol::Rss, ContCol::Rss),
            KeyCode::Char('P') => self.sort_by(ProcCol::Cpu, ContCol::Cpu),
            KeyCode::Char('t') => {
                self.tree = !self.tree;
                self.rederive();
            }
            KeyCode::Char('K') => {
                self.show_kernel = !self.show_kernel;
                self.rederive();
            }
            KeyCode::Char('Z') => self.toggle_pause(),
            KeyCode::F(9) | KeyCode::Char('k') => self.ask_kill(),
            KeyCode::Char('p') => return self.switch(View::Processes),
            KeyCode::Char('c') => {
                self.zoom = None;
                self.rederive();
                return self.switch(View::Containers);
            }
            KeyCode::Char('e') => return self.switch(View::Events),
            KeyCode::Char('z') => self.toggle_zoom(),
            KeyCode::Enter => return self.enter(),
            KeyCode::Esc => return self.escape(),
            KeyCode::Backspace if self.view == View::Detail => return self.leave_detail(),
            KeyCode::Up => self.move_by(-1),
            KeyCode::Down => self.move_by(1),
            KeyCode::PageUp => self.move_by(-(self.page.get().max(1) as isize)),
            KeyCode::PageDown => self.move_by(self.page.get().max(1) as isize),
            KeyCode::Home => self.move_by(isize::MIN / 2),
            KeyCode::End => self.move_by(isize::MAX / 2),
            _ => {}
        }
        Action::None
    }

    fn popup_key(&mut self, popup: Popup, key: KeyEvent) -> Action {
        match popup {
            // Any key closes help, as in htop: it is read, then dismissed.
            Popup::Help => Action::None,
            Popup::Event(ev) => {
                if !matches!(key.code, KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q')) {
                    self.popup = Some(Popup::Event(ev));
                }
                Action::None
            }
            Popup::Kill(mut req) => match key.code {
                KeyCode::Char('y' | 'Y') | KeyCode::Enter => Action::Signal(req),
                KeyCode::Char('n' | 'N') | KeyCode::Esc | KeyCode::Char('q') => Action::None,
                code => {
                    match code {
                        KeyCode::Left | KeyCode::Up | KeyCode::BackTab => {
                            req.sig = req.sig.step(-1)
                        }
                        KeyCode::Right | KeyCode::Down | KeyCode::Tab => req.sig = req.sig.step(1),
                        KeyCode::Char(c @ '1'..='6') => {
                            req.sig = Sig::ALL[(c as u8 - b'1') as usize];
                        }
                        _ => {}
                    }
                    self.popup = Some(Popup::Kill(req));
                    Action::None
                }
            },
        }
    }

    fn input_key(&mut self, input: Input, key: KeyEvent) {
        match key.code {
            KeyCode::Enter => self.input = None,
            KeyCode::Esc => {
                self.input = None;
                match input {
                    Input::Search => {
                        self.search.clear();
                        let origin = self.search_origin;
                        self.set_cursor(origin);
                    }
                    Input::Filter => {
                        self.filter.clear();
                        self.rederive();
                    }
                }
            }
            KeyCode::F(3) if input == Input::Search => self.search_next(1),
            KeyCode::Up => self.move_by(-1),
            KeyCode::Down => self.move_by(1),
            KeyCode::Backspace => {
                self.text_mut(input).pop();
                self.text_changed(input);
            }
            KeyCode::Char(c)
                if !key
                    .modifiers
                    .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
            {
                self.text_mut(input).push(c);
                self.text_changed(input);
            }
            _ => {}
        }
    }

    fn text_mut(&mut self, input: Input) -> &mut String {
        match input {
            Input::Search => &mut self.search,
            Input::Filter => &mut self.filter,
        }
    }

    /// Incremental: the search jumps as the user types, starting from where
    /// the cursor was when the search began; the filter narrows the rows.
    fn text_changed(&mut self, input: Input) {
        match input {
            Input::Search => {
                let origin = self.search_origin;
                match self.find_from(origin, 1) {
                    Some(i) => self.set_cursor(i),
                    None => self.set_cursor(origin),
                }
            }
            Input::Filter => self.rederive(),
        }
    }

    fn search_next(&mut self, dir: isize) {
        if self.search.is_empty() {
            return;
        }
        let Some(start) = self.pos().map(|p| p.cursor as isize + dir) else {
            return;
        };
        let len = self.list_len();
        if len == 0 {
            return;
        }
        match self.find_from(start.rem_euclid(len as isize) as usize, dir) {
            Some(i) => self.set_cursor(i),
            None => self.status = Some(format!("no match for \"{}\"", self.search)),
        }
    }

    /// The first row at or after `start` (wrapping around) that matches the
    /// search text.
    fn find_from(&self, start: usize, dir: isize) -> Option<usize> {
        let len = self.list_len();
        if self.search.is_empty() || len == 0 {
            return None;
        }
        (0..len as isize)
            .map(|k| (start as isize + k * dir).rem_euclid(len as isize) as usize)
            .find(|&i| self.row_matches(i, &self.search))
    }

    fn row_matches(&self, i: usize, text: &str) -> bool {
        match self.view {
            View::Processes => self
                .procs
                .get(i)
                .is_some_and(|r| proc_matches(&self.frame.procs[r.idx as usize], text)),
            View::Containers => self
                .conts
                .get(i)
                .is_some_and(|r| cont_matches(&self.frame.containers[r.idx as usize], text)),
            View::Events => self
                .events
                .get(i)
                .is_some_and(|&e| event_matches(&self.frame.events[e as usize], text)),
            View::Detail => false,
        }
    }

    fn move_sort(&mut self, by: isize) {
        let (sort, n) = match self.view {
            View::Processes => (&mut self.proc_sort, ProcCol::ALL.len()),
            View::Containers => (&mut self.cont_sort, ContCol::ALL.len()),
            _ => return,
        };
        sort.col = (sort.col as isize + by).rem_euclid(n as isize) as usize;
        sort.desc = match self.view {
            View::Processes => ProcCol::ALL[sort.col].default_desc(),
            _ => ContCol::ALL[sort.col].default_desc(),
        };
        self.rederive();
    }

    fn invert_sort(&mut self) {
        match self.view {
            View::Processes => self.proc_sort.desc = !self.proc_sort.desc,
            View::Containers => self.cont_sort.desc = !self.cont_sort.desc,
            _ => return,
        }
        self.rederive();
    }

    /// M and P pick a column in whichever table is on screen, and in the
    /// process table when neither is (so that `p` then shows it sorted).
    fn sort_by(&mut self, p: ProcCol, c: ContCol) {
        if self.view == View::Containers {
            self.cont_sort = Sort {
                col: cont_col_index(c),
                desc: true,
            };
        } else {
            self.proc_sort = Sort {
                col: proc_col_index(p),
                desc: true,
            };
        }
        self.rederive();
    }

    fn toggle_pause(&mut self) {
        if self.replay {
            self.status = Some("a replay moves only when you move it: ← → { } g G".into());
            return;
        }
        self.paused = !self.paused;
        if !self.paused
            && let Some(f) = self.pending.take()
        {
            self.on_frame(f);
        }
    }

    fn ask_kill(&mut self) {
        if self.replay {
            // The pid may name another process by now; the start-time
            // check would catch that, but a recording is for reading.
            self.status = Some("no signals from a replay: these rows are history".into());
            return;
        }
        let row = match (&self.view, &self.focus) {
            (View::Detail, Some(f)) => match f.subject {
                Subject::Process { pid, start } => self
                    .frame
                    .procs
                    .iter()
                    .find(|r| r.pid == pid && r.start == start),
                Subject::Container { .. } => None,
            },
            (View::Processes, _) => self.selected_proc(),
            _ => None,
        };
        match row {
            Some(r) => {
                self.popup = Some(Popup::Kill(SignalRequest {
                    pid: r.pid,
                    start: r.start,
                    sig: Sig::Term,
                    comm: r.comm.clone(),
                }))
            }
            None => self.status = Some("select a process to send a signal to".into()),
        }
    }

    fn switch(&mut self, to: View) -> Action {
        let leaving_detail = self.view == View::Detail;
        self.view = to;
        if leaving_detail {
            self.focus = None;
            return Action::Want(None);
        }
        Action::None
    }

    fn toggle_zoom(&mut self) {
        if self.zoom.is_some() && self.view == View::Processes {
            self.unzoom();
            return;
        }
        if self.view != View::Containers {
            self.status = Some("z zooms into the selected container (c)".into());
            return;
        }
        let Some(c) = self.selected_container() else {
            return;
        };
        self.zoom = Some(Zoom {
            cgroup_id: c.cgroup_id,
            path: c.path.clone(),
            name: c.name.clone(),
        });
        self.view = View::Processes;
        self.procs_pos.cursor = 0;
        self.procs_key = Key::None;
        self.rederive();
    }

    fn unzoom(&mut self) {
        self.zoom = None;
        self.rederive();
    }

    fn enter(&mut self) -> Action {
        let target = match self.view {
            View::Processes => self.selected_proc().map(proc_focus),
            View::Containers => self.selected_container().map(cont_focus),
            View::Events => return self.enter_event(),
            View::Detail => None,
        };
        match target {
            Some(f) => self.open_detail(f),
            None => Action::None,
        }
    }

    /// An event's subject opens its Detail when the frame has it; anything
    /// else (a filesystem, the host, a process gone) shows the event itself.
    fn enter_event(&mut self) -> Action {
        let Some(ev) = self.selected_event() else {
            return Action::None;
        };
        let focus = match ev.subject.as_str() {
            "process" => ev
                .names
                .pid
                .and_then(|pid| self.frame.procs.iter().find(|r| r.pid == pid))
                .map(proc_focus),
            "container" => self
                .frame
                .containers
                .iter()
                .find(|c| {
                    ev.names.cgroup.as_deref() == Some(c.path.as_str())
                        || ev.names.container.as_deref() == Some(c.name.as_str())
                })
                .map(cont_focus),
            _ => None,
        };
        match focus {
            Some(f) => self.open_detail(f),
            None => {
                self.popup = Some(Popup::Event(Box::new(ev.clone())));
                Action::None
            }
        }
    }

    fn open_detail(&mut self, mut focus: Focus) -> Action {
        focus.back = self.view;
        let subject = focus.subject;
        self.focus = Some(focus);
        self.view = View::Detail;
        self.detail_scroll = 0;
        Action::Want(Some(subject))
    }

    fn leave_detail(&mut self) -> Action {
        let back = self.focus.take().map_or(View::Processes, |f| f.back);
        self.view = back;
        Action::Want(None)
    }

    /// Esc backs out of one thing at a time: detail, then zoom, then the
    /// filter.
    fn escape(&mut self) -> Action {
        if self.view == View::Detail {
            return self.leave_detail();
        }
        if self.zoom.is_some() && self.view == View::Processes {
            self.unzoom();
        } else if !self.filter.is_empty() {
            self.filter.clear();
            self.rederive();
        }
        Action::None
    }

    fn pos(&self) -> Option<&ListPos> {
        match self.view {
            View::Processes => Some(&self.procs_pos),
            View::Containers => Some(&self.conts_pos),
            View::Events => Some(&self.events_pos),
            View::Detail => None,
        }
    }

    fn list_len(&self) -> usize {
        self.len_of(self.view)
    }

    fn len_of(&self, view: View) -> usize {
        match view {
            View::Processes => self.procs.len(),
            View::Containers => self.conts.len(),
            View::Events => self.events.len(),
            View::Detail => 0,
        }
    }

    fn move_by(&mut self, delta: isize) {
        if self.view == View::Detail {
            self.detail_scroll = self.detail_scroll.saturating_add_signed(delta);
            return;
        }
        let Some(cur) = self.pos().map(|p| p.cursor) else {
            return;
        };
        self.set_cursor(cur.saturating_add_signed(delta));
    }

    fn set_cursor(&mut self, i: usize) {
        self.set_cursor_in(self.view, i);
    }

    /// Moves a list's cursor (clamped to the list) and remembers what it is
    /// on, so the next frame can find it again.
    fn set_cursor_in(&mut self, view: View, i: usize) {
        let i = i.min(self.len_of(view).saturating_sub(1));
        let key = self.key_at(view, i);
        let (pos, slot) = match view {
            View::Processes => (&mut self.procs_pos, &mut self.procs_key),
            View::Containers => (&mut self.conts_pos, &mut self.conts_key),
            View::Events => (&mut self.events_pos, &mut self.events_key),
            View::Detail => return,
        };
        pos.cursor = i;
        *slot = key;
    }

    fn key_at(&self, view: View, i: usize) -> Key {
        match view {
            View::Processes => self.procs.get(i).map_or(Key::None, |r| {
                let p = &self.frame.procs[r.idx as usize];
                Key::Proc(p.pid, p.start)
            }),
            View::Containers => self.conts.get(i).map_or(Key::None, |r| {
                Key::Cgroup(self.frame.containers[r.idx as usize].cgroup_id)
            }),
            View::Events => self.events.get(i).map_or(Key::None, |&e| {
                Key::Event(self.frame.events[e as usize].id.clone())
            }),
            View::Detail => Key::None,
        }
    }

    /// Where a remembered row is in the current list.
    fn find_key(&self, view: View, key: &Key) -> Option<usize> {
        match (view, key) {
            (View::Processes, &Key::Proc(pid, start)) => self.procs.iter().position(|r| {
                let p = &self.frame.procs[r.idx as usize];
                p.pid == pid && p.start == start
            }),
            (View::Containers, &Key::Cgroup(id)) => self
                .conts
                .iter()
                .position(|r| self.frame.containers[r.idx as usize].cgroup_id == id),
            (View::Events, Key::Event(id)) => self
                .events
                .iter()
                .position(|&e| self.frame.events[e as usize].id == *id),
            _ => None,
        }
    }

    pub fn selected_proc(&self) -> Option<&ProcRow> {
        let r = self.procs.get(self.procs_pos.cursor)?;
        self.frame.procs.get(r.idx as usize)
    }

    pub fn selected_container(&self) -> Option<&ContainerRow> {
        let r = self.conts.get(self.conts_pos.cursor)?;
        self.frame.containers.get(r.idx as usize)
    }

    pub fn selected_event(&self) -> Option<&Event> {
        let &e = self.events.get(self.events_pos.cursor)?;
        self.frame.events.get(e as usize)
    }

    /// The row of the process the Detail view shows, when it is still there.
    pub fn focus_proc(&self) -> Option<&ProcRow> {
        match self.focus.as_ref()?.subject {
            Subject::Process { pid, start } => self
                .frame
                .procs
                .iter()
                .find(|r| r.pid == pid && r.start == start),
            Subject::Container { .. } => None,
        }
    }

    pub fn focus_container(&self) -> Option<&ContainerRow> {
        match self.focus.as_ref()?.subject {
            Subject::Container { cgroup_id } => self
                .frame
                .containers
                .iter()
                .find(|c| c.cgroup_id == cgroup_id),
            Subject::Process { .. } => None,
        }
    }

    /// Recomputes the views' row lists from the frame and the settings, and
    /// puts each cursor back on the row it was on. When that row is gone
    /// the cursor keeps its place, as in htop, and adopts the row there.
    fn rederive(&mut self) {
        self.derive_procs();
        self.derive_conts();
        self.derive_events();
        for view in [View::Processes, View::Containers, View::Events] {
            let (key, cursor) = match view {
                View::Processes => (&self.procs_key, self.procs_pos.cursor),
                View::Containers => (&self.conts_key, self.conts_pos.cursor),
                _ => (&self.events_key, self.events_pos.cursor),
            };
            let at = self.find_key(view, key).unwrap_or(cursor);
            self.set_cursor_in(view, at);
        }
    }

    fn derive_procs(&mut self) {
        let procs = &self.frame.procs;
        let s = &mut self.scratch;
        s.order.clear();
        s.order.extend(
            (0..procs.len() as u32).filter(|&i| self.show_kernel || !procs[i as usize].kernel),
        );
        if let Some(z) = &self.zoom {
            s.order.retain(|&i| in_zoom(&procs[i as usize], z));
        }
        let Sort { col, desc } = self.proc_sort;
        let col = ProcCol::ALL[col];
        s.order.sort_unstable_by(|&a, &b| {
            let (a, b) = (&procs[a as usize], &procs[b as usize]);
            col.cmp(a, b, desc).then(a.pid.cmp(&b.pid))
        });
        self.procs.clear();
        if !self.tree {
            let filter = self.filter.as_str();
            self.procs.extend(
                s.order
                    .iter()
                    .filter(|&&i| proc_matches(&procs[i as usize], filter))
                    .map(|&i| RowRef { idx: i, depth: 0 }),
            );
            return;
        }
        // Tree: a process hangs under its parent when the parent is shown.
        s.by_pid.clear();
        s.by_pid.extend(
            s.order
                .iter()
                .enumerate()
                .map(|(at, &i)| (procs[i as usize].pid, at as u32)),
        );
        s.parent.clear();
        s.parent.extend(s.order.iter().map(|&i| {
            let p = &procs[i as usize];
            match s.by_pid.get(&p.ppid) {
                Some(&at) if p.ppid != p.pid => at,
                _ => NONE,
            }
        }));
        let filter = self.filter.as_str();
        keep_matches_and_ancestors(s, |i| proc_matches(&procs[i as usize], filter));
        forest(s, &mut self.procs);
    }

    fn derive_conts(&mut self) {
        let conts = &self.frame.containers;
        let s = &mut self.scratch;
        // Path order puts every ancestor right before its descendants, so
        // a stack of open ancestors finds each row's nearest shown parent.
        // Components are compared, not bytes: "/a-b" must not fall between
        // "/a" and "/a/c".
        s.order.clear();
        s.order.extend(0..conts.len() as u32);
        s.order.sort_unstable_by(|&a, &b| {
            conts[a as usize]
                .path
                .split('/')
                .cmp(conts[b as usize].path.split('/'))
        });
        let mut parent_of = vec![NONE; conts.len()];
        s.stack.clear();
        for &i in &s.order {
            let path = conts[i as usize].path.as_str();
            while let Some(&(top, _)) = s.stack.last() {
                if is_cgroup_ancestor(&conts[top as usize].path, path) {
                    break;
                }
                s.stack.pop();
            }
            parent_of[i as usize] = s.stack.last().map_or(NONE, |&(top, _)| top);
            s.stack.push((i, 0));
        }
        let Sort { col, desc } = self.cont_sort;
        let col = ContCol::ALL[col];
        s.order.sort_unstable_by(|&a, &b| {
            let (a, b) = (&conts[a as usize], &conts[b as usize]);
            col.cmp(a, b, desc).then(a.path.cmp(&b.path))
        });
        // `parent` is by position in `order`: map frame index to position.
        let mut at = vec![NONE; conts.len()];
        for (p, &i) in s.order.iter().enumerate() {
            at[i as usize] = p as u32;
        }
        s.parent.clear();
        s.parent.extend(s.order.iter().map(|&i| {
            let par = parent_of[i as usize];
            if par == NONE { NONE } else { at[par as usize] }
        }));
        let filter = self.filter.as_str();
        keep_matches_and_ancestors(s, |i| cont_matches(&conts[i as usize], filter));
        self.conts.clear();
        forest(s, &mut self.conts);
    }

    fn derive_events(&mut self) {
        let filter = self.filter.as_str();
        let events = &self.frame.events;
        self.events.clear();
        self.events.extend(
            (0..events.len() as u32)
                .rev()
                .filter(|&i| event_matches(&events[i as usize], filter)),
        );
    }
}

fn proc_col_index(c: ProcCol) -> usize {
    ProcCol::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

fn cont_col_index(c: ContCol) -> usize {
    ContCol::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

fn proc_focus(r: &ProcRow) -> Focus {
    Focus {
        subject: Subject::Process {
            pid: r.pid,
            start: r.start,
        },
        back: View::Processes,
        title: format!("Process {} ({})", r.pid, r.comm),
    }
}

fn cont_focus(c: &ContainerRow) -> Focus {
    Focus {
        subject: Subject::Container {
            cgroup_id: c.cgroup_id,
        },
        back: View::Containers,
        title: format!("Container {}", c.name),
    }
}

/// A process belongs to a zoomed cgroup when it is in it or below it.
fn in_zoom(p: &ProcRow, z: &Zoom) -> bool {
    match &p.cgroup {
        Some(path) => path == &z.path || is_cgroup_ancestor(&z.path, path),
        None => p.cgroup_id == z.cgroup_id,
    }
}

fn is_cgroup_ancestor(a: &str, p: &str) -> bool {
    let a = a.trim_end_matches('/');
    p.len() > a.len() && p.starts_with(a) && p.as_bytes()[a.len()] == b'/'
}

/// With a filter in a tree, the matching rows keep their ancestors so they
/// still hang where they belong. `s.keep[pos]` says which positions stay.
fn keep_matches_and_ancestors(s: &mut Scratch, matches: impl Fn(u32) -> bool) {
    s.keep.clear();
    s.keep.resize(s.order.len(), false);
    for pos in 0..s.order.len() {
        if !matches(s.order[pos]) {
            continue;
        }
        let mut at = pos as u32;
        // Stops at a kept ancestor: its own ancestors are kept already.
        // The step bound guards against a ppid cycle in a racy snapshot.
        for _ in 0..s.order.len() {
            if at == NONE || s.keep[at as usize] {
                break;
            }
            s.keep[at as usize] = true;
            at = s.parent[at as usize];
        }
    }
}

/// Depth-first order of the kept rows, siblings in sort order. `s.order` is
/// sorted, `s.parent` gives each position's parent position (or NONE).
fn forest(s: &mut Scratch, out: &mut Vec<RowRef>) {
    let n = s.order.len();
    s.first_child.clear();
    s.first_child.resize(n, NONE);
    s.next_sibling.clear();
    s.next_sibling.resize(n, NONE);
    // Prepending in reverse sort order leaves each child list sorted.
    let mut roots = NONE;
    for pos in (0..n).rev() {
        if !s.keep[pos] {
            continue;
        }
        let par = s.parent[pos];
        let head = if par != NONE && s.keep[par as usize] {
            &mut s.first_child[par as usize]
        } else {
            &mut roots
        };
        s.next_sibling[pos] = *head;
        *head = pos as u32;
    }
    s.seen.clear();
    s.seen.resize(n, false);
    out.clear();
    let mut root = roots;
    while root != NONE {
        walk(s, out, root);
        root = s.next_sibling[root as usize];
    }
    // A parent cycle (a racy snapshot) leaves rows that no root reaches;
    // rather than vanish, each starts a tree of its own.
    for pos in 0..n {
        if s.keep[pos] && !s.seen[pos] {
            walk(s, out, pos as u32);
        }
    }
}

/// Depth-first from one root, without recursion (trees can be deep).
fn walk(s: &mut Scratch, out: &mut Vec<RowRef>, root: u32) {
    s.stack.clear();
    s.stack.push((root, 0));
    while let Some((pos, depth)) = s.stack.pop() {
        if std::mem::replace(&mut s.seen[pos as usize], true) {
            continue;
        }
        out.push(RowRef {
            idx: s.order[pos as usize],
            depth,
        });
        // The next sibling goes on the stack before the first child, so the
        // child's subtree comes out first. A root's siblings are the
        // caller's to walk.
        let sib = s.next_sibling[pos as usize];
        if sib != NONE && depth > 0 {
            s.stack.push((sib, depth));
        }
        let child = s.first_child[pos as usize];
        if child != NONE {
            s.stack.push((child, depth.saturating_add(1)));
        }
    }
}

/// Case-insensitive substring test without allocating per row.
fn contains_ci(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

fn pid_contains(pid: u32, needle: &str) -> bool {
    if needle.is_empty() || !needle.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let mut buf = [0u8; 10];
    let mut at = buf.len();
    let mut p = pid;
    loop {
        at -= 1;
        buf[at] = b'0' + (p % 10) as u8;
        p /= 10;
        if p == 0 {
            break;
        }
    }
    buf[at..]
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The filter and search match a process's command, user, pid or container.
pub fn proc_matches(p: &ProcRow, text: &str) -> bool {
    text.is_empty()
        || contains_ci(&p.comm, text)
        || contains_ci(&p.user, text)
        || pid_contains(p.pid, text)
        || p.container.as_deref().is_some_and(|c| contains_ci(c, text))
}

pub fn cont_matches(c: &ContainerRow, text: &str) -> bool {
    text.is_empty()
        || contains_ci(&c.name, text)
        || contains_ci(&c.path, text)
        || c.runtime.as_deref().is_some_and(|r| contains_ci(r, text))
}

pub fn event_matches(e: &Event, text: &str) -> bool {
    text.is_empty()
        || contains_ci(e.kind.name(), text)
        || contains_ci(&e.summary, text)
        || e.names
            .comm
            .as_deref()
            .is_some_and(|c| contains_ci(c, text))
        || e.names
            .container
            .as_deref()
            .is_some_and(|c| contains_ci(c, text))
        || e.names.pid.is_some_and(|p| pid_contains(p, text))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::{Kind, Names, State};

    pub fn proc(pid: u32, ppid: u32, comm: &str, rss: u64) -> ProcRow {
        ProcRow {
            pid,
            ppid,
            start: 1000 + pid as u64,
            uid: 1000,
            user: "alice".into(),
            comm: comm.into(),
            state: 'S',
            threads: 1,
            rss,
            ..Default::default()
        }
    }

    pub fn container(id: u64, path: &str, name: &str, rss: u64) -> ContainerRow {
        ContainerRow {
            cgroup_id: id,
            path: path.into(),
            name: name.into(),
            procs: 1,
            threads: 1,
            rss,
            anon: rss / 2,
            ..Default::default()
        }
    }

    pub fn event(id: &str, ts: &str, pid: Option<u32>, summary: &str) -> Event {
        Event {
            id: id.into(),
            incident: id.into(),
            ts: ts.into(),
            host: "h".into(),
            kind: Kind::MemoryBloat,
            severity: Severity::Warning,
            state: State::Firing,
            subject: if pid.is_some() { "process" } else { "host" }.into(),
            names: Names {
                pid,
                comm: pid.map(|_| "leaky".into()),
                ..Default::default()
            },
            summary: summary.into(),
            evidence: serde_json::json!({"rss": 123}),
        }
    }

    pub fn frame(procs: Vec<ProcRow>) -> Frame {
        Frame {
            host: "box".into(),
            procs,
            ..Default::default()
        }
    }

    pub fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    pub fn press(app: &mut App, keys: &str) -> Action {
        let mut last = Action::None;
        for c in keys.chars() {
            last = app.on_key(key(KeyCode::Char(c)));
        }
        last
    }

    fn pids(app: &App) -> Vec<u32> {
        app.procs
            .iter()
            .map(|r| app.frame.procs[r.idx as usize].pid)
            .collect()
    }

    fn sample() -> Frame {
        let mut k = proc(2, 0, "kthreadd", 0);
        k.kernel = true;
        frame(vec![
            proc(1, 0, "init", 10),
            k,
            proc(10, 1, "sshd", 30),
            proc(11, 10, "bash", 20),
            proc(12, 1, "postgres", 50),
            proc(13, 12, "pg-writer", 40),
        ])
    }

    #[test]
    fn default_sort_is_rss_descending_without_kernel_threads() {
        let mut app = App::new();
        app.on_frame(sample());
        assert_eq!(pids(&app), [12, 13, 10, 11, 1]);
        app.on_key(key(KeyCode::Char('K')));
        assert_eq!(pids(&app), [12, 13, 10, 11, 1, 2]);
    }

    #[test]
    fn sort_keys_move_and_invert() {
        let mut app = App::new();
        app.on_frame(sample());
        press(&mut app, "I");
        assert_eq!(pids(&app), [1, 11, 10, 13, 12]);
        // From RSS, `<` four times reaches PID, which sorts ascending.
        press(&mut app, "<<<<");
        assert_eq!(ProcCol::ALL[app.proc_sort.col], ProcCol::Pid);
        assert_eq!(pids(&app), [1, 10, 11, 12, 13]);
        press(&mut app, ">>");
        assert_eq!(ProcCol::ALL[app.proc_sort.col], ProcCol::Command);
        assert_eq!(pids(&app), [11, 1, 13, 12, 10]);
        press(&mut app, "M");
        assert_eq!(pids(&app), [12, 13, 10, 11, 1]);
    }

    #[test]
    fn unknown_rates_sort_last_both_ways() {
        let mut f = sample();
        f.procs[0].cpu_pct = Some(5.0);
        f.procs[2].cpu_pct = Some(50.0);
        let mut app = App::new();
        app.on_frame(f);
        press(&mut app, "P");
        assert_eq!(&pids(&app)[..2], [10, 1]);
        press(&mut app, "I");
        assert_eq!(&pids(&app)[..2], [1, 10]);
    }

    #[test]
    fn filter_narrows_and_esc_clears() {
        let mut app = App::new();
        app.on_frame(sample());
        press(&mut app, "\\pg");
        assert_eq!(app.input, Some(Input::Filter));
        assert_eq!(pids(&app), [13]);
        app.on_key(key(KeyCode::Backspace));
        assert_eq!(pids(&app), [12, 13]); // "p": postgres, pg-writer
        app.on_key(key(KeyCode::Enter));
        assert_eq!(app.input, None);
        assert_eq!(app.filter, "p");
        // A pid matches as digits.
        press(&mut app, "\\");
        app.on_key(key(KeyCode::Backspace));
        press(&mut app, "11");
        assert_eq!(pids(&app), [11]);
        app.on_key(key(KeyCode::Esc));
        assert_eq!(app.filter, "");
        assert_eq!(pids(&app).len(), 5);
    }

    #[test]
    fn search_is_incremental_and_n_finds_next() {
        let mut app = App::new();
        app.on_frame(sample());
        press(&mut app, "/s");
        // postgres is first from the top (the cursor's row counts).
        assert_eq!(app.selected_proc().map(|p| p.pid), Some(12));
        press(&mut app, "sh");
        assert_eq!(app.selected_proc().map(|p| p.pid), Some(10));
        app.on_key(key(KeyCode::Enter));
        assert_eq!(app.input, None);
        app.on_key(key(KeyCode::Home));
        press(&mut app, "/");
        press(&mut app, "p");
        assert_eq!(app.selected_proc().map(|p| p.pid), Some(12));
        app.on_key(key(KeyCode::Enter));
        press(&mut app, "n");
        assert_eq!(app.selected_proc().map(|p| p.pid), Some(13));
        app.on_key(key(KeyCode::F(3)));
        assert_eq!(app.selected_proc().map(|p| p.pid), Some(12), "wraps");
        // Esc abandons a search and returns to where it started.
        press(&mut app, "/bas");
        assert_eq!(app.selected_proc().map(|p| p.pid), Some(11));
        app.on_key(key(KeyCode::Esc));
        assert_eq!(app.selected_proc().map(|p| p.pid), Some(12));
        press(&mut app, "/zzz");
        app.on_key(key(KeyCode::Enter));
        press(&mut app, "n");
        assert!(app.status.as_deref().unwrap_or("").contains("no match"));
    }

    #[test]
    fn tree_orders_children_under_parents() {
        let mut app = App::new();
        app.on_frame(sample());
        press(&mut app, "t");
        let got: Vec<(u32, u16)> = app
            .procs
            .iter()
            .map(|r| (app.frame.procs[r.idx as usize].pid, r.depth))
            .collect();
        assert_eq!(got, [(1, 0), (12, 1), (13, 2), (10, 1), (11, 2)]);
        // A filter keeps the matches' ancestors.
        press(&mut app, "\\bash");
        assert_eq!(pids(&app), [1, 10, 11]);
    }

    #[test]
    fn tree_survives_a_ppid_cycle() {
        let mut app = App::new();
        app.on_frame(frame(vec![
            proc(5, 6, "a", 1),
            proc(6, 5, "b", 2),
            proc(7, 0, "c", 3),
        ]));
        press(&mut app, "t");
        let got: Vec<(u32, u16)> = app
            .procs
            .iter()
            .map(|r| (app.frame.procs[r.idx as usize].pid, r.depth))
            .collect();
        assert_eq!(got, [(7, 0), (6, 0), (5, 1)]);
    }

    #[test]
    fn selection_follows_the_pid_across_frames() {
        let mut app = App::new();
        app.on_frame(sample());
        app.on_key(key(KeyCode::Down));
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.selected_proc().map(|p| p.pid), Some(10));
        let mut f = sample();
        f.procs[2].rss = 1000; // sshd to the top
        app.on_frame(f);
        assert_eq!(app.procs_pos.cursor, 0);
        assert_eq!(app.selected_proc().map(|p| p.pid), Some(10));
        // Gone: the cursor keeps its place and takes the row there.
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.selected_proc().map(|p| p.pid), Some(12));
        let mut f = sample();
        f.procs.remove(4);
        app.on_frame(f);
        assert_eq!(app.procs_pos.cursor, 1);
        assert_eq!(app.selected_proc().map(|p| p.pid), Some(10)); // 13, 10, 11, 1
    }

    #[test]
    fn a_reused_pid_is_another_process() {
        let mut app = App::new();
        app.on_frame(sample());
        press(&mut app, "/bash");
        app.on_key(key(KeyCode::Enter));
        let mut f = sample();
        f.procs[3].start += 1;
        f.procs[3].rss = 1; // would be last
        app.on_frame(f);
        let sel = app.selected_proc().map(|p| p.pid);
        // The key no longer matches, so the cursor keeps its position.
        assert_eq!(app.procs_pos.cursor, 3);
        assert_ne!(sel, Some(11));
    }

    #[test]
    fn pause_keeps_the_latest_frame_for_later() {
        let mut app = App::new();
        app.on_frame(sample());
        press(&mut app, "Z");
        assert!(app.paused());
        let mut f = sample();
        f.procs.truncate(1);
        assert!(!app.on_frame(f.clone()));
        f.procs.push(proc(99, 1, "late", 1));
        app.on_frame(f);
        assert_eq!(app.frame.procs.len(), 6);
        press(&mut app, "Z");
        assert_eq!(pids(&app), [1, 99]);
    }

    #[test]
    fn kill_asks_then_signals_the_same_process() {
        let mut app = App::new();
        app.on_frame(sample());
        press(&mut app, "k");
        let Some(Popup::Kill(req)) = &app.popup else {
            panic!("no confirmation");
        };
        assert_eq!((req.pid, req.sig), (12, Sig::Term));
        app.on_key(key(KeyCode::Right));
        press(&mut app, "6");
        app.on_key(key(KeyCode::Left));
        let a = app.on_key(key(KeyCode::Enter));
        assert_eq!(
            a,
            Action::Signal(SignalRequest {
                pid: 12,
                start: 1012,
                sig: Sig::Stop,
                comm: "postgres".into()
            })
        );
        assert!(app.popup.is_none());
        app.on_key(key(KeyCode::F(9)));
        assert_eq!(press(&mut app, "n"), Action::None);
        assert!(app.popup.is_none());
        // Not from the container list.
        press(&mut app, "ck");
        assert!(app.popup.is_none());
        assert!(app.status.is_some());
    }

    #[test]
    fn quit_keys() {
        let mut app = App::new();
        assert_eq!(press(&mut app, "q"), Action::Quit);
        assert_eq!(app.on_key(key(KeyCode::F(10))), Action::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        press(&mut app, "/");
        assert_eq!(app.on_key(ctrl_c), Action::Quit);
        // In a prompt, q is text.
        assert_eq!(press(&mut app, "q"), Action::None);
        assert_eq!(app.search, "q");
    }

    #[test]
    fn detail_is_wanted_and_released() {
        let mut app = App::new();
        app.on_frame(sample());
        let a = app.on_key(key(KeyCode::Enter));
        assert_eq!(
            a,
            Action::Want(Some(Subject::Process {
                pid: 12,
                start: 1012
            }))
        );
        assert_eq!(app.view(), View::Detail);
        assert_eq!(app.on_key(key(KeyCode::Esc)), Action::Want(None));
        assert_eq!(app.view(), View::Processes);
        app.on_key(key(KeyCode::Enter));
        assert_eq!(press(&mut app, "e"), Action::Want(None));
        assert_eq!(app.view(), View::Events);
    }

    fn cgroups() -> Frame {
        let mut f = sample();
        f.containers = vec![
            container(1, "/system.slice", "system.slice", 100),
            container(2, "/system.slice/db.service", "db", 90),
            container(3, "/system.slice-x", "x", 5),
            container(4, "/system.slice/web.service", "web", 95),
            container(5, "/system.slice/web.service/worker", "worker", 1),
        ];
        for (i, cg) in [
            (4, "/system.slice/db.service"),
            (5, "/system.slice/db.service"),
        ] {
            f.procs[i].cgroup = Some(cg.into());
        }
        f.procs[3].cgroup = Some("/system.slice/web.service/worker".into());
        f
    }

    #[test]
    fn containers_are_a_tree_by_path() {
        let mut app = App::new();
        app.on_frame(cgroups());
        press(&mut app, "c");
        let got: Vec<(u64, u16)> = app
            .conts
            .iter()
            .map(|r| (app.frame.containers[r.idx as usize].cgroup_id, r.depth))
            .collect();
        assert_eq!(got, [(1, 0), (4, 1), (5, 2), (2, 1), (3, 0)]);
    }

    #[test]
    fn zoom_shows_a_cgroup_and_its_descendants() {
        let mut app = App::new();
        app.on_frame(cgroups());
        press(&mut app, "c");
        app.on_key(key(KeyCode::Down)); // web
        press(&mut app, "z");
        assert_eq!(app.view(), View::Processes);
        assert_eq!(app.zoom.as_ref().map(|z| z.name.as_str()), Some("web"));
        assert_eq!(pids(&app), [11]);
        app.on_key(key(KeyCode::Esc));
        assert!(app.zoom.is_none());
        assert_eq!(pids(&app).len(), 5);
        press(&mut app, "c");
        app.on_key(key(KeyCode::Home));
        press(&mut app, "z");
        assert_eq!(pids(&app), [12, 13, 11]);
        press(&mut app, "z");
        assert!(app.zoom.is_none());
    }

    #[test]
    fn events_are_newest_first_and_enter_opens_subject_or_popup() {
        let mut f = sample();
        f.events = vec![
            event("a", "2026-01-01T00:00:01.000Z", Some(12), "old"),
            event("b", "2026-01-01T00:00:02.000Z", None, "host thing"),
        ];
        let mut app = App::new();
        app.on_frame(f);
        press(&mut app, "e");
        assert_eq!(app.selected_event().map(|e| e.id.as_str()), Some("b"));
        app.on_key(key(KeyCode::Enter));
        assert!(matches!(app.popup, Some(Popup::Event(_))));
        app.on_key(key(KeyCode::Esc));
        assert!(app.popup.is_none());
        app.on_key(key(KeyCode::Down));
        let a = app.on_key(key(KeyCode::Enter));
        assert_eq!(
            a,
            Action::Want(Some(Subject::Process {
                pid: 12,
                start: 1012
            }))
        );
        assert_eq!(app.on_key(key(KeyCode::Backspace)), Action::Want(None));
        assert_eq!(app.view(), View::Events);
    }

    #[test]
    fn help_closes_on_any_key() {
        let mut app = App::new();
        app.on_key(key(KeyCode::F(1)));
        assert!(matches!(app.popup, Some(Popup::Help)));
        assert_eq!(press(&mut app, "q"), Action::None);
        assert!(app.popup.is_none());
    }

    #[test]
    fn paging_moves_by_the_drawn_height() {
        let mut app = App::new();
        app.on_frame(frame(
            (1..=100).map(|p| proc(p, 0, "x", p as u64)).collect(),
        ));
        app.page.set(10);
        app.on_key(key(KeyCode::PageDown));
        assert_eq!(app.procs_pos.cursor, 10);
        app.on_key(key(KeyCode::End));
        assert_eq!(app.procs_pos.cursor, 99);
        app.on_key(key(KeyCode::PageUp));
        assert_eq!(app.procs_pos.cursor, 89);
        app.on_key(key(KeyCode::Home));
        app.on_key(key(KeyCode::Up));
        assert_eq!(app.procs_pos.cursor, 0);
    }

    #[test]
    fn five_thousand_processes() {
        let procs: Vec<ProcRow> = (1..=5000u32)
            .map(|p| {
                let mut r = proc(
                    p,
                    if p == 1 { 0 } else { 1 + p / 7 },
                    "worker",
                    (p as u64 * 7919) % 5003,
                );
                r.cpu_pct = (p % 3 != 0).then_some(p as f64 % 17.0);
                r
            })
            .collect();
        let mut app = App::new();
        app.on_frame(frame(procs.clone()));
        assert_eq!(app.procs.len(), 5000);
        for c in "PMt\\9".chars() {
            press(&mut app, &c.to_string());
        }
        assert!(!app.procs.is_empty());
        app.on_key(key(KeyCode::Esc));
        app.on_key(key(KeyCode::End));
        app.on_frame(frame(procs));
        assert_eq!(app.procs.len(), 5000);
        assert_eq!(app.procs_pos.cursor, 4999);
    }

    #[test]
    fn replay_keys_travel_and_live_ones_do_not() {
        let mut app = App::new();
        app.on_frame(sample());
        assert_eq!(app.on_key(key(KeyCode::Right)), Action::None, "live");
        let mut f = sample();
        f.mode.describe = format!("{}frame 1 of 2; ...", replay::DESCRIBE_PREFIX);
        f.mode.replay = true;
        app.on_frame(f);
        assert!(app.replay());
        let shift = |c| KeyEvent::new(c, KeyModifiers::SHIFT);
        for (k, t) in [
            (key(KeyCode::Left), Travel::Frames(-1)),
            (key(KeyCode::Right), Travel::Frames(1)),
            (key(KeyCode::Char('[')), Travel::Frames(-1)),
            (key(KeyCode::Char(']')), Travel::Frames(1)),
            (key(KeyCode::Char('{')), Travel::Seconds(-60)),
            (key(KeyCode::Char('}')), Travel::Seconds(60)),
            (shift(KeyCode::Left), Travel::Seconds(-60)),
            (shift(KeyCode::Right), Travel::Seconds(60)),
            (key(KeyCode::Char('(')), Travel::Seconds(-3600)),
            (key(KeyCode::Char(')')), Travel::Seconds(3600)),
            (key(KeyCode::Char('g')), Travel::First),
            (key(KeyCode::Char('G')), Travel::Last),
        ] {
            assert_eq!(app.on_key(k), Action::Travel(t), "{k:?}");
        }
        // Home/End still move the selection.
        app.on_key(key(KeyCode::End));
        assert_eq!(app.procs_pos.cursor, 4);
        // In the detail too; typed into a prompt, they are text.
        app.on_key(key(KeyCode::Enter));
        assert_eq!(
            app.on_key(key(KeyCode::Left)),
            Action::Travel(Travel::Frames(-1))
        );
        app.on_key(key(KeyCode::Esc));
        press(&mut app, "/");
        assert_eq!(press(&mut app, "g"), Action::None);
        assert_eq!(app.search, "g");
        app.on_key(key(KeyCode::Esc));
        // No pause, no signals.
        press(&mut app, "Z");
        assert!(!app.paused());
        assert!(app.status.as_deref().unwrap_or("").contains("replay"));
        press(&mut app, "k");
        assert!(app.popup.is_none());
        assert!(app.status.as_deref().unwrap_or("").contains("no signals"));
    }

    #[test]
    fn matching_helpers() {
        assert!(contains_ci("PostGres", "gres"));
        assert!(!contains_ci("a", "ab"));
        assert!(pid_contains(12345, "234"));
        assert!(!pid_contains(12345, "x"));
        assert!(pid_contains(0, "0"));
        assert!(is_cgroup_ancestor("/a", "/a/b"));
        assert!(!is_cgroup_ancestor("/a", "/a-b"));
        assert!(!is_cgroup_ancestor("/a", "/a"));
    }
}
