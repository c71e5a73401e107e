//! The watch loop's body, shared by the daemon and a standalone `top`:
//! sample the kernel maps, fold the sample into the profiles, run the
//! detectors, turn findings into events, and once a minute do the map
//! housekeeping only userspace can do. What happens to the events (sinks,
//! API, screen) is the caller's business.
use std::{
    collections::{HashSet, VecDeque},
    path::PathBuf,
    sync::Arc,
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
    incident::{Finding, Incidents},
    loader::Sentinel,
    oom::OomWatch,
    profile::Profiles,
    report::OomKill,
    top::frame::MAX_EVENTS,
};

const HOUSEKEEPING: Duration = Duration::from_secs(60);

pub struct Engine {
    pub resolver: Resolver,
    pub mem_root: Option<(PathBuf, bool)>,
    ooms: OomWatch,
    pub incidents: Incidents,
    pub profiles: Profiles,
    pub detectors: Detectors,
    keeper: Housekeeping,
    /// The latest sample, for whoever shows it (metrics, `top`).
    pub sample: Sample,
    /// The most recent events, oldest first, for `top`.
    pub recent: VecDeque<Arc<Event>>,
    /// Ticks run so far.
    pub ticks: u64,
    /// Conditions the daemon itself is in (the recorder paused), judged
    /// with the detectors' findings at the next tick.
    pub external: Vec<Finding>,
    t0: Instant,
}

/// What one tick produced.
pub struct Tick {
    /// Seconds since the engine started.
    pub t: f64,
    pub events: Vec<Event>,
    pub kills: Vec<OomKill>,
}

impl Engine {
    pub fn new(s: &mut Sentinel, cfg: &Config) -> Result<Engine> {
        let mounts = Mounts::discover();
        let resolver = Resolver::new(&mounts);
        let mem_root = mounts.memory_root();
        let mut ooms = OomWatch::new(mem_root.clone());
        crate::snapshot::seed_futex_waits(s)?;
        ooms.ring = s
            .ebpf
            .take_map(maps::OOM_EVENTS)
            .and_then(|m| RingBuf::try_from(m).ok());
        if ooms.ring.is_none() {
            tracing::warn!("the OOM ring buffer is unavailable: oom_kill events are off");
        }
        let mut profiles = Profiles::new();
        profiles.mem_root = mem_root.clone();
        let mut e = Engine {
            resolver,
            mem_root,
            ooms,
            incidents: Incidents::new(host::hostname(), cfg.daemon.resolve_after.as_secs_f64()),
            profiles,
            detectors: Detectors::new(),
            keeper: Housekeeping::default(),
            sample: Sample::default(),
            recent: VecDeque::new(),
            ticks: 0,
            external: Vec::new(),
            t0: Instant::now(),
        };
        e.apply(cfg);
        Ok(e)
    }

    /// The settings the loop's parts read at each tick.
    pub fn apply(&mut self, cfg: &Config) {
        self.incidents
            .set_resolve_after(cfg.daemon.resolve_after.as_secs_f64());
        self.incidents.set_repeat(
            cfg.daemon.repeat_after.as_secs_f64(),
            cfg.daemon.repeat_max.as_secs_f64(),
        );
        self.profiles.long_wait = cfg
            .deadlock
            .hang_after
            .min(cfg.deadlock.min_wait)
            .as_secs_f64()
            / 2.0;
    }

    /// OOM events are drained between ticks too: which limit a kill hit is
    /// read from the memory cgroups, and a killed container's cgroup can be
    /// gone a moment later.
    pub fn poll_ooms(&mut self) {
        self.ooms.poll(&mut self.resolver);
    }

    pub fn elapsed(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    pub fn tick(&mut self, s: &mut Sentinel, cfg: &Config) -> Result<Tick> {
        let t = self.elapsed();
        self.ticks += 1;
        self.ooms.poll(&mut self.resolver);
        let kills = std::mem::take(&mut self.ooms.kills);
        self.sample = collect::sample(&s.ebpf, false).context("reading the kernel maps")?;
        self.profiles
            .update(t, &self.sample, &mut self.resolver, s.rss_in_kernel());

        let ctx = Ctx {
            t,
            cfg,
            profiles: &self.profiles,
            sample: &self.sample,
            incidents: &self.incidents,
            mem_root: self.mem_root.as_ref(),
        };
        let mut events: Vec<Event> = kills
            .iter()
            .map(|k| {
                let mut f = detect::oom::finding(&ctx, k);
                detect::add_host(&mut f, &detect::host_context(&ctx));
                self.incidents.instant(f, k.ts_unix_ms)
            })
            .collect();
        let mut findings = self.detectors.run(&ctx, &s.ebpf);
        findings.append(&mut self.external);
        let profiles = &self.profiles;
        events.extend(self.incidents.step(t, findings, |k| alive(profiles, k)));
        for e in &events {
            if self.recent.len() >= MAX_EVENTS {
                self.recent.pop_front();
            }
            self.recent.push_back(Arc::new(e.clone()));
        }

        if self.keeper.due() {
            self.keeper.run(s, &self.sample, &mut self.resolver);
        }
        Ok(Tick { t, events, kills })
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
