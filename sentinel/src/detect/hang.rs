//! hang: every thread of a process blocked in a futex wait or in
//! uninterruptible sleep for `deadlock.hang_after`, with no CPU progress.
//! This catches deadlocks on locks that record no owner (CPython's locks,
//! Rust's std and parking_lot, Rayon and Polars workers), which the
//! wait-for graph cannot see.
//!
//! "No wakes" comes from the waits themselves: a thread woken on its
//! address leaves the wait, and its next wait starts a new clock. An idle
//! pool whose main thread still works is never "every thread", so it is
//! not a hang.
use std::{collections::HashMap, path::Path};

use aya::Ebpf;
use serde_json::{Value, json};

use super::{Ctx, deadlock, proc_key};
use crate::{
    event::{Kind, Severity, human_duration},
    incident::{Finding, round1},
    procfs,
    profile::{ProcProfile, covered},
};

/// When each thread was first seen in uninterruptible sleep, for the
/// processes that are candidates (a long futex wait is what makes one).
#[derive(Default)]
pub struct Tracker {
    d_since: HashMap<(u32, u32), f64>,
}

/// CPU ticks a process may accrue and still count as making no progress:
/// accounting is sampled, so a blocked process can show a tick.
const CPU_NOISE_TICKS: u64 = 2;

pub fn detect(
    ctx: &Ctx,
    ebpf: &Ebpf,
    stacks: &mut deadlock::Stacks,
    tracker: &mut Tracker,
    deadlocks: &[Finding],
) -> Vec<Finding> {
    let hang_after = ctx.cfg.deadlock.hang_after.as_secs_f64();
    let proc_root = Path::new("/proc");
    let open = |p: &ProcProfile| ctx.incidents.is_open(Kind::Hang, &proc_key(p));
    let mut candidates: Vec<u32> = ctx
        .sample
        .waits
        .values()
        .filter(|w| deadlock::waiting_s(ctx, w) >= hang_after)
        .map(|w| w.tgid)
        .chain(
            ctx.profiles
                .procs
                .values()
                .filter(|p| open(p))
                .map(|p| p.pid),
        )
        .collect();
    candidates.sort_unstable();
    candidates.dedup();
    tracker
        .d_since
        .retain(|(pid, _), _| candidates.contains(pid));

    let mut out = Vec::new();
    'procs: for pid in candidates {
        let Some(p) = ctx.profiles.procs.get(&pid) else {
            continue;
        };
        let key = proc_key(p);
        // A deadlock already names this process, with more precision.
        if deadlocks.iter().any(|f| f.key == key) || ctx.incidents.is_open(Kind::Deadlock, &key) {
            continue;
        }
        // Once reported, a hang stays while every thread is still blocked
        // and the CPU still idle: a debugger or a signal restarting the
        // waits (jstack, py-spy, SIGSTOP/SIGCONT) must not resolve it and
        // make it earn hang_after again.
        let (need, cpu_window) = if open(p) {
            (0.0, 10.0)
        } else {
            (hang_after, hang_after.min(600.0))
        };
        let tids = procfs::tids(proc_root, pid);
        if tids.is_empty() {
            continue;
        }
        // Decide first, from the waits and thread states alone; evidence
        // (comm, stacks, symbols) is read only for a process that is hung.
        let mut blocked: Vec<(u32, Option<f64>)> = Vec::new();
        let mut blocked_for = f64::INFINITY;
        for tid in tids {
            if let Some(w) = ctx.sample.waits.get(&tid) {
                let age = deadlock::waiting_s(ctx, w);
                if age < need {
                    // Waiting, but not for long: something woke it recently.
                    continue 'procs;
                }
                blocked_for = blocked_for.min(age);
                blocked.push((tid, None));
                continue;
            }
            match procfs::task_stat(proc_root, pid, tid).map(|s| s.state) {
                Some(b'D') => {
                    let since = *tracker.d_since.entry((pid, tid)).or_insert(ctx.t);
                    let age = ctx.t - since;
                    if age < need {
                        continue 'procs;
                    }
                    blocked_for = blocked_for.min(age);
                    blocked.push((tid, Some(age)));
                }
                // Exited while we looked: not a reason to call it running.
                Some(b'Z' | b'X') | None => {}
                Some(_) => {
                    tracker.d_since.remove(&(pid, tid));
                    continue 'procs;
                }
            }
        }
        if blocked.is_empty() {
            continue;
        }
        // No CPU progress over the hang window (or all the history we have).
        let pts = p.series.window(cpu_window);
        let cpu = match (pts.first(), pts.last()) {
            (Some(a), Some(b)) => b.cpu_ticks.saturating_sub(a.cpu_ticks),
            _ => 0,
        };
        if cpu > CPU_NOISE_TICKS {
            continue;
        }
        let threads: Vec<Value> = blocked
            .iter()
            .filter_map(|&(tid, d_age)| match d_age {
                None => {
                    let w = ctx.sample.waits.get(&tid)?;
                    Some(deadlock::thread_evidence(
                        ctx, ebpf, stacks, p, tid, w, None,
                    ))
                }
                Some(age) => Some(json!({
                    "tid": tid,
                    "state": "D",
                    "waiting_s": round1(age),
                    "wchan": std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).ok(),
                })),
            })
            .collect();
        let n = threads.len();
        out.push(Finding {
            kind: Kind::Hang,
            key,
            severity: Severity::Warning,
            names: ctx.proc_names(p),
            summary: format!(
                "{} (pid {}) looks hung: all {} threads have been blocked (futex waits or uninterruptible sleep) for at least {} with no CPU progress.",
                p.comm,
                pid,
                n,
                human_duration(blocked_for),
            ),
            evidence: json!({
                "threads": threads,
                "blocked_s": round1(blocked_for),
                "cpu_s_in_window": cpu as f64 / procfs::clock_ticks_per_s() as f64,
                "cpu_window_s": round1(covered(&pts)),
                "rss_bytes": p.series.last().map_or(0, |l| l.rss),
            }),
        });
    }
    out
}
