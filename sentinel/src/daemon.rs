//! `sentinel daemon`: the loop. Every `daemon.interval` it samples the
//! kernel maps, folds the sample into the profiles, runs the detectors and
//! hands the events that result to the sinks (`sink/`), the local API
//! (`api.rs`) and the metrics (`metrics/`), none of which can hold it up.
//! Once a minute it prunes the maps only userspace can prune and reports
//! kernel-side losses. SIGHUP reloads the config; SIGTERM and SIGINT stop
//! it, leaving undelivered events in the spools.
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use sentinel_common::Counter;
use serde_json::json;

use crate::{
    api::{self, Hub},
    config::{self, Config, LogFormat},
    engine::Engine,
    event::{Event, Kind, Names, Severity, SubjectKey, rfc3339, unix_ms_now},
    incident::Finding,
    loader::Sentinel,
    metrics::{self, Metrics},
    privileges,
    record::{self, Recorder},
    sink::Sinks,
    snapshot::STOP,
    top::{self, frame::Mode},
};

/// The line printed on stderr once every probe is attached.
pub const READY: &str = "sentinel daemon: watching";
/// Printed on stderr when SIGHUP's new configuration is in force.
pub const RELOADED: &str = "sentinel daemon: reloaded";

/// Set by SIGHUP.
pub static RELOAD: AtomicBool = AtomicBool::new(false);

/// How long SIGTERM waits for the sinks to move their queues to the spool.
const SHUTDOWN: Duration = Duration::from_secs(3);

/// Where the configuration came from, so SIGHUP can read it again, and
/// what the command line overrides in it.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// None: built-in defaults (no `--config`, no file at the default path).
    pub path: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
}

impl Source {
    /// `--config FILE` must exist; without it the default path is read if
    /// there is a file there.
    pub fn resolve(explicit: Option<PathBuf>, log_format: Option<LogFormat>) -> Source {
        let path = explicit.or_else(|| {
            let default = Path::new(config::DEFAULT_PATH);
            default.exists().then(|| default.to_owned())
        });
        Source { path, log_format }
    }

    pub fn load(&self) -> Result<Config, config::ConfigError> {
        let mut cfg = match &self.path {
            Some(p) => config::load(p)?,
            None => Config::default(),
        };
        if let Some(f) = self.log_format {
            cfg.log.format = f;
        }
        Ok(cfg)
    }

    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => format!("built-in defaults (no {})", config::DEFAULT_PATH),
        }
    }
}

/// Everything that depends on the host's state rather than the kernel's:
/// spool directories, the API socket, the metrics port. Started before the
/// probes load, so a mistake there costs no probe load and exits at once.
pub struct Services {
    sinks: Option<Sinks>,
    hub: Arc<Hub>,
    api: Option<api::Server>,
    metrics: Metrics,
    metrics_server: Option<metrics::Server>,
    /// Builds frames for `sentinel top` clients and the recorder.
    frames: top::build::Builder,
    recorder: Option<Recorder>,
}

impl Services {
    pub fn start(cfg: &Config) -> Result<Services> {
        let hub = Arc::new(Hub::default());
        let metrics = Metrics::new(&cfg.metrics);
        let metrics_server = match cfg.metrics.listen {
            Some(addr) => Some(
                metrics::serve(addr, metrics.page())
                    .with_context(|| "starting the metrics endpoint ([metrics] listen)")?,
            ),
            None => None,
        };
        let api = match &cfg.api.socket {
            Some(path) => Some(api::Server::start(
                path,
                cfg.api.group.as_deref(),
                hub.clone(),
            )?),
            None => None,
        };
        let sinks = Sinks::start(cfg)?;
        let recorder = start_recorder(cfg)?;
        Ok(Services {
            sinks: Some(sinks),
            hub,
            api,
            metrics,
            metrics_server,
            frames: Default::default(),
            recorder,
        })
    }

    /// SIGHUP: each part whose settings changed is replaced; a part that
    /// cannot start keeps the old one running, and says why.
    fn reconfigure(&mut self, old: &Config, new: &Config) {
        self.metrics.configure(&new.metrics);
        if new.metrics.listen != old.metrics.listen {
            // The old port is let go first: the new address may share it
            // (127.0.0.1:9464 to 0.0.0.0:9464). If the new one cannot be
            // bound, the old one is taken back.
            self.metrics_server = None;
            let page = self.metrics.page();
            let bind = |a: Option<std::net::SocketAddr>| a.map(|a| metrics::serve(a, page.clone()));
            match bind(new.metrics.listen) {
                Some(Err(e)) => {
                    tracing::error!("reload: keeping the metrics endpoint as it was: {e:#}");
                    match bind(old.metrics.listen) {
                        Some(Ok(server)) => self.metrics_server = Some(server),
                        Some(Err(e)) => tracing::error!("the metrics endpoint is off: {e:#}"),
                        None => {}
                    }
                }
                Some(Ok(server)) => self.metrics_server = Some(server),
                None => {}
            }
        }
        if new.api != old.api {
            // The old socket must go first: the new one may be the same path.
            self.api = None;
            let started = new
                .api
                .socket
                .as_ref()
                .map(|p| api::Server::start(p, new.api.group.as_deref(), self.hub.clone()));
            match started {
                Some(Ok(server)) => self.api = Some(server),
                Some(Err(e)) => tracing::error!("reload: the local API is off: {e:#}"),
                None => {}
            }
        }
        let sinks_changed = new.webhooks != old.webhooks
            || new.spool != old.spool
            || new.log != old.log
            || new.daemon.state_dir != old.daemon.state_dir;
        if sinks_changed {
            if let Some(old_sinks) = self.sinks.take() {
                old_sinks.shutdown(SHUTDOWN);
            }
            match Sinks::start(new) {
                Ok(s) => self.sinks = Some(s),
                Err(e) => {
                    tracing::error!("reload: keeping the previous sinks: {e:#}");
                    match Sinks::start(old) {
                        Ok(s) => self.sinks = Some(s),
                        Err(e) => tracing::error!("restarting the previous sinks: {e:#}"),
                    }
                }
            }
        }
        if new.recorder != old.recorder || new.recorder_dir() != old.recorder_dir() {
            if let Some(r) = self.recorder.take() {
                r.shutdown(SHUTDOWN);
            }
            match start_recorder(new) {
                Ok(r) => self.recorder = r,
                Err(e) => {
                    tracing::error!("reload: keeping the previous recorder settings: {e:#}");
                    match start_recorder(old) {
                        Ok(r) => self.recorder = r,
                        Err(e) => tracing::error!("restarting the recorder: {e:#}"),
                    }
                }
            }
        }
        if new.daemon.lock_memory != old.daemon.lock_memory {
            tracing::warn!("reload: daemon.lock_memory takes effect at the next start");
        }
    }

    fn emit(&mut self, e: Event) {
        self.metrics.event(&e);
        if let Some(r) = &self.recorder {
            r.event(&e);
        }
        match serde_json::to_string(&e) {
            Ok(line) => self.hub.publish(unix_ms_now(), &line),
            Err(err) => tracing::warn!("encoding an event for the API: {err}"),
        }
        if let Some(sinks) = &self.sinks {
            sinks.send(&Arc::new(e));
        }
    }

    /// SIGTERM: what the sinks still hold goes to their spools.
    fn shutdown(mut self) {
        if let Some(sinks) = self.sinks.take() {
            sinks.shutdown(SHUTDOWN);
        }
        if let Some(r) = self.recorder.take() {
            r.shutdown(SHUTDOWN);
        }
    }
}

fn start_recorder(cfg: &Config) -> Result<Option<Recorder>> {
    if !cfg.recorder.enabled {
        return Ok(None);
    }
    let start = record::Start {
        version: env!("CARGO_PKG_VERSION").to_string(),
        host: crate::host::hostname(),
        kernel: crate::procfs::kernel_release(),
        boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        pid: std::process::id(),
        interval_s: cfg.recorder.interval.as_secs_f64(),
        config: serde_json::to_value(cfg).unwrap_or_default(),
    };
    Recorder::start(cfg, start).map(Some)
}

/// The recorder's state as a condition: paused is a finding while it lasts.
fn recorder_finding(r: &record::writer::Status) -> Option<Finding> {
    let p = r.paused.as_ref()?;
    Some(Finding {
        kind: Kind::RecorderPaused,
        key: SubjectKey::Host,
        severity: Severity::Warning,
        names: Names::default(),
        summary: format!(
            "The flight recorder is paused since {}: {}. Detection and sinks go on; recording resumes when there is room.",
            rfc3339(p.since_ms),
            p.reason
        ),
        evidence: json!({
            "dir": p.dir,
            "reason": p.reason,
            "paused_since": rfc3339(p.since_ms),
            "records_dropped": r.dropped,
        }),
    })
}

pub fn run(s: &mut Sentinel, source: &Source, mut cfg: Config, mut svc: Services) -> Result<()> {
    let mut engine = Engine::new(s, &cfg)?;
    if cfg.daemon.lock_memory {
        lock_memory();
    }

    let working: Vec<&str> = s
        .probes
        .iter()
        .filter(|p| p.working())
        .map(|p| p.name.as_str())
        .collect();
    eprintln!(
        "{READY} ({} probes: {}; every {:?}; config: {})",
        working.len(),
        working.join(", "),
        cfg.daemon.interval,
        source.describe()
    );
    for lost in privileges::limits() {
        tracing::warn!("running without {lost}");
    }

    let started_ms = unix_ms_now();
    let mut next = Instant::now();
    let mut last_frame = Instant::now();
    while !STOP.load(Ordering::Relaxed) {
        next += cfg.daemon.interval;
        if !sleep_until(next, || engine.poll_ooms()) {
            break;
        }
        // A tick that ran long (a huge host, a stalled /proc read) is not
        // made up for: the next one starts an interval from now.
        if Instant::now() > next + cfg.daemon.interval {
            next = Instant::now();
        }
        if RELOAD.swap(false, Ordering::Relaxed) {
            match source.load() {
                Ok(new) => {
                    svc.reconfigure(&cfg, &new);
                    cfg = new;
                    engine.apply(&cfg);
                    eprintln!("{RELOADED} {}", source.describe());
                }
                Err(e) => tracing::error!("reload: keeping the running configuration: {e}"),
            }
        }

        let recorder = svc.recorder.as_ref().map(|r| r.status());
        engine
            .external
            .extend(recorder.as_ref().and_then(recorder_finding));
        let tick = engine.tick(s, &cfg)?;
        for e in tick.events {
            svc.emit(e);
        }

        let sinks = svc.sinks.as_ref().map(|x| x.status()).unwrap_or_default();
        svc.metrics.update(&metrics::Input {
            recorder: recorder.as_ref(),
            t: tick.t,
            profiles: &engine.profiles,
            sample: &engine.sample,
            probes: &s.probes,
            sinks: &sinks,
            oom_kills: &tick.kills,
        });
        // Status and frames are built only for someone asking: a daemon
        // nobody watches pays nothing for them.
        if svc.hub.status_wanted() {
            svc.hub.set_status(status(
                s,
                source,
                &engine,
                &sinks,
                recorder.as_ref(),
                started_ms,
                tick.t,
            ));
        }
        // Half a tick of slack: ticks jitter, and a frame due a little
        // after this tick would otherwise wait for the next one.
        let record = svc.recorder.is_some()
            && last_frame.elapsed() + cfg.daemon.interval / 2 >= cfg.recorder.interval;
        let wanted = svc.hub.frame_wanted();
        if wanted.is_none() && !record {
            if svc.recorder.is_none() {
                svc.frames.clear();
            }
            continue;
        }
        let mode = Mode {
            attached: true,
            replay: false,
            describe: format!(
                "attached to the daemon (pid {}) at {}",
                std::process::id(),
                cfg.api
                    .socket
                    .as_ref()
                    .map_or_else(String::new, |p| p.display().to_string())
            ),
        };
        let mut frame = match &wanted {
            Some(w) => svc
                .frames
                .build(&mut engine, s, mode, cfg.daemon.interval, w),
            None => svc
                .frames
                .build_without_events(&mut engine, s, mode, cfg.daemon.interval, &[]),
        };
        if record && let Some(r) = &svc.recorder {
            last_frame = Instant::now();
            let mut rec = match wanted {
                Some(_) => frame.clone(),
                None => std::mem::take(&mut frame),
            };
            rec.mode = Mode {
                attached: false,
                replay: false,
                describe: format!("recorded by the daemon (pid {})", std::process::id()),
            };
            rec.interval_s = cfg.recorder.interval.as_secs_f64();
            rec.details = top::build::details(&mut engine, s, &stuck(&rec));
            r.frame(record::select::trim(rec, cfg.recorder.top_processes));
        }
        if wanted.is_some() {
            svc.hub.set_frame(Arc::new(frame));
        }
    }
    svc.shutdown();
    Ok(())
}

/// Processes with a deadlock or hang open: the recorder keeps their
/// blocked threads' stacks.
fn stuck(f: &top::frame::Frame) -> Vec<top::frame::Subject> {
    f.procs
        .iter()
        .filter(|p| {
            p.flags
                .iter()
                .any(|x| x.kind == Kind::Deadlock.name() || x.kind == Kind::Hang.name())
        })
        .take(16)
        .map(|p| top::frame::Subject::Process {
            pid: p.pid,
            start: p.start,
        })
        .collect()
}

fn status(
    s: &Sentinel,
    source: &Source,
    engine: &Engine,
    sinks: &[crate::sink::SinkStatus],
    recorder: Option<&record::writer::Status>,
    started_ms: u64,
    t: f64,
) -> String {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "started": rfc3339(started_ms),
        "uptime_s": t.round(),
        "config": source.describe(),
        "probes": s.probes.iter().map(|p| json!({
            "name": p.name, "working": p.working(), "detail": p.detail,
        })).collect::<Vec<_>>(),
        "sinks": sinks,
        "counters": Counter::ALL.iter()
            .map(|&c| (c.name().to_string(), json!(engine.sample.counters[c as usize])))
            .collect::<serde_json::Map<_, _>>(),
        "open_incidents": engine.incidents.open().count(),
        "recorder": recorder.map(|r| json!({
            "paused": r.paused.as_ref().map(|p| json!({
                "since": rfc3339(p.since_ms), "dir": p.dir, "reason": p.reason,
            })),
            "records": r.records,
            "dropped": r.dropped,
            "store_bytes": r.store_bytes,
            "segments": r.segments,
        })),
    })
    .to_string()
}

/// The daemon matters most when the host is out of memory, which is when
/// an unlocked daemon is paged out and stalls. `MCL_ONFAULT` locks pages as
/// they are touched rather than the whole binary at once, so the footprint
/// stays what the daemon uses; the heap left over from parsing kernel BTF
/// at load is returned first.
fn lock_memory() {
    // SAFETY: no pointers.
    unsafe { libc::malloc_trim(0) };
    // Under a finite RLIMIT_MEMLOCK, MCL_FUTURE makes allocations past the
    // limit fail: better unlocked than out of memory by our own hand.
    // `privileges::limits` has already said what is lost.
    if !privileges::can_lock_all() {
        return;
    }
    let flags = libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT;
    // SAFETY: no pointers.
    if unsafe { libc::mlockall(flags) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(
            "mlockall: {e}: the daemon can be paged out under memory pressure \
             (or set daemon.lock_memory = false)"
        );
    }
}

/// Sleeps in short steps, running `between` after each, so a signal ends
/// the daemon promptly. False when told to stop.
fn sleep_until(when: Instant, mut between: impl FnMut()) -> bool {
    loop {
        if STOP.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= when {
            return true;
        }
        std::thread::sleep((when - now).min(Duration::from_millis(100)));
        between();
    }
}
