//! `sentinel daemon`: the loop. Every `daemon.interval` it samples the
//! kernel maps, folds the sample into the profiles, runs the detectors and
//! hands the events that result to the sinks (`sink/`), the local API
//! (`api.rs`) and the metrics (`metrics/`), none of which can hold it up.
//! Once a minute it prunes the maps only userspace can prune and reports
//! kernel-side losses. SIGHUP reloads the config; SIGTERM and SIGINT stop
//! it, leaving undelivered events in the spools.
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf, StackTraceMap};
use sentinel_common::{CgroupStats, Counter, FutexWait, NUM_COUNTERS, maps};
use serde_json::json;

use crate::{
    api::{self, Hub},
    cgroup::{Mounts, Resolver},
    collect::{self, Sample},
    config::{self, Config, LogFormat},
    detect::{self, Ctx, Detectors},
    event::{Event, SubjectKey, rfc3339, unix_ms_now},
    host,
    incident::Incidents,
    loader::Sentinel,
    metrics::{self, Metrics},
    oom::OomWatch,
    privileges,
    profile::Profiles,
    sink::Sinks,
    snapshot::STOP,
};

/// The line printed on stderr once every probe is attached.
pub const READY: &str = "sentinel daemon: watching";
/// Printed on stderr when SIGHUP's new configuration is in force.
pub const RELOADED: &str = "sentinel daemon: reloaded";

/// Set by SIGHUP.
pub static RELOAD: AtomicBool = AtomicBool::new(false);

const HOUSEKEEPING: Duration = Duration::from_secs(60);
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
        Ok(Services {
            sinks: Some(sinks),
            hub,
            api,
            metrics,
            metrics_server,
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
        if new.daemon.lock_memory != old.daemon.lock_memory {
            tracing::warn!("reload: daemon.lock_memory takes effect at the next start");
        }
    }

    fn emit(&mut self, e: Event) {
        self.metrics.event(&e);
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
    }
}

pub fn run(s: &mut Sentinel, source: &Source, mut cfg: Config, mut svc: Services) -> Result<()> {
    let mounts = Mounts::discover();
    let mut resolver = Resolver::new(&mounts);
    let mem_root = mounts.memory_root();
    let mut ooms = OomWatch::new(mem_root.clone());
    crate::snapshot::seed_futex_waits(s)?;
    ooms.ring = s
        .ebpf
        .take_map(maps::OOM_EVENTS)
        .and_then(|m| RingBuf::try_from(m).ok());

    let mut incidents = Incidents::new(host::hostname(), cfg.daemon.resolve_after.as_secs_f64());
    let mut profiles = Profiles::new();
    profiles.mem_root = mem_root.clone();
    apply(&cfg, &mut incidents, &mut profiles);
    let mut detectors = Detectors::new();
    let mut keeper = Housekeeping::default();
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
    if ooms.ring.is_none() {
        tracing::warn!("the OOM ring buffer is unavailable: oom_kill events are off");
    }
    for lost in privileges::limits() {
        tracing::warn!("running without {lost}");
    }

    let started_ms = unix_ms_now();
    let t0 = Instant::now();
    let mut next = t0;
    while !STOP.load(Ordering::Relaxed) {
        next += cfg.daemon.interval;
        // OOM events are drained between ticks too: which limit a kill hit
        // is read from the memory cgroups, and a killed container's cgroup
        // can be gone a moment later.
        if !sleep_until(next, || ooms.poll(&mut resolver)) {
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
                    apply(&cfg, &mut incidents, &mut profiles);
                    eprintln!("{RELOADED} {}", source.describe());
                }
                Err(e) => tracing::error!("reload: keeping the running configuration: {e}"),
            }
        }
        let t = t0.elapsed().as_secs_f64();

        ooms.poll(&mut resolver);
        let kills = std::mem::take(&mut ooms.kills);
        let sample = collect::sample(&s.ebpf, false).context("reading the kernel maps")?;
        profiles.update(t, &sample, &mut resolver, s.rss_in_kernel());

        let ctx = Ctx {
            t,
            cfg: &cfg,
            profiles: &profiles,
            sample: &sample,
            incidents: &incidents,
            mem_root: mem_root.as_ref(),
        };
        let mut events: Vec<Event> = kills
            .iter()
            .map(|k| {
                let mut f = detect::oom::finding(&ctx, k);
                detect::add_host(&mut f, &detect::host_context(&ctx));
                incidents.instant(f, k.ts_unix_ms)
            })
            .collect();
        let findings = detectors.run(&ctx, &s.ebpf);
        events.extend(incidents.step(t, findings, |k| alive(&profiles, k)));
        for e in events {
            svc.emit(e);
        }

        let sinks = svc.sinks.as_ref().map(|x| x.status()).unwrap_or_default();
        svc.metrics.update(&metrics::Input {
            t,
            profiles: &profiles,
            sample: &sample,
            probes: &s.probes,
            sinks: &sinks,
            oom_kills: &kills,
        });
        svc.hub.set_status(
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
                    .map(|&c| (c.name().to_string(), json!(sample.counters[c as usize])))
                    .collect::<serde_json::Map<_, _>>(),
                "open_incidents": incidents.open().count(),
            })
            .to_string(),
        );

        if keeper.due() {
            keeper.run(s, &sample, &mut resolver);
        }
    }
    svc.shutdown();
    Ok(())
}

/// The settings the loop's parts read at each tick.
fn apply(cfg: &Config, incidents: &mut Incidents, profiles: &mut Profiles) {
    incidents.set_resolve_after(cfg.daemon.resolve_after.as_secs_f64());
    incidents.set_repeat(
        cfg.daemon.repeat_after.as_secs_f64(),
        cfg.daemon.repeat_max.as_secs_f64(),
    );
    profiles.long_wait = cfg
        .deadlock
        .hang_after
        .min(cfg.deadlock.min_wait)
        .as_secs_f64()
        / 2.0;
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

fn alive(p: &Profiles, k: &SubjectKey) -> bool {
    match k {
        SubjectKey::Process { pid, start } => p.procs.get(pid).is_some_and(|x| x.start == *start),
        SubjectKey::Container { cgroup_id } => p.containers.contains_key(cgroup_id),
        SubjectKey::Filesystem { dev } => p.filesystems.contains_key(dev),
        SubjectKey::Host => true,
    }
}

/// What only userspace can do for the kernel maps, once a minute.
struct Housekeeping {
    last: Instant,
    drops: [u64; NUM_COUNTERS as usize],
    /// Cgroup ids found dead at the previous pass: removed at this one, so
    /// the counts their last processes folded in were sampled at least once.
    dead: HashSet<u64>,
}

impl Default for Housekeeping {
    fn default() -> Self {
        Housekeeping {
            last: Instant::now(),
            drops: [0; NUM_COUNTERS as usize],
            dead: HashSet::new(),
        }
    }
}

impl Housekeeping {
    fn due(&self) -> bool {
        self.last.elapsed() >= HOUSEKEEPING
    }

    fn run(&mut self, s: &mut Sentinel, sample: &Sample, resolver: &mut Resolver) {
        self.last = Instant::now();
        self.report_drops(sample);
        if let Err(e) = self.prune_cgroups(s, sample, resolver) {
            tracing::warn!("pruning CGROUPS: {e:#}");
        }
        // Live cgroups are found again by the next walk; dead ones matter
        // only while the kernel still holds their counts.
        let live: HashSet<u64> = sample.procs.values().map(|p| p.cgroup_id).collect();
        resolver.retain(|id| sample.cgroups.contains_key(&id) || live.contains(&id));
        if let Err(e) = prune_stacks(s) {
            tracing::warn!("pruning STACKS: {e:#}");
        }
    }

    /// Losses are counted in the kernel; the operator hears of them here
    /// (and, per window, in `sentinel snapshot`'s `drops`).
    fn report_drops(&mut self, sample: &Sample) {
        let grown: Vec<String> = Counter::ALL
            .iter()
            .filter(|c| c.is_drop())
            .filter_map(|&c| {
                let (now, was) = (sample.counters[c as usize], self.drops[c as usize]);
                (now > was).then(|| format!("{} +{}", c.name(), now - was))
            })
            .collect();
        self.drops = sample.counters;
        if !grown.is_empty() {
            tracing::warn!(
                "kernel-side losses in the last minute: {}",
                grown.join(", ")
            );
        }
    }

    /// Exited processes fold their counters into their cgroup's entry, so
    /// on a host that churns containers the map would fill with the dead.
    fn prune_cgroups(
        &mut self,
        s: &mut Sentinel,
        sample: &Sample,
        resolver: &mut Resolver,
    ) -> Result<()> {
        let in_use: HashSet<u64> = sample.procs.values().map(|p| p.cgroup_id).collect();
        let dead: HashSet<u64> = sample
            .cgroups
            .keys()
            .copied()
            .filter(|id| !in_use.contains(id))
            .filter(|&id| match resolver.path(id) {
                Some(path) => resolver.id_of(&path) != Some(id),
                None => true,
            })
            .collect();
        let map = s
            .ebpf
            .map_mut(maps::CGROUPS)
            .context("map CGROUPS missing")?;
        let mut cgroups: BpfHashMap<&mut MapData, u64, CgroupStats> = BpfHashMap::try_from(map)?;
        let mut removed = 0;
        for id in dead.intersection(&self.dead) {
            if cgroups.remove(id).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::debug!("removed {removed} dead cgroups from CGROUPS");
        }
        self.dead = dead;
        Ok(())
    }
}

/// Stacks are kept while a thread's wait entry names them (the probe reuses
/// a thread's last stack). Ids are listed before the waits are read, so a
/// stack stored after the listing is never removed; one stored between its
/// listing and its wait entry's write (a few instructions in one probe run)
/// could be, and would show as a missing stack.
fn prune_stacks(s: &mut Sentinel) -> Result<()> {
    let ids: Vec<u32> = {
        let map = s.ebpf.map(maps::STACKS).context("map STACKS missing")?;
        let stacks = StackTraceMap::<&MapData>::try_from(map)?;
        stacks.stack_ids().filter_map(|r| r.ok()).collect()
    };
    let used: HashSet<u32> = {
        let map = s
            .ebpf
            .map(maps::FUTEX_WAITS)
            .context("map FUTEX_WAITS missing")?;
        let waits: BpfHashMap<&MapData, u32, FutexWait> = BpfHashMap::try_from(map)?;
        waits
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(_, w)| w.stack_id >= 0)
            .map(|(_, w)| w.stack_id as u32)
            .collect()
    };
    let map = s.ebpf.map_mut(maps::STACKS).context("map STACKS missing")?;
    let mut stacks = StackTraceMap::<&mut MapData>::try_from(map)?;
    let mut removed = 0;
    for id in ids.iter().filter(|id| !used.contains(id)) {
        if stacks.remove(id).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::debug!("removed {removed} unreferenced stacks");
    }
    Ok(())
}
