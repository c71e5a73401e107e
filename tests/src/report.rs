//! The JSON contract of `sentinel snapshot --json` and `sentinel check --json`.
//!
//! Only the fields the contract promises are declared; unknown fields are
//! ignored. A missing or mistyped promised field fails the parse, which is a
//! contract violation worth a test failure of its own.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};

use crate::brief;

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Report {
    pub kernel: String,
    pub duration_s: f64,
    pub processes: Vec<Process>,
    pub cgroups: Vec<CgroupStats>,
    pub oom_kills: Vec<OomKill>,
    pub probes: Vec<Probe>,
    pub drops: BTreeMap<String, u64>,
    pub maps: BTreeMap<String, MapUsage>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Process {
    pub pid: i32,
    pub comm: String,
    pub cgroup: String,
    pub cgroup_id: u64,
    pub rss_bytes: u64,
    pub rss: Rss,
    pub page_faults: u64,
    pub futex_waits: u64,
    pub futex_wait_ns: u64,
    pub futex_blocked_threads: u64,
    pub longest_futex_wait_s: f64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub dirtied_bytes: u64,
    pub direct_write_bytes: u64,
    pub blocked: Vec<Blocked>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Rss {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    pub swap: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Blocked {
    pub tid: i32,
    pub uaddr: String,
    pub op: String,
    pub owner_tid: Option<i32>,
    pub waiting_s: f64,
    pub seeded: bool,
    pub stack: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct CgroupStats {
    pub id: u64,
    pub path: String,
    pub page_faults: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub dirtied_bytes: u64,
    pub direct_write_bytes: u64,
    pub futex_waits: u64,
    pub exited_processes: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct OomKill {
    pub victim_pid: i32,
    pub victim_comm: String,
    pub victim_cgroup: Option<String>,
    pub trigger_pid: i32,
    pub trigger_comm: String,
    pub trigger_cgroup: Option<String>,
    pub kind: String,
    pub limit_cgroup: Option<String>,
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    pub oom_score_adj: i64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Probe {
    pub name: String,
    pub status: String,
    pub program_type: Option<String>,
    pub detail: String,
    /// The program types tried, up to the one that attached.
    pub variants: Vec<Variant>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Variant {
    pub program_type: String,
    /// attached, unsupported, failed or disabled.
    pub outcome: String,
    #[serde(default)]
    pub reason: String,
}

impl Probe {
    /// Why this kernel cannot run the probe (as `program_type`, when
    /// given), if it cannot: the kernel lacks a tracepoint or a field it
    /// reads. A program the kernel has everything for but refused is a
    /// failure, not a reason to skip, and so is anything else.
    pub fn unsupported_here(&self, program_type: Option<&str>) -> Option<String> {
        match program_type {
            None => (self.status == "unsupported")
                .then(|| format!("probe {} is unsupported: {}", self.name, self.detail)),
            Some(t) => self
                .variants
                .iter()
                .find(|v| v.program_type == t && v.outcome == "unsupported")
                .map(|v| format!("probe {} cannot run as {t}: {}", self.name, v.reason)),
        }
    }

    /// Why the probe runs without `tracepoint` here, if it does: sentinel
    /// names an optional tracepoint the kernel lacks in the probe's detail.
    pub fn lacks_tracepoint(&self, tracepoint: &str) -> Option<String> {
        let absent = format!("tracepoint {tracepoint} not present on this kernel");
        self.detail
            .contains(&absent)
            .then(|| format!("probe {} runs without {tracepoint}: {absent}", self.name))
    }
}

/// Skips the calling test, loudly and with the kernel's reason, when
/// `$probes` (a report's `probes`) says this kernel cannot run probe
/// `$name` (as program type `$ty`, when given).
#[macro_export]
macro_rules! skip_unsupported {
    ($probes:expr, $name:expr) => {
        $crate::skip_unsupported!($probes, $name, None)
    };
    ($probes:expr, $name:expr, $ty:expr) => {
        if let Some(why) = $crate::report::find_probe(&$probes, $name)?.unsupported_here($ty) {
            $crate::skip!("{why}");
        }
    };
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize)]
pub struct MapUsage {
    pub start: u64,
    pub end: u64,
}

impl Report {
    /// The entry for `pid`, or an error listing the pids that were reported.
    pub fn process(&self, pid: i32) -> Result<&Process> {
        self.processes.iter().find(|p| p.pid == pid).ok_or_else(|| {
            anyhow!(
                "expected pid {pid} in processes[], sentinel reported pids {:?}; report: {}",
                self.processes
                    .iter()
                    .map(|p| (p.pid, p.comm.as_str(), p.cgroup.as_str()))
                    .collect::<Vec<_>>(),
                brief(self)
            )
        })
    }

    /// The entry for cgroup `path`, or an error listing the reported paths.
    pub fn cgroup(&self, path: &str) -> Result<&CgroupStats> {
        self.cgroups.iter().find(|c| c.path == path).ok_or_else(|| {
            anyhow!(
                "expected cgroup {path:?} in cgroups[], sentinel reported {:?}; report: {}",
                self.cgroups.iter().map(|c| &c.path).collect::<Vec<_>>(),
                brief(self)
            )
        })
    }

    pub fn map(&self, name: &str) -> Result<MapUsage> {
        self.maps.get(name).copied().ok_or_else(|| {
            anyhow!(
                "expected maps.{name} in the report, sentinel reported maps {:?}",
                self.maps
            )
        })
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub kernel: String,
    pub btf: bool,
    /// A string by contract; `Option` so a `null` fails only the test that
    /// checks it (check_as_root_passes), not every check test.
    pub lockdown: Option<String>,
    pub tracefs: Tracefs,
    pub privileges: Privileges,
    pub probes: Vec<Probe>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Tracefs {
    /// `null` when no tracefs is reachable (e.g. without privilege).
    pub path: Option<String>,
    pub mounted_by_sentinel: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Privileges {
    pub ok: bool,
    pub missing: Vec<String>,
}

/// The probes every `check` and `snapshot` reports on.
pub const PROBE_NAMES: [&str; 7] = [
    "faults",
    "rss",
    "futex",
    "block",
    "writes",
    "oom",
    "lifecycle",
];

impl CheckReport {
    pub fn probe(&self, name: &str) -> Result<&Probe> {
        find_probe(&self.probes, name)
    }
}

pub fn find_probe<'a>(probes: &'a [Probe], name: &str) -> Result<&'a Probe> {
    probes.iter().find(|p| p.name == name).ok_or_else(|| {
        anyhow!(
            "expected probe {name:?} in probes[], sentinel reported {:?}",
            probes.iter().map(|p| &p.name).collect::<Vec<_>>()
        )
    })
}
