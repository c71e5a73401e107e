//! Plain-text rendering of a snapshot report.
use crate::{report::Report, units::bytes};

const MAX_ROWS: usize = 25;

pub fn snapshot(r: &Report) -> String {
    let mut out = format!(
        "sentinel snapshot: {:.1}s on kernel {}\n\n",
        r.duration_s, r.kernel
    );
    out += &format!(
        "{:>7} {:<16} {:>10} {:>9} {:>7} {:>8} {:>10} {:>10}  {}\n",
        "PID", "COMM", "RSS", "FAULTS", "BLOCKED", "LONGEST", "READ", "WRITE", "CGROUP"
    );
    for p in r.processes.iter().take(MAX_ROWS) {
        out += &format!(
            "{:>7} {:<16} {:>10} {:>9} {:>7} {:>7.1}s {:>10} {:>10}  {}\n",
            p.pid,
            p.comm,
            bytes(p.rss_bytes),
            p.page_faults,
            p.futex_blocked_threads,
            p.longest_futex_wait_s,
            bytes(p.read_bytes),
            bytes(p.write_bytes),
            p.cgroup.as_deref().unwrap_or("?")
        );
    }
    if r.processes.len() > MAX_ROWS {
        out += &format!(
            "  … {} more processes (use --json for all)\n",
            r.processes.len() - MAX_ROWS
        );
    }
    out += &format!(
        "\n{:>9} {:>10} {:>10} {:>7}  {}\n",
        "FAULTS", "READ", "WRITE", "EXITED", "CGROUP"
    );
    for c in r.cgroups.iter().take(MAX_ROWS) {
        out += &format!(
            "{:>9} {:>10} {:>10} {:>7}  {}\n",
            c.page_faults,
            bytes(c.read_bytes),
            bytes(c.write_bytes),
            c.exited_processes,
            c.path.clone().unwrap_or_else(|| format!("(id {})", c.id))
        );
    }
    if !r.devices.is_empty() {
        out += &format!(
            "\n{:<10} {:>10} {:>8} {:>10} {:>8} {:>10}\n",
            "DEVICE", "READ", "R-OPS", "WRITE", "W-OPS", "AVG LAT"
        );
        for d in &r.devices {
            out += &format!(
                "{:<10} {:>10} {:>8} {:>10} {:>8} {:>10}\n",
                d.name.as_deref().unwrap_or(&d.dev),
                bytes(d.read_bytes),
                d.read_ops,
                bytes(d.write_bytes),
                d.write_ops,
                d.avg_latency_us
                    .map(|v| format!("{v:.0}us"))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
    for k in &r.oom_kills {
        out += &format!(
            "\nOOM KILL: pid {} ({}) in {}, {} OOM{}; anon {} file {} shmem {}; triggered by pid {} ({}) in {}\n",
            k.victim_pid,
            k.victim_comm,
            k.victim_cgroup.as_deref().unwrap_or("?"),
            k.kind,
            k.limit_cgroup
                .as_ref()
                .map(|l| format!(" (limit of {l} hit)"))
                .unwrap_or_default(),
            bytes(k.anon_rss_bytes),
            bytes(k.file_rss_bytes),
            bytes(k.shmem_rss_bytes),
            k.trigger_pid,
            k.trigger_comm,
            k.trigger_cgroup.as_deref().unwrap_or("?"),
        );
    }
    let degraded: Vec<String> = r
        .probes
        .iter()
        .filter(|p| !matches!(p.status, crate::probes::Status::Attached))
        .map(|p| format!("{} ({:?}: {})", p.name, p.status, p.detail))
        .collect();
    if !degraded.is_empty() {
        out += &format!("\nprobes not fully attached: {}\n", degraded.join("; "));
    }
    let lost: Vec<String> = r
        .drops
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !lost.is_empty() {
        out += &format!("in-kernel drops: {}\n", lost.join(" "));
    }
    out
}
