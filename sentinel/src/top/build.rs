//! Builds `top`'s `Frame` from the watch loop's state: the profiles for
//! rates, the latest sample for blocked threads, the open incidents for
//! flags, and a /proc listing for the processes the kernel has not
//! reported on.
use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use sentinel_common::{Counter, FutexWait};

use super::{frame::*, procs::ProcTable};
use crate::{
    container,
    engine::Engine,
    event::{Event, SubjectKey, rfc3339, unix_ms_now},
    host,
    loader::Sentinel,
    procfs,
    profile::{self, Point, ProcProfile, Series},
    snapshot::{op_name, owners},
};

/// How far back CPU% looks: /proc readings of processes whose kernel
/// counters did not move are reused for up to 10 s (`profile.rs`), so a
/// shorter window would show them idle, then busy.
const CPU_WINDOW: f64 = 10.0;
/// How far back GROW/m and the header's exhaustion projection look.
const GROWTH_WINDOW: f64 = 60.0;
const EXHAUSTION_WINDOW: f64 = 600.0;

#[derive(Default)]
pub struct Builder {
    table: ProcTable,
    own: CpuMeter,
    /// Container identities per cgroup path, for quiet processes' cgroups.
    names: HashMap<String, Option<String>>,
}

impl Builder {
    /// Lets go of what the last frames needed: nobody is watching.
    pub fn clear(&mut self) {
        self.table = ProcTable::default();
        self.names = HashMap::new();
    }

    pub fn build(
        &mut self,
        engine: &mut Engine,
        s: &Sentinel,
        mode: Mode,
        interval: Duration,
        wanted: &[Subject],
    ) -> Frame {
        let mut f = self.build_without_events(engine, s, mode, interval, wanted);
        f.events = engine.recent.iter().map(|e| Event::clone(e)).collect();
        f
    }

    /// A frame for the recorder, which records events on their own: the
    /// last 500 are not copied into it.
    pub fn build_without_events(
        &mut self,
        engine: &mut Engine,
        s: &Sentinel,
        mode: Mode,
        interval: Duration,
        wanted: &[Subject],
    ) -> Frame {
        let unix_ms = unix_ms_now();
        let hz = procfs::clock_ticks_per_s() as f64;
        let profiles = &engine.profiles;
        self.table.refresh(profiles, &engine.resolver);
        // After a tick's interval, a process the kernel has not reported on
        // did nothing it reports: no faults, no RSS change, no I/O.
        let known_quiet = engine.ticks >= 2;

        let flags = flags(engine);
        let waits = waits(engine);
        let mut procs = Vec::with_capacity(self.table.entries.len());
        let pids: Vec<u32> = self.table.entries.keys().copied().collect();
        for pid in pids {
            let Some(e) = self.table.entries.get(&pid) else {
                continue;
            };
            let (stat, uid, cgroup_path, cgroup_id, quiet_cpu) =
                (e.stat, e.uid, e.cgroup.clone(), e.cgroup_id, e.cpu_pct(hz));
            let user = self.table.user(uid);
            let prof = profiles
                .procs
                .get(&pid)
                .filter(|p| p.start == stat.starttime);
            let mut row = ProcRow {
                pid,
                ppid: stat.ppid,
                start: stat.starttime,
                uid,
                user,
                comm: stat.comm(),
                state: stat.state as char,
                kernel: stat.flags & PF_KTHREAD != 0,
                threads: stat.num_threads,
                cgroup: cgroup_path,
                cgroup_id,
                rss: stat.rss_pages * procfs::page_size(),
                cpu_pct: quiet_cpu,
                ..Default::default()
            };
            if known_quiet {
                let zero = Some(0.0);
                (row.rss_growth_per_min, row.faults_per_s) = (zero, zero);
                (row.read_per_s, row.write_per_s) = (zero, zero);
            }
            if let Some(p) = prof {
                fill_proc(&mut row, p, hz);
                row.cgroup_id = p.cgroup_id;
                if let Some(c) = profiles.containers.get(&p.cgroup_id) {
                    row.cgroup = Some(c.path.clone());
                    row.container = Some(c.name());
                }
            }
            if row.container.is_none()
                && let Some(path) = &row.cgroup
            {
                row.container = match self.names.get(path) {
                    Some(name) => name.clone(),
                    None => {
                        let name = (path != "/")
                            .then(|| container::identify(path).map(|c| c.name))
                            .flatten();
                        self.names.insert(path.clone(), name.clone());
                        name
                    }
                };
            }
            if let Some((n, longest)) = waits.procs.get(&pid) {
                row.blocked = *n;
                row.longest_wait_s = Some(*longest);
            }
            if let Some(f) = flags.get(&Key::Proc(pid, row.start)) {
                row.flags = f.clone();
            }
            procs.push(row);
        }
        // Identities of cgroups no process is in any more go.
        if self.names.len() > 4 * procs.len().max(256) {
            self.names.clear();
        }

        let containers = containers(profiles, &procs, &flags, hz, known_quiet);

        let header = self.header(engine, s);
        let details = details(engine, s, wanted);
        Frame {
            schema: SCHEMA,
            time: rfc3339(unix_ms),
            unix_ms,
            host: host::hostname(),
            mode,
            interval_s: interval.as_secs_f64(),
            header,
            procs,
            containers,
            events: Vec::new(),
            details,
        }
    }

    fn header(&mut self, engine: &Engine, s: &Sentinel) -> Header {
        let proc_root = Path::new("/proc");
        let host = engine.profiles.host.last().copied().unwrap_or_default();
        let psi = |p: Option<host::Pressure>| {
            p.map(|p| Psi {
                some: p.some_avg10,
                full: p.full_avg10,
            })
        };
        let (mut crit, mut warn) = (0, 0);
        for o in engine.incidents.open() {
            match o.finding.severity {
                crate::event::Severity::Critical => crit += 1,
                crate::event::Severity::Warning => warn += 1,
                crate::event::Severity::Info => {}
            }
        }
        let counters = &engine.sample.counters;
        let drops: Vec<(String, u64)> = Counter::ALL
            .iter()
            .filter(|c| c.is_drop() && counters[**c as usize] > 0)
            .map(|&c| (c.name().to_string(), counters[c as usize]))
            .collect();
        let probes_down = s
            .probes
            .iter()
            .filter(|p| !matches!(p.status, crate::probes::Status::Attached))
            .map(|p| format!("{}: {}", p.name, p.detail))
            .collect();
        let (own_cpu, own_rss) = procfs::own_usage(procfs::page_size());
        Header {
            mem_total: host.mem_total,
            mem_available: host.mem_available,
            swap_total: host.swap_total,
            swap_free: host.swap_free,
            psi_memory: psi(host.psi_memory),
            psi_io: psi(host.psi_io),
            load: loadavg(proc_root),
            mem_exhaustion_s: exhaustion(&engine.profiles.host),
            open_critical: crit,
            open_warning: warn,
            sentinel: SelfStats {
                pid: std::process::id(),
                cpu_pct: self.own.sample(own_cpu),
                rss: own_rss,
                dropped: drops.iter().map(|d| d.1).sum(),
                drops,
                probes_working: s.probes.iter().filter(|p| p.working()).count() as u32,
                probes_total: s.probes.len() as u32,
                probes_down,
            },
        }
    }
}

const PF_KTHREAD: u32 = 0x0020_0000;

struct Rates {
    growth: Option<f64>,
    cpu: Option<f64>,
    faults: Option<f64>,
    majflt: Option<f64>,
    read: Option<f64>,
    write: Option<f64>,
}

/// Rates from a profile's series. Kernel counters (faults, bytes) move
/// every tick, so their rate is over the last tick; /proc ones over
/// `CPU_WINDOW`.
fn fill_rates(series: &Series<Point>, hz: f64, mut set: impl FnMut(&Point, &Rates)) {
    let Some(last) = series.last() else {
        return;
    };
    let recent = series.window(CPU_WINDOW);
    let tick = &recent[recent.len().saturating_sub(2)..];
    let growth = series.window(GROWTH_WINDOW);
    let r = Rates {
        growth: profile::slope(&growth, |p| p.rss as f64).map(|s| s * 60.0),
        cpu: profile::rate(&recent, |p| p.cpu_ticks).map(|t| t / hz * 100.0),
        faults: profile::rate(tick, |p| p.faults),
        majflt: profile::rate(&recent, |p| p.majflt),
        read: profile::rate(tick, |p| p.read),
        write: profile::rate(tick, |p| p.write),
    };
    set(last, &r);
}

/// One row per cgroup with a process in it (the host's root excepted).
/// Membership, RSS and threads come from the process rows, so a container
/// whose processes are all quiet is listed too; rates come from its
/// profile, which also counts members that have exited.
fn containers(
    profiles: &crate::profile::Profiles,
    procs: &[ProcRow],
    flags: &HashMap<Key, Vec<Flag>>,
    hz: f64,
    known_quiet: bool,
) -> Vec<ContainerRow> {
    let mut rows: HashMap<u64, ContainerRow> = HashMap::new();
    for p in procs {
        let Some(path) = p.cgroup.as_deref().filter(|c| *c != "/") else {
            continue;
        };
        if p.cgroup_id == 0 {
            continue;
        }
        let row = rows.entry(p.cgroup_id).or_insert_with(|| {
            let found = container::identify(path);
            let zero = known_quiet.then_some(0.0);
            ContainerRow {
                cgroup_id: p.cgroup_id,
                path: path.to_string(),
                name: found
                    .as_ref()
                    .map_or_else(|| path.to_string(), |c| c.name.clone()),
                runtime: found.and_then(|c| runtime_name(c.runtime)),
                rss_growth_per_min: zero,
                faults_per_s: zero,
                read_per_s: zero,
                write_per_s: zero,
                ..Default::default()
            }
        });
        row.procs += 1;
        row.threads += p.threads;
        row.rss += p.rss;
        if let Some(c) = p.cpu_pct {
            row.cpu_pct = Some(row.cpu_pct.unwrap_or(0.0) + c);
        }
        row.blocked += p.blocked;
        if let Some(w) = p.longest_wait_s {
            row.longest_wait_s = Some(row.longest_wait_s.map_or(w, |l: f64| l.max(w)));
        }
    }
    for (id, row) in rows.iter_mut() {
        if let Some(c) = profiles.containers.get(id) {
            row.name = c.name();
            row.runtime = c.container.as_ref().and_then(|x| runtime_name(x.runtime));
            fill_rates(&c.series, hz, |last, r| {
                row.anon = last.anon;
                row.rss_growth_per_min = r.growth;
                row.faults_per_s = r.faults;
                row.read_per_s = r.read;
                row.write_per_s = r.write;
            });
        }
        if let Some(f) = flags.get(&Key::Container(*id)) {
            row.flags = f.clone();
        }
    }
    let mut out: Vec<ContainerRow> = rows.into_values().collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn runtime_name(r: container::Runtime) -> Option<String> {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
}

fn fill_proc(row: &mut ProcRow, p: &ProcProfile, hz: f64) {
    fill_rates(&p.series, hz, |last, r| {
        row.rss = last.rss;
        row.rss_growth_per_min = r.growth;
        if r.cpu.is_some() {
            row.cpu_pct = r.cpu;
        }
        row.faults_per_s = r.faults;
        row.majflt_per_s = r.majflt;
        row.read_per_s = r.read;
        row.write_per_s = r.write;
    });
}

#[derive(Hash, PartialEq, Eq)]
enum Key {
    Proc(u32, u64),
    Container(u64),
}

/// Open incidents as row flags, worst first.
fn flags(engine: &Engine) -> HashMap<Key, Vec<Flag>> {
    let mut out: HashMap<Key, Vec<Flag>> = HashMap::new();
    for o in engine.incidents.open() {
        let key = match o.finding.key {
            SubjectKey::Process { pid, start } => Key::Proc(pid, start),
            SubjectKey::Container { cgroup_id } => Key::Container(cgroup_id),
            _ => continue,
        };
        out.entry(key).or_default().push(Flag {
            kind: o.finding.kind.name().to_string(),
            severity: o.finding.severity,
        });
    }
    for f in out.values_mut() {
        f.sort_by_key(|x| std::cmp::Reverse(x.severity));
    }
    out
}

#[derive(Default)]
struct Waits {
    /// Per process: threads blocked in a futex wait, and the longest wait.
    procs: HashMap<u32, (u32, f64)>,
}

fn waits(engine: &Engine) -> Waits {
    let mut w = Waits::default();
    for fw in engine.sample.waits.values() {
        let s = engine.sample.waited_s(fw);
        let e = w.procs.entry(fw.tgid).or_insert((0, 0.0));
        e.0 += 1;
        e.1 = e.1.max(s);
    }
    w
}

fn loadavg(proc_root: &Path) -> [f64; 3] {
    let text = procfs::read_small(&proc_root.join("loadavg")).unwrap_or_default();
    let mut f = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        f.next().unwrap_or(0.0),
        f.next().unwrap_or(0.0),
        f.next().unwrap_or(0.0),
    ]
}

/// When available memory plus free swap, falling at the last ten minutes'
/// rate, reach zero. A minute of history at least, or a burst projects.
fn exhaustion(host: &Series<profile::HostPoint>) -> Option<f64> {
    let w = host.window(EXHAUSTION_WINDOW);
    if profile::covered(&w) < 60.0 {
        return None;
    }
    let left = |p: &profile::HostPoint| (p.mem_available + p.swap_free) as f64;
    let slope = profile::slope(&w, left)?;
    let last = w.last()?;
    (slope < 0.0).then(|| left(last) / -slope)
}

/// The details of `wanted` that still exist.
pub fn details(engine: &mut Engine, s: &Sentinel, wanted: &[Subject]) -> Vec<Detail> {
    wanted
        .iter()
        .filter_map(|w| detail(engine, s, *w))
        .collect()
}

fn detail(engine: &mut Engine, s: &Sentinel, want: Subject) -> Option<Detail> {
    match want {
        Subject::Process { pid, start } => {
            let p = engine
                .profiles
                .proc_or_exited(pid)
                .filter(|p| p.start == start);
            let alive = engine
                .profiles
                .procs
                .get(&pid)
                .is_some_and(|p| p.start == start);
            let comm = match p {
                Some(p) => p.comm.clone(),
                None => procfs::stat(Path::new("/proc"), pid)
                    .filter(|st| st.starttime == start)
                    .map(|st| st.comm())?,
            };
            let (rss, faults, writes) = p.map(|p| sparks(&p.series)).unwrap_or_default();
            let mut blocked = Vec::new();
            let mut waits: Vec<(u32, &FutexWait)> = engine
                .sample
                .waits
                .iter()
                .filter(|(_, w)| w.tgid == pid)
                .map(|(tid, w)| (*tid, w))
                .collect();
            waits.sort_by_key(|(_, w)| w.start_ns);
            waits.truncate(64);
            let owners = owners(pid, &waits);
            let sample = &engine.sample;
            for (tid, w) in waits {
                blocked.push(BlockedThread {
                    pid,
                    tid,
                    comm: procfs::thread_comm(Path::new("/proc"), pid, tid),
                    wait_s: sample.waited_s(w),
                    uaddr: w.uaddr,
                    op: op_name(w.op).to_string(),
                    owner: owners.get(&tid).copied(),
                    stack: engine
                        .detectors
                        .stacks()
                        .get(&s.ebpf, pid, start, tid, w.stack_id),
                });
            }
            let events = related(engine, |e| e.names.pid == Some(pid));
            Some(Detail {
                subject: want,
                title: format!("Process {pid} ({comm})"),
                alive,
                blocked,
                rss,
                faults_per_s: faults,
                write_per_s: writes,
                events,
                members: Vec::new(),
            })
        }
        Subject::Container { cgroup_id } => {
            let c = engine.profiles.containers.get(&cgroup_id)?;
            let (rss, faults, writes) = sparks(&c.series);
            let (path, name, members) = (c.path.clone(), c.name(), c.members.clone());
            let sample = &engine.sample;
            let mut blocked: Vec<BlockedThread> = engine
                .sample
                .waits
                .iter()
                .filter(|(_, w)| members.binary_search(&w.tgid).is_ok())
                .map(|(tid, w)| BlockedThread {
                    pid: w.tgid,
                    tid: *tid,
                    comm: None,
                    wait_s: sample.waited_s(w),
                    uaddr: w.uaddr,
                    op: op_name(w.op).to_string(),
                    owner: None,
                    stack: Vec::new(),
                })
                .collect();
            // A container's threads are listed, not walked: its processes'
            // own details have their stacks.
            blocked.sort_by(|a, b| b.wait_s.total_cmp(&a.wait_s));
            blocked.truncate(64);
            let events = related(engine, |e| e.names.cgroup.as_deref() == Some(path.as_str()));
            let title = if name == path {
                format!("Container {name}")
            } else {
                format!("Container {name} ({path})")
            };
            Some(Detail {
                subject: want,
                title,
                alive: true,
                blocked,
                rss,
                faults_per_s: faults,
                write_per_s: writes,
                events,
                members,
            })
        }
    }
}

fn related(engine: &Engine, f: impl Fn(&Event) -> bool) -> Vec<Event> {
    engine
        .recent
        .iter()
        .filter(|e| f(e))
        .map(|e| Event::clone(e))
        .collect()
}

/// The last minute, one value per tick: RSS, and fault and write rates
/// between consecutive ticks.
fn sparks(series: &Series<Point>) -> (Vec<u64>, Vec<f64>, Vec<f64>) {
    let w = series.window(GROWTH_WINDOW);
    let rss = w.iter().map(|p| p.rss).collect();
    let per = |f: fn(&Point) -> u64| {
        w.windows(2)
            .map(|p| profile::rate(p, f).unwrap_or(0.0))
            .collect()
    };
    (rss, per(|p| p.faults), per(|p| p.write))
}

/// This process's own CPU over the last 10 s (one interval is too short
/// to say much); the first call averages over its life so far.
#[derive(Default)]
pub struct CpuMeter {
    seen: std::collections::VecDeque<(f64, Instant)>,
}

const OWN_CPU_WINDOW: Duration = Duration::from_secs(10);

impl CpuMeter {
    /// Percent of one core, from `cpu_s`, the process's CPU seconds now.
    pub fn sample(&mut self, cpu_s: f64) -> f64 {
        let now = Instant::now();
        while self.seen.len() > 1
            && self
                .seen
                .get(1)
                .is_some_and(|(_, at)| now.duration_since(*at) >= OWN_CPU_WINDOW)
        {
            self.seen.pop_front();
        }
        let (spent, dt) = match self.seen.front() {
            Some((c0, at)) => (cpu_s - c0, now.duration_since(*at).as_secs_f64()),
            None => {
                let hz = procfs::clock_ticks_per_s() as f64;
                let started = procfs::stat(Path::new("/proc"), std::process::id())
                    .map_or(0.0, |st| st.starttime as f64 / hz);
                (cpu_s, uptime() - started)
            }
        };
        self.seen.push_back((cpu_s, now));
        if dt > 0.0 {
            (spent / dt * 100.0).max(0.0)
        } else {
            0.0
        }
    }
}

fn uptime() -> f64 {
    procfs::read_small(Path::new("/proc/uptime"))
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::HostPoint;

    fn host(t: f64, avail: u64) -> HostPoint {
        HostPoint {
            t,
            mem_available: avail,
            ..Default::default()
        }
    }

    #[test]
    fn exhaustion_needs_a_minute_of_a_falling_trend() {
        let mut s = Series::default();
        for i in 0..30 {
            s.push(host(i as f64, 1000 - i * 10));
        }
        assert_eq!(
            exhaustion(&s),
            None,
            "half a minute is a burst, not a trend"
        );
        let mut s = Series::default();
        for i in 0..=120 {
            s.push(host(i as f64, 10_000 - i * 10));
        }
        let eta = exhaustion(&s).expect("falling for two minutes");
        assert!((eta - 880.0).abs() < 50.0, "{eta}");

        let mut flat = Series::default();
        for i in 0..=120 {
            flat.push(host(i as f64, 5000));
        }
        assert_eq!(exhaustion(&flat), None);
    }

    #[test]
    fn own_cpu_is_a_percentage() {
        let mut m = CpuMeter::default();
        let cpu = || procfs::own_usage(procfs::page_size()).0;
        let first = m.sample(cpu());
        assert!((0.0..=100.0 * 64.0).contains(&first), "{first}");
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(200) {
            std::hint::black_box(0);
        }
        let busy = m.sample(cpu());
        assert!(busy > 0.0, "{busy}");
    }

    #[test]
    fn rates_come_from_the_series() {
        let mut s = Series::default();
        for i in 0..=20u64 {
            s.push(Point {
                t: i as f64,
                rss: 1000 + i * 100,
                faults: i * 50,
                write: i * 4096,
                cpu_ticks: i * 50,
                ..Default::default()
            });
        }
        let mut got = None;
        fill_rates(&s, 100.0, |last, r| {
            got = Some((last.rss, r.growth, r.cpu, r.faults, r.write));
        });
        let (rss, growth, cpu, faults, write) = got.expect("a series with points");
        assert_eq!(rss, 3000);
        assert!((growth.unwrap() - 6000.0).abs() < 1e-6);
        assert!((cpu.unwrap() - 50.0).abs() < 1e-6);
        assert_eq!(faults, Some(50.0));
        assert_eq!(write, Some(4096.0));
        let (r, f, w) = sparks(&s);
        assert_eq!(r.len(), 21);
        assert_eq!(f.len(), 20);
        assert!(w.iter().all(|&x| x == 4096.0));
    }
}
