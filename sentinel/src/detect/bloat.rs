//! memory_bloat: RSS growing steadily enough to exhaust what bounds it
//! (the tightest cgroup memory limit on its path, else the host's available
//! memory plus free swap) within `memory.warn_horizon`.
//!
//! A process is judged first; its container only when no member process
//! explains the growth on its own (many workers each growing a little), so
//! one runaway process raises one event, not two.
use std::{collections::HashMap, path::Path};

use serde_json::{Value, json};

use super::{Ctx, Growth, explained_by_member, proc_key, sustained_growth};
use crate::{
    cgroup::{self, MemBound},
    event::{Kind, Severity, SubjectKey, human_bytes, human_duration},
    incident::{Finding, round1},
    procfs,
    profile::{Point, ProcProfile, slope},
};

/// The memory a subject can still take before something kills it.
struct Bound {
    headroom: u64,
    limit: Option<MemBound>,
    host_available: u64,
}

fn host_available(ctx: &Ctx) -> u64 {
    ctx.profiles
        .host
        .last()
        .map_or(0, |h| h.mem_available + h.swap_free)
}

fn bound_of(ctx: &Ctx, memory_cgroup: Option<String>) -> Bound {
    let host = host_available(ctx);
    let swap_free = ctx.profiles.host.last().map_or(0, |h| h.swap_free);
    let limit = match (ctx.mem_root, memory_cgroup) {
        (Some((root, v1)), Some(path)) => cgroup::memory_bound(root, *v1, &path, swap_free),
        _ => None,
    };
    Bound {
        headroom: limit
            .as_ref()
            .map_or(host, |l| l.headroom(swap_free).min(host)),
        limit,
        host_available: host,
    }
}

fn memory_cgroup_of(ctx: &Ctx, pid: u32) -> Option<String> {
    let v1 = ctx.mem_root.is_some_and(|(_, v1)| *v1);
    procfs::memory_cgroup_path(Path::new("/proc"), pid, v1)
}

fn windows(ctx: &Ctx) -> [f64; 3] {
    [ctx.cfg.memory.min_duration.as_secs_f64(), 60.0, 600.0]
}

fn growth(ctx: &Ctx, s: &crate::profile::Series<Point>) -> Option<Growth> {
    sustained_growth(
        s,
        &windows(ctx),
        ctx.cfg.memory.min_growth as f64,
        |p: &Point| p.anon as f64,
    )
}

fn severity(ctx: &Ctx, secs: f64) -> Option<Severity> {
    if secs < ctx.cfg.memory.crit_horizon.as_secs_f64() {
        Some(Severity::Critical)
    } else if secs < ctx.cfg.memory.warn_horizon.as_secs_f64() {
        Some(Severity::Warning)
    } else {
        None
    }
}

/// Growth over the last minute of the processes that compete for the same
/// memory: those under the same limit (`within`, a path in the memory
/// hierarchy, which on hybrid hosts is not the v2 path), or every process
/// for the host.
fn contributors(
    ctx: &Ctx,
    within: Option<&str>,
    me: Option<u32>,
    members: Option<&[u32]>,
) -> Value {
    // Growth first, from memory: only the growing few have their memory
    // cgroup read.
    let mut v: Vec<(&ProcProfile, f64)> = ctx
        .profiles
        .procs
        .values()
        .filter(|p| members.is_none_or(|m| m.contains(&p.pid)))
        .filter_map(|p| {
            let g = slope(&p.series.window(60.0), |q| q.anon as f64)?;
            (g > 0.0 || Some(p.pid) == me).then_some((p, g))
        })
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    let v = v.into_iter().filter(|(p, _)| match within {
        Some(cg) => {
            Some(p.pid) == me
                || memory_cgroup_of(ctx, p.pid).is_some_and(|m| cgroup::within(&m, cg))
        }
        None => true,
    });
    Value::Array(
        v.take(5)
            .map(|(p, g)| {
                json!({
                    "pid": p.pid,
                    "comm": p.comm,
                    "rss_bytes": p.series.last().map_or(0, |l| l.rss),
                    "anon_swap_bytes": p.series.last().map_or(0, |l| l.anon),
                    "growth_bytes_per_s": g.round(),
                })
            })
            .collect(),
    )
}

fn evidence(ctx: &Ctx, last: Option<&Point>, g: &Growth, b: &Bound, secs: f64) -> Value {
    json!({
        "rss_bytes": last.map_or(0, |l| l.rss),
        // What grew: anonymous memory plus swap, not page cache.
        "anon_swap_bytes": last.map_or(0, |l| l.anon),
        "growth_bytes_per_s": g.rate.round(),
        "window_s": round1(g.window_s),
        "grown_bytes": g.rise.round(),
        "bound": if b.limit.is_some() { "cgroup_limit" } else { "host" },
        "limit_cgroup": b.limit.as_ref().map(|l| l.cgroup.clone()),
        "limit_bytes": b.limit.as_ref().map(|l| l.limit),
        "limit_used_bytes": b.limit.as_ref().map(|l| l.used),
        "limit_swap_room_bytes": b.limit.as_ref().and_then(|l| l.swap_room),
        "host_available_bytes": b.host_available,
        "headroom_bytes": b.headroom,
        "time_to_exhaustion_s": round1(secs),
        "warn_horizon_s": ctx.cfg.memory.warn_horizon.as_secs_f64(),
        "crit_horizon_s": ctx.cfg.memory.crit_horizon.as_secs_f64(),
    })
}

fn what_runs_out(b: &Bound) -> String {
    match &b.limit {
        Some(l) => format!(
            "the memory limit of {} ({})",
            l.cgroup,
            human_bytes(l.limit as f64)
        ),
        None => "the host's available memory and swap".into(),
    }
}

/// Processes whose growth is sustained, with it: computed once a tick, since
/// each process is judged alongside those it shares memory with.
fn growing(ctx: &Ctx) -> HashMap<u32, Growth> {
    ctx.profiles
        .procs
        .values()
        .filter_map(|p| Some((p.pid, growth(ctx, &p.series)?)))
        .collect()
}

/// The combined growth of everything under the same bound: a process is
/// not the only one eating a shared limit. Under a cgroup limit, the
/// growing processes within it; for the host, every growing process.
fn combined_rate(ctx: &Ctx, growing: &HashMap<u32, Growth>, limit: Option<&str>) -> f64 {
    growing
        .iter()
        .filter(|&(&pid, _)| match limit {
            Some(cg) => memory_cgroup_of(ctx, pid).is_some_and(|m| cgroup::within(&m, cg)),
            None => true,
        })
        .map(|(_, g)| g.rate)
        .sum()
}

/// Several members growing, none with at least half the container's
/// growth: the container is the subject (forked workers each growing a
/// little), not each of them.
fn container_speaks(ctx: &Ctx, growing: &HashMap<u32, Growth>, p: &ProcProfile) -> bool {
    let Some(c) = ctx.profiles.containers.get(&p.cgroup_id) else {
        return false;
    };
    let rates: Vec<f64> = c
        .members
        .iter()
        .filter_map(|pid| growing.get(pid))
        .map(|g| g.rate)
        .collect();
    let total: f64 = rates.iter().sum();
    let own = growing.get(&p.pid).map_or(0.0, |g| g.rate);
    rates.len() >= 2 && own < 0.5 * total
}

pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    let growing = growing(ctx);
    for p in ctx.profiles.procs.values() {
        let Some(&g) = growing.get(&p.pid) else {
            continue;
        };
        if container_speaks(ctx, &growing, p) {
            continue;
        }
        let b = bound_of(ctx, memory_cgroup_of(ctx, p.pid));
        let combined =
            combined_rate(ctx, &growing, b.limit.as_ref().map(|l| l.cgroup.as_str())).max(g.rate);
        let secs = b.headroom as f64 / combined;
        let Some(sev) = severity(ctx, secs) else {
            continue;
        };
        let rss = p.series.last().map_or(0, |l| l.rss);
        let mut ev = evidence(ctx, p.series.last(), &g, &b, secs);
        ev["combined_growth_bytes_per_s"] = json!(combined.round());
        if let Some(m) = procfs::mem_status(Path::new("/proc"), p.pid) {
            ev["rss"] = json!({
                "anon": m.rss_anon, "file": m.rss_file, "shmem": m.rss_shmem, "swap": m.vm_swap,
            });
        }
        ev["top_contributors"] = contributors(
            ctx,
            b.limit.as_ref().map(|l| l.cgroup.as_str()),
            Some(p.pid),
            None,
        );
        out.push(Finding {
            kind: Kind::MemoryBloat,
            key: proc_key(p),
            severity: sev,
            names: ctx.proc_names(p),
            summary: format!(
                "{} (pid {}) has grown {}/s (anonymous memory) for {} and will exhaust {} in about {}{}; RSS is {}.",
                p.comm,
                p.pid,
                human_bytes(g.rate),
                human_duration(g.window_s),
                what_runs_out(&b),
                human_duration(secs),
                if combined > g.rate * 1.05 {
                    format!(" (with others growing beside it, {}/s in all)", human_bytes(combined))
                } else {
                    String::new()
                },
                human_bytes(rss as f64),
            ),
            evidence: ev,
        });
    }

    for c in ctx.profiles.containers.values() {
        if explained_by_member(ctx, &out, c, Kind::MemoryBloat) {
            continue;
        }
        let Some(g) = growth(ctx, &c.series) else {
            continue;
        };
        let memcg = c
            .members
            .first()
            .and_then(|&pid| memory_cgroup_of(ctx, pid));
        let b = bound_of(ctx, memcg);
        let secs = b.headroom as f64 / g.rate;
        let Some(sev) = severity(ctx, secs) else {
            continue;
        };
        let rss = c.series.last().map_or(0, |l| l.rss);
        let mut ev = evidence(ctx, c.series.last(), &g, &b, secs);
        ev["processes"] = json!(c.members.len());
        ev["anon_from"] = json!(if c.anon_from_cgroup() {
            "cgroup"
        } else {
            "processes"
        });
        ev["top_contributors"] = contributors(ctx, None, None, Some(&c.members));
        out.push(Finding {
            kind: Kind::MemoryBloat,
            key: SubjectKey::Container {
                cgroup_id: c.cgroup_id,
            },
            severity: sev,
            names: ctx.container_names(c),
            summary: format!(
                "Container {} ({} processes) has grown {}/s (anonymous memory) for {} and will exhaust {} in about {}; RSS is {}.",
                c.name(),
                c.members.len(),
                human_bytes(g.rate),
                human_duration(g.window_s),
                what_runs_out(&b),
                human_duration(secs),
                human_bytes(rss as f64),
            ),
            evidence: ev,
        });
    }
    out
}
