//! One observation window: sample the maps, watch for OOM kills, sample
//! again, and turn the difference into a [`Report`].
use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use sentinel_common::{
    CgroupStats, Counter, FutexWait, ProcStats, RSS_ANON, RSS_FILE, RSS_SHMEM, RSS_SWAP,
    WAIT_OWNER_PI, WAIT_OWNER_READ, WAIT_SEEDED, futex_op, maps,
};

use crate::{
    cgroup::{self, Mounts, Resolver},
    collect::{self, Sample},
    loader::Sentinel,
    oom::{OomWatch, cstr},
    procfs::{self, MemStatus},
    report::*,
};

/// Set by SIGINT/SIGTERM: ends the window early; the report still prints.
pub static STOP: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub pid: Option<u32>,
    /// v2 path relative to the mount (normalized), descendants included.
    pub cgroup: Option<String>,
}

impl Filter {
    fn any(&self) -> bool {
        self.pid.is_some() || self.cgroup.is_some()
    }
    fn matches(&self, pid: u32, cgroup: Option<&str>) -> bool {
        if self.pid.is_some_and(|p| p != pid) {
            return false;
        }
        match (&self.cgroup, cgroup) {
            (Some(f), Some(c)) => cgroup::within(c, f),
            (Some(_), None) => false,
            (None, _) => true,
        }
    }
}

/// Runs a window of `duration` and builds its report. `ready` is called once
/// the probes are attached and the baseline is taken.
pub fn observe(
    s: &mut Sentinel,
    duration: Duration,
    filter: &Filter,
    ready: impl FnOnce(),
) -> Result<Report> {
    let mounts = Mounts::discover();
    let mut resolver = Resolver::new(&mounts);
    let mut ooms = OomWatch::new(mounts.memory_root());

    seed_futex_waits(s)?;
    ooms.ring = s
        .ebpf
        .take_map(maps::OOM_EVENTS)
        .and_then(|m| RingBuf::try_from(m).ok());

    let start = collect::sample(&s.ebpf, true)?;
    let started = Instant::now();
    ready();

    while started.elapsed() < duration && !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(
            Duration::from_millis(50).min(duration.saturating_sub(started.elapsed())),
        );
        ooms.poll(&mut resolver);
    }
    ooms.poll(&mut resolver);
    let end = collect::sample(&s.ebpf, true)?;
    let elapsed = started.elapsed();

    let oom_kills = ooms
        .kills
        .into_iter()
        .filter(|k| {
            !filter.any()
                || filter.matches(k.victim_pid, k.victim_cgroup.as_deref())
                || filter.matches(k.trigger_pid, k.trigger_cgroup.as_deref())
        })
        .collect();

    let mut report = build(s, &start, &end, elapsed, filter, &mut resolver);
    report.oom_kills = oom_kills;
    Ok(report)
}

/// Threads already blocked when the probes attach have no wait entry; a
/// deadlock older than sentinel would otherwise stay invisible.
pub fn seed_futex_waits(s: &mut Sentinel) -> Result<()> {
    if s.probe("futex").is_some_and(|p| p.working()) {
        let map = s
            .ebpf
            .map_mut(maps::FUTEX_WAITS)
            .context("map FUTEX_WAITS missing")?;
        let mut waits: BpfHashMap<&mut MapData, u32, FutexWait> = BpfHashMap::try_from(map)?;
        let n = crate::probes::futex::seed_blocked(&mut waits, collect::monotonic_ns());
        tracing::debug!("seeded {n} threads already blocked in futex waits");
    }
    Ok(())
}

/// A cgroup's cumulative totals in one sample: exited members (folded in
/// kernel) plus the live ones.
pub fn cgroup_totals(s: &Sample) -> HashMap<u64, CgroupStats> {
    // Wrapping: the kernel debits a cgroup a process moved into by that
    // process's earlier counters (see the eBPF `cgroups.rs`), so a cgroup
    // entry alone can be "negative"; only its sum with the live processes
    // is a count.
    let mut t = s.cgroups.clone();
    for p in s.procs.values() {
        let c = t.entry(p.cgroup_id).or_default();
        c.faults = c.faults.wrapping_add(p.faults);
        c.futex_waits = c.futex_waits.wrapping_add(p.futex_waits);
        c.futex_wait_ns = c.futex_wait_ns.wrapping_add(p.futex_wait_ns);
        c.read_bytes = c.read_bytes.wrapping_add(p.read_bytes);
        c.read_ops = c.read_ops.wrapping_add(p.read_ops);
        c.blk_write_bytes = c.blk_write_bytes.wrapping_add(p.blk_write_bytes);
        c.write_ops = c.write_ops.wrapping_add(p.write_ops);
        c.direct_write_bytes = c.direct_write_bytes.wrapping_add(p.direct_write_bytes);
        c.dirtied_bytes = c.dirtied_bytes.wrapping_add(p.dirtied_bytes);
        c.io_done = c.io_done.wrapping_add(p.io_done);
        c.io_lat_ns = c.io_lat_ns.wrapping_add(p.io_lat_ns);
        for (h, v) in c.io_lat_hist.iter_mut().zip(p.io_lat_hist.iter()) {
            *h = h.wrapping_add(*v);
        }
    }
    t
}

fn cgroup_delta(a: Option<&CgroupStats>, b: &CgroupStats) -> CgroupStats {
    let z = CgroupStats::default();
    let a = a.unwrap_or(&z);
    CgroupStats {
        faults: b.faults.saturating_sub(a.faults),
        futex_waits: b.futex_waits.saturating_sub(a.futex_waits),
        futex_wait_ns: b.futex_wait_ns.saturating_sub(a.futex_wait_ns),
        read_bytes: b.read_bytes.saturating_sub(a.read_bytes),
        read_ops: b.read_ops.saturating_sub(a.read_ops),
        blk_write_bytes: b.blk_write_bytes.saturating_sub(a.blk_write_bytes),
        write_ops: b.write_ops.saturating_sub(a.write_ops),
        direct_write_bytes: b.direct_write_bytes.saturating_sub(a.direct_write_bytes),
        dirtied_bytes: b.dirtied_bytes.saturating_sub(a.dirtied_bytes),
        exited: b.exited.saturating_sub(a.exited),
        io_done: b.io_done.saturating_sub(a.io_done),
        io_lat_ns: b.io_lat_ns.saturating_sub(a.io_lat_ns),
        io_lat_hist: std::array::from_fn(|i| b.io_lat_hist[i].saturating_sub(a.io_lat_hist[i])),
    }
}

/// Window delta of one process. A pid seen at the end but not at the start
/// started in the window, and so did one whose entry was created at another
/// time (the pid was reused after an exit): its full counts belong to the
/// window.
fn proc_delta(a: Option<&ProcStats>, b: &ProcStats) -> ProcStats {
    let mut d = *b;
    if let Some(a) = a.filter(|a| a.created_ns == b.created_ns) {
        d.faults = b.faults.saturating_sub(a.faults);
        d.futex_waits = b.futex_waits.saturating_sub(a.futex_waits);
        d.futex_wait_ns = b.futex_wait_ns.saturating_sub(a.futex_wait_ns);
        d.read_bytes = b.read_bytes.saturating_sub(a.read_bytes);
        d.read_ops = b.read_ops.saturating_sub(a.read_ops);
        d.blk_write_bytes = b.blk_write_bytes.saturating_sub(a.blk_write_bytes);
        d.write_ops = b.write_ops.saturating_sub(a.write_ops);
        d.direct_write_bytes = b.direct_write_bytes.saturating_sub(a.direct_write_bytes);
        d.dirtied_bytes = b.dirtied_bytes.saturating_sub(a.dirtied_bytes);
        d.io_done = b.io_done.saturating_sub(a.io_done);
        d.io_lat_ns = b.io_lat_ns.saturating_sub(a.io_lat_ns);
        for (h, ha) in d.futex_hist.iter_mut().zip(a.futex_hist.iter()) {
            *h = h.saturating_sub(*ha);
        }
        for (h, ha) in d.io_lat_hist.iter_mut().zip(a.io_lat_hist.iter()) {
            *h = h.saturating_sub(*ha);
        }
    }
    d
}

pub fn op_name(op: u32) -> &'static str {
    match op {
        futex_op::WAIT => "wait",
        futex_op::WAIT_BITSET => "wait_bitset",
        futex_op::LOCK_PI => "lock_pi",
        futex_op::LOCK_PI2 => "lock_pi2",
        futex_op::WAIT_REQUEUE_PI => "wait_requeue_pi",
        futex_op::WAITV => "waitv",
        futex_op::WAIT2 => "futex_wait",
        _ => "unknown",
    }
}

/// RSS by member: the kernel's values where it has reported them, /proc for
/// the rest (a member that has not changed since attach has no event yet).
fn rss_of(p: &ProcStats, pid: u32, in_kernel: bool) -> (Rss, &'static str) {
    let known = |m: usize| in_kernel && p.rss_known & (1 << m) != 0;
    let all_known = [RSS_ANON, RSS_FILE, RSS_SHMEM, RSS_SWAP]
        .iter()
        .all(|&m| known(m));
    let none_known = ![RSS_ANON, RSS_FILE, RSS_SHMEM, RSS_SWAP]
        .iter()
        .any(|&m| known(m));
    let ps: MemStatus = if all_known {
        MemStatus::default()
    } else {
        procfs::mem_status(Path::new("/proc"), pid).unwrap_or_default()
    };
    let pick = |m: usize, fallback: u64| {
        if known(m) {
            p.rss[m].max(0) as u64
        } else {
            fallback
        }
    };
    let rss = Rss {
        anon: pick(RSS_ANON, ps.rss_anon),
        file: pick(RSS_FILE, ps.rss_file),
        shmem: pick(RSS_SHMEM, ps.rss_shmem),
        swap: pick(RSS_SWAP, ps.vm_swap),
    };
    (
        rss,
        if all_known {
            "kernel"
        } else if none_known {
            "proc"
        } else {
            "mixed"
        },
    )
}

/// The host tid of the thread an owner word names. glibc's `__owner` and
/// the PI owner word hold tids as the process's own pid namespace numbers
/// them, which in a container are not the host's; `NSpid` translates.
/// Without it (kernels before 4.1) the word is taken as a host tid. Either
/// way only a live thread of the same process is accepted.
fn owner_host_tid(
    proc_root: &Path,
    pid: u32,
    owner: u32,
    ns_tids: &Option<HashMap<u32, u32>>,
) -> Option<u32> {
    match ns_tids {
        Some(m) => m.get(&owner).copied(),
        None => procfs::has_thread(proc_root, pid, owner).then_some(owner),
    }
}

/// The lock owner each of `pid`'s blocked threads names, as a host tid:
/// waiter tid -> owner tid. A glibc `__owner` slot read from a condition
/// variable or a semaphore is noise: only a live thread of the same
/// process, other than the waiter, counts as an owner.
pub fn owners(pid: u32, waits: &[(u32, &FutexWait)]) -> HashMap<u32, u32> {
    let proc_root = Path::new("/proc");
    let has_owner =
        |w: &FutexWait| w.flags & (WAIT_OWNER_PI | WAIT_OWNER_READ) != 0 && w.owner_tid != 0;
    if !waits.iter().any(|(_, w)| has_owner(w)) {
        return HashMap::new();
    }
    let ns_tids = procfs::thread_ns_tids(proc_root, pid);
    waits
        .iter()
        .filter(|(_, w)| has_owner(w))
        .filter_map(|&(tid, w)| {
            let o = owner_host_tid(proc_root, pid, w.owner_tid, &ns_tids)?;
            (o != tid).then_some((tid, o))
        })
        .collect()
}

fn blocked_threads(s: &Sentinel, pid: u32, end: &Sample) -> Vec<BlockedThread> {
    let mine: Vec<(u32, &FutexWait)> = end
        .waits
        .iter()
        .filter(|(_, w)| w.tgid == pid)
        .map(|(&tid, w)| (tid, w))
        .collect();
    let owners = owners(pid, &mine);
    let mut out: Vec<BlockedThread> = mine
        .into_iter()
        .map(|(tid, w)| BlockedThread {
            tid,
            uaddr: format!("{:#x}", w.uaddr),
            op: op_name(w.op).into(),
            owner_tid: owners.get(&tid).copied(),
            waiting_s: end.waited_s(w),
            seeded: w.flags & WAIT_SEEDED != 0,
            stack: collect::stack(&s.ebpf, w.stack_id)
                .iter()
                .map(|ip| format!("{ip:#x}"))
                .collect(),
        })
        .collect();
    out.sort_by_key(|b| b.tid);
    out
}

fn build(
    s: &Sentinel,
    start: &Sample,
    end: &Sample,
    elapsed: Duration,
    filter: &Filter,
    resolver: &mut Resolver,
) -> Report {
    let proc_root = Path::new("/proc");
    let in_kernel = s.rss_in_kernel();

    // Candidates: every process with kernel stats, every process with a
    // thread blocked in a futex wait (a deadlocked process causes no other
    // event), and whatever the filter names explicitly.
    let mut candidates: Vec<u32> = end.procs.keys().copied().collect();
    candidates.extend(end.waits.values().map(|w| w.tgid));
    candidates.extend(filter.pid);
    if let Some(cg) = &filter.cgroup {
        candidates.extend(resolver.procs_in(cg));
    }
    candidates.sort_unstable();
    candidates.dedup();

    let mut processes = Vec::new();
    for pid in candidates {
        if !procfs::alive(proc_root, pid) {
            continue;
        }
        let p = end
            .procs
            .get(&pid)
            .copied()
            .unwrap_or_else(|| idle_proc(resolver, pid));
        let p = &p;
        let cg_path = resolver
            .path(p.cgroup_id)
            .or_else(|| procfs::cgroup_v2_path(proc_root, pid));
        if !filter.matches(pid, cg_path.as_deref()) {
            continue;
        }
        let d = proc_delta(start.procs.get(&pid), p);
        let blocked = blocked_threads(s, pid, end);
        let active = d.faults
            + d.futex_waits
            + d.read_bytes
            + d.dirtied_bytes
            + d.direct_write_bytes
            + d.blk_write_bytes
            > 0;
        if !filter.any() && !active && blocked.is_empty() {
            continue;
        }
        let (rss, rss_source) = rss_of(p, pid, in_kernel);
        // The kernel records the comm of whichever thread caused the first
        // event (a worker's name, maybe); the leader's is the process's name.
        let comm = procfs::comm(proc_root, pid).unwrap_or_else(|| cstr(&p.comm));
        processes.push(ProcessReport {
            pid,
            comm,
            cgroup: cg_path,
            cgroup_id: p.cgroup_id,
            rss_bytes: rss.anon + rss.file + rss.shmem,
            rss,
            rss_source: rss_source.into(),
            page_faults: d.faults,
            futex_waits: d.futex_waits,
            futex_wait_ns: d.futex_wait_ns,
            futex_max_wait_ns: p.futex_wait_max_ns,
            futex_blocked_threads: blocked.len() as u32,
            longest_futex_wait_s: blocked.iter().map(|b| b.waiting_s).fold(0.0, f64::max),
            blocked,
            read_bytes: d.read_bytes,
            write_bytes: d.dirtied_bytes + d.direct_write_bytes,
            dirtied_bytes: d.dirtied_bytes,
            direct_write_bytes: d.direct_write_bytes,
            blk_write_bytes: d.blk_write_bytes,
            io_latency: IoLatency::new(
                d.io_done,
                d.io_lat_ns,
                d.io_lat_hist.iter().map(|&v| v as u64),
            ),
        });
    }
    processes.sort_by(|a, b| b.rss_bytes.cmp(&a.rss_bytes).then(a.pid.cmp(&b.pid)));

    let before = cgroup_totals(start);
    let after = cgroup_totals(end);
    let mut cgroups = Vec::new();
    for (&id, t) in &after {
        let d = cgroup_delta(before.get(&id), t);
        let path = resolver.path(id);
        let matches = match (&filter.cgroup, &path) {
            (Some(f), Some(p)) => cgroup::within(p, f),
            (Some(_), None) => false,
            (None, _) => filter.pid.is_none(),
        };
        let active = d.faults
            + d.read_bytes
            + d.dirtied_bytes
            + d.direct_write_bytes
            + d.futex_waits
            + d.exited
            > 0;
        if !matches || (!active && filter.cgroup.is_none()) {
            continue;
        }
        cgroups.push(CgroupReport {
            id,
            path,
            page_faults: d.faults,
            read_bytes: d.read_bytes,
            write_bytes: d.dirtied_bytes + d.direct_write_bytes,
            dirtied_bytes: d.dirtied_bytes,
            direct_write_bytes: d.direct_write_bytes,
            futex_waits: d.futex_waits,
            exited_processes: d.exited,
            io_latency: IoLatency::new(
                d.io_done,
                d.io_lat_ns,
                d.io_lat_hist.iter().map(|&v| v as u64),
            ),
        });
    }
    cgroups.sort_by_key(|c| std::cmp::Reverse(c.write_bytes + c.page_faults));

    let mut devices: Vec<DeviceReport> = end
        .devices
        .iter()
        .filter_map(|(&dev, b)| {
            let a = start.devices.get(&dev);
            let sub = |f: fn(&sentinel_common::DevStats) -> u64| {
                f(b).saturating_sub(a.map(f).unwrap_or(0))
            };
            let completed = sub(|d| d.completed);
            let (major, minor) = (dev >> 20, dev & 0xfffff);
            let r = DeviceReport {
                dev: format!("{major}:{minor}"),
                name: device_name(major, minor),
                read_bytes: sub(|d| d.read_bytes),
                read_ops: sub(|d| d.read_ops),
                write_bytes: sub(|d| d.write_bytes),
                write_ops: sub(|d| d.write_ops),
                avg_latency_us: (completed > 0)
                    .then(|| sub(|d| d.lat_ns_total) as f64 / completed as f64 / 1e3),
                latency_hist: b
                    .lat_hist
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v.saturating_sub(a.map(|a| a.lat_hist[i]).unwrap_or(0)))
                    .collect(),
            };
            (r.read_ops + r.write_ops > 0).then_some(r)
        })
        .collect();
    devices.sort_by(|a, b| a.dev.cmp(&b.dev));

    let mut counters = BTreeMap::new();
    let mut drops = BTreeMap::new();
    for c in Counter::ALL {
        let v = end.counters[c as usize].saturating_sub(start.counters[c as usize]);
        if c.is_drop() {
            drops.insert(c.name().to_string(), v)
        } else {
            counters.insert(c.name().to_string(), v)
        };
    }
    let fill = |start: usize, end: usize, max: u32| MapFill { start, end, max };
    let maps = BTreeMap::from([
        (
            "procs".to_string(),
            fill(
                start.procs.len(),
                end.procs.len(),
                sentinel_common::MAX_PROCS,
            ),
        ),
        (
            "cgroups".to_string(),
            fill(
                start.cgroups.len(),
                end.cgroups.len(),
                sentinel_common::MAX_CGROUPS,
            ),
        ),
        (
            "futex_waits".to_string(),
            fill(
                start.waits.len(),
                end.waits.len(),
                sentinel_common::MAX_FUTEX_WAITS,
            ),
        ),
        (
            "io_inflight".to_string(),
            fill(
                start.fill.io_inflight,
                end.fill.io_inflight,
                sentinel_common::MAX_IO_INFLIGHT,
            ),
        ),
        (
            "bio_inflight".to_string(),
            fill(
                start.fill.bio_inflight,
                end.fill.bio_inflight,
                sentinel_common::MAX_IO_INFLIGHT,
            ),
        ),
        (
            "dio_budget".to_string(),
            fill(
                start.fill.dio_budget,
                end.fill.dio_budget,
                sentinel_common::MAX_DIO_THREADS,
            ),
        ),
        (
            "stacks".to_string(),
            fill(
                start.fill.stacks,
                end.fill.stacks,
                sentinel_common::MAX_STACKS,
            ),
        ),
        (
            "devices".to_string(),
            fill(
                start.devices.len(),
                end.devices.len(),
                sentinel_common::MAX_DEVICES,
            ),
        ),
    ]);

    Report {
        sentinel_version: env!("CARGO_PKG_VERSION").into(),
        kernel: procfs::kernel_release(),
        duration_s: elapsed.as_secs_f64(),
        processes,
        cgroups,
        devices,
        oom_kills: Vec::new(),
        probes: s.probes.clone(),
        counters,
        drops,
        maps,
    }
}

/// Stats for a live process that caused no event since attach.
fn idle_proc(resolver: &mut Resolver, pid: u32) -> ProcStats {
    // SAFETY: ProcStats is plain old data; all-zero is a valid value.
    let mut p: ProcStats = unsafe { std::mem::zeroed() };
    if let Some(path) = procfs::cgroup_v2_path(Path::new("/proc"), pid) {
        p.cgroup_id = resolver.id_of(&path).unwrap_or(0);
    }
    p
}

fn device_name(major: u32, minor: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(faults: u64, dirtied: u64) -> ProcStats {
        let mut p: ProcStats = unsafe { std::mem::zeroed() };
        p.faults = faults;
        p.dirtied_bytes = dirtied;
        p
    }

    #[test]
    fn process_delta_is_the_window() {
        let d = proc_delta(Some(&proc(100, 4096)), &proc(250, 8192));
        assert_eq!((d.faults, d.dirtied_bytes), (150, 4096));
        let d = proc_delta(None, &proc(250, 8192));
        assert_eq!(d.faults, 250, "a process born in the window counts in full");
    }

    #[test]
    fn a_reused_pid_counts_as_born_in_the_window() {
        let mut old = proc(1000, 1 << 20);
        old.created_ns = 5;
        let mut new = proc(30, 4096);
        new.created_ns = 9;
        let d = proc_delta(Some(&old), &new);
        assert_eq!(
            (d.faults, d.dirtied_bytes),
            (30, 4096),
            "not 0: the start entry was another process's"
        );
        new.created_ns = 5;
        let mut grown = new;
        grown.faults = 1030;
        grown.dirtied_bytes = 2 << 20;
        assert_eq!(proc_delta(Some(&old), &grown).faults, 30);
    }

    #[test]
    fn an_exit_moves_counts_without_losing_them() {
        // Start: process 7 alive in cgroup 42 with 100 faults.
        let mut p = proc(100, 0);
        p.cgroup_id = 42;
        let start = sample(HashMap::from([(7, p)]), HashMap::new());
        // End: it faulted 50 more, then exited; the kernel folded 150.
        let folded = CgroupStats {
            faults: 150,
            exited: 1,
            ..Default::default()
        };
        let end = sample(HashMap::new(), HashMap::from([(42, folded)]));
        let d = cgroup_delta(cgroup_totals(&start).get(&42), &cgroup_totals(&end)[&42]);
        assert_eq!((d.faults, d.exited), (50, 1));
    }

    #[test]
    fn a_move_leaves_history_with_the_old_cgroup() {
        // Start: process 7 in cgroup 42 with 100 faults.
        let mut p = proc(100, 0);
        p.cgroup_id = 42;
        let start = sample(HashMap::from([(7, p)]), HashMap::new());
        // It faulted 20 more in 42, moved to 43 (the kernel credited 42 with
        // 120 and debited 43 by 120), then faulted 30 more there.
        let mut moved = proc(150, 0);
        moved.cgroup_id = 43;
        let credit = CgroupStats {
            faults: 120,
            ..Default::default()
        };
        let debit = CgroupStats {
            faults: 120u64.wrapping_neg(),
            ..Default::default()
        };
        let end = sample(
            HashMap::from([(7, moved)]),
            HashMap::from([(42, credit), (43, debit)]),
        );
        let (a, b) = (cgroup_totals(&start), cgroup_totals(&end));
        assert_eq!(cgroup_delta(a.get(&42), &b[&42]).faults, 20);
        assert_eq!(cgroup_delta(a.get(&43), &b[&43]).faults, 30);
    }

    fn sample(procs: HashMap<u32, ProcStats>, cgroups: HashMap<u64, CgroupStats>) -> Sample {
        Sample {
            mono_ns: 0,
            procs,
            cgroups,
            waits: HashMap::new(),
            devices: HashMap::new(),
            counters: [0; sentinel_common::NUM_COUNTERS as usize],
            fill: collect::MapCounts::default(),
        }
    }

    #[test]
    fn filter_by_pid_and_cgroup() {
        let f = Filter {
            pid: None,
            cgroup: Some("/job".into()),
        };
        assert!(f.matches(1, Some("/job/a")));
        assert!(!f.matches(1, Some("/jobs")));
        assert!(!f.matches(1, None));
        let f = Filter {
            pid: Some(5),
            cgroup: None,
        };
        assert!(f.matches(5, None));
        assert!(!f.matches(6, None));
    }
}
