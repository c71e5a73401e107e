//! The Prometheus `/metrics` endpoint.
//!
//! The daemon owns a [`Metrics`] and calls [`Metrics::update`] once per
//! tick with what the tick produced; that renders the whole page into a
//! shared [`Page`], which the server thread ([`server::serve`]) hands to
//! scrapers. A scrape never touches the daemon's state and never waits for
//! a tick: it copies a pointer to the last page. While nobody scrapes, a
//! page is rendered only every 15 s.
//!
//! Layout: `render.rs` writes the text format, `fold.rs` decides which
//! containers get series of their own and keeps their counters monotonic,
//! `server.rs` is the HTTP side; this file gathers what the daemon knows
//! and lays the page out.
//!
//! Cardinality stays bounded: containers are folded as `fold.rs` explains,
//! and processes appear only among the top `top_processes` of each signal.
//! Nothing secret is ever on the page: sinks are named by their `name`,
//! never their URL.
mod fold;
mod render;
pub mod server;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use sentinel_common::Counter;

pub use self::server::{ServeError, Server, serve};
use self::{
    fold::{CgroupIn, Fold, Limits, ProcIn},
    render::{Type, Writer},
};
use crate::{
    collect::Sample,
    config,
    event::{Event, Kind, Severity, State},
    probes::{ProbeStatus, Status},
    procfs,
    profile::{self, HostPoint, Profiles},
    report::OomKill,
    sink::SinkStatus,
};

/// The span the per-process rates are measured over.
const RATE_WINDOW_S: f64 = 10.0;
/// While scrapes come, pages are rendered at most this often.
const RENDER_EVERY_S: f64 = 0.9;
/// Unscraped for this long, the endpoint counts as idle: pages are then
/// rendered only every `IDLE_RENDER_EVERY_S`, so that a daemon nobody
/// scrapes spends next to nothing on them, and a first scrape after a
/// pause gets a page at most that old.
const IDLE_AFTER_S: f64 = 120.0;
const IDLE_RENDER_EVERY_S: f64 = 15.0;
/// A futex wait counts as blocked past this, when the profiles do not say
/// (their `long_wait` is what the hang detector watches).
const DEFAULT_BLOCKED_S: f64 = 10.0;

/// The last rendered page, shared with the server thread. Cloning is cheap.
#[derive(Clone)]
pub struct Page(Arc<PageInner>);

struct PageInner {
    text: Mutex<Arc<String>>,
    born: Instant,
    /// Milliseconds after `born` of the last scrape, plus one (0: never).
    scraped: AtomicU64,
}

impl Default for Page {
    fn default() -> Self {
        Page(Arc::new(PageInner {
            text: Mutex::new(Arc::new(String::new())),
            born: Instant::now(),
            scraped: AtomicU64::new(0),
        }))
    }
}

impl Page {
    /// The page for a scrape.
    pub fn get(&self) -> Arc<String> {
        let ms = self.0.born.elapsed().as_millis() as u64 + 1;
        self.0.scraped.store(ms, Ordering::Relaxed);
        // A panic while the lock was held cannot leave a half-written page:
        // the lock only ever guards a pointer swap.
        Arc::clone(&self.0.text.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn set(&self, text: String) {
        *self.0.text.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(text);
    }

    /// Seconds since the last scrape, if there was one.
    pub fn since_scrape(&self) -> Option<f64> {
        match self.0.scraped.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.0.born.elapsed().as_secs_f64() - (ms - 1) as f64 / 1000.0),
        }
    }
}

/// What one tick of the daemon hands to [`Metrics::update`].
use crate::record::writer::Status as RecorderStatus;

pub struct Input<'a> {
    /// The tick's time, seconds on the daemon's monotonic clock.
    pub t: f64,
    pub profiles: &'a Profiles,
    pub sample: &'a Sample,
    pub probes: &'a [ProbeStatus],
    pub sinks: &'a [SinkStatus],
    /// None: the recorder is off.
    pub recorder: Option<&'a RecorderStatus>,
    /// The OOM kills drained since the last update (each passed once).
    pub oom_kills: &'a [OomKill],
}

/// A per-process family: name, help, the value of a process.
type ProcFamily<'a> = (&'static str, &'a str, fn(&ProcIn) -> f64);
/// A per-container family: name, type, help, the value of a row.
type RowFamily<'a> = (&'static str, Type, &'a str, fn(&fold::Row) -> u64);

/// What a page is made of, gathered from the daemon's state.
struct Parts<'a> {
    t: f64,
    procs: Vec<ProcIn<'a>>,
    cgroups: Vec<CgroupIn>,
    kills: Vec<(u64, Option<String>)>,
    probes: &'a [ProbeStatus],
    sinks: &'a [SinkStatus],
    recorder: Option<&'a RecorderStatus>,
    counters: &'a [u64],
    host: Option<&'a HostPoint>,
    /// Processes and cgroups profiled.
    tracked: (usize, usize),
    blocked_after: f64,
}

pub struct Metrics {
    top_processes: usize,
    limits: Limits,
    fold: Fold,
    /// By kind, severity and state name (`State` has no order).
    events: BTreeMap<(Kind, Severity, &'static str), u64>,
    oom_kills: u64,
    /// Kills passed in while no page was rendered, for the next one.
    pending_kills: Vec<(u64, Option<String>)>,
    last_render: Option<f64>,
    page: Page,
    last_len: usize,
    /// What the previous update cost, seconds (this one's is not known
    /// until its page is written).
    last_cost: f64,
    clk_tck: u64,
    page_size: u64,
}

impl Metrics {
    pub fn new(cfg: &config::Metrics) -> Metrics {
        let clk_tck = procfs::clock_ticks_per_s();
        let mut events = BTreeMap::new();
        // Known label sets start at zero, so the first event of a kind is
        // an increase Prometheus can see rather than a series appearing.
        for kind in KINDS {
            for severity in [Severity::Info, Severity::Warning, Severity::Critical] {
                for state in [State::Firing, State::Resolved] {
                    events.insert((kind, severity, state.name()), 0);
                }
            }
        }
        let mut m = Metrics {
            top_processes: 0,
            limits: Limits {
                min_age: 0.0,
                max_containers: 0,
            },
            fold: Fold::new(boot_ticks(clk_tck)),
            events,
            oom_kills: 0,
            pending_kills: Vec::new(),
            last_render: None,
            page: Page::default(),
            last_len: 16 * 1024,
            last_cost: 0.0,
            clk_tck,
            page_size: procfs::page_size(),
        };
        m.configure(cfg);
        m
    }

    /// A reloaded config's limits; the counters carry on.
    pub fn configure(&mut self, cfg: &config::Metrics) {
        self.top_processes = cfg.top_processes;
        self.limits = Limits {
            min_age: cfg.min_container_age.as_secs_f64(),
            max_containers: cfg.max_containers,
        };
    }

    /// The page the server hands out.
    pub fn page(&self) -> Page {
        self.page.clone()
    }

    /// Counts one emitted event (call once per event the daemon emits).
    pub fn event(&mut self, e: &Event) {
        *self
            .events
            .entry((e.kind, e.severity, e.state.name()))
            .or_default() += 1;
    }

    /// Folds one tick in and renders the page, when one is due (see
    /// `RENDER_EVERY_S`): call it every tick.
    pub fn update(&mut self, input: &Input<'_>) {
        self.pending_kills.extend(input.oom_kills.iter().map(|k| {
            let name = k
                .victim_cgroup
                .as_deref()
                .and_then(crate::container::identify)
                .map(|c| c.name);
            (k.victim_cgroup_id, name)
        }));
        let since_render = self.last_render.map_or(f64::INFINITY, |r| input.t - r);
        let active = self.page.since_scrape().is_some_and(|s| s < IDLE_AFTER_S);
        let due = if active {
            since_render >= RENDER_EVERY_S
        } else {
            since_render >= IDLE_RENDER_EVERY_S
        };
        if !due {
            return;
        }
        self.last_render = Some(input.t);
        let started = Instant::now();
        let blocked_after = if input.profiles.long_wait > 0.0 {
            input.profiles.long_wait
        } else {
            DEFAULT_BLOCKED_S
        };
        let parts = Parts {
            t: input.t,
            procs: gather_procs(input, blocked_after),
            cgroups: gather_cgroups(input.profiles, boot_ticks(self.clk_tck), self.clk_tck),
            kills: std::mem::take(&mut self.pending_kills),
            probes: input.probes,
            sinks: input.sinks,
            recorder: input.recorder,
            counters: &input.sample.counters,
            host: input.profiles.host.last(),
            tracked: (input.profiles.procs.len(), input.profiles.containers.len()),
            blocked_after,
        };
        let text = self.render(&parts);
        self.page.set(text);
        self.last_cost = started.elapsed().as_secs_f64();
    }

    fn render(&mut self, parts: &Parts<'_>) -> String {
        self.oom_kills += parts.kills.len() as u64;
        let folded = self.fold.step(
            parts.t,
            &parts.procs,
            &parts.cgroups,
            &parts.kills,
            self.limits,
        );
        let mut w = Writer::with_capacity(self.last_len + self.last_len / 8);
        self.write_self(&mut w, parts);
        write_host(&mut w, parts.host, self.oom_kills);
        write_containers(&mut w, &folded, parts.blocked_after);
        self.write_processes(&mut w, parts, &folded);
        let text = w.finish();
        self.last_len = text.len();
        text
    }

    fn write_self(&self, w: &mut Writer, parts: &Parts<'_>) {
        w.family(
            "sentinel_build_info",
            Type::Gauge,
            "Always 1; the version of sentinel running.",
        );
        w.sample(&[("version", env!("CARGO_PKG_VERSION"))], 1u32);

        let (cpu, rss) = procfs::own_usage(self.page_size);
        w.family(
            "process_cpu_seconds_total",
            Type::Counter,
            "CPU time sentinel used, user and system, all threads.",
        );
        w.sample(&[], cpu);
        w.family(
            "process_resident_memory_bytes",
            Type::Gauge,
            "sentinel's resident memory.",
        );
        w.sample(&[], rss);
        w.family(
            "sentinel_metrics_update_seconds",
            Type::Gauge,
            "What building the previous metrics page cost.",
        );
        w.sample(&[], self.last_cost);
        w.family(
            "sentinel_tracked_processes",
            Type::Gauge,
            "Processes sentinel has a profile of.",
        );
        w.sample(&[], parts.tracked.0);
        w.family(
            "sentinel_tracked_containers",
            Type::Gauge,
            "Cgroups with live processes sentinel has a profile of.",
        );
        w.sample(&[], parts.tracked.1);

        w.family(
            "sentinel_events_total",
            Type::Counter,
            "Events sentinel emitted (firing, reminders and resolutions).",
        );
        for ((kind, severity, state), n) in &self.events {
            w.sample(
                &[
                    ("kind", kind.name()),
                    ("severity", severity.name()),
                    ("state", state),
                ],
                *n,
            );
        }

        w.family(
            "sentinel_probe_up",
            Type::Gauge,
            "1 if the probe is attached (perhaps degraded), 0 if not.",
        );
        for p in parts.probes {
            w.sample(&[("probe", &p.name)], u32::from(p.working()));
        }
        w.family(
            "sentinel_probe_degraded",
            Type::Gauge,
            "1 if the probe works but measures less (a fallback, or an optional part missing).",
        );
        for p in parts.probes {
            w.sample(
                &[("probe", &p.name)],
                u32::from(p.status == Status::Degraded),
            );
        }

        w.family(
            "sentinel_kernel_events_total",
            Type::Counter,
            "Events the eBPF programs handled, by counter.",
        );
        for c in Counter::ALL.iter().filter(|c| !c.is_drop()) {
            w.sample(&[("counter", c.name())], parts.counters[*c as usize]);
        }
        w.family(
            "sentinel_kernel_drops_total",
            Type::Counter,
            "Losses in the kernel: a map or buffer full (*_full), or a read that failed.",
        );
        for c in Counter::ALL.iter().filter(|c| c.is_drop()) {
            w.sample(&[("counter", c.name())], parts.counters[*c as usize]);
        }

        let sinks = parts.sinks;
        let gauge = |w: &mut Writer, name, help, f: fn(&SinkStatus) -> u64| {
            w.family(name, Type::Gauge, help);
            for s in sinks {
                w.sample(&[("sink", &s.name)], f(s));
            }
        };
        gauge(
            w,
            "sentinel_sink_queue_depth",
            "Events handed to the sink and not yet spooled or written.",
            |s| s.queued as u64,
        );
        gauge(
            w,
            "sentinel_sink_spool_events",
            "Events in the sink's on-disk spool, waiting for delivery.",
            |s| s.spooled as u64,
        );
        gauge(
            w,
            "sentinel_sink_spool_bytes",
            "Size of the sink's on-disk spool.",
            |s| s.spool_bytes,
        );
        let counter = |w: &mut Writer, name, help, f: fn(&SinkStatus) -> u64| {
            w.family(name, Type::Counter, help);
            for s in sinks {
                w.sample(&[("sink", &s.name)], f(s));
            }
        };
        counter(
            w,
            "sentinel_sink_delivered_total",
            "Events the sink delivered.",
            |s| s.delivered,
        );
        counter(
            w,
            "sentinel_sink_delivery_failures_total",
            "Failed delivery attempts (each retry counts).",
            |s| s.failures,
        );
        counter(
            w,
            "sentinel_sink_rate_limited_total",
            "Events folded into a summary by the sink's rate limit.",
            |s| s.rate_limited,
        );
        w.family(
            "sentinel_sink_dropped_total",
            Type::Counter,
            "Events the sink lost: spool full, queue full, or rejected by the receiver for good.",
        );
        for s in sinks {
            for (reason, n) in [
                ("spool_full", s.dropped_spool_full),
                ("queue_full", s.dropped_queue_full),
                ("rejected", s.rejected),
            ] {
                w.sample(&[("sink", &s.name), ("reason", reason)], n);
            }
        }

        if let Some(r) = parts.recorder {
            let one = |w: &mut Writer, name, ty, help, v: u64| {
                w.family(name, ty, help);
                w.sample(&[], v);
            };
            one(
                w,
                "sentinel_recorder_paused",
                Type::Gauge,
                "1 while the flight recorder cannot write (disk full or below min_free, I/O error).",
                u64::from(r.paused.is_some()),
            );
            one(
                w,
                "sentinel_recorder_store_bytes",
                Type::Gauge,
                "Size of the flight recorder's store.",
                r.store_bytes,
            );
            one(
                w,
                "sentinel_recorder_records_total",
                Type::Counter,
                "Records the flight recorder wrote (events and frames).",
                r.records,
            );
            one(
                w,
                "sentinel_recorder_dropped_total",
                Type::Counter,
                "Records the flight recorder lost: queue full, or frames while paused.",
                r.dropped,
            );
        }
    }

    fn write_processes(&self, w: &mut Writer, parts: &Parts<'_>, folded: &fold::Folded) {
        let (procs, blocked_after) = (&parts.procs, parts.blocked_after);
        // The container label of a process: the row its cgroup went to.
        let names: HashMap<u64, &str> = parts
            .cgroups
            .iter()
            .filter_map(|c| {
                let row = folded.label_of.get(&c.id)?;
                Some((c.id, folded.rows[*row].name.as_str()))
            })
            .collect();
        let n = self.top_processes;
        let blocked_help =
            format!("Threads in a futex wait for over {blocked_after:.0} s (top processes only).");
        let families: [ProcFamily; 5] = [
            (
                "sentinel_process_rss_bytes",
                "Resident memory (top processes only).",
                |p| p.rss as f64,
            ),
            (
                "sentinel_process_page_faults_per_second",
                "Page faults per second over the last 10 s (top processes only).",
                |p| p.fault_rate,
            ),
            (
                "sentinel_process_read_bytes_per_second",
                "Bytes read from block devices per second over the last 10 s (top processes only).",
                |p| p.read_rate,
            ),
            (
                "sentinel_process_write_bytes_per_second",
                "Bytes written (page cache dirtied plus direct I/O) per second over the last 10 s (top processes only).",
                |p| p.write_rate,
            ),
            (
                "sentinel_process_futex_blocked_threads",
                &blocked_help,
                |p| f64::from(p.blocked),
            ),
        ];
        for (name, help, key) in families {
            w.family(name, Type::Gauge, help);
            for i in fold::top(procs, n, key) {
                let p = &procs[i];
                let pid = p.pid.to_string();
                let container = names.get(&p.cgroup_id).copied().unwrap_or("");
                w.sample(
                    &[("pid", &pid), ("comm", p.comm), ("container", container)],
                    key(p),
                );
            }
        }
    }
}

/// Every event kind, so the counters can start at zero.
const KINDS: [Kind; 8] = [
    Kind::MemoryBloat,
    Kind::Deadlock,
    Kind::Hang,
    Kind::WriteAnomaly,
    Kind::OomKill,
    Kind::ThreadExplosion,
    Kind::SwapThrashing,
    Kind::RecorderPaused,
];

/// Never called: its exhaustive match makes a new kind a compile error
/// here, a reminder to list it in `KINDS`.
#[allow(dead_code)]
fn every_kind_is_listed(k: Kind) {
    match k {
        Kind::MemoryBloat
        | Kind::Deadlock
        | Kind::Hang
        | Kind::WriteAnomaly
        | Kind::OomKill
        | Kind::ThreadExplosion
        | Kind::SwapThrashing
        | Kind::RecorderPaused => {}
    }
}

fn gather_procs<'a>(input: &Input<'a>, blocked_after: f64) -> Vec<ProcIn<'a>> {
    let long_ns = (blocked_after * 1e9) as u64;
    let mut blocked: HashMap<u32, u32> = HashMap::new();
    for w in input.sample.waits.values() {
        if input.sample.mono_ns.saturating_sub(w.start_ns) >= long_ns {
            *blocked.entry(w.tgid).or_default() += 1;
        }
    }
    input
        .profiles
        .procs
        .values()
        .filter_map(|p| {
            let last = p.series.last()?;
            let win = p.series.window(RATE_WINDOW_S);
            // Milli-units are plenty, and keep the page readable.
            let rate = |f: fn(&profile::Point) -> u64| {
                (profile::rate(&win, f).unwrap_or(0.0) * 1000.0).round() / 1000.0
            };
            Some(ProcIn {
                pid: p.pid,
                start: p.start,
                comm: &p.comm,
                cgroup_id: p.cgroup_id,
                rss: last.rss,
                majflt: last.majflt,
                fault_rate: rate(|x| x.faults),
                read_rate: rate(|x| x.read),
                write_rate: rate(|x| x.write),
                blocked: blocked.get(&p.pid).copied().unwrap_or(0),
            })
        })
        .collect()
}

fn gather_cgroups(profiles: &Profiles, now_ticks: u64, clk_tck: u64) -> Vec<CgroupIn> {
    profiles
        .containers
        .values()
        .filter_map(|c| {
            let last = c.series.last()?;
            let oldest = c
                .members
                .iter()
                .filter_map(|pid| profiles.procs.get(pid))
                .map(|p| p.start)
                .min()
                .unwrap_or(now_ticks);
            Some(CgroupIn {
                id: c.cgroup_id,
                name: c.name(),
                age: now_ticks.saturating_sub(oldest) as f64 / clk_tck as f64,
                rss: last.rss,
                faults: last.faults,
                read: last.read,
                write: last.write,
            })
        })
        .collect()
}

fn write_host(w: &mut Writer, host: Option<&HostPoint>, oom_kills: u64) {
    w.family(
        "sentinel_host_oom_kills_total",
        Type::Counter,
        "OOM kills sentinel saw on the host since it started.",
    );
    w.sample(&[], oom_kills);
    let Some(h) = host else {
        return;
    };
    for (name, help, v) in [
        (
            "sentinel_host_memory_total_bytes",
            "MemTotal from /proc/meminfo.",
            h.mem_total,
        ),
        (
            "sentinel_host_memory_available_bytes",
            "MemAvailable from /proc/meminfo.",
            h.mem_available,
        ),
        (
            "sentinel_host_swap_total_bytes",
            "SwapTotal from /proc/meminfo.",
            h.swap_total,
        ),
        (
            "sentinel_host_swap_free_bytes",
            "SwapFree from /proc/meminfo.",
            h.swap_free,
        ),
    ] {
        w.family(name, Type::Gauge, help);
        w.sample(&[], v);
    }
    for (name, help, v) in [
        (
            "sentinel_host_major_faults_total",
            "Major page faults on the host (pgmajfault in /proc/vmstat).",
            h.vm.pgmajfault,
        ),
        (
            "sentinel_host_swap_in_pages_total",
            "Pages swapped in (pswpin in /proc/vmstat).",
            h.vm.pswpin,
        ),
        (
            "sentinel_host_swap_out_pages_total",
            "Pages swapped out (pswpout in /proc/vmstat).",
            h.vm.pswpout,
        ),
    ] {
        w.family(name, Type::Counter, help);
        w.sample(&[], v);
    }
    // Absent when the kernel has no PSI: no family rather than zeros that
    // would read as "no pressure".
    if h.psi_memory.is_some() || h.psi_io.is_some() {
        w.family(
            "sentinel_host_pressure_stalled_seconds_total",
            Type::Counter,
            "Pressure stall time from /proc/pressure: some (at least one task stalled) or full (all non-idle tasks stalled).",
        );
        for (resource, p) in [("memory", h.psi_memory), ("io", h.psi_io)] {
            let Some(p) = p else { continue };
            for (kind, us) in [("some", p.some_total_us), ("full", p.full_total_us)] {
                w.sample(&[("resource", resource), ("kind", kind)], us as f64 / 1e6);
            }
        }
    }
}

fn write_containers(w: &mut Writer, folded: &fold::Folded, blocked_after: f64) {
    let rows = &folded.rows;
    let blocked_help =
        format!("Threads of the container in a futex wait for over {blocked_after:.0} s.");
    let families: [RowFamily; 7] = [
        (
            "sentinel_container_rss_bytes",
            Type::Gauge,
            "Resident memory of the container's processes.",
            |r| r.rss,
        ),
        (
            "sentinel_container_page_faults_total",
            Type::Counter,
            "Page faults in the container.",
            |r| r.totals.faults,
        ),
        (
            "sentinel_container_major_faults_total",
            Type::Counter,
            "Major page faults (reads from disk) in the container.",
            |r| r.totals.majflt,
        ),
        (
            "sentinel_container_read_bytes_total",
            Type::Counter,
            "Bytes the container read from block devices.",
            |r| r.totals.read,
        ),
        (
            "sentinel_container_write_bytes_total",
            Type::Counter,
            "Bytes the container wrote: page cache dirtied plus direct I/O.",
            |r| r.totals.write,
        ),
        (
            "sentinel_container_oom_kills_total",
            Type::Counter,
            "Processes of the container the OOM killer killed.",
            |r| r.totals.oom_kills,
        ),
        (
            "sentinel_container_futex_blocked_threads",
            Type::Gauge,
            &blocked_help,
            |r| r.blocked,
        ),
    ];
    for (name, kind, help, f) in families {
        w.family(name, kind, help);
        for r in rows {
            w.sample(&[("container", &r.name)], f(r));
        }
    }
    w.family(
        "sentinel_container_cgroups",
        Type::Gauge,
        "Cgroups with live processes behind each container label (those in \"other\" are folded: too young or too small to be shown on their own).",
    );
    for r in rows {
        w.sample(&[("container", &r.name)], r.cgroups);
    }
}

/// Clock ticks since boot, the clock of `starttime` in /proc/PID/stat.
fn boot_ticks(clk_tck: u64) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * clk_tck + ts.tv_nsec as u64 * clk_tck / 1_000_000_000
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{event::Names, probes::Status, profile::Series};

    fn cfg() -> config::Metrics {
        config::Metrics {
            listen: None,
            top_processes: 10,
            min_container_age: Duration::from_secs(60),
            max_containers: 50,
        }
    }

    /// A host of `n_procs` processes spread over `n_cgroups` containers,
    /// at tick `t` (counters grow with it).
    fn host_parts(fx: &Fixtures, t: f64, n_procs: u32, n_cgroups: u64) -> Parts<'_> {
        let procs = (0..n_procs)
            .map(|i| ProcIn {
                pid: 1000 + i,
                start: u64::from(i),
                comm: &fx.comms[i as usize],
                cgroup_id: 1 + u64::from(i) % n_cgroups,
                rss: u64::from(i) * 4096,
                majflt: u64::from(i) + t as u64,
                fault_rate: f64::from(i % 13),
                read_rate: f64::from(i % 17) * 1000.0,
                write_rate: f64::from(i % 19) * 1000.0,
                blocked: i % 5,
            })
            .collect();
        let cgroups = (1..=n_cgroups)
            .map(|id| CgroupIn {
                id,
                name: format!("/system.slice/unit-{id}.service"),
                age: if id % 10 == 0 { 5.0 } else { 600.0 },
                rss: id * 1_000_000,
                faults: id * 10 * t as u64,
                read: id * 100 * t as u64,
                write: id * 1000 * t as u64,
            })
            .collect();
        Parts {
            t,
            procs,
            cgroups,
            kills: vec![(3, None)],
            probes: &fx.probes,
            sinks: &fx.sinks,
            recorder: None,
            counters: &fx.counters,
            host: Some(&fx.host),
            tracked: (n_procs as usize, n_cgroups as usize),
            blocked_after: 15.0,
        }
    }

    /// What the parts borrow.
    struct Fixtures {
        comms: Vec<String>,
        probes: Vec<ProbeStatus>,
        sinks: Vec<SinkStatus>,
        counters: Vec<u64>,
        host: HostPoint,
    }

    fn fixtures() -> Fixtures {
        let comms = (0..500).map(|i| format!("worker \"{i}\"\\x")).collect();
        let probes = ["faults", "rss", "futex"]
            .iter()
            .map(|n| ProbeStatus {
                name: n.to_string(),
                status: if *n == "rss" {
                    Status::Degraded
                } else {
                    Status::Attached
                },
                program_type: None,
                detail: String::new(),
                variants: Vec::new(),
            })
            .collect();
        let sinks = ["log", "team-slack"]
            .iter()
            .map(|n| SinkStatus {
                name: n.to_string(),
                kind: "webhook",
                format: "slack",
                queued: 1,
                spooled: 2,
                spool_bytes: 300,
                delivered: 4,
                failures: 5,
                last_error: Some("https://hooks.example/secret-token: 500".into()),
                ..SinkStatus::default()
            })
            .collect();
        let host = HostPoint {
            mem_total: 8 << 30,
            mem_available: 4 << 30,
            psi_memory: Some(crate::host::Pressure {
                some_total_us: 1_500_000,
                ..Default::default()
            }),
            ..Default::default()
        };
        Fixtures {
            comms,
            probes,
            sinks,
            counters: vec![7; 32],
            host,
        }
    }

    fn value(page: &str, series: &str) -> Option<f64> {
        render::tests::parse(page)
            .unwrap()
            .into_iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| v)
    }

    #[test]
    fn a_page_is_valid_bounded_and_has_every_family() {
        let fx = fixtures();
        let mut m = Metrics::new(&cfg());
        m.event(&Event {
            id: "e1".into(),
            incident: "e1".into(),
            ts: String::new(),
            host: "h".into(),
            kind: Kind::Hang,
            severity: Severity::Critical,
            state: State::Firing,
            subject: "process".into(),
            names: Names::default(),
            summary: String::new(),
            evidence: serde_json::Value::Null,
        });
        let page = m.render(&host_parts(&fx, 1.0, 500, 100));
        let samples = render::tests::parse(&page).unwrap_or_else(|e| panic!("{e}\n{page}"));
        for family in [
            "sentinel_build_info",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "sentinel_events_total",
            "sentinel_probe_up",
            "sentinel_kernel_drops_total",
            "sentinel_sink_queue_depth",
            "sentinel_sink_spool_events",
            "sentinel_sink_spool_bytes",
            "sentinel_sink_delivered_total",
            "sentinel_sink_delivery_failures_total",
            "sentinel_sink_dropped_total",
            "sentinel_host_memory_available_bytes",
            "sentinel_host_pressure_stalled_seconds_total",
            "sentinel_container_rss_bytes",
            "sentinel_container_page_faults_total",
            "sentinel_container_major_faults_total",
            "sentinel_container_read_bytes_total",
            "sentinel_container_write_bytes_total",
            "sentinel_container_oom_kills_total",
            "sentinel_container_futex_blocked_threads",
            "sentinel_process_rss_bytes",
            "sentinel_process_page_faults_per_second",
            "sentinel_process_read_bytes_per_second",
            "sentinel_process_write_bytes_per_second",
            "sentinel_process_futex_blocked_threads",
        ] {
            assert!(
                page.contains(&format!("# TYPE {family} ")),
                "{family} missing"
            );
        }
        // 50 containers shown plus other; 10 processes per signal.
        let count = |prefix: &str| {
            samples
                .iter()
                .filter(|(s, _)| s.starts_with(prefix))
                .count()
        };
        assert_eq!(count("sentinel_container_rss_bytes{"), 51);
        assert_eq!(count("sentinel_process_rss_bytes{"), 10);
        assert_eq!(count("sentinel_process_futex_blocked_threads{"), 10);
        assert_eq!(
            value(
                &page,
                r#"sentinel_events_total{kind="hang",severity="critical",state="firing"}"#
            ),
            Some(1.0)
        );
        assert_eq!(value(&page, r#"sentinel_probe_up{probe="rss"}"#), Some(1.0));
        assert_eq!(
            value(
                &page,
                r#"sentinel_host_pressure_stalled_seconds_total{resource="memory",kind="some"}"#
            ),
            Some(1.5)
        );
        assert!(page.contains(r#"comm="worker \"499\"\\x""#), "comm escaped");
        assert!(
            !page.contains("secret"),
            "a sink's error (and URL) never shows"
        );
        // The largest containers are shown, the young ones never.
        assert!(page.contains(r#"container="/system.slice/unit-99.service""#));
        assert!(!page.contains(r#"container="/system.slice/unit-100.service""#));
        assert!(!page.contains(r#"container="/system.slice/unit-1.service""#));
    }

    #[test]
    fn counters_never_decrease_across_pages() {
        let fx = fixtures();
        let mut m = Metrics::new(&cfg());
        let mut last: HashMap<String, f64> = HashMap::new();
        for t in 1..20 {
            // Containers come and go: every third tick half of them vanish.
            let n = if t % 3 == 0 { 50 } else { 100 };
            let page = m.render(&host_parts(&fx, t as f64, 500, n));
            for (series, v) in render::tests::parse(&page).unwrap() {
                if series.starts_with("sentinel_container_") && series.contains("_total") {
                    if let Some(&was) = last.get(&series) {
                        assert!(v >= was, "{series} went from {was} to {v} at t={t}");
                    }
                    last.insert(series, v);
                }
            }
        }
    }

    /// What one update costs on a host of 500 processes in 100 containers:
    /// gathering (one 10 s window per process, as `gather_procs` does),
    /// folding and rendering. Run with --nocapture to see it.
    #[test]
    fn one_update_is_cheap() {
        let fx = fixtures();
        let mut m = Metrics::new(&cfg());
        let series: Vec<Series<profile::Point>> = (0..500u32)
            .map(|i| {
                let mut s = Series::default();
                for t in 0..120u32 {
                    s.push(profile::Point {
                        t: f64::from(t),
                        faults: u64::from(i * t),
                        write: u64::from(i * t * 100),
                        ..Default::default()
                    });
                }
                s
            })
            .collect();
        let rounds = 50;
        let started = Instant::now();
        let mut bytes = 0;
        for t in 0..rounds {
            let mut sum = 0.0;
            for s in &series {
                let w = s.window(RATE_WINDOW_S);
                sum += profile::rate(&w, |p| p.faults).unwrap_or(0.0)
                    + profile::rate(&w, |p| p.read).unwrap_or(0.0)
                    + profile::rate(&w, |p| p.write).unwrap_or(0.0);
            }
            assert!(sum > 0.0);
            let page = m.render(&host_parts(&fx, f64::from(t), 500, 100));
            bytes = page.len();
        }
        let per = started.elapsed() / rounds;
        eprintln!(
            "MEASURED metrics_update procs=500 containers=100 per_update_us={} page_bytes={bytes}",
            per.as_micros()
        );
        // Generous: a debug build on a slow runner must pass too.
        assert!(per < Duration::from_millis(50), "{per:?}");
    }
}
