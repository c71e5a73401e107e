//! `sentinel daemon`: the loop. Every `daemon.interval` it samples the
//! kernel maps, folds the sample into the profiles, runs the detectors and
//! writes the events that result. Once a minute it prunes the maps only
//! userspace can prune and reports kernel-side losses.
use std::{
    collections::HashSet,
    io::Write,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf, StackTraceMap};
use sentinel_common::{CgroupStats, Counter, FutexWait, NUM_COUNTERS, maps};

use crate::{
    cgroup::{Mounts, Resolver},
    collect::{self, Sample},
    config::Config,
    detect::{self, Ctx, Detectors},
    event::{Event, SubjectKey},
    host,
    incident::Incidents,
    loader::Sentinel,
    oom::OomWatch,
    profile::Profiles,
    snapshot::STOP,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// One human line per event.
    Text,
}

/// The line printed on stderr once every probe is attached.
pub const READY: &str = "sentinel daemon: watching";

const HOUSEKEEPING: Duration = Duration::from_secs(60);

pub fn run(s: &mut Sentinel, cfg: &Config, format: Format) -> Result<()> {
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
    profiles.long_wait = cfg
        .deadlock
        .hang_after
        .min(cfg.deadlock.min_wait)
        .as_secs_f64()
        / 2.0;
    let mut detectors = Detectors::new();
    let mut out = Output { format };
    let mut keeper = Housekeeping::default();

    let working: Vec<&str> = s
        .probes
        .iter()
        .filter(|p| p.working())
        .map(|p| p.name.as_str())
        .collect();
    eprintln!(
        "{READY} ({} probes: {}; every {:?})",
        working.len(),
        working.join(", "),
        cfg.daemon.interval
    );
    if ooms.ring.is_none() {
        tracing::warn!("the OOM ring buffer is unavailable: oom_kill events are off");
    }

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
        let t = t0.elapsed().as_secs_f64();

        ooms.poll(&mut resolver);
        let kills = std::mem::take(&mut ooms.kills);
        let sample = collect::sample(&s.ebpf, false).context("reading the kernel maps")?;
        profiles.update(t, &sample, &mut resolver, s.rss_in_kernel());

        let ctx = Ctx {
            t,
            cfg,
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
        for e in &events {
            out.emit(e)?;
        }

        if keeper.due() {
            keeper.run(s, &sample, &mut resolver);
        }
    }
    Ok(())
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

struct Output {
    format: Format,
}

impl Output {
    fn emit(&mut self, e: &Event) -> Result<()> {
        let line = match self.format {
            Format::Json => serde_json::to_string(e).context("encoding an event")?,
            Format::Text => e.to_string(),
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|_| out.flush())
            .context("writing an event to stdout")
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
