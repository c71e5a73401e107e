//! The daemon's memory detector against a process growing into its cgroup's
//! limit: the warning must come before the OOM kill that ends it.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use sentinel_tests::workload::describe_status;
use sentinel_tests::{
    Daemon, Kind, MIB, TestCgroup, Workload, measured, require_root, secs, serial, workload_bin,
};

const LIMIT: u64 = 1536 * MIB;
/// MiB/s and the ceiling the workload would grow to without the limit.
const RATE_MIB_S: u64 = 30;
const MAX_MIB: u64 = 1800;
const OOM_TIMEOUT: Duration = Duration::from_secs(120);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);

/// A process grows 30 MiB/s towards a 1536 MiB cgroup limit (about 50 s
/// from empty to OOM). With the default config, a memory_bloat event for
/// that process must fire before its oom_kill event, bound by the cgroup
/// limit, and resolve once the kill has ended it.
#[test]
fn memory_bloat_fires_before_the_oom_kill() -> Result<()> {
    let _serial = serial();
    require_root!();
    let cg = TestCgroup::with_memory_limit("daemon-memory", LIMIT)?;
    let memory_path = cg.memory_path().expect("cgroup has a memory limit");
    let daemon = Daemon::start("")?;

    let mut w = Workload::spawn(
        workload_bin!(),
        &["grow", &RATE_MIB_S.to_string(), &MAX_MIB.to_string()],
        &cg,
    )?;
    let pid = w.pid();
    w.expect("ready", Duration::from_secs(60))?;
    w.go()?;
    let go = Instant::now();

    let oom = daemon.wait_for(
        &format!(
            "an oom_kill event for pid {pid} (growing {RATE_MIB_S} MiB/s into the {} MiB limit of {memory_path}, so killed about {} s after go)",
            LIMIT / MIB,
            LIMIT / MIB / RATE_MIB_S
        ),
        OOM_TIMEOUT,
        |e| e.kind == Kind::OomKill && e.pid_is(pid),
    )?;
    let status = w.wait_exit(Duration::from_secs(10))?;
    ensure!(
        status.signal() == Some(libc::SIGKILL),
        "test setup: expected the workload to be OOM-killed (SIGKILL), it {}; {:#}",
        describe_status(status),
        w.failure("not OOM-killed")
    );

    let bloats: Vec<_> = daemon
        .events()
        .into_iter()
        .filter(|e| e.is_firing(Kind::MemoryBloat) && e.pid_is(pid))
        .collect();
    let Some(bloat) = bloats.first().cloned() else {
        return Err(daemon.failure(&format!(
            "expected a firing memory_bloat event for pid {pid} before its oom_kill event (which came {} s after go), got none",
            secs(oom.received - go)
        )));
    };
    if bloat.received >= oom.received {
        return Err(daemon.failure(&format!(
            "expected the firing memory_bloat event for pid {pid} strictly before its oom_kill event, it came {} s after it",
            secs(bloat.received - oom.received)
        )));
    }
    ensure!(
        bloat.evidence_str("bound") == Some("cgroup_limit"),
        "expected evidence.bound \"cgroup_limit\" on the memory_bloat event for pid {pid} (its cgroup {memory_path} has a {} MiB limit), got {:?}; event: {}",
        LIMIT / MIB,
        bloat.evidence("bound"),
        serde_json::to_string(&bloat)?
    );
    ensure!(
        oom.evidence_str("oom") == Some("cgroup")
            && oom.evidence_str("limit_cgroup") == Some(memory_path.as_str()),
        "expected the oom_kill event for pid {pid} to say oom \"cgroup\" and limit_cgroup {memory_path:?}, got oom {:?}, limit_cgroup {:?}; event: {}",
        oom.evidence("oom"),
        oom.evidence("limit_cgroup"),
        serde_json::to_string(&oom)?
    );

    let left = (oom.received + RESOLVE_TIMEOUT).saturating_duration_since(Instant::now());
    let resolved = daemon.wait_for(
        &format!(
            "a resolved memory_bloat event for incident {} (pid {pid}, OOM-killed) within {RESOLVE_TIMEOUT:?} of the oom_kill event",
            bloat.incident
        ),
        left,
        |e| e.is_resolved(Kind::MemoryBloat) && e.incident == bloat.incident,
    )?;

    measured(
        "daemon_memory",
        &[
            ("detect_s", &secs(bloat.received - go)),
            ("lead_time_s", &secs(oom.received - bloat.received)),
            ("oom_after_go_s", &secs(oom.received - go)),
            (
                "resolve_after_oom_s",
                &secs(resolved.received - oom.received),
            ),
            ("severity", &bloat.severity),
            (
                "predicted_tte_s",
                &bloat
                    .evidence_f64("time_to_exhaustion_s")
                    .map_or("null".into(), |t| format!("{t:.1}")),
            ),
        ],
    );
    daemon.stop()?;
    Ok(())
}
