//! `report.html`: what a person opens first. One file, no script, no
//! network (a Content-Security-Policy says so to the browser too): a
//! summary in plain words, the charts, the events, and what was selected.
//! Every string from the store (process and container names, summaries,
//! ids) goes through `esc`: a process can name itself `<script>`.
use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::Value;

use super::{
    Anchor,
    scan::{ProcKey, ProcStats, Survey},
    select::{Reason, Selection},
    svg::{self, Chart, Mark, Series, Unit},
};
use crate::{
    event::{Event, Kind, Severity, State, human_duration, rfc3339},
    record::Start,
    units,
};

/// Rows in the events table; the rest are in events.ndjson.
const MAX_EVENT_ROWS: usize = 500;
const MAX_CONTAINER_ROWS: usize = 50;

pub struct Input<'a> {
    pub host: &'a str,
    pub generated_ms: u64,
    pub asked: (u64, u64),
    /// The first and last record in range; None when there are none.
    pub covered: Option<(u64, u64)>,
    pub anchor: Option<&'a Anchor>,
    pub survey: &'a Survey,
    pub selection: &'a Selection,
    pub rss: Vec<Series>,
    pub write: Vec<Series>,
    pub blocked: Vec<Series>,
    pub corrupt: u64,
    pub recorder: Option<&'a Start>,
    pub proc_files: &'a BTreeMap<ProcKey, String>,
    pub container_files: &'a BTreeMap<String, String>,
}

/// HTML-escapes text for element content and quoted attributes alike.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters have no business in a report.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// "03:12:04", or with the date when the range spans days.
fn clock(ms: u64, with_date: bool) -> String {
    let r = rfc3339(ms);
    if with_date {
        format!("{} {}", &r[..10], &r[11..19])
    } else {
        r[11..19].to_string()
    }
}

fn proc_name(pid: u32, comm: &str) -> String {
    format!("pid {pid} ({comm})")
}

/// The process an event names, as recorded: of the processes with its pid,
/// the one last seen closest before the event (a pid can be reused).
fn subject_of<'a>(s: &'a Survey, e: &Event, t: u64) -> Option<(ProcKey, &'a ProcStats)> {
    let pid = e.names.pid?;
    s.procs
        .iter()
        .filter(|(k, _)| k.pid == pid)
        .min_by_key(|(_, p)| {
            if p.first_ms <= t {
                t.saturating_sub(p.last_ms)
            } else {
                u64::MAX / 2 + (p.first_ms - t)
            }
        })
        .map(|(k, p)| (*k, p))
}

/// One sentence on what an event was, with what the timelines add.
pub fn story(s: &Survey, e: &Event, t: u64, with_date: bool) -> String {
    let at = clock(t, with_date);
    let who = e
        .names
        .pid
        .map(|pid| proc_name(pid, e.names.comm.as_deref().unwrap_or("?")));
    let grew = subject_of(s, e, t).and_then(|(_, p)| {
        let g = p.growth();
        (p.rows >= 2 && g >= 1 << 20 && g * 10 >= p.first_rss).then(|| {
            format!(
                "grew from {} to {} in {}",
                units::bytes(p.first_rss),
                units::bytes(p.peak_rss),
                human_duration(p.peak_ms.saturating_sub(p.first_ms) as f64 / 1000.0)
            )
        })
    });
    match (e.kind, &who) {
        (Kind::OomKill, Some(who)) => {
            let ev = &e.evidence;
            let cg = ev.get("limit_cgroup").and_then(Value::as_str);
            let limit = ev
                .get("limit_bytes")
                .and_then(Value::as_u64)
                .map(|b| format!("{} ", units::bytes(b)))
                .unwrap_or_default();
            let by = match (ev.get("oom").and_then(Value::as_str), cg) {
                (Some("cgroup"), Some(cg)) => format!("by the {limit}memory limit of {cg}"),
                (Some("global"), _) => "because the host ran out of memory".into(),
                _ => "(which limit it hit, sentinel could not tell)".into(),
            };
            match grew {
                Some(g) => format!("{who} {g} and was OOM-killed {by} at {at}."),
                None => format!("{who} was OOM-killed {by} at {at}."),
            }
        }
        (Kind::MemoryBloat, Some(who)) if e.state == State::Firing => match grew {
            Some(g) => format!(
                "{who} {g}; sentinel raised memory_bloat at {at}: {}",
                e.summary
            ),
            None => format!("At {at} sentinel raised memory_bloat: {}", e.summary),
        },
        _ => {
            let verb = match e.state {
                State::Firing => "raised",
                State::Resolved => "resolved",
            };
            format!(
                "At {at} sentinel {verb} {} ({}): {}",
                e.kind.name(),
                e.severity.name(),
                e.summary
            )
        }
    }
}

/// The summary's sentences, plain text (escaped when rendered).
pub fn summary(i: &Input) -> Vec<String> {
    let s = i.survey;
    let (a, b) = i.covered.unwrap_or(i.asked);
    let days = rfc3339(a)[..10] != rfc3339(b)[..10];
    let mut out = Vec::new();
    // What happened: the event asked about, else the first critical one,
    // else the first warning.
    let lead = match i.anchor {
        Some(an) => s
            .events
            .iter()
            .find(|(_, e)| e.id == an.id)
            .or_else(|| s.events.iter().find(|(_, e)| e.incident == an.id)),
        None => [Severity::Critical, Severity::Warning]
            .iter()
            .find_map(|sev| {
                s.events
                    .iter()
                    .find(|(_, e)| e.severity == *sev && e.state == State::Firing)
            }),
    };
    if let Some((t, e)) = lead {
        out.push(story(s, e, *t, days));
        if e.state == State::Firing
            && let Some((rt, _)) = s
                .events
                .iter()
                .find(|(_, r)| r.incident == e.incident && r.state == State::Resolved)
        {
            out.push(format!(
                "That {} resolved at {}.",
                e.kind.name(),
                clock(*rt, days)
            ));
        }
    }
    let mut counts: BTreeMap<(Severity, &str), (u32, u32)> = BTreeMap::new();
    for (_, e) in &s.events {
        let c = counts.entry((e.severity, e.kind.name())).or_default();
        match e.state {
            State::Firing => c.0 += 1,
            State::Resolved => c.1 += 1,
        }
    }
    if counts.is_empty() {
        out.push(
            "No events in this range: nothing sentinel watches for crossed its thresholds.".into(),
        );
    } else {
        let parts: Vec<String> = counts
            .iter()
            .rev()
            .map(|((sev, kind), (f, r))| {
                let mut p = format!("{f} {kind} ({})", sev.name());
                if *r > 0 {
                    let _ = write!(p, ", {r} resolved");
                }
                p
            })
            .collect();
        out.push(format!("Events in this range: {}.", parts.join("; ")));
    }
    // Who stood out.
    let sel: Vec<(&ProcKey, &ProcStats)> =
        i.selection.procs.keys().map(|k| (k, &s.procs[k])).collect();
    if let Some((k, p)) = sel
        .iter()
        .max_by_key(|(k, p)| (p.peak_rss, std::cmp::Reverse(**k)))
    {
        let asked = i
            .selection
            .procs
            .values()
            .any(|why| why.contains(&Reason::Asked));
        out.push(format!(
            "{} was {}, at {} resident ({}).",
            if asked {
                "Of the processes asked for, the largest"
            } else {
                "The largest process recorded"
            },
            proc_name(k.pid, &p.comm),
            units::bytes(p.peak_rss),
            clock(p.peak_ms, days)
        ));
    }
    if let Some((k, p)) = sel
        .iter()
        .filter(|(_, p)| p.growth() >= 10 << 20)
        .max_by_key(|(k, p)| (p.growth(), std::cmp::Reverse(**k)))
    {
        out.push(format!(
            "{} grew the most: by {}, from {} at {} to {} at {}.",
            proc_name(k.pid, &p.comm),
            units::bytes(p.growth()),
            units::bytes(p.first_rss),
            clock(p.first_ms, days),
            units::bytes(p.peak_rss),
            clock(p.peak_ms, days)
        ));
    }
    if let Some(path) = i.selection.write_chart.first() {
        let c = &s.containers[path];
        out.push(format!(
            "The busiest writer among containers was {}: about {} written in the range, at most {}/s ({}).",
            c.name,
            units::bytes(c.written as u64),
            units::bytes(c.peak_write as u64),
            clock(c.peak_write_ms, days)
        ));
    }
    if s.stacks.threads() > 0 {
        let n = s.stacks.threads();
        out.push(format!(
            "{n} blocked thread{} of processes with a deadlock or hang open had {} stack{} recorded (see stacks.txt).",
            if n == 1 { "" } else { "s" },
            if n == 1 { "its" } else { "their" },
            if n == 1 { "" } else { "s" },
        ));
    }
    if let Some((t, avail)) = s.min_available()
        && s.host.mem_total > 0
        && avail * 10 < s.host.mem_total
    {
        out.push(format!(
            "The host's available memory fell to {} of {} at {}.",
            units::bytes(avail),
            units::bytes(s.host.mem_total),
            clock(t, days)
        ));
    }
    if let Some((t, p)) = s.host.max_psi_memory
        && p >= 10.0
    {
        out.push(format!(
            "Memory pressure peaked at {p:.0}% (tasks stalled on memory, 10 s average) at {}.",
            clock(t, days)
        ));
    }
    // What the data is.
    match (s.first_frame_ms, s.last_frame_ms) {
        (Some(f), Some(l)) => out.push(format!(
            "The recorder kept {} frames{} from {} to {} UTC.",
            s.frames,
            // As they came, which can be sparser than configured.
            if s.frames >= 2 {
                format!(
                    " (one every {} on average)",
                    human_duration((l - f) as f64 / 1000.0 / (s.frames - 1) as f64)
                )
            } else {
                String::new()
            },
            clock(f, days),
            clock(l, days)
        )),
        _ => out.push("No frames were recorded in this range, only events.".into()),
    }
    if i.corrupt > 0 {
        out.push(format!(
            "{} damaged records in the store were skipped.",
            i.corrupt
        ));
    }
    for nf in &i.selection.not_found {
        out.push(format!("No {nf} was recorded in this range."));
    }
    out
}

fn marks(s: &Survey) -> Vec<Mark> {
    s.events
        .iter()
        .map(|(t, e)| Mark {
            id: e.id.clone(),
            unix_ms: *t,
            kind: e.kind.name(),
            severity: e.severity,
            state: e.state,
            title: format!(
                "{} {} {}: {}",
                rfc3339(*t),
                e.kind.name(),
                e.state.name(),
                e.summary
            ),
        })
        .collect()
}

const STYLE: &str = r#"
:root { color-scheme: light; --fg:#1d2329; --muted:#5f6b76; --line:#dde2e6; --bg:#fff; --panel:#f6f8f9;
  --crit:#c62828; --warn:#b7791f; --info:#6b7785; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color:var(--fg); background:var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 36px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
.sub { color: var(--muted); margin: 0 0 18px; }
#summary { background: var(--panel); border-left: 4px solid var(--fg); padding: 12px 18px; border-radius: 4px; }
#summary p { margin: 6px 0; }
#summary p.lead { font-size: 17px; font-weight: 600; }
figure.chart-figure { margin: 18px 0 28px; }
figcaption { font-weight: 600; margin-bottom: 4px; }
svg.chart { width: 100%; height: auto; display: block; background: #fff; border: 1px solid var(--line); border-radius: 4px; }
svg.chart text { font-size: 11px; fill: var(--muted); }
svg.chart .axis-title { font-size: 12px; fill: var(--fg); }
svg.chart .grid { stroke: #edf0f2; }
svg.chart .baseline, svg.chart .tick { stroke: #9aa5ae; }
svg.chart .empty { font-size: 14px; }
svg.chart .event-mark { stroke-width: 1.5; }
svg.chart .event-mark.state-resolved { stroke-dasharray: 4 3; }
svg.chart .sev-critical { stroke: var(--crit); fill: var(--crit); }
svg.chart .sev-warning { stroke: var(--warn); fill: var(--warn); }
svg.chart .sev-info { stroke: var(--info); fill: var(--info); }
svg.chart text.event-label { font-weight: 600; stroke: none; }
ul.legend { list-style: none; padding: 0; margin: 6px 0 0; display: flex; flex-wrap: wrap; gap: 4px 18px; font-size: 13px; }
ul.legend .swatch { display: inline-block; width: 14px; height: 3px; vertical-align: middle; margin-right: 6px; border-radius: 2px; }
ul.legend .peak { color: var(--muted); }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.time { white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.anchor td { background: #fff6e0; }
.badge { display: inline-block; padding: 0 6px; border-radius: 3px; font-size: 12px; font-weight: 600; color: #fff; }
.badge.sev-critical { background: var(--crit); } .badge.sev-warning { background: var(--warn); } .badge.sev-info { background: var(--info); }
code, .id { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
.id { color: var(--muted); }
.note { color: var(--muted); font-size: 13px; }
dl.about { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; font-size: 13px; }
dl.about dt { color: var(--muted); } dl.about dd { margin: 0; }
"#;

pub fn render(i: Input) -> String {
    let s = i.survey;
    let (x0, x1) = i.covered.unwrap_or(i.asked);
    let days = rfc3339(x0)[..10] != rfc3339(x1)[..10];
    let marks = marks(s);
    let mut h = String::with_capacity(64 << 10);
    let title = format!(
        "sentinel report: {}, {} {} to {} UTC",
        i.host,
        &rfc3339(x0)[..10],
        clock(x0, false),
        clock(x1, days)
    );
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>\n",
        esc(&title)
    );
    let _ = writeln!(
        h,
        "<h1>What happened on {}</h1><p class=\"sub\">{} {} to {} UTC. Exported {} by sentinel {}.</p>",
        esc(i.host),
        &rfc3339(x0)[..10],
        clock(x0, false),
        esc(&clock(x1, days)),
        esc(&rfc3339(i.generated_ms)),
        env!("CARGO_PKG_VERSION")
    );
    // Summary.
    h.push_str("<section id=\"summary\">");
    for (n, line) in summary(&i).iter().enumerate() {
        let class = if n == 0 { " class=\"lead\"" } else { "" };
        let _ = write!(h, "<p{class}>{}</p>", esc(line));
    }
    h.push_str("</section>\n");

    // Charts.
    h.push_str("<section id=\"charts\"><h2>Over time</h2>\n<p class=\"note\">Vertical lines are events (red critical, amber warning; dashed when resolved). A line breaks where its subject was not recorded: the recorder keeps the leading processes of each moment, not all.</p>\n");
    let x = (x0, x1);
    h.push_str(&svg::render(&Chart {
        id: "chart-rss",
        title: "Resident memory of the top processes",
        y_label: "RSS",
        unit: Unit::Bytes,
        x,
        series: i.rss,
        marks: &marks,
        empty: "no process was recorded in this range",
    }));
    h.push_str(&svg::render(&Chart {
        id: "chart-write",
        title: "Write rate per container",
        y_label: "writes",
        unit: Unit::BytesPerSec,
        x,
        series: i.write,
        marks: &marks,
        empty: "no container wrote in this range",
    }));
    h.push_str(&svg::render(&Chart {
        id: "chart-blocked",
        title: "Threads blocked in futex waits",
        y_label: "blocked",
        unit: Unit::Count,
        x,
        series: i.blocked,
        marks: &marks,
        empty: "no frames in this range",
    }));
    h.push_str("</section>\n");

    // Events.
    h.push_str("<section id=\"events\"><h2>Events</h2>\n");
    if s.events.is_empty() {
        h.push_str("<p class=\"note\">None in this range.</p>");
    } else {
        h.push_str("<table id=\"events-table\"><thead><tr><th>Time (UTC)</th><th>Severity</th><th>Event</th><th>Subject</th><th>What happened</th></tr></thead><tbody>\n");
        for (t, e) in s.events.iter().take(MAX_EVENT_ROWS) {
            let anchor = i.anchor.is_some_and(|a| a.id == e.id || a.id == e.incident);
            let subject = match (e.names.pid, &e.names.comm, &e.names.container) {
                (Some(pid), c, _) => proc_name(pid, c.as_deref().unwrap_or("?")),
                (None, _, Some(c)) => format!("container {c}"),
                _ => e.subject.clone(),
            };
            let _ = writeln!(
                h,
                "<tr id=\"ev-{id}\" data-event-id=\"{id}\" class=\"sev-{sev}{a}\"><td class=\"time\">{time}</td><td><span class=\"badge sev-{sev}\">{sev}</span></td><td>{kind} <span class=\"note\">{state}</span><br><span class=\"id\">{id}</span></td><td>{subject}</td><td>{summary}</td></tr>",
                id = esc(&e.id),
                sev = e.severity.name(),
                a = if anchor { " anchor" } else { "" },
                time = esc(&clock(*t, days)),
                kind = e.kind.name(),
                state = e.state.name(),
                subject = esc(&subject),
                summary = esc(&e.summary),
            );
        }
        h.push_str("</tbody></table>\n");
        if s.events.len() > MAX_EVENT_ROWS {
            let _ = write!(
                h,
                "<p class=\"note\">The first {MAX_EVENT_ROWS} of {} events; all are in events.ndjson.</p>",
                s.events.len()
            );
        }
    }
    h.push_str("</section>\n");

    // Processes.
    h.push_str("<section id=\"processes\"><h2>Processes in this archive</h2>\n");
    if i.selection.procs.is_empty() {
        h.push_str("<p class=\"note\">None recorded in this range.</p>");
    } else {
        h.push_str("<table id=\"processes-table\"><thead><tr><th>Process</th><th>Container</th><th>Recorded (UTC)</th><th>Peak RSS</th><th>Growth</th><th>Why here</th><th>Timeline</th></tr></thead><tbody>\n");
        let mut rows: Vec<(&ProcKey, &ProcStats)> =
            i.selection.procs.keys().map(|k| (k, &s.procs[k])).collect();
        rows.sort_by(|a, b| b.1.peak_rss.cmp(&a.1.peak_rss).then(a.0.cmp(b.0)));
        for (k, p) in rows {
            let why: Vec<&str> = i.selection.procs[k]
                .iter()
                .map(|r| match r {
                    Reason::Asked => "asked for",
                    Reason::Event => "an event is about it",
                    Reason::PeakRss => "among the largest",
                    Reason::RssGrowth => "among the fastest growing",
                    Reason::BlockedThreads => "blocked threads",
                })
                .collect();
            let file = i.proc_files.get(k).map(String::as_str).unwrap_or("");
            let _ = writeln!(
                h,
                "<tr data-pid=\"{}\"><td>{}</td><td>{}</td><td class=\"time\">{} to {}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td><code>{}</code></td></tr>",
                k.pid,
                esc(&proc_name(k.pid, &p.comm)),
                esc(p.container.as_deref().or(p.cgroup.as_deref()).unwrap_or("")),
                esc(&clock(p.first_ms, days)),
                esc(&clock(p.last_ms, days)),
                esc(&units::bytes(p.peak_rss)),
                esc(&units::bytes(p.growth())),
                esc(&why.join(", ")),
                esc(file)
            );
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</section>\n");

    // Containers.
    h.push_str("<section id=\"containers\"><h2>Containers</h2>\n");
    if i.selection.containers.is_empty() {
        h.push_str("<p class=\"note\">None recorded in this range.</p>");
    } else {
        h.push_str("<table id=\"containers-table\"><thead><tr><th>Container</th><th>Cgroup</th><th>Peak RSS</th><th>Peak writes</th><th>Written</th><th>Timeline</th></tr></thead><tbody>\n");
        let mut rows: Vec<&String> = i.selection.containers.iter().collect();
        rows.sort_by(|a, b| {
            let (ca, cb) = (&s.containers[*a], &s.containers[*b]);
            cb.written
                .total_cmp(&ca.written)
                .then(cb.peak_rss.cmp(&ca.peak_rss))
                .then(a.cmp(b))
        });
        for path in rows.iter().take(MAX_CONTAINER_ROWS) {
            let c = &s.containers[*path];
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}/s</td><td class=\"num\">{}</td><td><code>{}</code></td></tr>",
                esc(&c.name),
                esc(path),
                esc(&units::bytes(c.peak_rss)),
                esc(&units::bytes(c.peak_write as u64)),
                esc(&units::bytes(c.written as u64)),
                esc(i
                    .container_files
                    .get(*path)
                    .map(String::as_str)
                    .unwrap_or(""))
            );
        }
        h.push_str("</tbody></table>\n");
        if rows.len() > MAX_CONTAINER_ROWS {
            let _ = write!(
                h,
                "<p class=\"note\">The {MAX_CONTAINER_ROWS} that wrote most of {}; every one has a timeline under timelines/containers/.</p>",
                rows.len()
            );
        }
    }
    h.push_str("</section>\n");

    // About.
    h.push_str("<section id=\"about\"><h2>About this archive</h2><dl class=\"about\">");
    let mut about = |k: &str, v: String| {
        let _ = write!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v));
    };
    about(
        "Range asked",
        format!("{} to {}", rfc3339(i.asked.0), rfc3339(i.asked.1)),
    );
    if let Some(a) = i.anchor {
        about("Around event", format!("{} ({})", a.id, a.kind));
    }
    if let Some(r) = i.recorder {
        about(
            "Recorded by",
            format!(
                "sentinel {} (pid {}) on {}, kernel {}, every {}",
                r.version,
                r.pid,
                r.host,
                r.kernel,
                human_duration(r.interval_s)
            ),
        );
    }
    about(
        "Store",
        format!(
            "{} frames, {} events{}",
            s.frames,
            s.events.len(),
            if i.corrupt > 0 {
                format!(", {} damaged records skipped", i.corrupt)
            } else {
                String::new()
            }
        ),
    );
    about(
        "Files",
        "manifest.json, events.ndjson, timelines/ (CSV, one row per frame), stacks.txt, host.json"
            .into(),
    );
    h.push_str("</dl></section>\n</main></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_a_process_can_name_itself() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(esc("a\u{1b}[31m"), "a\u{fffd}[31m");
    }
}
