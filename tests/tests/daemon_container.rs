//! The daemon's memory detector against a container whose processes grow
//! together: four workers that each grow too slowly to matter alone, but
//! together exhaust the cgroup's limit. The container must be the subject,
//! and its warning must come before the OOM kill.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use sentinel_tests::{
    Daemon, Event, Kind, MIB, Subject, TestCgroup, Workload, measured, require_root, secs, serial,
    workload_bin,
};

const LIMIT: u64 = 1536 * MIB;
const CHILDREN: u64 = 4;
/// MiB/s each child grows, and the ceiling each would reach without the
/// limit (4 × 600 MiB is well over 1536 MiB; one alone is not).
const RATE_MIB_S: u64 = 8;
const MAX_MIB: u64 = 600;
/// From go: the container's memory_bloat may take this long.
const DETECT_TIMEOUT: Duration = Duration::from_secs(150);
/// From go: how long an OOM kill is waited for once the container fired
/// (the limit is reached about 48 s after go).
const OOM_TIMEOUT: Duration = Duration::from_secs(120);
/// The reported combined growth rate and the time to exhaustion it implies
/// must be within this fraction of the actual ones.
const RATE_TOLERANCE: f64 = 0.25;
/// The first OOM kill must come within this many seconds (or 35%) of the
/// predicted time to exhaustion.
const OOM_TOLERANCE_S: f64 = 10.0;

/// `ready pids=1,2,3` → the pids.
fn ready_pids(line: &str) -> Result<Vec<i32>> {
    let list = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("pids="))
        .with_context(|| format!("no pids= in workload line {line:?}"))?;
    list.split(',')
        .map(|p| {
            p.parse()
                .with_context(|| format!("parsing pids= in workload line {line:?}"))
        })
        .collect()
}

/// The pids of `evidence.top_contributors`.
fn contributor_pids(e: &Event) -> Vec<i64> {
    e.evidence("top_contributors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("pid").and_then(Value::as_i64))
                .collect()
        })
        .unwrap_or_default()
}

/// Four processes of one cgroup, each growing 8 MiB/s towards a 1536 MiB
/// limit they share (32 MiB/s together, about 48 s from empty to OOM). With
/// the default config, a firing memory_bloat whose subject is the container
/// must come before any oom_kill in it, name at least two of the workers
/// among its top contributors, and project exhaustion from the combined
/// rate. No worker may get a memory_bloat of its own before the container's:
/// none of them explains the growth alone.
#[test]
fn container_memory_bloat_fires_when_no_single_process_explains_it() -> Result<()> {
    let _serial = serial();
    require_root!();
    let cg = TestCgroup::with_memory_limit("daemon-container", LIMIT)?;
    let path = cg.path();
    let daemon = Daemon::start("")?;

    let mut w = Workload::spawn(
        workload_bin!(),
        &[
            "grow-forked",
            &CHILDREN.to_string(),
            &RATE_MIB_S.to_string(),
            &MAX_MIB.to_string(),
        ],
        &cg,
    )?;
    let parent = w.pid();
    let ready = w.expect("ready", Duration::from_secs(60))?;
    let children = ready_pids(&ready)?;
    let members = cg.pids()?;
    ensure!(
        children.len() == CHILDREN as usize
            && children
                .iter()
                .chain([&parent])
                .all(|p| members.contains(p)),
        "test setup: expected {CHILDREN} child pids, all in {path} with the parent {parent}; the workload said {ready:?}, the cgroup holds {members:?}"
    );
    w.go()?;
    let go = Instant::now();
    w.expect("released", Duration::from_secs(10))?;
    let rate = (CHILDREN * RATE_MIB_S * MIB) as f64;

    let is_child = |e: &Event| children.iter().any(|&c| e.pid_is(c));
    let is_container_bloat = |e: &Event| {
        e.is_firing(Kind::MemoryBloat) && e.subject == Subject::Container && e.about_cgroup(&path)
    };
    let is_oom = |e: &Event| e.kind == Kind::OomKill && (is_child(e) || e.about_cgroup(&path));
    let is_process_bloat = |e: &Event| {
        e.is_firing(Kind::MemoryBloat)
            && e.subject == Subject::Process
            && (is_child(e) || e.pid_is(parent))
    };

    let bloat = daemon
        .wait_for(
            &format!(
                "a firing memory_bloat with subject container for {path} ({CHILDREN} processes {children:?} growing {RATE_MIB_S} MiB/s each into its {} MiB limit, so exhausted about {} s after go)",
                LIMIT / MIB,
                LIMIT / MIB / (CHILDREN * RATE_MIB_S)
            ),
            DETECT_TIMEOUT.saturating_sub(go.elapsed()),
            is_container_bloat,
        )
        .with_context(|| {
            let own: Vec<String> = daemon
                .events()
                .iter()
                .filter(|e| is_process_bloat(e) || is_oom(e))
                .map(|e| daemon.describe(e))
                .collect();
            format!(
                "memory_bloat (process) and oom_kill events for the workload (parent {parent}, children {children:?}): {}",
                if own.is_empty() {
                    "none".to_string()
                } else {
                    format!("\n{}", own.join("\n"))
                }
            )
        })?;

    // The kill, if it comes, comes about 48 s after go; give it time.
    let oom = daemon
        .wait_for(
            &format!("an oom_kill in {path}"),
            OOM_TIMEOUT.saturating_sub(go.elapsed()),
            is_oom,
        )
        .ok();
    let events = daemon.events();
    let early_process_bloats: Vec<String> = events
        .iter()
        .filter(|e| is_process_bloat(e) && e.received < bloat.received)
        .map(|e| daemon.describe(e))
        .collect();

    let json = serde_json::to_string(&bloat)?;
    eprintln!("EVENT daemon_container {json}");
    let reported_rate = bloat.evidence_f64("growth_bytes_per_s");
    let tte = bloat.evidence_f64("time_to_exhaustion_s");
    let headroom = bloat.evidence_f64("headroom_bytes");
    let contributors = contributor_pids(&bloat);
    let named: Vec<i32> = children
        .iter()
        .copied()
        .filter(|&c| contributors.contains(&i64::from(c)))
        .collect();
    let opt = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v:.1}"));
    measured(
        "daemon_container",
        &[
            ("detect_s", &secs(bloat.received - go)),
            (
                "lead_time_s",
                &oom.as_ref().map_or("none".into(), |o| {
                    if o.received > bloat.received {
                        secs(o.received - bloat.received)
                    } else {
                        format!("-{}", secs(bloat.received - o.received))
                    }
                }),
            ),
            (
                "oom_after_go_s",
                &oom.as_ref()
                    .map_or("none".into(), |o| secs(o.received - go)),
            ),
            ("severity", &bloat.severity),
            (
                "reported_rate_mib_s",
                &opt(reported_rate.map(|r| r / MIB as f64)),
            ),
            ("actual_rate_mib_s", &(rate / MIB as f64)),
            ("predicted_tte_s", &opt(tte)),
            ("tte_at_actual_rate_s", &opt(headroom.map(|h| h / rate))),
            ("children_in_top_contributors", &named.len()),
            ("process_bloats_before", &early_process_bloats.len()),
        ],
    );

    // What the daemon said about the workload, for the record.
    for e in events
        .iter()
        .filter(|e| e.about_cgroup(&path) || is_child(e) || e.pid_is(parent))
    {
        eprintln!("EVENT daemon_container {}", daemon.describe(e));
    }

    // 1. Before any OOM kill in the cgroup.
    if let Some(oom) = &oom
        && oom.received <= bloat.received
    {
        return Err(daemon.failure(&format!(
            "expected the container memory_bloat for {path} strictly before the first oom_kill in it (pid {:?}), it came {} s after it",
            oom.pid,
            secs(bloat.received - oom.received)
        )));
    }

    // 2. Names the workers, projects from their combined rate.
    ensure!(
        named.len() >= 2,
        "expected evidence.top_contributors of the container memory_bloat for {path} to list at least 2 of the children {children:?}, it lists pids {contributors:?}; event: {json}"
    );
    let (Some(reported_rate), Some(tte), Some(headroom)) = (reported_rate, tte, headroom) else {
        return Err(daemon.failure(&format!(
            "expected numeric growth_bytes_per_s, time_to_exhaustion_s and headroom_bytes on the container memory_bloat for {path}; event: {json}"
        )));
    };
    ensure!(
        (reported_rate / rate - 1.0).abs() <= RATE_TOLERANCE,
        "expected evidence.growth_bytes_per_s of the container memory_bloat for {path} within {:.0}% of the combined {} MiB/s ({CHILDREN} × {RATE_MIB_S}), got {:.1} MiB/s; event: {json}",
        RATE_TOLERANCE * 100.0,
        CHILDREN * RATE_MIB_S,
        reported_rate / MIB as f64
    );
    let expected_tte = headroom / rate;
    ensure!(
        (tte / expected_tte - 1.0).abs() <= RATE_TOLERANCE,
        "expected evidence.time_to_exhaustion_s of the container memory_bloat for {path} within {:.0}% of {expected_tte:.1} s (its headroom of {:.0} MiB at the combined {} MiB/s), got {tte:.1} s; event: {json}",
        RATE_TOLERANCE * 100.0,
        headroom / MIB as f64,
        CHILDREN * RATE_MIB_S
    );
    if let Some(oom) = &oom {
        let lead = (oom.received - bloat.received).as_secs_f64();
        ensure!(
            (lead - tte).abs() <= OOM_TOLERANCE_S.max(tte * 0.35),
            "expected the first oom_kill in {path} about evidence.time_to_exhaustion_s ({tte:.1} s) after the container memory_bloat, it came {lead:.1} s after it; event: {json}"
        );
    }

    // 3. No worker spoke for the container first.
    if !early_process_bloats.is_empty() {
        return Err(daemon.failure(&format!(
            "expected no memory_bloat with subject process for the workload (parent {parent}, children {children:?}) before the container's ({}), got {}:\n{}",
            daemon.describe(&bloat),
            early_process_bloats.len(),
            early_process_bloats.join("\n")
        )));
    }

    daemon.stop()?;
    Ok(())
}
