//! Drawing: turns an `App` (and the frame it holds) into widgets. Nothing
//! here changes state except the scroll offsets and page height, which only
//! drawing can know (they live in `Cell`s). Only the rows on screen become
//! widgets, so a long process list costs what the terminal shows.
use std::ops::Range;

use ratatui::{
    Frame as TermFrame,
    layout::{Alignment, Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span, Text},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, Wrap},
};

use super::{
    app::{App, ContCol, Input, ListPos, Popup, ProcCol, RowRef, Sig, SignalRequest, View, worst},
    frame::{BlockedThread, ContainerRow, Detail, Flag, ProcRow},
};
use crate::event::{Event, Severity, State};

pub fn draw(f: &mut TermFrame, app: &App) {
    let area = f.area();
    let status = status_line(app);
    let header_text = header_lines(app);
    let [title, header, tabs, body, status_area, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(header_text.len() as u16),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(u16::from(status.is_some())),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_title(f, app, title);
    f.render_widget(Paragraph::new(header_text), header);
    draw_tabs(f, app, tabs);
    match app.view {
        View::Processes => draw_procs(f, app, body),
        View::Containers => draw_containers(f, app, body),
        View::Events => draw_events(f, app, body),
        View::Detail => draw_detail(f, app, body),
    }
    if let Some(s) = status {
        f.render_widget(Paragraph::new(s), status_area);
    }
    draw_footer(f, app, footer);
    match &app.popup {
        Some(Popup::Help) => draw_help(f, area, app.replay),
        Some(Popup::Kill(req)) => draw_kill(f, req, area),
        Some(Popup::Event(ev)) => draw_event_popup(f, ev, area),
        None => {}
    }
}

// ---- units -----------------------------------------------------------------

/// Binary sizes the way top and htop print them: `512M`, `1.2G`, `4.0K`;
/// three significant characters at most, so the columns stay narrow.
pub fn size(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    if b == 0 {
        return "0".into();
    }
    let mut v = b as f64;
    let mut u = 0;
    // 999.5K would print as "1000K": step up before rounding can overflow.
    while v >= 999.5 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else if v < 9.95 {
        format!("{v:.1}{}", UNITS[u])
    } else {
        format!("{v:.0}{}", UNITS[u])
    }
}

/// Bytes per second; `-` when the rate is not known yet.
pub fn rate(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 0.5 => "0".into(),
        Some(v) => size(v.round() as u64),
    }
}

/// Growth, signed: `+12M`, `-3.0M`.
pub fn growth(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() < 0.5 => "0".into(),
        Some(v) => format!(
            "{}{}",
            if v > 0.0 { "+" } else { "-" },
            size(v.abs().round() as u64)
        ),
    }
}

/// Event counts per second (faults): `12`, `1.5k`, `3.2M`.
pub fn count(v: Option<f64>) -> String {
    let Some(v) = v else {
        return "-".into();
    };
    let v = v.max(0.0);
    if v < 9.95 && v.fract() != 0.0 && v >= 0.05 {
        return format!("{v:.1}");
    }
    let mut v = v;
    let mut unit = "";
    for u in ["k", "M", "G"] {
        if v < 999.5 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    if !unit.is_empty() && v < 9.95 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

pub fn pct(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 99.95 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
    }
}

/// Waits and durations: `4.2s`, `12s`, `3m05s`, `2h10m`, `3d04h`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "-".into();
    }
    let s = secs.max(0.0);
    if s < 9.95 {
        return format!("{s:.1}s");
    }
    let s = s.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn wait(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), duration)
}

fn sev_color(s: Severity) -> Color {
    match s {
        Severity::Critical => Color::Red,
        Severity::Warning => Color::Yellow,
        Severity::Info => Color::Cyan,
    }
}

fn sev_short(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "CRIT",
        Severity::Warning => "WARN",
        Severity::Info => "INFO",
    }
}

/// A row's style: the colour of its worst flag, reversed when selected.
fn row_style(flags: &[Flag], selected: bool) -> Style {
    let mut st = Style::new();
    if let Some(s) = worst(flags) {
        st = st.fg(sev_color(s));
        if s == Severity::Critical {
            st = st.add_modifier(Modifier::BOLD);
        }
    }
    if selected {
        st = st.add_modifier(Modifier::REVERSED);
    }
    st
}

fn flags_text(flags: &[Flag]) -> String {
    let mut out = String::new();
    for (i, f) in flags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&f.kind);
    }
    out
}

/// `HH:MM:SS` out of an RFC 3339 time; the date is noise on a live screen.
fn clock(ts: &str) -> &str {
    ts.get(11..19).unwrap_or(ts)
}

/// `2026-11-23 03:12:05 UTC` out of an RFC 3339 time: in a replay the date
/// is the point.
fn date_time(ts: &str) -> String {
    match (ts.get(..10), ts.get(11..19)) {
        (Some(d), Some(t)) => format!("{d} {t} UTC"),
        _ => ts.to_string(),
    }
}

// ---- title, header, tabs, footer --------------------------------------------

fn draw_title(f: &mut TermFrame, app: &App, area: Rect) {
    let fr = &app.frame;
    let bar = Style::new().bg(Color::Blue).fg(Color::White);
    let mut spans = vec![Span::styled("sentinel top", bar.bold())];
    // REPLAY and its time come first, so that no terminal is too narrow
    // for them: a recording must never pass for the live view.
    if app.replay && app.have_frame {
        spans.push(Span::raw("  "));
        spans.push(Span::styled(
            format!(" REPLAY {} ", date_time(&fr.time)),
            Style::new().bg(Color::Magenta).fg(Color::White).bold(),
        ));
    }
    if !fr.host.is_empty() {
        spans.push(Span::raw("  "));
        spans.push(Span::raw(fr.host.as_str()));
    }
    // PAUSED comes before the mode so a narrow terminal cannot cut it off.
    if app.paused {
        spans.push(Span::raw("  "));
        spans.push(Span::styled(
            "PAUSED",
            Style::new().bg(Color::Yellow).fg(Color::Black).bold(),
        ));
    }
    spans.push(Span::raw("  "));
    if app.have_frame {
        spans.push(Span::raw(fr.mode.describe.as_str()));
    } else {
        spans.push(Span::raw("waiting for data…"));
    }
    let left = Line::from(spans);
    let time = clock(&fr.time);
    f.render_widget(Paragraph::new(left).style(bar), area);
    let room = area.width as usize;
    // A replay's time is in its tag already.
    if app.have_frame
        && !app.replay
        && !time.is_empty()
        && left_width(&fr.mode.describe, app) + time.len() + 2 < room
    {
        f.render_widget(
            Paragraph::new(time).style(bar).alignment(Alignment::Right),
            area,
        );
    }
}

fn left_width(describe: &str, app: &App) -> usize {
    let paused = if app.paused { 8 } else { 0 };
    "sentinel top".len()
        + 2
        + app.frame.host.chars().count()
        + paused
        + 2
        + describe.chars().count()
}

fn header_lines(app: &App) -> Vec<Line<'static>> {
    let h = &app.frame.header;
    let label = |s: &'static str| Span::styled(s, Style::new().bold());
    let used = h.mem_total.saturating_sub(h.mem_available);
    let swap_used = h.swap_total.saturating_sub(h.swap_free);
    let oom = match h.mem_exhaustion_s {
        Some(s) => {
            let st = if s < 3600.0 {
                Style::new().fg(Color::Red).bold()
            } else {
                Style::new().fg(Color::Yellow)
            };
            Span::styled(duration(s), st)
        }
        None => Span::raw("-"),
    };
    let mem = Line::from(vec![
        label("Mem "),
        Span::raw(format!("{}/{}  ", size(used), size(h.mem_total))),
        label("Swap "),
        Span::raw(format!("{}/{}  ", size(swap_used), size(h.swap_total))),
        label("Load "),
        Span::raw(format!(
            "{:.2} {:.2} {:.2}  ",
            h.load[0], h.load[1], h.load[2]
        )),
        label("OOM in "),
        oom,
    ]);
    let psi = |p: Option<super::frame::Psi>| {
        p.map_or_else(|| "-".into(), |p| format!("{:.1}/{:.1}", p.some, p.full))
    };
    let open = |n: u32, word: &'static str, c: Color| {
        let st = if n > 0 {
            Style::new().fg(c).bold()
        } else {
            Style::new()
        };
        Span::styled(format!("{n} {word}"), st)
    };
    let pressure = Line::from(vec![
        label("PSI "),
        Span::raw(format!(
            "some/full mem {} io {}  ",
            psi(h.psi_memory),
            psi(h.psi_io)
        )),
        label("Open: "),
        open(h.open_critical, "crit", Color::Red),
        Span::raw(" "),
        open(h.open_warning, "warn", Color::Yellow),
    ]);
    let s = &h.sentinel;
    let mut me = vec![
        label("sentinel: "),
        Span::raw(format!("cpu {:.1}% rss {} drops ", s.cpu_pct, size(s.rss))),
    ];
    let drops_style = if s.dropped > 0 {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new()
    };
    me.push(Span::styled(s.dropped.to_string(), drops_style));
    if s.probes_total > 0 && s.probes_working < s.probes_total {
        me.push(Span::styled(
            format!("  probes {}/{}", s.probes_working, s.probes_total),
            Style::new().fg(Color::Yellow),
        ));
    }
    if !s.drops.is_empty() {
        let detail: Vec<String> = s.drops.iter().map(|(n, c)| format!("{n} {c}")).collect();
        me.push(Span::raw(format!("  ({})", detail.join(", "))));
    }
    let mut lines = vec![mem, pressure, Line::from(me)];
    if !s.probes_down.is_empty() {
        lines.push(Line::styled(
            format!("down: {}", s.probes_down.join("; ")),
            Style::new().fg(Color::Yellow),
        ));
    }
    lines
}

fn draw_tabs(f: &mut TermFrame, app: &App, area: Rect) {
    let mut spans = Vec::new();
    for (v, name) in [
        (View::Processes, "Processes"),
        (View::Containers, "Containers"),
        (View::Events, "Events"),
        (View::Detail, "Detail"),
    ] {
        let st = if app.view == v {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::new().fg(Color::DarkGray)
        };
        spans.push(Span::styled(format!(" {name} "), st));
    }
    let info = |s: String| Span::styled(s, Style::new().fg(Color::Cyan));
    let arrow = |desc: bool| if desc { "▼" } else { "▲" };
    match app.view {
        View::Processes => {
            spans.push(Span::raw(format!("  {} shown", app.procs.len())));
            let s = app.proc_sort;
            spans.push(info(format!(
                "  sort: {}{}",
                ProcCol::ALL[s.col].title(),
                arrow(s.desc)
            )));
            if app.tree {
                spans.push(info("  tree".into()));
            }
            if app.show_kernel {
                spans.push(info("  +kernel".into()));
            }
            if let Some(z) = &app.zoom {
                spans.push(Span::styled(
                    format!("  zoom: {}", z.name),
                    Style::new().fg(Color::Magenta).bold(),
                ));
            }
        }
        View::Containers => {
            spans.push(Span::raw(format!("  {} shown", app.conts.len())));
            let s = app.cont_sort;
            spans.push(info(format!(
                "  sort: {}{}",
                ContCol::ALL[s.col].title(),
                arrow(s.desc)
            )));
        }
        View::Events => spans.push(Span::raw(format!("  {} shown", app.events.len()))),
        View::Detail => {}
    }
    if !app.filter.is_empty() && app.view != View::Detail {
        spans.push(info(format!("  filter: {}", app.filter)));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// What the last action did and whether the feed is healthy.
fn status_line(app: &App) -> Option<Line<'static>> {
    let mut spans = Vec::new();
    if let Some(e) = &app.feed_error {
        spans.push(Span::styled(
            format!("{e} (showing the last frame)"),
            Style::new().fg(Color::Red).bold(),
        ));
    } else if let Some(s) = app.stale_s {
        spans.push(Span::styled(
            format!("no new data for {}", duration(s as f64)),
            Style::new().fg(Color::Yellow),
        ));
    }
    if let Some(s) = &app.status {
        if !spans.is_empty() {
            spans.push(Span::raw("  ·  "));
        }
        spans.push(Span::styled(s.clone(), Style::new().fg(Color::Yellow)));
    }
    (!spans.is_empty()).then(|| Line::from(spans))
}

/// The key hints in screen order, each with how soon it goes when the line
/// is too narrow (0: never), so `q Quit` is never the one cut off.
const HINTS: [(&str, &str, u8); 14] = [
    ("F1", "Help", 0),
    ("p", "Procs", 1),
    ("c", "Cgroups", 1),
    ("e", "Events", 1),
    ("Enter", "Detail", 1),
    ("/", "Search", 2),
    ("\\", "Filter", 4),
    ("<>", "Sort", 5),
    ("M", "Mem", 7),
    ("t", "Tree", 6),
    ("z", "Zoom", 6),
    ("Z", "Pause", 3),
    ("k", "Kill", 2),
    ("q", "Quit", 0),
];

/// In a replay: the time-travel keys instead of pause and kill.
const REPLAY_HINTS: [(&str, &str, u8); 15] = [
    ("F1", "Help", 0),
    ("←→", "Frame", 0),
    ("{}", "Minute", 2),
    ("gG", "First/Last", 3),
    ("p", "Procs", 1),
    ("c", "Cgroups", 1),
    ("e", "Events", 1),
    ("Enter", "Detail", 1),
    ("/", "Search", 4),
    ("\\", "Filter", 5),
    ("<>", "Sort", 6),
    ("M", "Mem", 8),
    ("t", "Tree", 7),
    ("z", "Zoom", 7),
    ("q", "Quit", 0),
];

fn draw_footer(f: &mut TermFrame, app: &App, area: Rect) {
    if let Some(input) = app.input {
        let (label, text, help) = match input {
            Input::Search => (
                "Search: ",
                &app.search,
                "   Enter keep  Esc cancel  F3 next",
            ),
            Input::Filter => ("Filter: ", &app.filter, "   Enter keep  Esc clear"),
        };
        let line = Line::from(vec![
            Span::styled(label, Style::new().bold()),
            Span::raw(text.clone()),
            Span::styled(help, Style::new().fg(Color::DarkGray)),
        ]);
        f.render_widget(Paragraph::new(line), area);
        let x = area.x + (label.len() + text.chars().count()) as u16;
        f.set_cursor_position((x.min(area.right().saturating_sub(1)), area.y));
        return;
    }
    // Two spaces between hints when they all fit, one when tight, then the
    // least important go.
    let hints: &[(&str, &str, u8)] = if app.replay { &REPLAY_HINTS } else { &HINTS };
    let width = area.width as usize;
    let total = |gap: usize, max_drop: u8| -> usize {
        hints
            .iter()
            .filter(|h| h.2 <= max_drop)
            .map(|(k, l, _)| k.chars().count() + 1 + l.len() + gap)
            .sum::<usize>()
            - gap
    };
    let gap = if total(2, u8::MAX) <= width { 2 } else { 1 };
    let mut max_drop = hints.iter().map(|h| h.2).max().unwrap_or(0);
    while max_drop > 0 && total(gap, max_drop) > width {
        max_drop -= 1;
    }
    let key_style = Style::new().bg(Color::Cyan).fg(Color::Black);
    let mut spans = Vec::new();
    for &(k, label, drop) in hints {
        if drop > max_drop {
            continue;
        }
        if !spans.is_empty() {
            spans.push(Span::raw(" ".repeat(gap)));
        }
        let label = if k == "Z" && app.paused {
            "Resume"
        } else {
            label
        };
        spans.push(Span::styled(k, key_style));
        spans.push(Span::raw(format!(" {label}")));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

// ---- tables -------------------------------------------------------------------

/// A column's width, how long it survives narrowing (0: always; the higher,
/// the sooner it goes) and whether it is a number (right-aligned).
#[derive(Clone, Copy)]
struct ColSpec {
    width: u16,
    drop: u8,
    right: bool,
    /// How much wider it may grow when the terminal has room: names are
    /// what a person reads first, and a cut one is ambiguous.
    grow: u16,
}

const fn col(width: u16, drop: u8, right: bool) -> ColSpec {
    ColSpec {
        width,
        drop,
        right,
        grow: 0,
    }
}

impl ColSpec {
    const fn grow(mut self, by: u16) -> ColSpec {
        self.grow = by;
        self
    }
}

fn proc_spec(c: ProcCol, tree: bool) -> ColSpec {
    match c {
        ProcCol::Pid => col(7, 0, true),
        ProcCol::User => col(8, 5, false),
        ProcCol::Command => col(if tree { 22 } else { 15 }, 0, false).grow(16),
        ProcCol::Container => col(14, 8, false).grow(16),
        ProcCol::Rss => col(6, 0, true),
        ProcCol::Grow => col(7, 0, true),
        ProcCol::Cpu => col(5, 1, true),
        ProcCol::Faults => col(6, 6, true),
        ProcCol::Blocked => col(3, 4, true),
        ProcCol::Wait => col(6, 3, true),
        ProcCol::Read => col(7, 7, true),
        ProcCol::Write => col(7, 2, true),
        ProcCol::Flags => col(8, 0, false).grow(16),
    }
}

fn cont_spec(c: ContCol) -> ColSpec {
    match c {
        ContCol::Name => col(24, 0, false).grow(48),
        ContCol::Procs => col(5, 5, true),
        ContCol::Rss => col(6, 0, true),
        ContCol::Anon => col(6, 6, true),
        ContCol::Grow => col(7, 0, true),
        ContCol::Cpu => col(5, 1, true),
        ContCol::Faults => col(6, 7, true),
        ContCol::Blocked => col(3, 4, true),
        ContCol::Wait => col(6, 3, true),
        ContCol::Read => col(7, 8, true),
        ContCol::Write => col(7, 2, true),
        ContCol::Flags => col(8, 0, false).grow(16),
    }
}

/// Which columns fit in `width`: the required ones, then the others from
/// the most to the least important, stopping at the first that does not fit
/// (so a narrower terminal never shows a less important column instead of
/// a more important one). The last column takes what is left.
fn fit(specs: &[ColSpec], width: u16) -> Vec<bool> {
    let mut keep: Vec<bool> = specs.iter().map(|s| s.drop == 0).collect();
    let used = |keep: &[bool]| -> usize {
        let n = keep.iter().filter(|k| **k).count();
        specs
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(s, _)| s.width as usize)
            .sum::<usize>()
            + n.saturating_sub(1)
    };
    let mut order: Vec<usize> = (0..specs.len()).filter(|&i| specs[i].drop > 0).collect();
    order.sort_by_key(|&i| specs[i].drop);
    for i in order {
        keep[i] = true;
        if used(&keep) > width as usize {
            keep[i] = false;
            break;
        }
    }
    keep
}

fn widths(specs: &[ColSpec], keep: &[bool], width: u16) -> Vec<Constraint> {
    let last = keep.iter().rposition(|k| *k);
    let kept = || specs.iter().zip(keep).filter(|(_, k)| **k).map(|(s, _)| s);
    let used = kept().map(|s| s.width).sum::<u16>() + (kept().count() as u16).saturating_sub(1);
    // The last column (FLAGS) fills what is left, and has the first claim
    // on the room: a cut flag hides what the detector said.
    let mut spare = width.saturating_sub(used);
    if let Some(l) = last {
        spare -= specs[l].grow.min(spare);
    }
    specs
        .iter()
        .enumerate()
        .filter(|(i, _)| keep[*i])
        .map(|(i, s)| {
            if Some(i) == last {
                Constraint::Fill(1)
            } else {
                let extra = s.grow.min(spare);
                spare -= extra;
                Constraint::Length(s.width + extra)
            }
        })
        .collect()
}

fn header_row<'a>(titles: impl Iterator<Item = (&'a str, ColSpec, bool)>) -> Row<'a> {
    Row::new(titles.map(|(t, spec, sorted)| {
        let st = if sorted {
            Style::new()
                .fg(Color::Cyan)
                .add_modifier(Modifier::UNDERLINED)
        } else {
            Style::new()
        };
        cell(t.to_string(), spec.right).style(st)
    }))
    .style(Style::new().bold().bg(Color::DarkGray).fg(Color::White))
}

fn cell(s: String, right: bool) -> Cell<'static> {
    let line = Line::from(s);
    Cell::from(if right { line.right_aligned() } else { line })
}

/// The rows of a list that fit in `height`, scrolled so the cursor shows.
fn window(pos: &ListPos, len: usize, height: usize) -> Range<usize> {
    let height = height.max(1);
    let mut off = pos.offset.get().min(len.saturating_sub(height));
    if pos.cursor < off {
        off = pos.cursor;
    } else if pos.cursor >= off + height {
        off = pos.cursor + 1 - height;
    }
    pos.offset.set(off);
    off..(off + height).min(len)
}

fn empty_note(f: &mut TermFrame, app: &App, area: Rect, what: &str) {
    let msg = if !app.have_frame {
        "waiting for the first frame…".to_string()
    } else if !app.filter.is_empty() {
        format!("no {what} match \"{}\"", app.filter)
    } else {
        format!("no {what}")
    };
    f.render_widget(
        Paragraph::new(msg).style(Style::new().fg(Color::DarkGray)),
        area,
    );
}

fn draw_procs(f: &mut TermFrame, app: &App, area: Rect) {
    let specs: Vec<ColSpec> = ProcCol::ALL
        .iter()
        .map(|&c| proc_spec(c, app.tree))
        .collect();
    let procs = &app.frame.procs;
    draw_table(
        f,
        app,
        area,
        TableView {
            cols: &ProcCol::ALL,
            specs: &specs,
            sorted: ProcCol::ALL[app.proc_sort.col],
            title: |c| c.title(),
            list: &app.procs,
            pos: &app.procs_pos,
            what: "processes",
        },
        |r, c| proc_cell(&procs[r.idx as usize], c, r),
        |r| &procs[r.idx as usize].flags,
    );
}

/// What a table view shows: its columns, their specs, the sort column, and
/// the rows (indices into the frame) with the selection.
struct TableView<'a, C> {
    cols: &'a [C],
    specs: &'a [ColSpec],
    sorted: C,
    title: fn(C) -> &'static str,
    list: &'a [RowRef],
    pos: &'a ListPos,
    what: &'static str,
}

/// The columns that fit, the header with the sort mark, and only the rows
/// on screen turned into widgets.
fn draw_table<'a, C: Copy + PartialEq>(
    f: &mut TermFrame,
    app: &App,
    area: Rect,
    t: TableView<'a, C>,
    cell_text: impl Fn(&RowRef, C) -> String,
    flags: impl Fn(&RowRef) -> &'a [Flag],
) {
    let keep = fit(t.specs, area.width);
    let shown = || {
        t.cols
            .iter()
            .zip(t.specs)
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|((&c, s), _)| (c, *s))
    };
    let header = header_row(shown().map(|(c, s)| ((t.title)(c), s, c == t.sorted)));
    let [head, rows_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let height = rows_area.height as usize;
    app.page.set(height);
    let range = window(t.pos, t.list.len(), height);
    let rows = t.list[range.clone()].iter().enumerate().map(|(i, r)| {
        let selected = range.start + i == t.pos.cursor;
        Row::new(shown().map(|(c, s)| cell(cell_text(r, c), s.right)))
            .style(row_style(flags(r), selected))
    });
    let table = Table::new(rows, widths(t.specs, &keep, area.width))
        .header(header)
        .column_spacing(1);
    if t.list.is_empty() {
        f.render_widget(table, head);
        empty_note(f, app, rows_area, t.what);
        return;
    }
    f.render_widget(table, area);
}

fn proc_cell(p: &ProcRow, c: ProcCol, r: &RowRef) -> String {
    match c {
        ProcCol::Pid => p.pid.to_string(),
        ProcCol::User => p.user.clone(),
        ProcCol::Command => {
            let name = if p.kernel {
                format!("[{}]", p.comm)
            } else {
                p.comm.clone()
            };
            indent(r.depth, &name)
        }
        ProcCol::Container => p.container.clone().unwrap_or_else(|| "-".into()),
        ProcCol::Rss => size(p.rss),
        ProcCol::Grow => growth(p.rss_growth_per_min),
        ProcCol::Cpu => pct(p.cpu_pct),
        ProcCol::Faults => count(p.faults_per_s),
        ProcCol::Blocked => p.blocked.to_string(),
        ProcCol::Wait => wait(p.longest_wait_s),
        ProcCol::Read => rate(p.read_per_s),
        ProcCol::Write => rate(p.write_per_s),
        ProcCol::Flags => flags_text(&p.flags),
    }
}

/// Tree rows: two spaces a level, and a corner marking the child.
fn indent(depth: u16, name: &str) -> String {
    if depth == 0 {
        return name.to_string();
    }
    format!("{}└ {name}", "  ".repeat(depth as usize - 1))
}

fn draw_containers(f: &mut TermFrame, app: &App, area: Rect) {
    let specs: Vec<ColSpec> = ContCol::ALL.iter().map(|&c| cont_spec(c)).collect();
    let conts = &app.frame.containers;
    draw_table(
        f,
        app,
        area,
        TableView {
            cols: &ContCol::ALL,
            specs: &specs,
            sorted: ContCol::ALL[app.cont_sort.col],
            title: |c| c.title(),
            list: &app.conts,
            pos: &app.conts_pos,
            what: "containers",
        },
        |r, c| cont_cell(&conts[r.idx as usize], c, r),
        |r| &conts[r.idx as usize].flags,
    );
}

/// A cgroup's name in the tree: the runtime's name when it has one, else
/// the last path component (its parents are the rows above).
fn cont_name(c: &ContainerRow) -> &str {
    if c.name == c.path || c.name.is_empty() {
        c.path
            .rsplit('/')
            .find(|s| !s.is_empty())
            .unwrap_or(&c.path)
    } else {
        &c.name
    }
}

fn cont_cell(c: &ContainerRow, col: ContCol, r: &RowRef) -> String {
    match col {
        ContCol::Name => indent(r.depth, cont_name(c)),
        ContCol::Procs => c.procs.to_string(),
        ContCol::Rss => size(c.rss),
        ContCol::Anon => size(c.anon),
        ContCol::Grow => growth(c.rss_growth_per_min),
        ContCol::Cpu => pct(c.cpu_pct),
        ContCol::Faults => count(c.faults_per_s),
        ContCol::Blocked => c.blocked.to_string(),
        ContCol::Wait => wait(c.longest_wait_s),
        ContCol::Read => rate(c.read_per_s),
        ContCol::Write => rate(c.write_per_s),
        ContCol::Flags => flags_text(&c.flags),
    }
}

const EVENT_COLS: [(&str, ColSpec); 6] = [
    ("TIME", col(8, 0, false)),
    ("SEV", col(4, 0, false)),
    ("KIND", col(16, 0, false)),
    ("STATE", col(8, 2, false)),
    ("SUBJECT", col(18, 1, false)),
    ("SUMMARY", col(20, 0, false)),
];

fn event_subject(e: &Event) -> String {
    let n = &e.names;
    match (n.pid, &n.comm, &n.container, &n.cgroup) {
        (Some(pid), Some(comm), _, _) => format!("{pid} {comm}"),
        (Some(pid), None, _, _) => pid.to_string(),
        (None, _, Some(c), _) => c.clone(),
        (None, _, None, Some(cg)) => cg.clone(),
        _ => e.subject.clone(),
    }
}

fn event_style(e: &Event) -> Style {
    match e.state {
        State::Firing => Style::new().fg(sev_color(e.severity)),
        State::Resolved => Style::new().fg(Color::DarkGray),
    }
}

fn event_cells(e: &Event) -> [String; 6] {
    [
        clock(&e.ts).to_string(),
        sev_short(e.severity).to_string(),
        e.kind.name().to_string(),
        e.state.name().to_string(),
        event_subject(e),
        e.summary.clone(),
    ]
}

fn draw_events(f: &mut TermFrame, app: &App, area: Rect) {
    let specs: Vec<ColSpec> = EVENT_COLS.iter().map(|c| c.1).collect();
    let keep = fit(&specs, area.width);
    let header = header_row(
        EVENT_COLS
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|((t, s), _)| (*t, *s, false)),
    );
    let [head, rows_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let height = rows_area.height as usize;
    app.page.set(height);
    let range = window(&app.events_pos, app.events.len(), height);
    let rows = app.events[range.clone()].iter().enumerate().map(|(i, &e)| {
        let ev = &app.frame.events[e as usize];
        let mut st = event_style(ev);
        if range.start + i == app.events_pos.cursor {
            st = st.add_modifier(Modifier::REVERSED);
        }
        Row::new(
            event_cells(ev)
                .into_iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(s, _)| Cell::from(s)),
        )
        .style(st)
    });
    let table = Table::new(rows, widths(&specs, &keep, area.width))
        .header(header)
        .column_spacing(1);
    if app.events.is_empty() {
        f.render_widget(table, head);
        empty_note(f, app, rows_area, "events");
        return;
    }
    f.render_widget(table, area);
}

// ---- detail -------------------------------------------------------------------

fn draw_detail(f: &mut TermFrame, app: &App, area: Rect) {
    let Some(focus) = &app.focus else {
        return;
    };
    let detail = app.frame.detail(&focus.subject);
    let summary_lines = pack(&detail_summary(app), area.width as usize);
    let [title, summary, sparks, blocked, events] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(summary_lines.len().clamp(1, 2) as u16),
        Constraint::Length(5),
        Constraint::Fill(3),
        Constraint::Fill(2),
    ])
    .areas(area);

    let mut t = vec![Span::styled(
        detail
            .map_or(focus.title.as_str(), |d| d.title.as_str())
            .to_string(),
        Style::new().bold(),
    )];
    let gone = match detail {
        Some(d) => !d.alive,
        None => app.focus_proc().is_none() && app.focus_container().is_none(),
    };
    if gone {
        t.push(Span::styled("  (gone)", Style::new().fg(Color::Red)));
    }
    if detail.is_none() {
        t.push(Span::styled("  loading…", Style::new().fg(Color::DarkGray)));
    }
    f.render_widget(Paragraph::new(Line::from(t)), title);
    f.render_widget(Paragraph::new(summary_lines), summary);
    draw_sparklines(f, detail, sparks);
    draw_blocked(f, app, detail, blocked);
    draw_detail_events(f, detail, events);
}

/// The subject's numbers as label/value pairs, most telling first.
fn detail_summary(app: &App) -> Vec<(&'static str, String)> {
    let mut pairs = Vec::new();
    if let Some(p) = app.focus_proc() {
        pairs.push(("RSS", size(p.rss)));
        pairs.push(("GROW/m", growth(p.rss_growth_per_min)));
        pairs.push(("CPU%", pct(p.cpu_pct)));
        pairs.push(("FLT/s", count(p.faults_per_s)));
        pairs.push(("majflt/s", count(p.majflt_per_s)));
        pairs.push(("READ/s", rate(p.read_per_s)));
        pairs.push(("WRITE/s", rate(p.write_per_s)));
        pairs.push(("threads", p.threads.to_string()));
        pairs.push(("state", p.state.to_string()));
        pairs.push(("user", p.user.clone()));
        if let Some(c) = p.container.as_ref().or(p.cgroup.as_ref()) {
            pairs.push(("cgroup", c.clone()));
        }
    } else if let Some(c) = app.focus_container() {
        pairs.push(("procs", c.procs.to_string()));
        pairs.push(("threads", c.threads.to_string()));
        pairs.push(("RSS", size(c.rss)));
        pairs.push(("ANON", size(c.anon)));
        pairs.push(("GROW/m", growth(c.rss_growth_per_min)));
        pairs.push(("CPU%", pct(c.cpu_pct)));
        pairs.push(("WRITE/s", rate(c.write_per_s)));
        if let Some(r) = &c.runtime {
            pairs.push(("runtime", r.clone()));
        }
        pairs.push(("path", c.path.clone()));
    }
    pairs
}

/// Packs label/value pairs into lines of `width`, never splitting a pair.
fn pack(pairs: &[(&'static str, String)], width: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let mut spans = Vec::new();
    let mut used = 0;
    for (k, v) in pairs {
        let len = k.len() + 1 + v.chars().count();
        if used > 0 && used + 2 + len > width {
            lines.push(Line::from(std::mem::take(&mut spans)));
            used = 0;
        }
        if used > 0 {
            spans.push(Span::raw("  "));
            used += 2;
        }
        spans.push(Span::styled(
            format!("{k} "),
            Style::new().fg(Color::DarkGray),
        ));
        spans.push(Span::raw(v.clone()));
        used += len;
    }
    if !spans.is_empty() {
        lines.push(Line::from(spans));
    }
    lines
}

fn draw_sparklines(f: &mut TermFrame, detail: Option<&Detail>, area: Rect) {
    let [a, b, c] = Layout::horizontal([Constraint::Fill(1); 3]).areas(area);
    let rss: Vec<u64> = detail.map(|d| d.rss.clone()).unwrap_or_default();
    let faults: Vec<u64> = detail.map_or_else(Vec::new, |d| to_points(&d.faults_per_s));
    let writes: Vec<u64> = detail.map_or_else(Vec::new, |d| to_points(&d.write_per_s));
    let last = |v: &[u64]| v.last().copied();
    spark(f, a, "RSS", last(&rss).map(size), &rss, Color::Green);
    spark(
        f,
        b,
        "Faults/s",
        last(&faults).map(|v| count(Some(v as f64))),
        &faults,
        Color::Yellow,
    );
    spark(
        f,
        c,
        "Write/s",
        last(&writes).map(|v| rate(Some(v as f64))),
        &writes,
        Color::Magenta,
    );
}

fn to_points(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.max(0.0).round() as u64).collect()
}

fn spark(f: &mut TermFrame, area: Rect, name: &str, now: Option<String>, data: &[u64], c: Color) {
    let title = match now {
        Some(v) => format!(" {name} {v} "),
        None => format!(" {name} "),
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    // The newest points that fit: one column a sample, right edge is now.
    let room = block.inner(area).width as usize;
    let data = &data[data.len().saturating_sub(room)..];
    f.render_widget(
        Sparkline::default()
            .block(block)
            .data(data)
            .style(Style::new().fg(c)),
        area,
    );
}

fn draw_blocked(f: &mut TermFrame, app: &App, detail: Option<&Detail>, area: Rect) {
    let threads: Vec<&BlockedThread> = {
        let mut v: Vec<&BlockedThread> = detail
            .map(|d| d.blocked.iter().collect())
            .unwrap_or_default();
        // Longest wait first: the thread most likely stuck.
        v.sort_by(|a, b| b.wait_s.total_cmp(&a.wait_s));
        v
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" Blocked threads ({}) ", threads.len()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if threads.is_empty() {
        let msg = if detail.is_some() {
            "no thread is blocked in a futex wait"
        } else {
            "loading…"
        };
        f.render_widget(
            Paragraph::new(msg).style(Style::new().fg(Color::DarkGray)),
            inner,
        );
        return;
    }
    // Two lines a thread: the wait, then its stack, which needs the width.
    let per_page = ((inner.height as usize).saturating_sub(1) / 2).max(1);
    let first = app
        .detail_scroll
        .min(threads.len().saturating_sub(per_page));
    let mut lines = vec![Line::styled(
        format!(
            "{:>7} {:<15} {:>6} {:<16} {:<10} {:>7}",
            "TID", "COMM", "WAIT", "FUTEX", "OP", "OWNER"
        ),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    for t in threads.iter().skip(first).take(per_page) {
        let st = if t.wait_s >= 60.0 {
            Style::new().fg(Color::Red)
        } else if t.wait_s >= 10.0 {
            Style::new().fg(Color::Yellow)
        } else {
            Style::new()
        };
        lines.push(Line::styled(
            format!(
                "{:>7} {:<15} {:>6} {:<16} {:<10} {:>7}",
                t.tid,
                t.comm.as_deref().unwrap_or("-"),
                duration(t.wait_s),
                format!("{:#x}", t.uaddr),
                t.op,
                t.owner.map_or_else(|| "-".into(), |o| o.to_string()),
            ),
            st,
        ));
        let stack: Vec<&str> = t.stack.iter().take(6).map(String::as_str).collect();
        let stack = if stack.is_empty() {
            "no stack".to_string()
        } else {
            stack.join(" < ")
        };
        lines.push(Line::styled(
            format!("        at {stack}"),
            Style::new().fg(Color::DarkGray),
        ));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn draw_detail_events(f: &mut TermFrame, detail: Option<&Detail>, area: Rect) {
    let block = Block::default().borders(Borders::ALL).title(" Events ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(d) = detail else {
        return;
    };
    if d.events.is_empty() {
        f.render_widget(
            Paragraph::new("none").style(Style::new().fg(Color::DarkGray)),
            inner,
        );
        return;
    }
    let lines: Vec<Line> = d
        .events
        .iter()
        .rev()
        .take(inner.height as usize)
        .map(|e| {
            Line::styled(
                format!(
                    "{} {} {} {}: {}",
                    clock(&e.ts),
                    sev_short(e.severity),
                    e.kind.name(),
                    e.state.name(),
                    e.summary
                ),
                event_style(e),
            )
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

// ---- popups -------------------------------------------------------------------

/// A box of at most `w`x`h` in the middle of `area`, cleared.
fn popup_area(f: &mut TermFrame, area: Rect, w: u16, h: u16) -> Rect {
    let r = area.centered(
        Constraint::Length(w.min(area.width)),
        Constraint::Length(h.min(area.height)),
    );
    f.render_widget(Clear, r);
    r
}

const HELP: [(&str, &str); 19] = [
    ("F1 h ?", "this help (any key closes it)"),
    ("p c e", "processes, containers (cgroup tree), events"),
    (
        "Enter",
        "detail of the selected process, container or event",
    ),
    ("Esc BkSp", "back: leave detail, unzoom, clear the filter"),
    ("/", "search (as you type); Enter keeps, Esc cancels"),
    ("n F3", "next search match"),
    ("\\", "filter by command, user, pid or container"),
    ("< > F6", "previous / next sort column"),
    ("I", "invert the sort"),
    ("M P", "sort by memory (RSS) / CPU"),
    ("t", "process tree (by parent pid)"),
    ("K", "show / hide kernel threads"),
    (
        "z",
        "zoom: processes of the selected cgroup; z again unzooms",
    ),
    ("Z", "pause the display (data keeps coming)"),
    ("F9 k", "send a signal to the selected process (asks first)"),
    ("↑ ↓", "move the selection"),
    ("PgUp PgDn", "move a page"),
    ("Home End", "first / last row"),
    ("q F10 ^C", "quit"),
];

/// A replay's own keys, first in its help; pause and signals are left out.
const REPLAY_HELP: [(&str, &str); 4] = [
    ("← → [ ]", "one recorded frame back / forward"),
    ("{ } ⇧← ⇧→", "one minute back / forward"),
    ("( )", "one hour back / forward"),
    (
        "g G",
        "first / last frame (G also finds frames recorded since)",
    ),
];

fn draw_help(f: &mut TermFrame, area: Rect, replay: bool) {
    let keys: Vec<&(&str, &str)> = if replay {
        REPLAY_HELP
            .iter()
            .chain(HELP.iter().filter(|(k, _)| !matches!(*k, "Z" | "F9 k")))
            .collect()
    } else {
        HELP.iter().collect()
    };
    let lines: Vec<Line> = keys
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:<10}"), Style::new().fg(Color::Cyan).bold()),
                Span::raw(" "),
                Span::raw(*what),
            ])
        })
        .collect();
    let r = popup_area(f, area, 70, keys.len() as u16 + 2);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(if replay {
            " Help: keys (replay) "
        } else {
            " Help: keys "
        })
        .border_style(Style::new().fg(Color::Cyan));
    f.render_widget(Paragraph::new(lines).block(block), r);
}

fn draw_kill(f: &mut TermFrame, req: &SignalRequest, area: Rect) {
    let question = format!("Send {} to {} ({})?", req.sig.name(), req.pid, req.comm);
    let mut choices = Vec::new();
    for (i, s) in Sig::ALL.iter().enumerate() {
        let label = format!("{} {}", i + 1, s.name().trim_start_matches("SIG"));
        let st = if *s == req.sig {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::new()
        };
        choices.push(Span::styled(label, st));
        choices.push(Span::raw(" "));
    }
    let text = Text::from(vec![
        Line::styled(question, Style::new().bold()),
        Line::raw(""),
        Line::from(choices),
        Line::raw(""),
        Line::styled(
            "←/→ or 1-6 choose   y/Enter send   n/Esc cancel",
            Style::new().fg(Color::DarkGray),
        ),
    ]);
    let r = popup_area(f, area, 60, 7);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" Send signal ")
        .border_style(Style::new().fg(Color::Red));
    f.render_widget(
        Paragraph::new(text).block(block).wrap(Wrap { trim: false }),
        r,
    );
}

fn draw_event_popup(f: &mut TermFrame, e: &Event, area: Rect) {
    let mut lines = vec![
        Line::styled(
            format!(
                "{}  {}  {}  {}",
                e.ts,
                sev_short(e.severity),
                e.kind.name(),
                e.state.name()
            ),
            event_style(e).bold(),
        ),
        Line::raw(format!("{}: {}", e.subject, event_subject(e))),
        Line::raw(""),
        Line::raw(e.summary.clone()),
        Line::raw(""),
        Line::styled("evidence:", Style::new().bold()),
    ];
    let evidence =
        serde_json::to_string_pretty(&e.evidence).unwrap_or_else(|_| e.evidence.to_string());
    lines.extend(evidence.lines().map(|l| Line::raw(l.to_string())));
    let r = popup_area(
        f,
        area,
        area.width.saturating_sub(8).max(40),
        area.height.saturating_sub(4).max(8),
    );
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" Event (Esc closes) ");
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        r,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend, crossterm::event::KeyCode};

    use super::*;
    use crate::top::{
        app::tests::{container, event, frame, key, press, proc},
        frame::{Frame, Mode, Subject},
        text::buffer_lines,
    };

    fn render(app: &App, w: u16, h: u16) -> (Vec<String>, ratatui::buffer::Buffer) {
        let Ok(mut term) = Terminal::new(TestBackend::new(w, h));
        let Ok(_) = term.draw(|f| draw(f, app));
        let buf = term.backend().buffer().clone();
        (buffer_lines(&buf), buf)
    }

    fn screen(app: &App, w: u16, h: u16) -> String {
        render(app, w, h).0.join("\n")
    }

    fn flagged(kind: &str, severity: Severity) -> Vec<Flag> {
        vec![Flag {
            kind: kind.into(),
            severity,
        }]
    }

    fn rich() -> Frame {
        let mut leak = proc(4242, 1, "leaky", 3 << 30);
        leak.container = Some("web".into());
        leak.cgroup = Some("/system.slice/web.service".into());
        leak.rss_growth_per_min = Some(12.0 * 1024.0 * 1024.0);
        leak.cpu_pct = Some(12.5);
        leak.faults_per_s = Some(1500.0);
        leak.blocked = 2;
        leak.longest_wait_s = Some(185.0);
        leak.write_per_s = Some(3.0 * 1024.0 * 1024.0);
        leak.flags = flagged("memory_bloat", Severity::Critical);
        let mut db = proc(77, 1, "postgres", 512 << 20);
        db.flags = flagged("write_anomaly", Severity::Warning);
        db.cgroup = Some("/system.slice/db.service".into());
        let mut f = frame(vec![
            proc(1, 0, "init", 8 << 20),
            leak,
            db,
            proc(78, 77, "pg-writer", 64 << 20),
        ]);
        f.mode = Mode {
            attached: true,
            replay: false,
            describe: "attached to the daemon (pid 9) at /run/sentinel/sentinel.sock".into(),
        };
        f.time = "2026-03-01T12:34:56.000Z".into();
        f.header.mem_total = 16 << 30;
        f.header.mem_available = 4 << 30;
        f.header.swap_total = 2 << 30;
        f.header.swap_free = 2 << 30;
        f.header.load = [1.5, 0.75, 0.25];
        f.header.mem_exhaustion_s = Some(185.0);
        f.header.open_critical = 1;
        f.header.open_warning = 2;
        f.header.psi_memory = Some(super::super::frame::Psi {
            some: 12.5,
            full: 3.0,
        });
        f.header.sentinel.cpu_pct = 0.8;
        f.header.sentinel.rss = 45 << 20;
        f.containers = vec![
            container(10, "/system.slice", "system.slice", 600 << 20),
            container(11, "/system.slice/db.service", "db", 576 << 20),
            container(12, "/system.slice/web.service", "web", 3 << 30),
        ];
        f.events = vec![
            event(
                "e1",
                "2026-03-01T12:30:00.000Z",
                Some(77),
                "postgres writes 40 MB/s",
            ),
            event(
                "e2",
                "2026-03-01T12:33:00.000Z",
                Some(4242),
                "leaky grows 12 MB/min",
            ),
        ];
        f
    }

    fn app_with(f: Frame) -> App {
        let mut app = App::new();
        app.on_frame(f);
        app
    }

    #[test]
    fn units() {
        assert_eq!(size(0), "0");
        assert_eq!(size(512), "512B");
        assert_eq!(size(4096), "4.0K");
        assert_eq!(size(512 << 20), "512M");
        assert_eq!(size(1288490188), "1.2G");
        assert_eq!(size(1023 << 10), "1.0M");
        assert_eq!(rate(None), "-");
        assert_eq!(rate(Some(0.1)), "0");
        assert_eq!(growth(Some(-3.0 * 1048576.0)), "-3.0M");
        assert_eq!(growth(Some(12.0 * 1048576.0)), "+12M");
        assert_eq!(count(Some(1500.0)), "1.5k");
        assert_eq!(count(Some(12.0)), "12");
        assert_eq!(count(Some(0.0)), "0");
        assert_eq!(duration(4.2), "4.2s");
        assert_eq!(duration(12.0), "12s");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(7800.0), "2h10m");
        assert_eq!(duration(3.0 * 86400.0 + 4.0 * 3600.0), "3d04h");
        assert_eq!(pct(Some(350.0)), "350");
    }

    #[test]
    fn processes_view() {
        let app = app_with(rich());
        let s = screen(&app, 160, 30);
        let lines: Vec<&str> = s.lines().collect();
        assert!(
            lines[0].starts_with("sentinel top  box  attached to the daemon"),
            "{s}"
        );
        assert!(lines[0].ends_with("12:34:56"), "{s}");
        assert!(s.contains("Mem 12G/16G"), "{s}");
        assert!(s.contains("Swap 0/2.0G"), "{s}");
        assert!(s.contains("Load 1.50 0.75 0.25"), "{s}");
        assert!(s.contains("OOM in 3m05s"), "{s}");
        assert!(s.contains("PSI some/full mem 12.5/3.0 io -"), "{s}");
        assert!(s.contains("Open: 1 crit 2 warn"), "{s}");
        assert!(s.contains("sentinel: cpu 0.8% rss 45M drops 0"), "{s}");
        assert!(s.contains("Processes"), "{s}");
        let header = lines.iter().find(|l| l.contains("PID")).expect("header");
        let words: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(
            words,
            [
                "PID",
                "USER",
                "COMMAND",
                "CONTAINER",
                "RSS",
                "GROW/m",
                "CPU%",
                "FLT/s",
                "BLK",
                "WAIT",
                "READ/s",
                "WRITE/s",
                "FLAGS"
            ]
        );
        let leak = lines.iter().find(|l| l.contains("leaky")).expect("row");
        let words: Vec<&str> = leak.split_whitespace().collect();
        assert_eq!(
            words,
            [
                "4242",
                "alice",
                "leaky",
                "web",
                "3.0G",
                "+12M",
                "12.5",
                "1.5k",
                "2",
                "3m05s",
                "-",
                "3.0M",
                "memory_bloat"
            ]
        );
        // RSS descending: leaky, postgres, pg-writer, init.
        let order: Vec<usize> = ["leaky", "postgres", "pg-writer", "init"]
            .iter()
            .map(|c| s.find(c).expect(c))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{s}");
        assert!(
            lines
                .last()
                .is_some_and(|l| l.contains("F1 Help") && l.contains("q Quit"))
        );
    }

    #[test]
    fn flagged_rows_take_their_severity_colour() {
        let mut app = app_with(rich());
        app.on_key(key(KeyCode::Down)); // off the critical row, so it is not reversed
        let (lines, buf) = render(&app, 160, 30);
        let y = lines.iter().position(|l| l.contains("leaky")).expect("row") as u16;
        let x = lines[y as usize].find("leaky").expect("x") as u16;
        assert_eq!(buf[(x, y)].fg, Color::Red);
        let y = lines
            .iter()
            .position(|l| l.contains("postgres"))
            .expect("row") as u16;
        assert_eq!(buf[(x, y)].fg, Color::Yellow);
        assert!(
            buf[(x, y)].modifier.contains(Modifier::REVERSED),
            "selected"
        );
        let y = lines.iter().position(|l| l.contains(" init")).expect("row") as u16;
        assert_eq!(buf[(x, y)].fg, Color::Reset);
    }

    #[test]
    fn narrow_terminal_keeps_the_required_columns() {
        let app = app_with(rich());
        let (lines, _) = render(&app, 80, 24);
        let header = lines.iter().find(|l| l.contains("PID")).expect("header");
        for col in ["PID", "COMMAND", "RSS", "GROW/m", "FLAGS"] {
            assert!(header.contains(col), "{col} missing: {header}");
        }
        assert!(!header.contains("CONTAINER"), "{header}");
        assert!(lines.iter().all(|l| l.chars().count() <= 80));
        assert!(
            lines.iter().any(|l| l.contains("memory_bloat")),
            "{lines:#?}"
        );
        let footer = lines.last().expect("footer");
        assert!(
            footer.contains("F1 Help") && footer.contains("q Quit"),
            "{footer}"
        );
        // Even narrower, nothing breaks.
        let (lines, _) = render(&app, 40, 10);
        assert!(lines.iter().any(|l| l.contains("PID")));
    }

    #[test]
    fn containers_view_is_an_indented_tree() {
        let mut app = app_with(rich());
        press(&mut app, "c");
        let s = screen(&app, 120, 20);
        let header = s.lines().find(|l| l.contains("NAME")).expect("header");
        let words: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(
            words,
            [
                "NAME", "PROCS", "RSS", "ANON", "GROW/m", "CPU%", "FLT/s", "BLK", "WAIT", "READ/s",
                "WRITE/s", "FLAGS"
            ]
        );
        let lines: Vec<&str> = s.lines().collect();
        let at = |n: &str| lines.iter().position(|l| l.contains(n)).expect(n);
        assert!(lines[at("system.slice")].starts_with("system.slice"));
        assert!(lines[at("└ web")].starts_with("└ web"), "{s}");
        assert!(
            at("web") < at("└ db"),
            "sorted by RSS under the parent: {s}"
        );
    }

    #[test]
    fn zoom_title_and_rows() {
        let mut app = app_with(rich());
        press(&mut app, "c");
        app.on_key(key(KeyCode::Down));
        press(&mut app, "z");
        let s = screen(&app, 120, 20);
        assert!(s.contains("zoom: web"), "{s}");
        assert!(s.contains("leaky"));
        assert!(!s.contains("postgres"), "{s}");
    }

    #[test]
    fn events_view_newest_first() {
        let mut app = app_with(rich());
        press(&mut app, "e");
        let s = screen(&app, 120, 20);
        let header = s.lines().find(|l| l.contains("TIME")).expect("header");
        let words: Vec<&str> = header.split_whitespace().collect();
        assert_eq!(
            words,
            ["TIME", "SEV", "KIND", "STATE", "SUBJECT", "SUMMARY"]
        );
        let rows: Vec<Vec<&str>> = s
            .lines()
            .filter(|l| l.starts_with("12:3"))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0][..6],
            [
                "12:33:00",
                "WARN",
                "memory_bloat",
                "firing",
                "4242",
                "leaky"
            ]
        );
        assert_eq!(rows[1][0], "12:30:00", "newest first");
    }

    fn with_detail(mut f: Frame) -> Frame {
        let subject = Subject::Process {
            pid: 4242,
            start: 1000 + 4242,
        };
        f.details = vec![Detail {
            subject,
            title: "Process 4242 (leaky)".into(),
            alive: true,
            blocked: vec![
                BlockedThread {
                    pid: 4242,
                    tid: 4250,
                    comm: Some("worker-1".into()),
                    wait_s: 185.0,
                    uaddr: 0x7f00_dead_beef,
                    op: "wait".into(),
                    owner: Some(4251),
                    stack: vec![
                        "__futex_abstimed_wait".into(),
                        "pthread_mutex_lock".into(),
                        "take_b".into(),
                    ],
                },
                BlockedThread {
                    pid: 4242,
                    tid: 4251,
                    comm: Some("worker-2".into()),
                    wait_s: 4.0,
                    uaddr: 0x7f00_dead_c0de,
                    op: "wait".into(),
                    owner: None,
                    stack: vec!["0x401000".into()],
                },
            ],
            rss: (1..=60).map(|i| i << 20).collect(),
            faults_per_s: (0..60).map(|i| (i % 7) as f64 * 100.0).collect(),
            write_per_s: (0..60).map(|i| i as f64 * 1000.0).collect(),
            events: f.events.clone(),
            members: vec![],
        }];
        f
    }

    #[test]
    fn detail_view_with_blocked_threads_and_sparklines() {
        let mut app = app_with(rich());
        assert_eq!(
            app.on_key(key(KeyCode::Enter)),
            super::super::app::Action::Want(Some(Subject::Process {
                pid: 4242,
                start: 5242
            }))
        );
        let s = screen(&app, 120, 30);
        assert!(s.contains("Process 4242 (leaky)"), "{s}");
        assert!(s.contains("loading…"), "{s}");
        app.on_frame(with_detail(rich()));
        let (lines, buf) = render(&app, 120, 30);
        let s = lines.join("\n");
        assert!(!s.contains("loading…"), "{s}");
        for want in [
            "Blocked threads (2)",
            "RSS 60M",
            "Faults/s",
            "Write/s 58K",
            "Events",
            "4250",
            "worker-1",
            "3m05s",
            "0x7f00deadbeef",
            "4251",
            "__futex_abstimed_wait < pthread_mutex_lock < take_b",
            "leaky grows 12 MB/min",
        ] {
            assert!(s.contains(want), "{want} missing:\n{s}");
        }
        // The longest wait is listed first.
        assert!(s.find("worker-1") < s.find("worker-2"));
        // The sparklines drew bars.
        let y = lines
            .iter()
            .position(|l| l.contains("RSS 60M"))
            .expect("spark")
            + 3;
        let bars = (0..40u16)
            .filter(|&x| buf[(x, y as u16)].symbol() == "█")
            .count();
        assert!(bars > 5, "{s}");
        // Leaving asks for no detail.
        assert_eq!(
            app.on_key(key(KeyCode::Esc)),
            super::super::app::Action::Want(None)
        );
    }

    #[test]
    fn detail_at_80x24() {
        let mut app = app_with(with_detail(rich()));
        app.on_key(key(KeyCode::Enter));
        let s = screen(&app, 80, 24);
        for want in [
            "Process 4242 (leaky)",
            "Blocked threads",
            "RSS",
            "Faults/s",
            "Write/s",
            "Events",
            "worker-1",
        ] {
            assert!(s.contains(want), "{want} missing:\n{s}");
        }
    }

    #[test]
    fn help_popup_lists_keys() {
        let mut app = app_with(rich());
        press(&mut app, "?");
        let s = screen(&app, 80, 24);
        for k in [
            "Help",
            "F1 h ?",
            "q F10",
            "F9 k",
            "\\",
            "< > F6",
            "Z",
            "PgUp PgDn",
        ] {
            assert!(s.contains(k), "{k} missing:\n{s}");
        }
    }

    #[test]
    fn kill_confirmation_names_the_process() {
        let mut app = app_with(rich());
        press(&mut app, "k");
        let s = screen(&app, 80, 24);
        assert!(s.contains("Send SIGTERM to 4242 (leaky)?"), "{s}");
        assert!(
            s.contains("y/Enter send") && s.contains("n/Esc cancel"),
            "{s}"
        );
        app.on_key(key(KeyCode::Right));
        let s = screen(&app, 80, 24);
        assert!(s.contains("Send SIGKILL to 4242 (leaky)?"), "{s}");
    }

    #[test]
    fn search_and_filter_prompts() {
        let mut app = app_with(rich());
        press(&mut app, "/post");
        let (lines, _) = render(&app, 80, 24);
        assert!(
            lines.last().is_some_and(|l| l.starts_with("Search: post")),
            "{lines:#?}"
        );
        app.on_key(key(KeyCode::Enter));
        press(&mut app, "\\pg");
        let (lines, _) = render(&app, 80, 24);
        assert!(lines.last().is_some_and(|l| l.starts_with("Filter: pg")));
        let s = lines.join("\n");
        assert!(
            s.contains("filter: pg") && s.contains("pg-writer") && !s.contains("leaky"),
            "{s}"
        );
    }

    #[test]
    fn pause_status_and_feed_error() {
        let mut app = app_with(rich());
        press(&mut app, "Z");
        app.on_feed_error("lost the daemon: connection reset".into());
        let s = screen(&app, 80, 24);
        assert!(
            s.lines().next().is_some_and(|l| l.contains("PAUSED")),
            "{s}"
        );
        assert!(s.contains("lost the daemon"), "{s}");
        assert!(s.contains("leaky"), "the last frame stays");
    }

    #[test]
    fn event_popup_shows_evidence() {
        let mut f = rich();
        f.events[1].names.pid = Some(99999); // not in the frame
        let mut app = app_with(f);
        press(&mut app, "e");
        app.on_key(key(KeyCode::Enter));
        let s = screen(&app, 100, 30);
        assert!(
            s.contains("leaky grows 12 MB/min") && s.contains("\"rss\": 123"),
            "{s}"
        );
    }

    #[test]
    fn only_visible_rows_and_scrolling() {
        let procs = (1..=5000)
            .map(|p| proc(p, 1, "w", p as u64 * 4096))
            .collect();
        let mut app = app_with(frame(procs));
        app.on_key(key(KeyCode::End));
        let row = |s: &str, pid: &str| s.lines().any(|l| l.starts_with(&format!("{pid:>7} ")));
        let s = screen(&app, 100, 24);
        assert!(row(&s, "1"), "the smallest is at the end: {s}");
        assert!(!row(&s, "5000"), "{s}");
        assert_eq!(app.procs_pos.offset.get(), 5000 - app.page.get());
        app.on_key(key(KeyCode::Home));
        let s = screen(&app, 100, 24);
        assert!(row(&s, "5000"), "{s}");
        assert!(!row(&s, "1"), "{s}");
    }

    fn replayed() -> App {
        let mut f = rich();
        f.mode = Mode {
            attached: false,
            replay: true,
            describe:
                "replay: frame 140 of 2,000; 2026-03-01T12:34:56Z in /var/lib/sentinel/recorder"
                    .into(),
        };
        app_with(f)
    }

    #[test]
    fn replay_title_footer_and_help() {
        let app = replayed();
        let (lines, buf) = render(&app, 80, 24);
        let title = &lines[0];
        assert!(
            title.starts_with(
                "sentinel top   REPLAY 2026-03-01 12:34:56 UTC   box  replay: frame 140 of 2,000"
            ),
            "{title}"
        );
        // The tag stands out from the bar.
        let at = title.find("REPLAY").unwrap() as u16;
        assert_eq!(buf[(at, 0)].bg, Color::Magenta);
        let footer = lines.last().unwrap();
        assert!(
            footer.contains("←→ Frame") && footer.contains("q Quit") && !footer.contains("Pause"),
            "{footer}"
        );
        let s = screen(&app, 160, 24);
        let footer = s.lines().last().unwrap();
        assert!(
            footer.contains("{} Minute") && footer.contains("gG First/Last"),
            "{footer}"
        );
        let mut app = replayed();
        press(&mut app, "?");
        let s = screen(&app, 100, 30);
        assert!(
            s.contains("one recorded frame back / forward")
                && s.contains("{ } ⇧← ⇧→")
                && !s.contains("pause the display"),
            "{s}"
        );
    }

    #[test]
    fn waiting_for_the_first_frame() {
        let app = App::new();
        let s = screen(&app, 80, 24);
        assert!(s.contains("waiting for"), "{s}");
    }
}
