//! OOM kills: events from the kernel's ring buffer, turned into kills with
//! the cgroup (or global) limit that caused them.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::maps::{MapData, RingBuf};
use sentinel_common::OomEvent;

use crate::{
    cgroup::{self, MemCounters, Resolver},
    collect, procfs,
    report::OomKill,
};

/// Turns OOM events into kills as they arrive. Which limit a kill hit is
/// read from the memory cgroups' counters, so they are read when events
/// are drained: each kill is judged on what moved since the previous
/// reading, not on everything that moved in the window.
pub struct OomWatch {
    pub ring: Option<RingBuf<MapData>>,
    mem_root: Option<(PathBuf, bool)>,
    /// The latest reading: the start of the window, or the last drain.
    last: HashMap<String, MemCounters>,
    pub kills: Vec<OomKill>,
}

impl OomWatch {
    pub fn new(mem_root: Option<(PathBuf, bool)>) -> OomWatch {
        let mut w = OomWatch {
            ring: None,
            mem_root,
            last: HashMap::new(),
            kills: Vec::new(),
        };
        w.last = w.read_counters();
        w
    }

    fn read_counters(&self) -> HashMap<String, MemCounters> {
        self.mem_root
            .as_ref()
            .map(|(r, v1)| cgroup::memory_counters(r, *v1))
            .unwrap_or_default()
    }

    pub fn poll(&mut self, resolver: &mut Resolver) {
        let events = self.drain();
        if events.is_empty() {
            // Walking every memory cgroup costs; only a kill needs it.
            return;
        }
        let now = self.read_counters();
        let now_mono = collect::monotonic_ns();
        for e in &events {
            let kill = oom_kill(e, resolver, &self.last, &now, now_mono);
            self.kills.push(kill);
        }
        self.last = now;
    }

    fn drain(&mut self) -> Vec<OomEvent> {
        let mut out = Vec::new();
        let Some(ring) = self.ring.as_mut() else {
            return out;
        };
        while let Some(item) = ring.next() {
            if item.len() >= std::mem::size_of::<OomEvent>() {
                // SAFETY: the kernel wrote an OomEvent; the length is checked.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<OomEvent>()) });
            }
        }
        out
    }
}

pub fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn unix_ms_of(mono_ns: u64, now_mono: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now.as_nanos() as u64).saturating_sub(now_mono.saturating_sub(mono_ns)) / 1_000_000
}

fn oom_kill(
    e: &OomEvent,
    resolver: &mut Resolver,
    before: &HashMap<String, MemCounters>,
    after: &HashMap<String, MemCounters>,
    now_mono: u64,
) -> OomKill {
    let proc = Path::new("/proc");
    let victim_cgroup = resolver
        .path(e.victim_cgroup_id)
        .or_else(|| procfs::cgroup_v2_path(proc, e.victim_pid));
    let victim_comm = match cstr(&e.victim_comm) {
        c if c.is_empty() => procfs::comm(proc, e.victim_pid).unwrap_or_default(),
        c => c,
    };
    let limit = cgroup::oom_limit_cgroup(before, after, victim_cgroup.as_deref());
    let limit_cgroup = limit.clone().and_then(|(_, l)| l);
    OomKill {
        ts_unix_ms: unix_ms_of(e.ts_ns, now_mono),
        victim_pid: e.victim_pid,
        victim_comm,
        victim_cgroup,
        victim_cgroup_id: e.victim_cgroup_id,
        trigger_pid: e.trigger_tgid,
        trigger_comm: cstr(&e.trigger_comm),
        trigger_cgroup: resolver.path(e.trigger_cgroup_id),
        // No memory cgroup's kill counter moved: the victim's cgroup was
        // removed before it could be read (a container torn down at once),
        // so which limit it hit cannot be told.
        kind: match &limit {
            Some((_, Some(_))) => "cgroup",
            Some((_, None)) => "global",
            None => "unknown",
        }
        .into(),
        limit_bytes: limit_cgroup
            .as_ref()
            .and_then(|l| after.get(l))
            .and_then(|c| c.limit),
        limit_cgroup,
        anon_rss_bytes: e.anon_rss_kb * 1024,
        file_rss_bytes: e.file_rss_kb * 1024,
        shmem_rss_bytes: e.shmem_rss_kb * 1024,
        total_vm_bytes: e.total_vm_kb * 1024,
        pgtables_bytes: e.pgtables_kb * 1024,
        oom_score_adj: e.oom_score_adj,
        uid: e.victim_uid,
    }
}
