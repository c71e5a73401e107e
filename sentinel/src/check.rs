//! `sentinel check`: can this host run sentinel, and which probes work.
use serde::{Deserialize, Serialize};

use crate::{
    btf,
    loader::{LoadError, Sentinel},
    privileges::{self, Privileges},
    probes::ProbeStatus,
    procfs,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TracefsInfo {
    pub path: Option<String>,
    pub mounted_by_sentinel: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    /// All core probes attached (or working through a fallback).
    pub ok: bool,
    pub kernel: String,
    pub btf: bool,
    pub lockdown: Option<String>,
    pub tracefs: TracefsInfo,
    pub privileges: Privileges,
    /// Optional capabilities missing, each with what it costs: sentinel
    /// runs, and detects less (`privileges::limits`).
    pub limited: Vec<String>,
    pub probes: Vec<ProbeStatus>,
    pub error: Option<String>,
}

pub fn run() -> CheckReport {
    let mut r = CheckReport {
        ok: false,
        kernel: procfs::kernel_release(),
        btf: std::path::Path::new(btf::VMLINUX).exists(),
        lockdown: privileges::lockdown(),
        tracefs: TracefsInfo {
            path: None,
            mounted_by_sentinel: false,
        },
        privileges: Privileges::current(),
        limited: privileges::limits(),
        probes: Vec::new(),
        error: None,
    };
    match Sentinel::load() {
        Ok(s) => {
            r.tracefs = TracefsInfo {
                path: Some(s.tracefs.root.display().to_string()),
                mounted_by_sentinel: s.tracefs.mounted_by_us,
            };
            r.ok = s.probes.iter().all(ProbeStatus::working);
            r.probes = s.probes;
        }
        Err(LoadError::Privilege(p)) => r.error = Some(p.explain()),
        Err(LoadError::Other(e)) => r.error = Some(format!("{e:#}")),
    }
    r
}

pub fn render(r: &CheckReport) -> String {
    let mut out = String::new();
    let yes = |b: bool| if b { "yes" } else { "no" };
    out += &format!("kernel      {}\n", r.kernel);
    out += &format!("BTF         {}\n", yes(r.btf));
    out += &format!(
        "lockdown    {}\n",
        r.lockdown
            .as_deref()
            .unwrap_or("unknown (securityfs not mounted)")
    );
    out += &format!(
        "tracefs     {}{}\n",
        r.tracefs.path.as_deref().unwrap_or("-"),
        if r.tracefs.mounted_by_sentinel {
            " (was not mounted: mounted by sentinel)"
        } else {
            ""
        }
    );
    out += &format!(
        "privileges  {}\n",
        if r.privileges.ok {
            "ok".to_string()
        } else {
            format!("MISSING {}", r.privileges.missing.join(", "))
        }
    );
    for l in &r.limited {
        out += &format!("  limited   without {l}\n");
    }
    if !r.probes.is_empty() {
        out += "\nprobe       status       type        detail\n";
        for p in &r.probes {
            let status = serde_json::to_value(p.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out += &format!(
                "{:<11} {:<12} {:<11} {}\n",
                p.name,
                status,
                p.program_type.as_deref().unwrap_or("-"),
                p.detail
            );
        }
    }
    if let Some(e) = &r.error {
        out += &format!("\nerror: {e}\n");
    }
    out += &format!(
        "\n{}\n",
        if r.ok {
            "OK: all core probes work"
        } else {
            "NOT OK: see above"
        }
    );
    out
}
