//! thread_explosion: a process past `threads.max_threads`. Runaway thread
//! creation (a pool sized per request, a leak of blocked workers) ends in
//! EAGAIN from clone() for everyone on the host once pid_max or
//! threads-max is reached; the count and its growth say which process.
use serde_json::json;

use super::{Ctx, proc_key};
use crate::{
    event::{Kind, Severity},
    incident::Finding,
    profile::slope,
};

fn read_limit(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    let max = ctx.cfg.threads.max_threads;
    let mut out = Vec::new();
    for p in ctx.profiles.procs.values() {
        let n = p.stat.num_threads;
        if n < max {
            continue;
        }
        let per_min = slope(&p.series.window(60.0), |q| q.threads as f64).map(|s| s * 60.0);
        let growing = per_min
            .filter(|g| *g >= 1.0)
            .map(|g| format!(", growing by {g:.0} a minute"))
            .unwrap_or_default();
        out.push(Finding {
            kind: Kind::ThreadExplosion,
            key: proc_key(p),
            severity: Severity::Warning,
            names: ctx.proc_names(p),
            summary: format!(
                "{} (pid {}) runs {n} threads (threshold {max}){growing}.",
                p.comm, p.pid
            ),
            evidence: json!({
                "threads": n,
                "max_threads": max,
                "growth_per_min": per_min.map(f64::round),
                "kernel_threads_max": read_limit("/proc/sys/kernel/threads-max"),
                "kernel_pid_max": read_limit("/proc/sys/kernel/pid_max"),
            }),
        });
    }
    out
}
