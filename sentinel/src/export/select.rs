//! Which processes and containers an export holds, and which of them its
//! charts draw. Without `--pid`, the processes an event is about, plus the
//! largest and the fastest-growing ones: after an incident the question is
//! nearly always about one of those. `--pid` and `--container` narrow.
use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;

use super::scan::{ProcKey, Survey};

/// How many processes each ranking adds.
pub const TOP: usize = 8;
/// Lines on a chart: more is a tangle.
pub const CHART_LINES: usize = 8;
const BLOCKED_LINES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Named with --pid.
    Asked,
    /// An event in range is about it.
    Event,
    PeakRss,
    RssGrowth,
    BlockedThreads,
}

#[derive(Debug, Default)]
pub struct Selection {
    /// Chosen processes with why, in (pid, start) order.
    pub procs: BTreeMap<ProcKey, BTreeSet<Reason>>,
    /// Chosen containers by cgroup path.
    pub containers: Vec<String>,
    pub rss_chart: Vec<ProcKey>,
    pub write_chart: Vec<String>,
    pub blocked_chart: Vec<ProcKey>,
    /// --pid and --container values that matched nothing recorded.
    pub not_found: Vec<String>,
}

/// A container is named by its runtime name or its cgroup path (with or
/// without the leading slash).
pub fn names_container(want: &str, name: &str, path: &str) -> bool {
    let norm = |s: &str| s.trim_end_matches('/').trim_start_matches('/').to_string();
    want == name || norm(want) == norm(path)
}

pub fn choose(s: &Survey, pids: &[u32], containers: &[String]) -> Selection {
    let mut sel = Selection::default();
    let in_containers = |container: Option<&str>, cgroup: Option<&str>| {
        containers.is_empty()
            || containers.iter().any(|w| {
                container.is_some_and(|c| w == c)
                    || cgroup.is_some_and(|p| names_container(w, "", p))
            })
    };
    // Containers first: with --container and no --pid they narrow the
    // processes too.
    for (path, c) in &s.containers {
        if containers.is_empty() || containers.iter().any(|w| names_container(w, &c.name, path)) {
            sel.containers.push(path.clone());
        }
    }
    for w in containers {
        if !s
            .containers
            .iter()
            .any(|(path, c)| names_container(w, &c.name, path))
        {
            sel.not_found.push(format!("container {w}"));
        }
    }
    let candidates: Vec<(&ProcKey, &super::scan::ProcStats)> = s
        .procs
        .iter()
        .filter(|(k, p)| {
            if pids.is_empty() {
                in_containers(p.container.as_deref(), p.cgroup.as_deref())
            } else {
                pids.contains(&k.pid)
            }
        })
        .collect();
    if !pids.is_empty() {
        for (k, _) in &candidates {
            sel.procs.entry(**k).or_default().insert(Reason::Asked);
        }
        for pid in pids {
            if !candidates.iter().any(|(k, _)| k.pid == *pid) {
                sel.not_found.push(format!("pid {pid}"));
            }
        }
    } else {
        let subjects: HashSet<u32> = s
            .events
            .iter()
            .filter(|(_, e)| e.subject == "process")
            .filter_map(|(_, e)| e.names.pid)
            .collect();
        for (k, _) in candidates.iter().filter(|(k, _)| subjects.contains(&k.pid)) {
            sel.procs.entry(**k).or_default().insert(Reason::Event);
        }
        let mut rank = |reason: Reason, key: &dyn Fn(&super::scan::ProcStats) -> u64| {
            let mut v: Vec<_> = candidates.iter().filter(|(_, p)| key(p) > 0).collect();
            v.sort_by(|a, b| key(b.1).cmp(&key(a.1)).then(a.0.cmp(b.0)));
            for (k, _) in v.into_iter().take(TOP) {
                sel.procs.entry(**k).or_default().insert(reason);
            }
        };
        rank(Reason::PeakRss, &|p| p.peak_rss);
        rank(Reason::RssGrowth, &|p| p.growth());
        let mut blocked: Vec<_> = candidates
            .iter()
            .filter(|(_, p)| p.peak_blocked > 0)
            .collect();
        blocked.sort_by(|a, b| b.1.peak_blocked.cmp(&a.1.peak_blocked).then(a.0.cmp(b.0)));
        for (k, _) in blocked.into_iter().take(BLOCKED_LINES) {
            sel.procs
                .entry(**k)
                .or_default()
                .insert(Reason::BlockedThreads);
        }
    }

    // The RSS chart: what the events are about first, then the largest.
    let mut rss: Vec<&ProcKey> = sel.procs.keys().collect();
    rss.sort_by(|a, b| {
        let ev = |k: &ProcKey| sel.procs[k].contains(&Reason::Event);
        ev(b)
            .cmp(&ev(a))
            .then(s.procs[b].peak_rss.cmp(&s.procs[a].peak_rss))
            .then(a.cmp(b))
    });
    sel.rss_chart = rss.into_iter().take(CHART_LINES).copied().collect();

    let mut blocked: Vec<&ProcKey> = sel
        .procs
        .keys()
        .filter(|k| s.procs[*k].peak_blocked > 0)
        .collect();
    blocked.sort_by(|a, b| {
        s.procs[b]
            .peak_blocked
            .cmp(&s.procs[a].peak_blocked)
            .then(a.cmp(b))
    });
    sel.blocked_chart = blocked.into_iter().take(BLOCKED_LINES).copied().collect();

    let mut writers: Vec<&String> = sel
        .containers
        .iter()
        .filter(|p| s.containers[*p].peak_write > 0.0)
        .collect();
    writers.sort_by(|a, b| {
        s.containers[*b]
            .peak_write
            .total_cmp(&s.containers[*a].peak_write)
            .then(a.cmp(b))
    });
    sel.write_chart = writers.into_iter().take(CHART_LINES).cloned().collect();
    sel
}
