//! `sentinel top --at TIME`: the flight recorder's history in the live
//! view. The store's frame and event records are indexed once, by a walk
//! of record headers (no payloads); a frame is read when it is shown. What
//! a recorded frame lacks the view rebuilds from the records around it:
//! the events of the hour before it (the recorder keeps events apart), and
//! for the process or container opened in Detail, sparklines from its rows
//! in the frames of the minute before (the recorder keeps no series).
//!
//! The replay runs on the feed's thread like the live sources: keys become
//! `Cmd`s, and each move sends one display frame.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    ffi::OsString,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use super::{
    app::Travel,
    frame::{Detail, Frame, MAX_EVENTS, Mode, Subject},
};
use crate::{
    event::{Event, rfc3339},
    record::{Loc, OpenError, Record, RecordKind, Store},
};

/// How a replayed frame's `mode.describe` begins.
pub const DESCRIBE_PREFIX: &str = "replay: ";

/// A frame shows the events of this long before it, as the live view shows
/// the most recent ones.
const EVENTS_WINDOW_MS: u64 = 3_600_000;
/// Detail's sparklines span this long, as in the live view.
const SPARK_WINDOW_MS: u64 = 60_000;
const SPARK_POINTS: usize = 60;
/// While the newest frame is on screen, the store is looked at this often
/// for frames the daemon wrote since (the frame count in the title grows).
const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// Frames kept decoded: a minute of sparklines at a 1 s interval, plus
/// room to step back and forth without reading again.
const CACHED_FRAMES: usize = 64;
/// Decoded events kept; past this the cache starts over.
const CACHED_EVENTS: usize = 20_000;
/// When neither a start record nor two frames say the interval.
const DEFAULT_INTERVAL_MS: u64 = 5_000;

pub fn is_replay(mode: &Mode) -> bool {
    mode.replay
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("{}: the store holds no recorded frame yet{}", dir.display(), covers(*span))]
    NoFrames {
        dir: PathBuf,
        span: Option<(u64, u64)>,
    },
    #[error(
        "{}: none of its {frames} recorded frames can be read (all corrupt)",
        dir.display()
    )]
    Unreadable { dir: PathBuf, frames: usize },
    #[error(
        "no recorded frame at or before {}; the store at {} covers {} to {}{}",
        short(*at), dir.display(), short(span.0), short(span.1), first_frame(*span, *first)
    )]
    Before {
        at: u64,
        dir: PathBuf,
        span: (u64, u64),
        /// The first frame's time, when the span starts with other records.
        first: u64,
    },
}

fn covers(span: Option<(u64, u64)>) -> String {
    span.map_or_else(String::new, |(a, b)| {
        format!(" (its records cover {} to {})", short(a), short(b))
    })
}

/// Said when the store's first records came well before its first frame
/// (events only, at first), so "covers" does not mislead.
fn first_frame(span: (u64, u64), first: u64) -> String {
    if first > span.0 + 60_000 {
        format!(" (its first frame is at {})", short(first))
    } else {
        String::new()
    }
}

/// `2026-11-23T03:12:05Z`: seconds are as fine as a recording gets.
pub fn short(unix_ms: u64) -> String {
    let mut s = rfc3339(unix_ms);
    s.truncate(19);
    s.push('Z');
    s
}

/// `2,000`: frame counts are read at a glance.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What the UI asks of the replay thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cmd {
    Want(Option<Subject>),
    Travel(Travel),
}

/// The `.seg` files and their sizes: what changes when the daemon writes,
/// rolls or drops a segment. Cheap to take (one directory read), unlike a
/// new index.
type Fingerprint = Vec<(OsString, u64)>;

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut v: Fingerprint = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| (e.file_name(), e.metadata().map_or(0, |m| m.len())))
        .collect();
    v.sort();
    v
}

/// A position in a recorder store and what it takes to show it.
pub struct Replay {
    dir: PathBuf,
    store: Store,
    /// Frame and event records, in time order.
    frames: Vec<Loc>,
    events: Vec<Loc>,
    /// The frame on screen, an index into `frames`.
    at: usize,
    /// The way the last move went: a corrupt frame is stepped over that way.
    forward: bool,
    /// The time asked for on the command line, until the first move: said
    /// in the title when the nearest frame is far from it.
    asked: Option<u64>,
    interval_ms: u64,
    /// Stretches of bad bytes the index walk found (torn or rotten records).
    walk_corrupt: u64,
    /// Records whose payload failed its checks, by index.
    bad_frames: HashSet<usize>,
    bad_events: HashSet<usize>,
    /// Of those, records whose segment retention deleted while we looked.
    gone: u64,
    frame_cache: VecDeque<(usize, Arc<Frame>)>,
    event_cache: HashMap<usize, Event>,
    seen: Fingerprint,
}

impl Replay {
    /// Indexes the store at `dir` and goes to the frame nearest at or
    /// before `at` (Unix ms). A time up to one interval before the first
    /// frame starts there; earlier is an error naming what the store holds.
    pub fn open(dir: &Path, at: u64) -> Result<Replay, ReplayError> {
        // Taken first: whatever the daemon writes during the walk below
        // shows up as a change at the first refresh.
        let seen = fingerprint(dir);
        let store = Store::open(dir)?;
        let idx = store.index(
            0,
            u64::MAX,
            &[RecordKind::Start, RecordKind::Frame, RecordKind::Event],
        );
        let mut starts = Vec::new();
        let (mut frames, mut events) = (Vec::new(), Vec::new());
        for loc in idx.locs {
            match loc.kind {
                RecordKind::Start => starts.push(loc),
                RecordKind::Frame => frames.push(loc),
                RecordKind::Event => events.push(loc),
            }
        }
        if frames.is_empty() {
            return Err(ReplayError::NoFrames {
                dir: dir.to_owned(),
                span: store.span(),
            });
        }
        let interval_ms = starts
            .iter()
            .find_map(|l| match store.load(l) {
                Ok(Record::Start(s)) if s.interval_s > 0.0 => Some((s.interval_s * 1000.0) as u64),
                _ => None,
            })
            .or_else(|| frames.get(1).map(|f| f.unix_ms - frames[0].unix_ms))
            .filter(|&ms| ms > 0)
            .unwrap_or(DEFAULT_INTERVAL_MS);
        let first = frames[0].unix_ms;
        let at_index = match at_or_before(&frames, at) {
            Some(i) => i,
            None if at.saturating_add(interval_ms) >= first => 0,
            None => {
                let last = frames.last().map_or(first, |l| l.unix_ms);
                return Err(ReplayError::Before {
                    at,
                    dir: dir.to_owned(),
                    span: store.span().unwrap_or((first, last)),
                    first,
                });
            }
        };
        let mut r = Replay {
            dir: dir.to_owned(),
            store,
            frames,
            events,
            at: at_index,
            forward: false,
            asked: Some(at),
            interval_ms,
            walk_corrupt: idx.stats.corrupt,
            bad_frames: HashSet::new(),
            bad_events: HashSet::new(),
            gone: 0,
            frame_cache: VecDeque::new(),
            event_cache: HashMap::new(),
            seen,
        };
        if r.settle().is_none() {
            return Err(ReplayError::Unreadable {
                dir: dir.to_owned(),
                frames: r.frames.len(),
            });
        }
        Ok(r)
    }

    /// The time of the frame on screen.
    pub fn time(&self) -> u64 {
        self.frames[self.at].unix_ms
    }

    pub fn at_end(&self) -> bool {
        self.at + 1 >= self.frames.len()
    }

    /// Records skipped as corrupt so far: bad stretches the walk found,
    /// and records whose payload failed when read.
    pub fn corrupt(&self) -> u64 {
        self.walk_corrupt + (self.bad_frames.len() + self.bad_events.len()) as u64 - self.gone
    }

    /// Moves. Past either end it stays on the first or last frame; a move
    /// forward from the last frame, and End, look for frames written since.
    pub fn travel(&mut self, t: Travel) {
        self.asked = None;
        let last = self.frames.len() - 1;
        let forward_from_end = match t {
            Travel::Frames(n) => n > 0,
            Travel::Seconds(s) => s > 0,
            Travel::First => false,
            Travel::Last => true,
        };
        if forward_from_end && self.at == last {
            self.refresh();
        }
        let last = self.frames.len() - 1;
        match t {
            Travel::Frames(n) => {
                self.at = self.at.saturating_add_signed(n as isize).min(last);
                self.forward = n > 0;
            }
            Travel::Seconds(s) => {
                let now = self.time();
                let target = now.saturating_add_signed(i64::from(s) * 1000);
                let to = at_or_before(&self.frames, target).unwrap_or(0);
                // A gap in the recording longer than the step (the daemon
                // was down) is crossed to the next frame, not stuck on.
                self.at = if s > 0 {
                    to.max(self.at + 1).min(last)
                } else {
                    to.min(self.at.saturating_sub(1))
                };
                self.forward = s > 0;
            }
            Travel::First => {
                self.at = 0;
                self.forward = true;
            }
            Travel::Last => {
                self.at = last;
                self.forward = false;
            }
        }
    }

    /// Re-reads the store when its files changed. Returns whether the
    /// index changed; the same moment stays on screen.
    pub fn refresh(&mut self) -> bool {
        let seen = fingerprint(&self.dir);
        if seen == self.seen {
            return false;
        }
        let store = match Store::open(&self.dir) {
            Ok(s) => s,
            Err(e) => {
                // The recording so far is still worth showing.
                tracing::debug!("replay: {e}");
                return false;
            }
        };
        let idx = store.index(0, u64::MAX, &[RecordKind::Frame, RecordKind::Event]);
        let (frames, events): (Vec<Loc>, Vec<Loc>) = idx
            .locs
            .into_iter()
            .partition(|l| l.kind == RecordKind::Frame);
        self.seen = seen;
        if frames.is_empty() {
            return false;
        }
        let now = self.time();
        self.at = at_or_before(&frames, now).unwrap_or(0);
        self.store = store;
        self.frames = frames;
        self.events = events;
        self.walk_corrupt = idx.stats.corrupt;
        // Indices changed meaning.
        self.bad_frames.clear();
        self.bad_events.clear();
        self.gone = 0;
        self.frame_cache.clear();
        self.event_cache.clear();
        true
    }

    /// The frame on screen as the view shows it: the recorded frame, the
    /// events of the hour before it, the wanted subject's detail, and a
    /// `mode` saying what it is. Err when no frame can be read at all.
    pub fn frame(&mut self, want: Option<Subject>) -> Result<Frame, String> {
        let Some(rec) = self.settle() else {
            return Err(format!(
                "{}: none of the recorded frames can be read (all corrupt)",
                self.dir.display()
            ));
        };
        let t = self.time();
        let mut f = Frame::clone(&rec);
        f.events = self.events_between(t.saturating_sub(EVENTS_WINDOW_MS), t);
        if let Some(s) = want {
            let d = self.detail(s, &f);
            f.details.retain(|x| x.subject != s);
            f.details.push(d);
        }
        f.mode = Mode {
            attached: false,
            replay: true,
            describe: self.describe(t),
        };
        Ok(f)
    }

    /// "replay: frame 140 of 2,000; 2026-11-23T03:12:05Z in DIR", most
    /// telling first: the title shows the time in its own tag, and a narrow
    /// terminal cuts the end.
    fn describe(&self, t: u64) -> String {
        let n = self.frames.len();
        let mut s = format!(
            "{DESCRIBE_PREFIX}frame {} of {}",
            grouped(self.at + 1),
            grouped(n)
        );
        if n > 1 && self.at + 1 == n {
            s.push_str(", the newest");
        } else if n > 1 && self.at == 0 {
            s.push_str(", the oldest");
        }
        match self.corrupt() {
            0 => {}
            1 => s.push_str("; 1 corrupt record skipped"),
            k => s.push_str(&format!("; {k} corrupt records skipped")),
        }
        if let Some(asked) = self.asked
            && asked.abs_diff(t) > 2 * self.interval_ms
        {
            s.push_str(&format!("; nothing recorded nearer {}", short(asked)));
        }
        s.push_str(&format!("; {} in {}", short(t), self.dir.display()));
        s
    }

    /// The frame at `at`, or when it is corrupt the nearest readable one
    /// the way the last move went (then the other way).
    fn settle(&mut self) -> Option<Arc<Frame>> {
        if let Some(f) = self.load_frame(self.at) {
            return Some(f);
        }
        let n = self.frames.len();
        let ahead: Vec<usize> = (self.at + 1..n).collect();
        let behind: Vec<usize> = (0..self.at).rev().collect();
        let (first, second) = if self.forward {
            (ahead, behind)
        } else {
            (behind, ahead)
        };
        for i in first.into_iter().chain(second) {
            if let Some(f) = self.load_frame(i) {
                self.at = i;
                return Some(f);
            }
        }
        None
    }

    fn load_frame(&mut self, i: usize) -> Option<Arc<Frame>> {
        if let Some((_, f)) = self.frame_cache.iter().find(|(j, _)| *j == i) {
            return Some(f.clone());
        }
        if self.bad_frames.contains(&i) {
            return None;
        }
        match self.store.load(&self.frames[i]) {
            Ok(Record::Frame(f)) => {
                let f = Arc::new(*f);
                if self.frame_cache.len() >= CACHED_FRAMES {
                    self.frame_cache.pop_front();
                }
                self.frame_cache.push_back((i, f.clone()));
                Some(f)
            }
            Ok(_) => None,
            Err(e) => {
                // Counted and shown in the title; never fatal.
                tracing::debug!("replay: {e}");
                if self.bad_frames.insert(i) && e.is_gone() {
                    self.gone += 1;
                }
                None
            }
        }
    }

    fn load_event(&mut self, i: usize) -> Option<Event> {
        if let Some(e) = self.event_cache.get(&i) {
            return Some(e.clone());
        }
        if self.bad_events.contains(&i) {
            return None;
        }
        match self.store.load(&self.events[i]) {
            Ok(Record::Event(e)) => {
                if self.event_cache.len() >= CACHED_EVENTS {
                    self.event_cache.clear();
                }
                self.event_cache.insert(i, (*e).clone());
                Some(*e)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!("replay: {e}");
                if self.bad_events.insert(i) && e.is_gone() {
                    self.gone += 1;
                }
                None
            }
        }
    }

    /// Events stamped `since..=until`, oldest first, the newest
    /// `MAX_EVENTS` of them.
    fn events_between(&mut self, since: u64, until: u64) -> Vec<Event> {
        let lo = self.events.partition_point(|l| l.unix_ms < since);
        let hi = self.events.partition_point(|l| l.unix_ms <= until);
        let mut out = Vec::new();
        for i in (lo..hi).rev() {
            if out.len() >= MAX_EVENTS {
                break;
            }
            if let Some(e) = self.load_event(i) {
                out.push(e);
            }
        }
        out.reverse();
        out
    }

    /// The frames of the minute up to the one on screen, oldest first.
    fn history(&mut self) -> Vec<Arc<Frame>> {
        let t = self.time();
        let lo = self
            .frames
            .partition_point(|l| l.unix_ms + SPARK_WINDOW_MS <= t);
        let lo = lo.max((self.at + 1).saturating_sub(SPARK_POINTS));
        (lo..=self.at).filter_map(|i| self.load_frame(i)).collect()
    }

    /// A Detail built from the recording: the blocked threads the frame
    /// recorded, sparklines from the subject's rows in the last minute's
    /// frames (a frame without its row adds no point: the recorder keeps
    /// only the processes leading on some signal), and its events.
    fn detail(&mut self, s: Subject, f: &Frame) -> Detail {
        let history = self.history();
        let (mut rss, mut faults, mut writes) = (Vec::new(), Vec::new(), Vec::new());
        match s {
            Subject::Process { pid, start } => {
                let mut comm = None;
                for h in &history {
                    if let Some(p) = h.procs.iter().find(|p| p.pid == pid && p.start == start) {
                        rss.push(p.rss);
                        faults.push(p.faults_per_s.unwrap_or(0.0));
                        writes.push(p.write_per_s.unwrap_or(0.0));
                        comm = Some(p.comm.clone());
                    }
                }
                let row = f.procs.iter().find(|p| p.pid == pid && p.start == start);
                let mut title = match row.map(|p| &p.comm).or(comm.as_ref()) {
                    Some(c) => format!("Process {pid} ({c})"),
                    None => format!("Process {pid}"),
                };
                if row.is_none() {
                    title.push_str(": not in this frame (the recorder keeps the top processes)");
                }
                let blocked = f
                    .details
                    .iter()
                    .find(|d| matches!(d.subject, Subject::Process { pid: p, .. } if p == pid))
                    .map(|d| d.blocked.clone())
                    .unwrap_or_default();
                Detail {
                    subject: s,
                    title,
                    // A recording cannot tell an exited process from one
                    // that only left the top lists.
                    alive: true,
                    blocked,
                    rss,
                    faults_per_s: faults,
                    write_per_s: writes,
                    events: f
                        .events
                        .iter()
                        .filter(|e| e.names.pid == Some(pid))
                        .cloned()
                        .collect(),
                    members: Vec::new(),
                }
            }
            Subject::Container { cgroup_id } => {
                for h in &history {
                    if let Some(c) = h.containers.iter().find(|c| c.cgroup_id == cgroup_id) {
                        rss.push(c.rss);
                        faults.push(c.faults_per_s.unwrap_or(0.0));
                        writes.push(c.write_per_s.unwrap_or(0.0));
                    }
                }
                let row = f.containers.iter().find(|c| c.cgroup_id == cgroup_id);
                let (path, name) = row.map_or((None, None), |c| {
                    (Some(c.path.as_str()), Some(c.name.as_str()))
                });
                let title = match (name, path) {
                    (Some(n), Some(p)) if n != p => format!("Container {n} ({p})"),
                    (_, Some(p)) => format!("Container {p}"),
                    _ => format!("Container {cgroup_id}: not in this frame"),
                };
                let members: Vec<u32> = f
                    .procs
                    .iter()
                    .filter(|p| path.is_some() && p.cgroup.as_deref() == path)
                    .map(|p| p.pid)
                    .collect();
                let mut blocked: Vec<_> = f
                    .details
                    .iter()
                    .filter(|d| {
                        matches!(d.subject, Subject::Process { pid, .. } if members.contains(&pid))
                    })
                    .flat_map(|d| d.blocked.iter().cloned())
                    .collect();
                blocked.sort_by(|a, b| b.wait_s.total_cmp(&a.wait_s));
                let events = f
                    .events
                    .iter()
                    .filter(|e| {
                        path.is_some() && e.names.cgroup.as_deref() == path
                            || name.is_some() && e.names.container.as_deref() == name
                    })
                    .cloned()
                    .collect();
                Detail {
                    subject: s,
                    title,
                    alive: row.is_some(),
                    blocked,
                    rss,
                    faults_per_s: faults,
                    write_per_s: writes,
                    events,
                    members,
                }
            }
        }
    }
}

/// The last frame stamped at or before `t`.
fn at_or_before(frames: &[Loc], t: u64) -> Option<usize> {
    frames.partition_point(|l| l.unix_ms <= t).checked_sub(1)
}

/// The replay thread: applies the UI's moves and sends a frame after each
/// batch of them (a held key sends many; only the last position is drawn).
/// While the newest frame is on screen it looks for newer ones every
/// `REFRESH_EVERY`, so the title's count follows a recording that goes on.
pub(super) fn serve(
    mut r: Replay,
    mut want: Option<Subject>,
    rx: &mpsc::Receiver<Cmd>,
    stop: &AtomicBool,
    tx: &mpsc::SyncSender<Result<Frame, String>>,
) {
    let mut checked = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let mut changed = false;
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(cmd) => {
                let mut next = Some(cmd);
                while let Some(cmd) = next {
                    match cmd {
                        Cmd::Want(s) => want = s,
                        Cmd::Travel(t) => r.travel(t),
                    }
                    next = rx.try_recv().ok();
                }
                changed = true;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if r.at_end() && checked.elapsed() >= REFRESH_EVERY {
            checked = Instant::now();
            changed |= r.refresh();
        }
        if !changed {
            continue;
        }
        // Blocking: unlike a live frame, a move must not be dropped, and
        // the UI takes frames at least every 100 ms.
        if tx.send(r.frame(want)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;
    use crate::{
        record::{SCHEMA, Start, format::encode},
        top::{
            app::tests::{event, proc},
            frame::{BlockedThread, ContainerRow},
        },
    };

    /// 2026-11-23T03:00:00Z
    pub const T0: u64 = 1_795_402_800_000;

    /// Writes records to a segment named after the first one's time.
    pub struct StoreBuilder {
        dir: tempfile::TempDir,
        recs: Vec<Vec<u8>>,
        first: Option<u64>,
    }

    impl StoreBuilder {
        pub fn new(interval_s: f64) -> StoreBuilder {
            let mut b = StoreBuilder {
                dir: tempfile::tempdir().expect("tempdir"),
                recs: Vec::new(),
                first: None,
            };
            let start = Start {
                version: "test".into(),
                host: "box".into(),
                interval_s,
                ..Default::default()
            };
            b.push(RecordKind::Start, T0, &serde_json::to_vec(&start).unwrap());
            b
        }

        fn push(&mut self, kind: RecordKind, ms: u64, json: &[u8]) {
            self.first.get_or_insert(ms);
            self.recs.push(encode(kind, SCHEMA, ms, json));
        }

        pub fn frame(&mut self, f: &Frame) -> &mut Self {
            self.push(
                RecordKind::Frame,
                f.unix_ms,
                &serde_json::to_vec(f).unwrap(),
            );
            self
        }

        pub fn event(&mut self, ms: u64, e: &Event) -> &mut Self {
            self.push(RecordKind::Event, ms, &serde_json::to_vec(e).unwrap());
            self
        }

        /// Flips a byte in the payload of the last record.
        pub fn corrupt_last(&mut self) -> &mut Self {
            let rec = self.recs.last_mut().expect("a record");
            let at = rec.len() - 1;
            rec[at] ^= 0x40;
            self
        }

        /// Writes the segment; the store's directory.
        pub fn write(&self) -> &Path {
            let name = format!("{:016}.seg", self.first.unwrap_or(T0));
            let mut f = std::fs::File::create(self.dir.path().join(name)).unwrap();
            for r in &self.recs {
                f.write_all(r).unwrap();
            }
            self.dir.path()
        }
    }

    /// A frame at `T0 + secs`, with the workload (pid 42) at `rss` MiB.
    pub fn rec_frame(secs: u64, rss_mib: u64) -> Frame {
        let ms = T0 + secs * 1000;
        let mut p = proc(42, 1, "leaky", rss_mib << 20);
        p.cgroup = Some("/test.slice/w".into());
        p.write_per_s = Some(secs as f64);
        Frame {
            schema: 1,
            time: rfc3339(ms),
            unix_ms: ms,
            host: "box".into(),
            procs: vec![proc(1, 0, "init", 1 << 20), p],
            containers: vec![ContainerRow {
                cgroup_id: 7,
                path: "/test.slice/w".into(),
                name: "/test.slice/w".into(),
                rss: rss_mib << 20,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Frames every 5 s for a minute and a half, RSS growing a MiB a frame.
    fn store() -> StoreBuilder {
        let mut b = StoreBuilder::new(5.0);
        for i in 0..=18 {
            b.frame(&rec_frame(i * 5, 100 + i));
        }
        b
    }

    #[test]
    fn opens_at_the_frame_at_or_before() {
        let b = store();
        let dir = b.write();
        let mut r = Replay::open(dir, T0 + 12_000).unwrap();
        assert_eq!(r.time(), T0 + 10_000);
        let f = r.frame(None).unwrap();
        assert_eq!(f.unix_ms, T0 + 10_000);
        assert_eq!(f.procs[1].rss, 102 << 20);
        assert!(!f.mode.attached);
        assert!(is_replay(&f.mode), "{}", f.mode.describe);
        assert_eq!(
            f.mode.describe,
            format!(
                "replay: frame 3 of 19; 2026-11-23T03:00:10Z in {}",
                dir.display()
            )
        );
        // Exactly on a frame, and after the last.
        assert_eq!(Replay::open(dir, T0 + 15_000).unwrap().time(), T0 + 15_000);
        let r = Replay::open(dir, T0 + 3_600_000).unwrap();
        assert!(r.at_end());
        let f = Replay::open(dir, T0 + 3_600_000)
            .unwrap()
            .frame(None)
            .unwrap();
        assert!(
            f.mode.describe.contains("frame 19 of 19, the newest")
                && f.mode.describe.contains("nothing recorded nearer"),
            "{}",
            f.mode.describe
        );
    }

    #[test]
    fn before_the_first_frame() {
        let b = store();
        let dir = b.write();
        // Within one interval: the first frame.
        assert_eq!(Replay::open(dir, T0 - 4_000).unwrap().time(), T0);
        let err = Replay::open(dir, T0 - 60_000).err().expect("an error");
        let msg = err.to_string();
        assert!(matches!(err, ReplayError::Before { .. }), "{msg}");
        assert!(
            msg.starts_with("no recorded frame at or before 2026-11-23T02:59:00Z; the store at ")
                && msg.ends_with("covers 2026-11-23T03:00:00Z to 2026-11-23T03:01:30Z"),
            "{msg}"
        );
    }

    #[test]
    fn empty_and_missing_stores() {
        let b = StoreBuilder::new(5.0);
        let dir = b.write();
        let err = Replay::open(dir, T0).err().expect("an error");
        assert!(matches!(err, ReplayError::NoFrames { .. }), "{err}");
        assert!(err.to_string().contains("no recorded frame yet"), "{err}");
        let gone = dir.join("nope");
        let err = Replay::open(&gone, T0).err().expect("an error");
        assert!(
            matches!(err, ReplayError::Open(OpenError::Missing(_))),
            "{err}"
        );
        assert!(
            err.to_string().contains("no flight recorder store"),
            "{err}"
        );
    }

    #[test]
    fn steps_by_frame_and_minute_and_stays_at_the_ends() {
        let b = store();
        let mut r = Replay::open(b.write(), T0 + 30_000).unwrap();
        r.travel(Travel::Frames(1));
        assert_eq!(r.time(), T0 + 35_000);
        r.travel(Travel::Frames(-2));
        assert_eq!(r.time(), T0 + 25_000);
        r.travel(Travel::Seconds(60));
        assert_eq!(r.time(), T0 + 85_000);
        r.travel(Travel::Seconds(60));
        assert_eq!(r.time(), T0 + 90_000, "the last, not past it");
        r.travel(Travel::Frames(1));
        assert_eq!(r.time(), T0 + 90_000);
        assert!(r.at_end());
        r.travel(Travel::Seconds(-60));
        assert_eq!(r.time(), T0 + 30_000);
        r.travel(Travel::Seconds(-60));
        assert_eq!(r.time(), T0);
        r.travel(Travel::Frames(-1));
        assert_eq!(r.time(), T0);
        r.travel(Travel::Last);
        assert_eq!(r.time(), T0 + 90_000);
        r.travel(Travel::First);
        assert_eq!(r.time(), T0);
        let d = r.frame(None).unwrap().mode.describe;
        assert!(d.starts_with("replay: frame 1 of 19, the oldest; "), "{d}");
    }

    #[test]
    fn a_minute_forward_crosses_a_gap() {
        let mut b = StoreBuilder::new(5.0);
        b.frame(&rec_frame(0, 1)).frame(&rec_frame(3600, 2));
        let mut r = Replay::open(b.write(), T0).unwrap();
        r.travel(Travel::Seconds(60));
        assert_eq!(r.time(), T0 + 3_600_000);
        r.travel(Travel::Seconds(-60));
        assert_eq!(r.time(), T0);
        r.travel(Travel::Seconds(3600));
        assert_eq!(r.time(), T0 + 3_600_000);
    }

    #[test]
    fn events_of_the_hour_before_the_frame() {
        let mut b = StoreBuilder::new(5.0);
        let ev = |id: &str, ms: u64| {
            let mut e = event(id, &rfc3339(ms), Some(42), id);
            e.names.cgroup = Some("/test.slice/w".into());
            e
        };
        b.event(T0 - 3_700_000, &ev("too-old", T0 - 3_700_000));
        b.event(T0 - 100_000, &ev("old", T0 - 100_000));
        b.frame(&rec_frame(0, 1));
        b.event(T0 + 2_000, &ev("between", T0 + 2_000));
        b.frame(&rec_frame(5, 2));
        b.event(T0 + 6_000, &ev("later", T0 + 6_000));
        b.frame(&rec_frame(10, 3));
        let mut r = Replay::open(b.write(), T0).unwrap();
        let ids = |f: &Frame| f.events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&r.frame(None).unwrap()), ["old"]);
        r.travel(Travel::Frames(1));
        assert_eq!(ids(&r.frame(None).unwrap()), ["old", "between"]);
        r.travel(Travel::Frames(1));
        let f = r.frame(None).unwrap();
        assert_eq!(ids(&f), ["old", "between", "later"]);
        // A process's detail has its events; so has its container's.
        let d = r.frame(Some(Subject::Process {
            pid: 42,
            start: 1042,
        }));
        assert_eq!(d.unwrap().details[0].events.len(), 3);
        let d = r.frame(Some(Subject::Container { cgroup_id: 7 })).unwrap();
        assert_eq!(d.details[0].events.len(), 3);
        assert_eq!(d.details[0].members, [42]);
    }

    #[test]
    fn at_most_max_events_the_newest() {
        let mut b = StoreBuilder::new(5.0);
        for i in 0..(MAX_EVENTS as u64 + 20) {
            b.event(T0 + i, &event(&i.to_string(), &rfc3339(T0 + i), None, "x"));
        }
        b.frame(&rec_frame(5, 1));
        let f = Replay::open(b.write(), T0 + 5_000)
            .unwrap()
            .frame(None)
            .unwrap();
        assert_eq!(f.events.len(), MAX_EVENTS);
        assert_eq!(f.events[0].id, "20");
        assert_eq!(f.events.last().unwrap().id, (MAX_EVENTS + 19).to_string());
    }

    #[test]
    fn detail_sparklines_from_the_last_minute_and_recorded_stacks() {
        let mut b = StoreBuilder::new(5.0);
        for i in 0..=18u64 {
            let mut f = rec_frame(i * 5, 100 + i);
            if i == 17 {
                // Not among the leaders this time: no point.
                f.procs.retain(|p| p.pid != 42);
            }
            if i == 18 {
                f.details.push(Detail {
                    subject: Subject::Process {
                        pid: 42,
                        start: 1042,
                    },
                    title: "Process 42 (leaky)".into(),
                    alive: true,
                    blocked: vec![BlockedThread {
                        pid: 42,
                        tid: 43,
                        comm: Some("worker".into()),
                        wait_s: 12.0,
                        uaddr: 0x1000,
                        op: "wait".into(),
                        owner: Some(44),
                        stack: vec!["lock_a".into(), "main".into()],
                    }],
                    rss: Vec::new(),
                    faults_per_s: Vec::new(),
                    write_per_s: Vec::new(),
                    events: Vec::new(),
                    members: Vec::new(),
                });
            }
            b.frame(&f);
        }
        let mut r = Replay::open(b.write(), T0 + 90_000).unwrap();
        let want = Subject::Process {
            pid: 42,
            start: 1042,
        };
        let f = r.frame(Some(want)).unwrap();
        let d = f.detail(&want).expect("the detail");
        assert_eq!(d.title, "Process 42 (leaky)");
        // (30 s, 90 s]: frames 7..=18, frame 17 without the row.
        let mib: Vec<u64> = d.rss.iter().map(|b| b >> 20).collect();
        assert_eq!(mib, [107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 118]);
        assert_eq!(d.write_per_s.last(), Some(&90.0));
        assert_eq!(d.blocked.len(), 1);
        assert_eq!(d.blocked[0].stack[0], "lock_a");
        assert_eq!(f.details.len(), 1, "replaced, not doubled");
        // Blocked threads show in the container's detail too.
        let c = r.frame(Some(Subject::Container { cgroup_id: 7 })).unwrap();
        assert_eq!(c.details.iter().map(|d| d.blocked.len()).sum::<usize>(), 2);
        // A frame without the process says so.
        r.travel(Travel::Frames(-1));
        let f = r.frame(Some(want)).unwrap();
        let d = f.detail(&want).unwrap();
        assert!(d.title.contains("not in this frame"), "{}", d.title);
        assert!(d.blocked.is_empty());
    }

    #[test]
    fn a_corrupt_record_is_skipped_and_counted() {
        let mut b = StoreBuilder::new(5.0);
        b.frame(&rec_frame(0, 1));
        b.frame(&rec_frame(5, 2)).corrupt_last();
        b.event(T0 + 6_000, &event("bad", &rfc3339(T0 + 6_000), None, "x"))
            .corrupt_last();
        b.frame(&rec_frame(10, 3));
        let dir = b.write();
        // Asked for the corrupt one: the one before it.
        let mut r = Replay::open(dir, T0 + 5_000).unwrap();
        assert_eq!(r.time(), T0);
        // Stepping forward steps over it.
        r.travel(Travel::Frames(1));
        let f = r.frame(None).unwrap();
        assert_eq!(f.unix_ms, T0 + 10_000);
        assert!(f.events.is_empty());
        assert_eq!(r.corrupt(), 2);
        assert!(
            f.mode
                .describe
                .starts_with("replay: frame 3 of 3, the newest; 2 corrupt records skipped; "),
            "{}",
            f.mode.describe
        );
        // And back.
        r.travel(Travel::Frames(-1));
        assert_eq!(r.frame(None).unwrap().unix_ms, T0);
    }

    #[test]
    fn torn_tail_is_skipped() {
        let b = store();
        let dir = b.write();
        let seg = std::fs::read_dir(dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let len = std::fs::metadata(&seg).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 10).unwrap();
        let mut r = Replay::open(dir, u64::MAX).unwrap();
        assert_eq!(r.time(), T0 + 85_000);
        assert!(
            r.frame(None)
                .unwrap()
                .mode
                .describe
                .contains("1 corrupt record skipped")
        );
    }

    #[test]
    fn a_growing_store_is_seen_at_the_end() {
        let b = store();
        let dir = b.write();
        let mut r = Replay::open(dir, u64::MAX).unwrap();
        assert_eq!(r.time(), T0 + 90_000);
        assert!(!r.refresh(), "nothing new: no new index");
        // The daemon writes on, into a new segment as after a roll.
        let next = rec_frame(95, 200);
        let rec = encode(
            RecordKind::Frame,
            SCHEMA,
            next.unix_ms,
            &serde_json::to_vec(&next).unwrap(),
        );
        std::fs::write(dir.join(format!("{:016}.seg", next.unix_ms)), rec).unwrap();
        r.travel(Travel::Frames(1));
        assert_eq!(r.time(), T0 + 95_000);
        let f = r.frame(None).unwrap();
        assert_eq!(f.procs[1].rss, 200 << 20);
        assert!(
            f.mode.describe.contains("frame 20 of 20"),
            "{}",
            f.mode.describe
        );
    }

    #[test]
    fn serve_answers_moves_and_wants() {
        let b = store();
        let r = Replay::open(b.write(), T0).unwrap();
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (tx, rx) = mpsc::sync_channel(4);
        let h = std::thread::spawn(move || {
            let stop = AtomicBool::new(false);
            serve(r, None, &cmd_rx, &stop, &tx)
        });
        for _ in 0..3 {
            cmd_tx.send(Cmd::Travel(Travel::Frames(1))).unwrap();
        }
        let want = Subject::Container { cgroup_id: 7 };
        cmd_tx.send(Cmd::Want(Some(want))).unwrap();
        // A burst of moves may come as fewer frames; the last is where
        // they all lead.
        let mut last = None;
        while let Ok(f) = rx.recv_timeout(Duration::from_millis(500)) {
            last = Some(f.unwrap());
        }
        let f = last.expect("a frame");
        assert_eq!(f.unix_ms, T0 + 15_000);
        assert!(f.detail(&want).is_some());
        // The UI going away ends the thread.
        drop(cmd_tx);
        h.join().unwrap();
    }

    #[test]
    fn helpers() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(2000), "2,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(short(T0 + 5_123), "2026-11-23T03:00:05Z");
    }
}
