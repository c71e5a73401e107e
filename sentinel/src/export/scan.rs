//! The two passes over the range's records. A day of frames at a 5 s
//! interval is 17,280 frames: they are never all in memory. The survey
//! loads them one at a time and keeps per-subject figures (peaks, first and
//! last rows) to choose what to export; the collection loads them again and
//! keeps only the chosen subjects' rows, streamed to CSV files on disk, and
//! chart series of at most `MAX_POINTS` points each.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io,
    path::Path,
};

use super::{
    stacks::Stacks,
    timeline::{self, Sink},
};
use crate::{
    event::Event,
    record::{Loc, Record, RecordKind, Start, Store},
    top::frame::{Frame, Header},
};

/// Points per chart series: about one per pixel of the plot.
pub const MAX_POINTS: usize = 720;

/// A process is its pid and start time: a reused pid is another process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    pub pid: u32,
    pub start: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ProcStats {
    pub comm: String,
    pub container: Option<String>,
    pub cgroup: Option<String>,
    pub first_ms: u64,
    pub first_rss: u64,
    pub last_ms: u64,
    pub last_rss: u64,
    pub peak_rss: u64,
    pub peak_ms: u64,
    pub peak_blocked: u32,
    pub rows: u64,
}

impl ProcStats {
    /// From its first recorded row to its peak: how much it grew in range.
    pub fn growth(&self) -> u64 {
        self.peak_rss.saturating_sub(self.first_rss)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ContainerStats {
    pub name: String,
    pub runtime: Option<String>,
    pub first_ms: u64,
    pub last_ms: u64,
    pub peak_rss: u64,
    pub peak_write: f64,
    pub peak_write_ms: u64,
    /// Bytes written over the range, from the rates (rate × interval).
    pub written: f64,
    pub rows: u64,
}

/// The host's worst moments, for the summary.
#[derive(Debug, Clone, Default)]
pub struct HostPeaks {
    pub min_available: Option<(u64, u64)>,
    pub mem_total: u64,
    pub max_psi_memory: Option<(u64, f64)>,
    pub max_psi_io: Option<(u64, f64)>,
    pub max_load1: Option<(u64, f64)>,
    pub max_blocked: Option<(u64, u64)>,
}

pub struct Survey {
    pub frames: u64,
    pub first_frame_ms: Option<u64>,
    pub last_frame_ms: Option<u64>,
    /// The newest frame's host context and time.
    pub last_header: Option<(u64, String, Header)>,
    /// Seconds between frames, as the frames say (the recorder's interval).
    pub interval_s: f64,
    pub procs: HashMap<ProcKey, ProcStats>,
    /// By cgroup path.
    pub containers: BTreeMap<String, ContainerStats>,
    /// In time order, each id once.
    pub events: Vec<(u64, Event)>,
    /// Start records in range, in time order.
    pub starts: Vec<(u64, Start)>,
    pub stacks: Stacks,
    pub host: HostPeaks,
    /// Records whose header was good and payload was not (checksum, JSON).
    pub unreadable: u64,
    pub host_rows: u64,
}

fn keep_max<T: PartialOrd + Copy>(slot: &mut Option<(u64, T)>, t: u64, v: T) {
    if slot.is_none_or(|(_, old)| v > old) {
        *slot = Some((t, v));
    }
}

/// SIGINT or SIGTERM: the export ends with an error, so the archive's
/// guard removes what was staged.
fn stopped() -> io::Result<()> {
    if crate::snapshot::STOP.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "interrupted by a signal",
        ));
    }
    Ok(())
}

/// The first pass: events, start records, per-subject figures, and the
/// host timeline (every frame has a host row, so it is written as it goes).
pub fn survey(store: &Store, locs: &[Loc], host_csv: &Path) -> io::Result<Survey> {
    let mut host = Sink::create(host_csv, timeline::header(timeline::HOST))?;
    let mut s = Survey {
        frames: 0,
        first_frame_ms: None,
        last_frame_ms: None,
        last_header: None,
        interval_s: 0.0,
        procs: HashMap::new(),
        containers: BTreeMap::new(),
        events: Vec::new(),
        starts: Vec::new(),
        stacks: Stacks::default(),
        host: HostPeaks::default(),
        unreadable: 0,
        host_rows: 0,
    };
    let mut seen_ids: HashSet<String> = HashSet::new();
    for loc in locs {
        stopped()?;
        let rec = match store.load(loc) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("skipping a record: {e}");
                s.unreadable += 1;
                continue;
            }
        };
        let t = loc.unix_ms;
        match rec {
            Record::Start(st) => s.starts.push((t, *st)),
            Record::Event(ev) => {
                if seen_ids.insert(ev.id.clone()) {
                    s.events.push((t, *ev));
                }
            }
            Record::Frame(f) => {
                s.frame(t, &f);
                host.row(timeline::HOST, t, &*f)?;
                s.host_rows += 1;
            }
        }
    }
    host.flush()?;
    // Index order is time order; a stable sort keeps it for equal times.
    s.events.sort_by_key(|(t, _)| *t);
    Ok(s)
}

impl Survey {
    fn frame(&mut self, t: u64, f: &Frame) {
        self.frames += 1;
        self.first_frame_ms.get_or_insert(t);
        self.last_frame_ms = Some(t);
        if f.interval_s > 0.0 {
            self.interval_s = f.interval_s;
        }
        self.last_header = Some((t, f.host.clone(), f.header.clone()));
        let h = &f.header;
        self.host.mem_total = h.mem_total;
        if h.mem_total > 0 {
            keep_max(&mut self.host.min_available, t, u64::MAX - h.mem_available);
        }
        if let Some(p) = h.psi_memory {
            keep_max(&mut self.host.max_psi_memory, t, p.some);
        }
        if let Some(p) = h.psi_io {
            keep_max(&mut self.host.max_psi_io, t, p.some);
        }
        keep_max(&mut self.host.max_load1, t, h.load[0]);
        let blocked: u64 = f.procs.iter().map(|p| u64::from(p.blocked)).sum();
        if blocked > 0 {
            keep_max(&mut self.host.max_blocked, t, blocked);
        }
        for p in &f.procs {
            let key = ProcKey {
                pid: p.pid,
                start: p.start,
            };
            let st = self.procs.entry(key).or_insert_with(|| ProcStats {
                first_ms: t,
                first_rss: p.rss,
                ..Default::default()
            });
            st.comm.clone_from(&p.comm);
            if p.container.is_some() {
                st.container.clone_from(&p.container);
            }
            if p.cgroup.is_some() {
                st.cgroup.clone_from(&p.cgroup);
            }
            st.last_ms = t;
            st.last_rss = p.rss;
            if p.rss > st.peak_rss || st.rows == 0 {
                st.peak_rss = p.rss;
                st.peak_ms = t;
            }
            st.peak_blocked = st.peak_blocked.max(p.blocked);
            st.rows += 1;
        }
        let dt = if f.interval_s > 0.0 {
            f.interval_s
        } else {
            5.0
        };
        for c in &f.containers {
            let st = self
                .containers
                .entry(c.path.clone())
                .or_insert_with(|| ContainerStats {
                    first_ms: t,
                    ..Default::default()
                });
            st.name.clone_from(&c.name);
            st.runtime.clone_from(&c.runtime);
            st.last_ms = t;
            st.peak_rss = st.peak_rss.max(c.rss);
            let w = c.write_per_s.unwrap_or(0.0);
            if w > st.peak_write {
                st.peak_write = w;
                st.peak_write_ms = t;
            }
            st.written += w * dt;
            st.rows += 1;
        }
        self.stacks.frame(t, f);
    }

    /// The host's lowest available memory, as (time, bytes).
    pub fn min_available(&self) -> Option<(u64, u64)> {
        self.host.min_available.map(|(t, v)| (t, u64::MAX - v))
    }
}

/// What the collection pass writes and draws.
#[derive(Default)]
pub struct Plan {
    /// Selected processes and their CSV files.
    pub procs: HashMap<ProcKey, Sink>,
    /// Selected containers (by path) and their CSV files.
    pub containers: HashMap<String, Sink>,
    pub rss_chart: Vec<ProcKey>,
    pub write_chart: Vec<String>,
    pub blocked_chart: Vec<ProcKey>,
}

/// Chart series as collected, before labels.
#[derive(Default)]
pub struct Collected {
    pub rss: Vec<Vec<Option<(u64, f64)>>>,
    pub write: Vec<Vec<Option<(u64, f64)>>>,
    /// The total over recorded processes, then `blocked_chart`'s.
    pub blocked: Vec<Vec<Option<(u64, f64)>>>,
}

/// Downsampling by frame ordinal: frame `i` of `n` goes to bucket
/// `i * B / n`, so every bucket holds at least one frame and a subject
/// missing from a bucket was missing from all its frames (a gap, drawn as
/// one). A bucket keeps the largest value: peaks survive.
struct Buckets {
    n: u64,
    b: u64,
}

impl Buckets {
    fn new(frames: u64) -> Buckets {
        Buckets {
            n: frames.max(1),
            b: frames.clamp(1, MAX_POINTS as u64),
        }
    }

    fn of(&self, i: u64) -> usize {
        (i * self.b / self.n) as usize
    }

    fn empty(&self) -> Vec<Option<(u64, f64)>> {
        vec![None; self.b as usize]
    }
}

fn put(series: &mut [Option<(u64, f64)>], bucket: usize, t: u64, v: f64) {
    if let Some(slot) = series.get_mut(bucket)
        && slot.is_none_or(|(_, old)| v > old)
    {
        *slot = Some((t, v));
    }
}

/// The second pass: the selected subjects' rows and the charts' series.
pub fn collect(
    store: &Store,
    locs: &[Loc],
    frames: u64,
    interval_s: f64,
    plan: &mut Plan,
) -> io::Result<Collected> {
    let bk = Buckets::new(frames);
    let rss_at: HashMap<ProcKey, usize> = plan
        .rss_chart
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, i))
        .collect();
    let write_at: HashMap<&str, usize> = plan
        .write_chart
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let blocked_at: HashMap<ProcKey, usize> = plan
        .blocked_chart
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, i + 1))
        .collect();
    let mut out = Collected {
        rss: vec![bk.empty(); rss_at.len()],
        write: vec![bk.empty(); write_at.len()],
        blocked: vec![bk.empty(); blocked_at.len() + 1],
    };
    let mut i = 0u64;
    for loc in locs.iter().filter(|l| l.kind == RecordKind::Frame) {
        stopped()?;
        // Counted by the survey; the frame is left out here too.
        let Ok(Record::Frame(f)) = store.load(loc) else {
            continue;
        };
        let t = loc.unix_ms;
        let b = bk.of(i);
        i += 1;
        let mut blocked = 0u64;
        for p in &f.procs {
            blocked += u64::from(p.blocked);
            let key = ProcKey {
                pid: p.pid,
                start: p.start,
            };
            if let Some(sink) = plan.procs.get_mut(&key) {
                sink.row(timeline::PROCESS, t, p)?;
            }
            if let Some(&j) = rss_at.get(&key) {
                put(&mut out.rss[j], b, t, p.rss as f64);
            }
            if let Some(&j) = blocked_at.get(&key) {
                put(&mut out.blocked[j], b, t, f64::from(p.blocked));
            }
        }
        put(&mut out.blocked[0], b, t, blocked as f64);
        for c in &f.containers {
            if let Some(sink) = plan.containers.get_mut(&c.path) {
                sink.row(timeline::CONTAINER, t, c)?;
            }
            if let Some(&j) = write_at.get(c.path.as_str()) {
                put(&mut out.write[j], b, t, c.write_per_s.unwrap_or(0.0));
            }
        }
    }
    for sink in plan.procs.values_mut().chain(plan.containers.values_mut()) {
        sink.flush()?;
    }
    // A stretch with no frames at all (the daemon was down, recording
    // paused) is a gap in every line, not a straight line across it.
    let per_bucket = bk.n.div_ceil(bk.b);
    let gap_ms = ((per_bucket + 2) as f64 * interval_s.max(0.1) * 1000.0) as u64;
    for s in out
        .rss
        .iter_mut()
        .chain(out.write.iter_mut())
        .chain(out.blocked.iter_mut())
    {
        *s = break_gaps(std::mem::take(s), gap_ms);
    }
    Ok(out)
}

fn break_gaps(pts: Vec<Option<(u64, f64)>>, gap_ms: u64) -> Vec<Option<(u64, f64)>> {
    let mut out = Vec::with_capacity(pts.len());
    let mut prev: Option<u64> = None;
    for p in pts {
        if let (Some((t, _)), Some(pt)) = (p, prev)
            && t.saturating_sub(pt) > gap_ms
        {
            out.push(None);
        }
        prev = p.map(|(t, _)| t);
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_never_leave_one_empty() {
        for n in [1u64, 5, 719, 720, 721, 17_280] {
            let b = Buckets::new(n);
            let mut hit = vec![false; b.b as usize];
            for i in 0..n {
                hit[b.of(i)] = true;
            }
            assert!(hit.iter().all(|h| *h), "n={n}");
        }
    }

    #[test]
    fn a_pause_in_recording_breaks_the_line() {
        let pts = vec![Some((0, 1.0)), Some((1000, 1.0)), Some((60_000, 2.0))];
        let out = break_gaps(pts, 5000);
        assert_eq!(out.len(), 4);
        assert_eq!(out[2], None);
    }
}
