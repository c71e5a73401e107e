//! The snapshot report: what one observation window saw, per process, per
//! cgroup and per device, plus OOM kills and the probes' health. The JSON
//! field names are a documented interface (README "snapshot --json").
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::probes::ProbeStatus;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub sentinel_version: String,
    pub kernel: String,
    pub duration_s: f64,
    pub processes: Vec<ProcessReport>,
    pub cgroups: Vec<CgroupReport>,
    pub devices: Vec<DeviceReport>,
    pub oom_kills: Vec<OomKill>,
    pub probes: Vec<ProbeStatus>,
    /// Events seen per probe in the window.
    pub counters: BTreeMap<String, u64>,
    /// Losses in the window: map-full, ring-buffer-full, failed reads.
    pub drops: BTreeMap<String, u64>,
    pub maps: BTreeMap<String, MapFill>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MapFill {
    pub start: usize,
    pub end: usize,
    pub max: u32,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rss {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    pub swap: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub cgroup_id: u64,
    /// Current resident memory: anon + file + shmem.
    pub rss_bytes: u64,
    pub rss: Rss,
    /// `kernel` (rss_stat), `proc` (/proc fallback) or `mixed`.
    pub rss_source: String,
    pub page_faults: u64,
    pub futex_waits: u64,
    pub futex_wait_ns: u64,
    pub futex_max_wait_ns: u64,
    pub futex_blocked_threads: u32,
    pub longest_futex_wait_s: f64,
    pub blocked: Vec<BlockedThread>,
    pub read_bytes: u64,
    /// What this process caused to be written: `dirtied_bytes` +
    /// `direct_write_bytes`.
    pub write_bytes: u64,
    pub dirtied_bytes: u64,
    pub direct_write_bytes: u64,
    /// Block writes issued in this process's own context (direct I/O and
    /// writeback it ran itself, e.g. under fsync).
    pub blk_write_bytes: u64,
    pub io_latency: IoLatency,
}

/// Latency of the block I/O a process (or cgroup) submitted, from bio
/// submission to completion, queueing included.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IoLatency {
    pub completed: u64,
    pub avg_us: Option<f64>,
    /// Completions per log2(ns) bucket (index i: [2^i, 2^(i+1)) ns).
    pub hist: Vec<u64>,
}

impl IoLatency {
    pub fn new(completed: u64, total_ns: u64, hist: impl Iterator<Item = u64>) -> IoLatency {
        IoLatency {
            completed,
            avg_us: (completed > 0).then(|| total_ns as f64 / completed as f64 / 1e3),
            hist: if completed > 0 {
                hist.collect()
            } else {
                Vec::new()
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockedThread {
    pub tid: u32,
    pub uaddr: String,
    pub op: String,
    /// A thread of the same process that holds the lock, when known.
    pub owner_tid: Option<u32>,
    pub waiting_s: f64,
    /// Already blocked when sentinel attached: `waiting_s` is a lower bound.
    pub seeded: bool,
    pub stack: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CgroupReport {
    pub id: u64,
    pub path: Option<String>,
    pub page_faults: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub dirtied_bytes: u64,
    pub direct_write_bytes: u64,
    pub futex_waits: u64,
    pub exited_processes: u64,
    pub io_latency: IoLatency,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceReport {
    pub dev: String,
    pub name: Option<String>,
    pub read_bytes: u64,
    pub read_ops: u64,
    pub write_bytes: u64,
    pub write_ops: u64,
    pub avg_latency_us: Option<f64>,
    /// Completed requests per log2(ns) latency bucket (index i: [2^i, 2^(i+1)) ns).
    pub latency_hist: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OomKill {
    pub ts_unix_ms: u64,
    pub victim_pid: u32,
    pub victim_comm: String,
    pub victim_cgroup: Option<String>,
    pub victim_cgroup_id: u64,
    /// The task whose allocation invoked the OOM killer: often not the victim.
    pub trigger_pid: u32,
    pub trigger_comm: String,
    pub trigger_cgroup: Option<String>,
    /// `cgroup`: a memory cgroup's limit was hit; `global`: the host ran out.
    pub kind: String,
    /// The memory cgroup whose limit was hit (path in the memory hierarchy).
    pub limit_cgroup: Option<String>,
    pub limit_bytes: Option<u64>,
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    pub total_vm_bytes: u64,
    pub pgtables_bytes: u64,
    pub oom_score_adj: i32,
    pub uid: u32,
}
