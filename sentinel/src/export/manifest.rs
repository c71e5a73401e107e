//! `manifest.json` (what the archive is: who wrote it from what, which
//! range and selection, what the store was like) and `host.json` (the host
//! as recorded, and the machine that exported it).
use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Anchor, scan::Survey, select::Selection};
use crate::{
    event::rfc3339,
    record::{Start, Stats},
};

/// Bumped when a field of the manifest changes meaning or goes away.
pub const SCHEMA: u32 = 1;

pub struct Facts<'a> {
    pub generated_ms: u64,
    pub store_dir: &'a std::path::Path,
    pub asked: (u64, u64),
    pub covered: Option<(u64, u64)>,
    pub anchor: Option<&'a Anchor>,
    pub pids: &'a [u32],
    pub containers: &'a [String],
    pub survey: &'a Survey,
    pub selection: &'a Selection,
    /// Every Start record of the segments the range spans.
    pub starts: &'a [(u64, Start)],
    pub stats: &'a Stats,
    pub config: &'a Value,
    pub config_source: &'a str,
    /// (path in the archive, bytes), the manifest itself left out.
    pub files: &'a [(String, u64)],
    /// Process key → its timeline's path in the archive.
    pub proc_files: &'a BTreeMap<super::scan::ProcKey, String>,
    pub container_files: &'a BTreeMap<String, String>,
}

fn time(ms: u64) -> Value {
    json!({ "time": rfc3339(ms), "unix_ms": ms })
}

/// A recorder's start record without its configuration (the manifest
/// carries that once, on its own).
fn recorder(st: &crate::record::Start) -> Value {
    json!({
        "version": st.version,
        "host": st.host,
        "kernel": st.kernel,
        "boot_id": st.boot_id,
        "pid": st.pid,
        "interval_s": st.interval_s,
    })
}

pub fn manifest(f: &Facts) -> Value {
    let s = f.survey;
    let last = f.starts.last().map(|(_, st)| st);
    let recorders: Vec<Value> = f
        .starts
        .iter()
        .map(|(t, st)| {
            let mut v = recorder(st);
            v["started"] = json!(rfc3339(*t));
            v
        })
        .collect();
    let processes: Vec<Value> = f
        .selection
        .procs
        .iter()
        .map(|(k, why)| {
            let p = &s.procs[k];
            json!({
                "pid": k.pid,
                "start_ticks": k.start,
                "comm": p.comm,
                "container": p.container,
                "cgroup": p.cgroup,
                "why": why,
                "first_seen": rfc3339(p.first_ms),
                "last_seen": rfc3339(p.last_ms),
                "peak_rss_bytes": p.peak_rss,
                "rss_growth_bytes": p.growth(),
                "timeline": f.proc_files.get(k),
            })
        })
        .collect();
    let containers: Vec<Value> = f
        .selection
        .containers
        .iter()
        .map(|path| {
            let c = &s.containers[path];
            json!({
                "name": c.name,
                "path": path,
                "runtime": c.runtime,
                "first_seen": rfc3339(c.first_ms),
                "last_seen": rfc3339(c.last_ms),
                "peak_rss_bytes": c.peak_rss,
                "peak_write_bytes_per_s": c.peak_write.round(),
                "timeline": f.container_files.get(path),
            })
        })
        .collect();
    // Both configs come with secrets already shown as "<secret>" (the
    // config's Secret type serializes so).
    let recorded_config = last.map(|st| &st.config);
    json!({
        "schema": SCHEMA,
        "generator": {
            "name": "sentinel export",
            "version": env!("CARGO_PKG_VERSION"),
            "time": rfc3339(f.generated_ms),
        },
        "host": last.map(|st| st.host.clone()).or_else(|| s.last_header.as_ref().map(|h| h.1.clone())),
        "kernel": last.map(|st| st.kernel.clone()),
        "boot_id": last.map(|st| st.boot_id.clone()),
        "recorders": recorders,
        "range": {
            "asked": { "since": time(f.asked.0), "until": time(f.asked.1) },
            "covered": f.covered.map(|(a, b)| json!({ "since": time(a), "until": time(b) })),
            "around": f.anchor.map(|a| json!({
                "id": a.id,
                "kind": a.kind,
                "time": rfc3339(a.first_ms),
                "matched": a.matched,
            })),
        },
        "selection": {
            "asked": { "pids": f.pids, "containers": f.containers },
            "not_found": f.selection.not_found,
            "processes": processes,
            "containers": containers,
        },
        "store": {
            "dir": f.store_dir,
            "segments": f.stats.segments,
            "bytes": f.stats.bytes,
            "records": f.stats.records,
            "frames": s.frames,
            "events": s.events.len(),
            // Damaged stretches the walk skipped, and records whose header
            // was good but payload was not: both skipped, never fatal.
            "corrupt": f.stats.corrupt + s.unreadable,
            "corrupt_bytes": f.stats.corrupt_bytes,
            "unreadable_records": s.unreadable,
            "unknown_records": f.stats.unknown,
        },
        "config": {
            "exporter": { "source": f.config_source, "config": f.config },
            "recorder": recorded_config,
        },
        "files": f.files.iter().map(|(p, n)| json!({ "path": p, "bytes": n })).collect::<Vec<_>>(),
    })
}

/// The host as the last frame and the latest start record saw it, and the
/// machine running the export now (often the same; after a reboot, or on
/// a copied store, not).
pub fn host(s: &Survey, start: Option<&Start>, generated_ms: u64) -> Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .ok()
    };
    let meminfo: BTreeMap<String, u64> = read("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let mut w = v.split_whitespace();
            let n: u64 = w.next()?.parse().ok()?;
            let n = if w.next() == Some("kB") { n * 1024 } else { n };
            Some((k.trim().to_string(), n))
        })
        .collect();
    let boot_id = read("/proc/sys/kernel/random/boot_id");
    let start = start.map(recorder);
    json!({
        "recorded": {
            "time": s.last_header.as_ref().map(|h| rfc3339(h.0)),
            "host": s.last_header.as_ref().map(|h| h.1.clone()),
            "header": s.last_header.as_ref().map(|h| &h.2),
            "recorder": start,
        },
        "exporter": {
            "time": rfc3339(generated_ms),
            "hostname": crate::host::hostname(),
            "uname": {
                "sysname": read("/proc/sys/kernel/ostype"),
                "release": read("/proc/sys/kernel/osrelease"),
                "version": read("/proc/sys/kernel/version"),
                "machine": std::env::consts::ARCH,
            },
            "boot_id": boot_id,
            "meminfo_bytes": meminfo,
        },
    })
}
