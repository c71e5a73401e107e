//! oom_kill: every kill, critical, with who died, who triggered it, which
//! limit was hit, and what the victim did over its last minute.
use serde_json::json;

use super::Ctx;
use crate::{
    container,
    event::{Kind, Names, Severity, SubjectKey, human_bytes},
    incident::{Finding, round1},
    profile::{covered, rate, slope},
    report::OomKill,
};

pub fn finding(ctx: &Ctx, k: &OomKill) -> Finding {
    let prof = ctx.profiles.proc_or_exited(k.victim_pid);
    let profile = prof.map(|p| {
        let pts = p.series.window(60.0);
        json!({
            "window_s": round1(covered(&pts)),
            "rss_growth_bytes_per_s": slope(&pts, |q| q.rss as f64).map(f64::round),
            "peak_rss_bytes": pts.iter().map(|q| q.rss).max(),
            "faults_per_s": rate(&pts, |q| q.faults).map(f64::round),
            "major_faults_per_s": rate(&pts, |q| q.majflt).map(f64::round),
            "write_bytes_per_s": rate(&pts, |q| q.write).map(f64::round),
            "threads": pts.last().map(|q| q.threads),
        })
    });
    let container = k
        .victim_cgroup
        .as_deref()
        .and_then(container::identify)
        .map(|c| c.name)
        .or_else(|| k.victim_cgroup.clone().filter(|c| c != "/"));
    let rss = k.anon_rss_bytes + k.file_rss_bytes + k.shmem_rss_bytes;
    let limit = match (&k.limit_cgroup, k.limit_bytes) {
        (Some(cg), Some(b)) => format!("the memory limit of {cg} ({})", human_bytes(b as f64)),
        (Some(cg), None) => format!("the memory limit of {cg}"),
        _ if k.kind == "unknown" => {
            "an OOM kill whose limit is unknown (its memory cgroup was gone before it could be read)"
                .into()
        }
        _ => "the host running out of memory".into(),
    };
    let growth = prof
        .and_then(|p| slope(&p.series.window(60.0), |q| q.rss as f64))
        .filter(|g| *g > 0.0)
        .map(|g| format!("; it grew {}/s over its last minute", human_bytes(g)))
        .unwrap_or_default();
    let start = prof.map_or(0, |p| p.start);
    Finding {
        kind: Kind::OomKill,
        key: SubjectKey::Process {
            pid: k.victim_pid,
            start,
        },
        severity: Severity::Critical,
        names: Names {
            pid: Some(k.victim_pid),
            comm: Some(k.victim_comm.clone()),
            cgroup: k.victim_cgroup.clone(),
            container,
        },
        summary: format!(
            "OOM kill: {} (pid {}) was killed by {} with {} resident (anon {}){growth}.",
            k.victim_comm,
            k.victim_pid,
            limit,
            human_bytes(rss as f64),
            human_bytes(k.anon_rss_bytes as f64),
        ),
        evidence: json!({
            "victim_pid": k.victim_pid,
            "victim_comm": k.victim_comm,
            "victim_cgroup": k.victim_cgroup,
            "trigger_pid": k.trigger_pid,
            "trigger_comm": k.trigger_comm,
            "trigger_cgroup": k.trigger_cgroup,
            "oom": k.kind,
            "limit_cgroup": k.limit_cgroup,
            "limit_bytes": k.limit_bytes,
            "rss": {
                "anon": k.anon_rss_bytes,
                "file": k.file_rss_bytes,
                "shmem": k.shmem_rss_bytes,
            },
            "total_vm_bytes": k.total_vm_bytes,
            "pgtables_bytes": k.pgtables_bytes,
            "oom_score_adj": k.oom_score_adj,
            "uid": k.uid,
            "profile": profile,
        }),
    }
}
