//! Profiles: what each process, container and the host did over sliding
//! windows (10 s, 1 min, 10 min, 1 h), built from the kernel's samples and
//! /proc.
//!
//! Each subject keeps two rings of points: one per tick for the last
//! minute, one per minute for the last hour. A window is answered from the
//! finest ring that covers it, so memory stays bounded per subject
//! (about 7 KiB) whatever the tick.
use std::{
    collections::{HashMap, VecDeque},
    path::Path,
};

use sentinel_common::{RSS_ANON, RSS_FILE, RSS_SHMEM, RSS_SWAP};

use crate::{
    cgroup::{self, Resolver},
    collect::Sample,
    container::{self, Container},
    host::{self, Filesystems},
    oom::cstr,
    procfs::{self, Stat},
    snapshot::cgroup_totals,
};

/// How far back the per-tick ring reaches, plus a little so that a full
/// minute is always covered.
const FINE_SPAN: f64 = 65.0;
const COARSE_STEP: f64 = 60.0;
/// One hour plus one step, for the same reason.
const COARSE_SPAN: f64 = 3660.0;
/// How long an exited process's profile is kept, for OOM-kill evidence.
const EXITED_KEEP: f64 = 120.0;

pub trait Timed: Copy {
    fn t(&self) -> f64;
}

#[derive(Debug, Clone, Default)]
pub struct Series<P> {
    fine: VecDeque<P>,
    coarse: VecDeque<P>,
}

impl<P: Timed> Series<P> {
    pub fn push(&mut self, p: P) {
        let t = p.t();
        self.fine.push_back(p);
        while self.fine.front().is_some_and(|f| f.t() < t - FINE_SPAN) {
            self.fine.pop_front();
        }
        if self.coarse.back().is_none_or(|c| c.t() <= t - COARSE_STEP) {
            self.coarse.push_back(p);
        }
        while self.coarse.front().is_some_and(|c| c.t() < t - COARSE_SPAN) {
            self.coarse.pop_front();
        }
    }

    pub fn last(&self) -> Option<&P> {
        self.fine.back()
    }

    /// How much history there is.
    pub fn age(&self) -> f64 {
        let first = match (self.coarse.front(), self.fine.front()) {
            (Some(c), Some(f)) => c.t().min(f.t()),
            (None, Some(f)) => f.t(),
            _ => return 0.0,
        };
        self.last().map_or(0.0, |l| l.t() - first)
    }

    /// The points of the last `span` seconds, oldest first, ending with the
    /// latest. A window longer than the fine ring comes from the coarse one
    /// (plus the latest point), so its first point may be up to a coarse
    /// step older or younger than asked: callers divide by the span the
    /// points actually cover.
    pub fn window(&self, span: f64) -> Vec<P> {
        let Some(last) = self.last() else {
            return Vec::new();
        };
        let from = last.t() - span;
        // Half a tick of slack, so a 10 s window at a 1 s tick gets 11 points.
        let slack = 0.5;
        if span <= FINE_SPAN - 5.0 {
            return self
                .fine
                .iter()
                .filter(|p| p.t() >= from - slack)
                .copied()
                .collect();
        }
        let mut out: Vec<P> = self
            .coarse
            .iter()
            .filter(|p| p.t() >= from - COARSE_STEP / 2.0 && p.t() < last.t())
            .copied()
            .collect();
        out.push(*last);
        out
    }
}

/// Seconds the points cover.
pub fn covered<P: Timed>(pts: &[P]) -> f64 {
    match (pts.first(), pts.last()) {
        (Some(a), Some(b)) => b.t() - a.t(),
        _ => 0.0,
    }
}

/// Per-second rate of a cumulative counter between the window's ends.
/// Counters here are wrapping sums (see `cgroup_totals`), so the difference
/// is taken wrapping and a negative one counts as no progress.
pub fn rate<P: Timed>(pts: &[P], f: impl Fn(&P) -> u64) -> Option<f64> {
    let (a, b) = (pts.first()?, pts.last()?);
    let dt = b.t() - a.t();
    if dt <= 0.0 {
        return None;
    }
    let d = f(b).wrapping_sub(f(a)) as i64;
    Some(d.max(0) as f64 / dt)
}

/// Least-squares slope of a gauge, per second: less fooled by one odd
/// point than the ends alone.
pub fn slope<P: Timed>(pts: &[P], f: impl Fn(&P) -> f64) -> Option<f64> {
    if pts.len() < 2 {
        return None;
    }
    let n = pts.len() as f64;
    let t0 = pts[0].t();
    let (mut st, mut sv) = (0.0, 0.0);
    for p in pts {
        st += p.t() - t0;
        sv += f(p);
    }
    let (mt, mv) = (st / n, sv / n);
    let (mut num, mut den) = (0.0, 0.0);
    for p in pts {
        let dt = p.t() - t0 - mt;
        num += dt * (f(p) - mv);
        den += dt * dt;
    }
    (den > 0.0).then(|| num / den)
}

/// One observation of a process or a container.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Point {
    /// Seconds on the daemon's monotonic clock.
    pub t: f64,
    pub rss: u64,
    /// Anonymous memory plus swap: what only freeing or an OOM kill gives
    /// back. Page cache and file mappings are in `rss` but not here.
    pub anon: u64,
    pub faults: u64,
    pub majflt: u64,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    pub read: u64,
    /// Dirtied page-cache bytes plus direct-I/O bytes.
    pub write: u64,
    pub threads: u32,
}

impl Timed for Point {
    fn t(&self) -> f64 {
        self.t
    }
}

#[derive(Debug, Clone)]
pub struct ProcProfile {
    pub pid: u32,
    /// `starttime` from /proc/PID/stat: with the pid, the process's identity.
    pub start: u64,
    pub comm: String,
    pub cgroup_id: u64,
    pub series: Series<Point>,
    pub stat: Stat,
    /// When `stat` was read.
    stat_t: f64,
    /// The kernel counters at the last tick, to tell an idle process.
    sig: Option<[u64; 6]>,
    /// RssAnon and VmSwap from /proc when the profile began: the values of
    /// members the kernel has not reported since attach (they have not
    /// moved since, or it would have).
    anon_base: (u64, u64),
}

fn anon_base(proc_root: &Path, pid: u32) -> (u64, u64) {
    procfs::mem_status(proc_root, pid).map_or((0, 0), |m| (m.rss_anon, m.vm_swap))
}

/// The longest a process's /proc reading is reused while it is idle.
const STAT_REFRESH: f64 = 10.0;

fn signature(k: &sentinel_common::ProcStats) -> [u64; 6] {
    [
        k.created_ns,
        k.faults,
        k.rss.iter().fold(0u64, |a, &r| a.wrapping_add(r as u64)),
        k.read_bytes,
        k.dirtied_bytes.wrapping_add(k.direct_write_bytes),
        k.futex_waits.wrapping_add(k.cgroup_id),
    ]
}

impl ProcProfile {
    /// Kernel threads have no memory of their own and no user stack; the
    /// kernel (not a person) decides what they write.
    pub fn kernel_thread(&self) -> bool {
        self.stat.flags & PF_KTHREAD != 0
    }
}

const PF_KTHREAD: u32 = 0x0020_0000;

#[derive(Debug, Clone)]
pub struct ContainerProfile {
    pub cgroup_id: u64,
    pub path: String,
    /// Its own memory cgroup (directory, is v1), when it has one to itself.
    memcg: Option<(std::path::PathBuf, bool)>,
    pub container: Option<Container>,
    pub series: Series<Point>,
    pub members: Vec<u32>,
}

impl ContainerProfile {
    /// Whether `anon` comes from the cgroup's own counters (else it is the
    /// sum of its processes').
    pub fn anon_from_cgroup(&self) -> bool {
        self.memcg.is_some()
    }

    /// The name events carry: the runtime's name, else the cgroup path.
    pub fn name(&self) -> String {
        self.container
            .as_ref()
            .map_or_else(|| self.path.clone(), |c| c.name.clone())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostPoint {
    pub t: f64,
    pub mem_total: u64,
    pub mem_available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
    pub psi_memory: Option<host::Pressure>,
    pub psi_io: Option<host::Pressure>,
    pub vm: host::VmStat,
}

impl Timed for HostPoint {
    fn t(&self) -> f64 {
        self.t
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FsPoint {
    pub t: f64,
    pub free: u64,
    pub size: u64,
}

impl Timed for FsPoint {
    fn t(&self) -> f64 {
        self.t
    }
}

#[derive(Debug, Clone)]
pub struct FsProfile {
    pub fs: host::Filesystem,
    pub series: Series<FsPoint>,
}

/// Filesystems whose free space is followed: local storage only. A statfs
/// on a network or cluster filesystem (NFS, Lustre, virtiofs, FUSE) can
/// block for as long as its server is away, and would stall the tick.
/// Overlay reports its upper layer's space, which is followed on its own.
fn followed(fstype: &str) -> bool {
    matches!(
        fstype,
        "ext2"
            | "ext3"
            | "ext4"
            | "xfs"
            | "btrfs"
            | "zfs"
            | "f2fs"
            | "bcachefs"
            | "jfs"
            | "reiserfs"
            | "vfat"
            | "exfat"
            | "ntfs3"
            | "tmpfs"
    )
}

pub struct Profiles {
    pub procs: HashMap<u32, ProcProfile>,
    /// Processes that exited within `EXITED_KEEP`, with when.
    pub exited: HashMap<u32, (f64, ProcProfile)>,
    pub containers: HashMap<u64, ContainerProfile>,
    pub host: Series<HostPoint>,
    pub filesystems: HashMap<u32, FsProfile>,
    mounts: Filesystems,
    mounts_read: f64,
    page_size: u64,
    /// Containers identified per cgroup id (identification parses paths).
    known: HashMap<u64, (String, Option<Container>)>,
    /// Seconds a futex wait must last before its process's /proc reading
    /// is refreshed on every tick (see `update`).
    pub long_wait: f64,
    /// Where memory cgroups are: (root, is v1).
    pub mem_root: Option<(std::path::PathBuf, bool)>,
}

impl Default for Profiles {
    fn default() -> Self {
        Profiles::new()
    }
}

impl Profiles {
    pub fn new() -> Profiles {
        Profiles {
            procs: HashMap::new(),
            exited: HashMap::new(),
            containers: HashMap::new(),
            host: Series::default(),
            filesystems: HashMap::new(),
            mounts: Filesystems::default(),
            mounts_read: f64::NEG_INFINITY,
            page_size: procfs::page_size(),
            known: HashMap::new(),
            long_wait: 0.0,
            mem_root: None,
        }
    }

    /// Folds one sample in. `t` is the sample's time in seconds;
    /// `rss_in_kernel` says whether the kernel's RSS values can be used.
    /// Returns the processes that exited since the last update.
    pub fn update(
        &mut self,
        t: f64,
        sample: &Sample,
        resolver: &mut Resolver,
        rss_in_kernel: bool,
    ) -> Vec<ProcProfile> {
        let proc_root = Path::new("/proc");
        let mut gone = Vec::new();

        // Processes the kernel has seen, plus those with a thread blocked in
        // a futex wait (a deadlocked process causes no other event).
        let mut pids: Vec<u32> = sample.procs.keys().copied().collect();
        pids.extend(sample.waits.values().map(|w| w.tgid));
        pids.sort_unstable();
        pids.dedup();

        let mut seen = HashMap::with_capacity(pids.len());
        // Processes with a thread blocked long enough to matter to the hang
        // detector get a fresh reading every tick (it judges CPU progress);
        // short waits are every idle Go or Java runtime's normal state.
        let long_ns = (self.long_wait * 1e9) as u64;
        let waiting: std::collections::HashSet<u32> = sample
            .waits
            .values()
            .filter(|w| sample.mono_ns.saturating_sub(w.start_ns) >= long_ns)
            .map(|w| w.tgid)
            .collect();
        for pid in pids {
            let k = sample.procs.get(&pid);
            let sig = k.map(signature);
            // /proc/PID/stat is most of a tick's cost. A process whose kernel
            // counters did not move since the last tick and has no blocked
            // thread keeps its last reading, refreshed every STAT_REFRESH
            // seconds (CPU time and thread count move without kernel events).
            let reuse = self.procs.get(&pid).filter(|p| {
                sig.is_some()
                    && p.sig == sig
                    && t - p.stat_t < STAT_REFRESH
                    && !waiting.contains(&pid)
            });
            let (stat, stat_t) = match reuse {
                Some(p) => (p.stat, p.stat_t),
                None => match procfs::stat(proc_root, pid) {
                    Some(s) => (s, t),
                    None => continue,
                },
            };
            const MEMBERS: [usize; 3] = [RSS_ANON, RSS_FILE, RSS_SHMEM];
            let mask = MEMBERS.iter().fold(0u32, |m, &i| m | 1 << i);
            // The kernel's values once it has reported every member, /proc
            // before that.
            let rss = match k {
                Some(k) if rss_in_kernel && k.rss_known & mask == mask => {
                    MEMBERS.iter().map(|&m| k.rss[m].max(0) as u64).sum()
                }
                _ => stat.rss_pages * self.page_size,
            };
            let cgroup_id = match k {
                Some(k) => k.cgroup_id,
                None => procfs::cgroup_v2_path(proc_root, pid)
                    .and_then(|p| resolver.id_of(&p))
                    .unwrap_or(0),
            };
            let entry = self.procs.remove(&pid);
            let mut prof = match entry {
                // Same process: the kernel's counters continue.
                Some(p) if p.start == stat.starttime => p,
                other => {
                    if let Some(old) = other {
                        gone.push(old);
                    }
                    ProcProfile {
                        pid,
                        start: stat.starttime,
                        comm: Some(stat.comm())
                            .filter(|c| !c.is_empty())
                            .or_else(|| k.map(|k| cstr(&k.comm)))
                            .unwrap_or_default(),
                        cgroup_id,
                        series: Series::default(),
                        stat,
                        stat_t,
                        sig,
                        anon_base: anon_base(proc_root, pid),
                    }
                }
            };
            // Without the kernel's RSS the baseline is all there is; keep it
            // as fresh as the /proc reading.
            if !rss_in_kernel && stat_t == t {
                prof.anon_base = anon_base(proc_root, pid);
            }
            let known = |m: usize| rss_in_kernel && k.is_some_and(|k| k.rss_known & 1 << m != 0);
            let member = |m: usize, base: u64| match k {
                Some(k) if known(m) => k.rss[m].max(0) as u64,
                _ => base,
            };
            let point = Point {
                t,
                rss,
                anon: member(RSS_ANON, prof.anon_base.0) + member(RSS_SWAP, prof.anon_base.1),
                faults: k.map_or(0, |k| k.faults),
                majflt: stat.majflt,
                cpu_ticks: stat.utime + stat.stime,
                read: k.map_or(0, |k| k.read_bytes),
                write: k.map_or(0, |k| k.dirtied_bytes + k.direct_write_bytes),
                threads: stat.num_threads,
            };
            prof.cgroup_id = cgroup_id;
            // exec renames a process (an entrypoint script becoming postgres).
            if stat_t == t {
                let comm = stat.comm();
                if !comm.is_empty() && comm != prof.comm {
                    prof.comm = comm;
                }
            }
            prof.stat = stat;
            prof.stat_t = stat_t;
            prof.sig = sig;
            prof.series.push(point);
            seen.insert(pid, prof);
        }
        gone.extend(self.procs.drain().map(|(_, p)| p));
        self.procs = seen;
        for p in &gone {
            self.exited.insert(p.pid, (t, p.clone()));
        }
        self.exited.retain(|_, (when, _)| t - *when < EXITED_KEEP);

        self.update_containers(t, sample, resolver);
        self.update_host(t);
        gone
    }

    fn update_containers(&mut self, t: f64, sample: &Sample, resolver: &mut Resolver) {
        let mut members: HashMap<u64, Vec<u32>> = HashMap::new();
        for p in self.procs.values() {
            members.entry(p.cgroup_id).or_default().push(p.pid);
        }
        let totals = cgroup_totals(sample);
        let mut next = HashMap::with_capacity(members.len());
        for (id, mut pids) in members {
            if id == 0 {
                continue;
            }
            let (path, container) = match self.known.get(&id) {
                Some(k) => k.clone(),
                None => {
                    let Some(path) = resolver.path(id) else {
                        continue;
                    };
                    let k = (path.clone(), container::identify(&path));
                    self.known.insert(id, k.clone());
                    k
                }
            };
            // The root cgroup is the host, not a container.
            if path == "/" {
                continue;
            }
            pids.sort_unstable();
            let memcg = match self.containers.get(&id) {
                Some(c) => c.memcg.clone(),
                None => self.exclusive_memcg(&path, pids[0]),
            };
            // The cgroup's own anon counts a page shared by forked workers
            // once; the sum of their RSS would count it once per worker.
            let cg_anon = memcg
                .as_ref()
                .and_then(|(dir, v1)| cgroup::anon_and_swap(dir, *v1));
            let exclusive = cg_anon.is_some();
            let mut point = Point {
                t,
                anon: cg_anon.unwrap_or(0),
                ..Default::default()
            };
            for pid in &pids {
                if let Some(last) = self.procs.get(pid).and_then(|p| p.series.last()) {
                    point.rss += last.rss;
                    if !exclusive {
                        point.anon += last.anon;
                    }
                    point.majflt += last.majflt;
                    point.cpu_ticks += last.cpu_ticks;
                    point.threads += last.threads;
                }
            }
            // Cumulative, exited members included.
            if let Some(c) = totals.get(&id) {
                point.faults = c.faults;
                point.read = c.read_bytes;
                point.write = c.dirtied_bytes.wrapping_add(c.direct_write_bytes);
            }
            let mut prof = self.containers.remove(&id).unwrap_or(ContainerProfile {
                cgroup_id: id,
                path,
                container,
                series: Series::default(),
                members: Vec::new(),
                memcg,
            });
            prof.members = pids;
            prof.series.push(point);
            next.insert(id, prof);
        }
        self.containers = next;
        // Forget identities of cgroups with no members left, bounding the
        // cache on hosts that churn containers.
        let containers = &self.containers;
        self.known.retain(|id, _| containers.contains_key(id));
    }

    /// The memory cgroup that is this container's alone: its v2 directory
    /// when v2 holds the memory controller, or on hybrid hosts the v1 memory
    /// cgroup of the same path. A member in some other memory cgroup (a
    /// shared parent, "/") means none: its counters would be others' too.
    fn exclusive_memcg(&self, path: &str, member: u32) -> Option<(std::path::PathBuf, bool)> {
        let (root, v1) = self.mem_root.as_ref()?;
        let rel = procfs::memory_cgroup_path(Path::new("/proc"), member, *v1)?;
        if rel != path || rel == "/" {
            return None;
        }
        let dir = root.join(rel.trim_start_matches('/'));
        dir.is_dir().then_some((dir, *v1))
    }

    fn update_host(&mut self, t: f64) {
        let proc_root = Path::new("/proc");
        let mem = host::memory(proc_root).unwrap_or_default();
        let psi = host::psi(proc_root);
        self.host.push(HostPoint {
            t,
            mem_total: mem.total,
            mem_available: mem.available,
            swap_total: mem.swap_total,
            swap_free: mem.swap_free,
            psi_memory: psi.memory,
            psi_io: psi.io,
            vm: host::vmstat(proc_root),
        });

        // Mounts change rarely; reading mountinfo every tick is waste.
        if t - self.mounts_read >= 60.0 {
            self.mounts = Filesystems::discover(proc_root);
            self.mounts_read = t;
        }
        let mut next = HashMap::new();
        let mut seen_space: Vec<(String, u64, u64)> = Vec::new();
        for m in self.mounts.mounts().filter(|m| followed(&m.fstype)) {
            let Some(fs) = host::statfs(m) else {
                continue;
            };
            if fs.size == 0 {
                continue;
            }
            // Datasets of one ZFS pool (or btrfs subvolumes with their own
            // device numbers) share one pool of space: one filling pool is
            // one filesystem, under its first (shortest) mount point.
            // (Two empty tmpfs of one size are two filesystems, hence only
            // the pooled types.)
            if matches!(fs.fstype.as_str(), "zfs" | "btrfs") {
                let space = (fs.fstype.clone(), fs.size, fs.free);
                if seen_space.contains(&space) {
                    continue;
                }
                seen_space.push(space);
            }
            let mut prof = self.filesystems.remove(&fs.dev).unwrap_or(FsProfile {
                fs: fs.clone(),
                series: Series::default(),
            });
            prof.series.push(FsPoint {
                t,
                free: fs.free,
                size: fs.size,
            });
            prof.fs = fs;
            next.insert(prof.fs.dev, prof);
        }
        self.filesystems = next;
    }

    pub fn mounts(&self) -> &Filesystems {
        &self.mounts
    }

    /// A live or recently exited process's profile.
    pub fn proc_or_exited(&self, pid: u32) -> Option<&ProcProfile> {
        self.procs
            .get(&pid)
            .or_else(|| self.exited.get(&pid).map(|(_, p)| p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(t: f64, rss: u64, write: u64) -> Point {
        Point {
            t,
            rss,
            write,
            ..Default::default()
        }
    }

    #[test]
    fn windows_come_from_the_finest_ring_that_covers_them() {
        let mut s = Series::default();
        for i in 0..=600 {
            s.push(pt(i as f64, i * 10, i * 100));
        }
        let w = s.window(10.0);
        assert_eq!(w.len(), 11);
        assert_eq!(covered(&w), 10.0);
        assert_eq!(rate(&w, |p| p.write), Some(100.0));
        let w = s.window(600.0);
        assert!((covered(&w) - 600.0).abs() <= 60.0, "{}", covered(&w));
        assert_eq!(rate(&w, |p| p.write), Some(100.0));
        assert!((slope(&w, |p| p.rss as f64).unwrap() - 10.0).abs() < 1e-9);
        // Bounded: the fine ring holds about a minute, the coarse an hour.
        assert!(s.fine.len() <= 67 && s.coarse.len() <= 62);
        assert_eq!(s.age(), 600.0);
    }

    #[test]
    fn an_hour_is_kept_and_no_more() {
        let mut s = Series::default();
        for i in 0..=7200 {
            s.push(pt(i as f64, 0, i));
        }
        assert!(s.age() <= COARSE_SPAN && s.age() >= 3600.0, "{}", s.age());
        let w = s.window(3600.0);
        assert!(covered(&w) >= 3540.0);
    }

    #[test]
    fn rates_of_wrapping_counters_never_go_negative() {
        let w = [pt(0.0, 0, 500), pt(10.0, 0, 400)];
        assert_eq!(rate(&w, |p| p.write), Some(0.0));
        let w = [pt(0.0, 0, u64::MAX - 9), pt(10.0, 0, 90)];
        assert_eq!(rate(&w, |p| p.write), Some(10.0));
        assert_eq!(rate(&w[..1], |p| p.write), None);
    }

    #[test]
    fn slope_resists_one_odd_point() {
        let mut w: Vec<Point> = (0..11).map(|i| pt(i as f64, 1000, 0)).collect();
        w[5].rss = 5000;
        let s = slope(&w, |p| p.rss as f64).unwrap();
        assert!(s.abs() < 1.0, "a flat series with one spike is flat: {s}");
    }
}
