//! OOM kills, only ever inside a memory cgroup with a small limit.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use sentinel_tests::workload::describe_status;
use sentinel_tests::{
    MIB, Snapshot, TestCgroup, Workload, brief, require_root, serial, skip_unsupported,
    workload_bin,
};

/// A process that outgrows its cgroup's 64 MiB limit is OOM-killed inside
/// the window and sentinel records it: victim pid, kind "cgroup", and the
/// memory cgroup whose limit was hit.
#[test]
fn cgroup_oom_kill_is_reported() -> Result<()> {
    let _serial = serial();
    require_root!();
    const LIMIT: u64 = 64 * MIB;
    let cg = TestCgroup::with_memory_limit("oom", LIMIT)?;
    let memory_path = cg.memory_path().expect("cgroup has a memory limit");

    // Sentinel first: the workload is born and dies inside the window.
    let mut snap = Snapshot::for_cgroup(&cg, Duration::from_secs(8))?;
    let mut w = Workload::spawn(workload_bin!(), &["oom", "512"], &cg)?;
    let pid = w.pid();
    w.expect("ready", Duration::from_secs(60))?;
    w.go()?;
    let status = w.wait_exit(Duration::from_secs(60))?;
    ensure!(
        status.signal() == Some(libc::SIGKILL),
        "test setup: expected the workload to be OOM-killed (SIGKILL) by the {LIMIT}-byte limit of memory cgroup {memory_path}, it {}; {:#}",
        describe_status(status),
        w.failure("not OOM-killed")
    );
    snap.ensure_observing("the workload was OOM-killed")?;
    let report = snap.finish()?;
    skip_unsupported!(report.probes, "oom");

    let kill = report
        .oom_kills
        .iter()
        .find(|k| k.victim_pid == pid)
        .ok_or_else(|| {
            anyhow!(
                "expected an oom_kills[] record with victim_pid {pid} (killed by the {LIMIT}-byte limit of {memory_path}), got {}",
                brief(&report.oom_kills)
            )
        })?;
    ensure!(
        kill.kind == "cgroup",
        "expected kind \"cgroup\" for the OOM kill of pid {pid} (memory cgroup limit hit), got {:?}; record: {}",
        kill.kind,
        brief(kill)
    );
    ensure!(
        kill.limit_cgroup.as_deref() == Some(memory_path.as_str()),
        "expected limit_cgroup {memory_path:?} for the OOM kill of pid {pid}, got {:?}; record: {}",
        kill.limit_cgroup,
        brief(kill)
    );
    ensure!(
        kill.victim_cgroup.as_deref() == Some(cg.path().as_str()),
        "expected victim_cgroup {:?} (the victim's v2 cgroup) for the OOM kill of pid {pid}, got {:?}; record: {}",
        cg.path(),
        kill.victim_cgroup,
        brief(kill)
    );
    Ok(())
}
