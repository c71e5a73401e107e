//! `sentinel export`: one archive holding what the flight recorder knows
//! about a stretch of time, for the person asking "what happened at
//! 03:12?" and for whoever they hand it to.
//!
//! ```text
//! sentinel-<host>-<time>/
//!   manifest.json        what this is: versions, range, selection, store, config
//!   events.ndjson        the events in range, one JSON object a line
//!   timelines/host.csv   one row per recorded frame
//!   timelines/processes/<pid>-<comm>.csv
//!   timelines/containers/<name>.csv
//!   stacks.txt           blocked threads and their stacks
//!   host.json            the host as recorded, and the exporting machine
//!   report.html          the summary, charts and tables, self-contained
//! ```
//!
//! `run` chooses the range (`--around` an event, or `--since/--until`),
//! `scan` reads the store in two streaming passes, `select` chooses the
//! subjects, `timeline`, `stacks`, `manifest` and `report` (with `svg`)
//! make the files, and `archive` writes them so that no partial archive
//! is ever left behind.
mod archive;
mod manifest;
mod report;
mod scan;
mod select;
mod stacks;
mod svg;
mod timeline;

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
};

use anyhow::Context;

use crate::{
    event::{rfc3339, unix_ms_now},
    record::{OpenError, Record, RecordKind, Start, Store},
};
use archive::{Body, Entry};
use scan::ProcKey;
use svg::Series;

/// `--around`: this much before the event and after it.
const BEFORE_MS: u64 = 15 * 60 * 1000;
const AFTER_MS: u64 = 5 * 60 * 1000;
/// Without `--since` or `--around`: the last hour.
const DEFAULT_SPAN_MS: u64 = 60 * 60 * 1000;
/// A segment is closed after an hour (record::writer), so the start
/// record of the one a range begins in is at most this far before it.
const START_LOOKBACK_MS: u64 = 2 * 60 * 60 * 1000;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Unix ms.
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// An event id, or an incident id.
    pub around: Option<String>,
    pub pids: Vec<u32>,
    /// Container names or cgroup paths.
    pub containers: Vec<String>,
    /// The archive, or a directory to put it in; None: the current
    /// directory, with a name from the host and the time.
    pub output: Option<PathBuf>,
    pub store: PathBuf,
    /// The exporter's configuration, secrets removed, for the manifest.
    pub config: serde_json::Value,
    /// Where it came from ("/etc/sentinel/sentinel.toml", "defaults").
    pub config_source: String,
}

/// What a user can get wrong; each names the path, id or range.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: cannot write the archive there: {err}", .path.display())]
    Unwritable { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("{}: no records between {} and {}; {}", .store.display(), rfc3339(*.since), rfc3339(*.until), holds(*.span))]
    NoData {
        store: PathBuf,
        since: u64,
        until: u64,
        span: Option<(u64, u64)>,
    },
    #[error("{}: no event with id or incident {id} (searched {events} events; {})", .store.display(), holds(*.span))]
    UnknownEvent {
        store: PathBuf,
        id: String,
        events: usize,
        span: Option<(u64, u64)>,
    },
    #[error("the range is empty: it starts at {} and ends at {}", rfc3339(*.since), rfc3339(*.until))]
    EmptyRange { since: u64, until: u64 },
}

fn holds(span: Option<(u64, u64)>) -> String {
    match span {
        Some((a, b)) => format!("the store holds {} to {}", rfc3339(a), rfc3339(b)),
        None => "the store holds no records".into(),
    }
}

/// The event `--around` named.
#[derive(Debug, Clone)]
pub struct Anchor {
    pub id: String,
    pub kind: &'static str,
    /// The first and last matching event (an incident spans several).
    pub first_ms: u64,
    pub last_ms: u64,
    /// "id" or "incident".
    pub matched: &'static str,
}

/// Writes the archive and returns its path.
pub fn run(opts: &Options) -> anyhow::Result<PathBuf> {
    let generated_ms = unix_ms_now();
    let out = archive::Output::prepare(opts.output.as_deref())?;
    let store = Store::open(&opts.store).map_err(Error::from)?;
    let (since, until, anchor) = range(&store, opts, generated_ms)?;
    let idx = store.index(
        since,
        until,
        &[RecordKind::Start, RecordKind::Event, RecordKind::Frame],
    );
    let no_data = || Error::NoData {
        store: opts.store.clone(),
        since,
        until,
        span: store.span(),
    };
    if idx.locs.iter().all(|l| l.kind == RecordKind::Start) {
        return Err(no_data().into());
    }
    let staging = out.staging().to_owned();
    let host_csv = staging.join("host.csv");
    let survey = scan::survey(&store, &idx.locs, &host_csv)
        .with_context(|| format!("staging {}", host_csv.display()))?;
    if survey.frames == 0 && survey.events.is_empty() {
        return Err(no_data().into());
    }
    let starts = recorder_starts(&store, since, &survey.starts);
    let sel = select::choose(&survey, &opts.pids, &opts.containers);

    // Where each chosen subject's timeline goes.
    let mut plan = scan::Plan::default();
    let mut proc_files: BTreeMap<ProcKey, String> = BTreeMap::new();
    let mut container_files: BTreeMap<String, String> = BTreeMap::new();
    let mut staged: Vec<(String, PathBuf)> = Vec::new();
    let mut taken: HashSet<String> = HashSet::new();
    let mut unique = |dir: &str, base: String| {
        let mut name = format!("timelines/{dir}/{base}.csv");
        let mut n = 2;
        while !taken.insert(name.clone()) {
            name = format!("timelines/{dir}/{base}-{n}.csv");
            n += 1;
        }
        name
    };
    for (n, k) in sel.procs.keys().enumerate() {
        let p = &survey.procs[k];
        let name = unique(
            "processes",
            format!("{}-{}", k.pid, timeline::file_name(&p.comm)),
        );
        let file = staging.join(format!("p{n}.csv"));
        let sink = timeline::Sink::create(&file, timeline::header(timeline::PROCESS))
            .with_context(|| format!("staging {}", file.display()))?;
        plan.procs.insert(*k, sink);
        proc_files.insert(*k, name.clone());
        staged.push((name, file));
    }
    for (n, path) in sel.containers.iter().enumerate() {
        let c = &survey.containers[path];
        let base = if c.name.is_empty() { path } else { &c.name };
        let name = unique("containers", timeline::file_name(base));
        let file = staging.join(format!("c{n}.csv"));
        let sink = timeline::Sink::create(&file, timeline::header(timeline::CONTAINER))
            .with_context(|| format!("staging {}", file.display()))?;
        plan.containers.insert(path.clone(), sink);
        container_files.insert(path.clone(), name.clone());
        staged.push((name, file));
    }
    plan.rss_chart = sel.rss_chart.clone();
    plan.write_chart = sel.write_chart.clone();
    plan.blocked_chart = sel.blocked_chart.clone();
    let col = scan::collect(
        &store,
        &idx.locs,
        survey.frames,
        survey.interval_s,
        &mut plan,
    )
    .with_context(|| format!("staging timelines in {}", staging.display()))?;

    let proc_label = |k: &ProcKey| {
        let p = &survey.procs[k];
        let mut l = format!("pid {} ({})", k.pid, p.comm);
        if let Some(c) = &p.container {
            l.push_str(&format!(" in {c}"));
        }
        l
    };
    let proc_attrs = |k: &ProcKey| {
        vec![
            ("data-pid", k.pid.to_string()),
            ("data-start", k.start.to_string()),
            ("data-comm", survey.procs[k].comm.clone()),
        ]
    };
    let rss: Vec<Series> = sel
        .rss_chart
        .iter()
        .zip(col.rss)
        .map(|(k, points)| Series {
            label: proc_label(k),
            attrs: proc_attrs(k),
            points,
        })
        .collect();
    let write: Vec<Series> = sel
        .write_chart
        .iter()
        .zip(col.write)
        .map(|(path, points)| Series {
            label: survey.containers[path].name.clone(),
            attrs: vec![
                ("data-container", survey.containers[path].name.clone()),
                ("data-path", path.clone()),
            ],
            points,
        })
        .collect();
    let mut blocked_points = col.blocked.into_iter();
    let mut blocked: Vec<Series> = Vec::new();
    if survey.frames > 0
        && let Some(total) = blocked_points.next()
    {
        blocked.push(Series {
            label: "all recorded processes".into(),
            attrs: vec![("data-total", "1".into())],
            points: total,
        });
        for (k, points) in sel.blocked_chart.iter().zip(blocked_points) {
            blocked.push(Series {
                label: proc_label(k),
                attrs: proc_attrs(k),
                points,
            });
        }
    }

    let covered = covered(&survey);
    let last_start = starts.last().map(|(_, s)| s);
    let host = last_start
        .map(|s| s.host.clone())
        .or_else(|| survey.last_header.as_ref().map(|h| h.1.clone()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(crate::host::hostname);
    let corrupt = idx.stats.corrupt + survey.unreadable;

    let mut events = String::new();
    for (_, e) in &survey.events {
        events.push_str(&serde_json::to_string(e).context("encoding an event")?);
        events.push('\n');
    }
    let html = report::render(report::Input {
        host: &host,
        generated_ms,
        asked: (since, until),
        covered,
        anchor: anchor.as_ref(),
        survey: &survey,
        selection: &sel,
        rss,
        write,
        blocked,
        corrupt,
        recorder: last_start,
        proc_files: &proc_files,
        container_files: &container_files,
    });
    let stacks = survey.stacks.render(&survey.events, since, until);
    let host_json = manifest::host(&survey, last_start, generated_ms);

    let mut entries = vec![
        Entry {
            path: "report.html".into(),
            body: Body::Bytes(html.into_bytes()),
        },
        Entry {
            path: "events.ndjson".into(),
            body: Body::Bytes(events.into_bytes()),
        },
        Entry {
            path: "stacks.txt".into(),
            body: Body::Bytes(stacks.into_bytes()),
        },
        Entry {
            path: "host.json".into(),
            body: Body::Bytes(pretty(&host_json)?),
        },
        Entry {
            path: "timelines/host.csv".into(),
            body: Body::File(host_csv),
        },
    ];
    entries.extend(staged.into_iter().map(|(path, file)| Entry {
        path,
        body: Body::File(file),
    }));
    let files = entries
        .iter()
        .map(|e| Ok((e.path.clone(), e.size()?)))
        .collect::<std::io::Result<Vec<_>>>()
        .context("sizing the staged files")?;
    let manifest = manifest::manifest(&manifest::Facts {
        generated_ms,
        store_dir: &opts.store,
        asked: (since, until),
        covered,
        anchor: anchor.as_ref(),
        pids: &opts.pids,
        containers: &opts.containers,
        survey: &survey,
        selection: &sel,
        starts: &starts,
        stats: &idx.stats,
        config: &opts.config,
        config_source: &opts.config_source,
        files: &files,
        proc_files: &proc_files,
        container_files: &container_files,
    });
    entries.insert(
        0,
        Entry {
            path: "manifest.json".into(),
            body: Body::Bytes(pretty(&manifest)?),
        },
    );
    let path = out.path(&default_stem(&host, generated_ms));
    out.write(&path, &entries)
}

fn pretty(v: &serde_json::Value) -> anyhow::Result<Vec<u8>> {
    let mut b = serde_json::to_vec_pretty(v).context("encoding JSON")?;
    b.push(b'\n');
    Ok(b)
}

/// `sentinel-<host>-<yyyymmddThhmmssZ>`, UTC.
fn default_stem(host: &str, ms: u64) -> String {
    let r = rfc3339(ms);
    let compact: String = r[..19].chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("sentinel-{}-{compact}Z", timeline::file_name(host))
}

/// The asked range, from the options and, for `--around`, the event.
fn range(store: &Store, o: &Options, now: u64) -> Result<(u64, u64, Option<Anchor>), Error> {
    let Some(id) = &o.around else {
        let until = o.until.unwrap_or(now);
        let since = o.since.unwrap_or(until.saturating_sub(DEFAULT_SPAN_MS));
        if since > until {
            return Err(Error::EmptyRange { since, until });
        }
        return Ok((since, until, None));
    };
    let id = id.trim();
    // Events are few next to frames, and the id is only in the payload:
    // every event of the store is read.
    let idx = store.index(0, u64::MAX, &[RecordKind::Event]);
    let mut exact: Option<(u64, u64, &'static str)> = None;
    let mut incident: Option<(u64, u64, &'static str)> = None;
    let widen = |m: &mut Option<(u64, u64, &'static str)>, t: u64, kind: &'static str| {
        let (a, b, k) = m.get_or_insert((t, t, kind));
        *a = (*a).min(t);
        *b = (*b).max(t);
        if t == *a {
            *k = kind;
        }
    };
    for loc in &idx.locs {
        let Ok(Record::Event(e)) = store.load(loc) else {
            continue;
        };
        if e.id == id {
            widen(&mut exact, loc.unix_ms, e.kind.name());
        } else if e.incident == id {
            widen(&mut incident, loc.unix_ms, e.kind.name());
        }
    }
    let (matched, (first, last, kind)) = match (exact, incident) {
        (Some(m), _) => ("id", m),
        (None, Some(m)) => ("incident", m),
        (None, None) => {
            return Err(Error::UnknownEvent {
                store: o.store.clone(),
                id: id.to_string(),
                events: idx.locs.len(),
                span: store.span(),
            });
        }
    };
    let since = first.saturating_sub(BEFORE_MS).max(o.since.unwrap_or(0));
    let until = last
        .saturating_add(AFTER_MS)
        .min(o.until.unwrap_or(u64::MAX));
    if since > until {
        return Err(Error::EmptyRange { since, until });
    }
    let anchor = Anchor {
        id: id.to_string(),
        kind,
        first_ms: first,
        last_ms: last,
        matched,
    };
    Ok((since, until, Some(anchor)))
}

/// The start records of the segments the range spans: the one before it
/// (the segment it begins in) and those within it.
fn recorder_starts(store: &Store, since: u64, within: &[(u64, Start)]) -> Vec<(u64, Start)> {
    let mut out = Vec::new();
    if since > 0 {
        let before = store.index(
            since.saturating_sub(START_LOOKBACK_MS),
            since - 1,
            &[RecordKind::Start],
        );
        if let Some(loc) = before.locs.last()
            && let Ok(Record::Start(s)) = store.load(loc)
        {
            out.push((loc.unix_ms, *s));
        }
    }
    out.extend(within.iter().cloned());
    out
}

/// The first and last record in range, frames and events alike.
fn covered(s: &scan::Survey) -> Option<(u64, u64)> {
    let times = s
        .first_frame_ms
        .into_iter()
        .chain(s.last_frame_ms)
        .chain(s.events.first().map(|e| e.0))
        .chain(s.events.last().map(|e| e.0));
    let (mut a, mut b) = (u64::MAX, 0);
    for t in times {
        a = a.min(t);
        b = b.max(t);
    }
    (a <= b).then_some((a, b))
}

#[cfg(test)]
mod tests;
