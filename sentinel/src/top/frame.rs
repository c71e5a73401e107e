//! What `sentinel top` shows, as data: one `Frame` per refresh. The daemon
//! builds it for attached clients (and serves it as JSON over the API), a
//! standalone `top` builds it from its own probes, and `--once --json`
//! prints it. The UI only ever reads a `Frame`.
use serde::{Deserialize, Serialize};

use crate::event::{Event, Severity};

/// Bumped when a field changes meaning or goes away.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Frame {
    pub schema: u32,
    /// RFC 3339, UTC, and the same as Unix milliseconds.
    pub time: String,
    pub unix_ms: u64,
    pub host: String,
    pub mode: Mode,
    /// Seconds between the samples behind this frame.
    pub interval_s: f64,
    pub header: Header,
    /// Every process in /proc. Kernel threads included (`kernel`), which
    /// the UI hides by default.
    pub procs: Vec<ProcRow>,
    /// Every non-root cgroup with a live process, sorted by path.
    pub containers: Vec<ContainerRow>,
    /// The most recent events, oldest first (at most `MAX_EVENTS`).
    pub events: Vec<Event>,
    /// Details of the subjects clients asked for (see `Subject`).
    pub details: Vec<Detail>,
}

pub const MAX_EVENTS: usize = 500;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mode {
    /// True when the frame comes from a running daemon.
    pub attached: bool,
    /// True when the frame is history: `top --at` replaying the recorder.
    #[serde(default)]
    pub replay: bool,
    /// "attached to the daemon (pid 1234) at /run/sentinel/sentinel.sock"
    /// or "standalone: this process runs the probes".
    pub describe: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Header {
    pub mem_total: u64,
    pub mem_available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
    pub psi_memory: Option<Psi>,
    pub psi_io: Option<Psi>,
    /// /proc/loadavg's 1, 5 and 15 minute averages.
    pub load: [f64; 3],
    /// Seconds until available memory plus free swap reach zero at the
    /// rate of the last ten minutes; None when they are not falling.
    pub mem_exhaustion_s: Option<f64>,
    /// Open incidents by their current severity.
    pub open_critical: u32,
    pub open_warning: u32,
    pub sentinel: SelfStats,
}

/// Pressure stall percentages, 10 s averages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Psi {
    pub some: f64,
    pub full: f64,
}

/// The process that runs the probes (the daemon, or this `top`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SelfStats {
    pub pid: u32,
    /// Percent of one core over the last interval.
    pub cpu_pct: f64,
    pub rss: u64,
    /// Events the kernel side lost (every drop and map-full counter).
    pub dropped: u64,
    /// The non-zero ones, by counter name.
    pub drops: Vec<(String, u64)>,
    pub probes_working: u32,
    pub probes_total: u32,
    /// Probes that did not attach or degraded, with why.
    pub probes_down: Vec<String>,
}

/// A detector's open condition on a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// Event kind: memory_bloat, deadlock, hang, write_anomaly, ...
    pub kind: String,
    pub severity: Severity,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcRow {
    pub pid: u32,
    pub ppid: u32,
    /// Start time in clock ticks after boot: with the pid, the process's
    /// identity (a kill is refused if it changed).
    pub start: u64,
    pub uid: u32,
    pub user: String,
    pub comm: String,
    /// /proc state letter: R, S, D, Z, T, ...
    pub state: char,
    pub kernel: bool,
    pub threads: u32,
    pub cgroup_id: u64,
    /// The cgroup path (v2), when known.
    pub cgroup: Option<String>,
    /// The container's name when it is in one (None on the host).
    pub container: Option<String>,
    pub rss: u64,
    /// Rates need two samples and a process the kernel has reported on;
    /// None means "not known yet", not zero.
    pub rss_growth_per_min: Option<f64>,
    pub cpu_pct: Option<f64>,
    pub faults_per_s: Option<f64>,
    pub majflt_per_s: Option<f64>,
    /// Threads now blocked in a futex wait, and the longest wait in seconds.
    pub blocked: u32,
    pub longest_wait_s: Option<f64>,
    pub read_per_s: Option<f64>,
    pub write_per_s: Option<f64>,
    /// Open detector conditions on this process.
    pub flags: Vec<Flag>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerRow {
    pub cgroup_id: u64,
    pub path: String,
    /// Runtime name (docker/podman/k8s/systemd unit), else the path.
    pub name: String,
    /// docker, podman, kubernetes, systemd, ... when recognized.
    pub runtime: Option<String>,
    pub procs: u32,
    pub threads: u32,
    pub rss: u64,
    pub anon: u64,
    pub rss_growth_per_min: Option<f64>,
    pub cpu_pct: Option<f64>,
    pub faults_per_s: Option<f64>,
    pub blocked: u32,
    pub longest_wait_s: Option<f64>,
    pub read_per_s: Option<f64>,
    pub write_per_s: Option<f64>,
    pub flags: Vec<Flag>,
}

/// A process or container a client wants the detail of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Process { pid: u32, start: u64 },
    Container { cgroup_id: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detail {
    pub subject: Subject,
    /// "Process 1234 (python3)" or "Container web (/system.slice/web.service)".
    pub title: String,
    /// False when the subject is gone (exited, cgroup removed).
    pub alive: bool,
    pub blocked: Vec<BlockedThread>,
    /// One point per tick over the last minute, oldest first.
    pub rss: Vec<u64>,
    pub faults_per_s: Vec<f64>,
    pub write_per_s: Vec<f64>,
    /// Events about this subject, oldest first.
    pub events: Vec<Event>,
    /// For a container: its processes' pids.
    pub members: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockedThread {
    pub pid: u32,
    pub tid: u32,
    pub comm: Option<String>,
    pub wait_s: f64,
    /// The futex word's user address.
    pub uaddr: u64,
    /// wait, wait_bitset, lock_pi, ...
    pub op: String,
    /// The thread that holds the lock, when sentinel can tell.
    pub owner: Option<u32>,
    /// Symbolized user stack, innermost first ("0x..." when unresolved).
    pub stack: Vec<String>,
}

impl Frame {
    pub fn detail(&self, s: &Subject) -> Option<&Detail> {
        self.details.iter().find(|d| d.subject == *s)
    }
}
