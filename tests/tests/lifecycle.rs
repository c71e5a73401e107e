//! Process lifecycle: short-lived processes are folded into their cgroup and
//! do not leak entries in the per-process map.

use std::time::Duration;

use anyhow::{Result, ensure};
use sentinel_tests::workload::field;
use sentinel_tests::{
    ScratchDir, Snapshot, TestCgroup, Workload, brief, require_root, serial, skip,
    skip_unsupported, workload_bin,
};

/// ~3000 fork+_exit children and 300 fork+exec(/bin/true) inside a window:
/// the procs map ends where it started (+64), and the cgroup counts them.
#[test]
fn fork_storm_is_folded_and_does_not_grow_procs_map() -> Result<()> {
    fork_storm(&[])
}

/// The same without `bpf_get_current_task_btf` (Linux 5.10): the exit
/// probe loads without it and still folds every process.
#[test]
fn fork_storm_is_folded_without_task_btf_helper() -> Result<()> {
    fork_storm(&[("SENTINEL_TEST_DISABLE_HELPERS", "get_current_task_btf")])
}

fn fork_storm(env: &[(&str, &str)]) -> Result<()> {
    let _serial = serial();
    require_root!();
    const FORKS: u64 = 3000;
    const EXECS: u64 = 300;
    let cg = TestCgroup::new("forkstorm")?;
    let mut w = Workload::spawn(
        workload_bin!(),
        &["forkstorm", &FORKS.to_string(), &EXECS.to_string()],
        &cg,
    )?;
    w.expect("ready", Duration::from_secs(60))?;
    let mut snap = Snapshot::start_env(&["--cgroup", &cg.path()], Duration::from_secs(12), env)?;
    w.go()?;
    let done = w.expect("done", Duration::from_secs(300))?;
    ensure!(
        field(&done, "failures")? == 0,
        "test setup: some children failed: {done}"
    );
    snap.ensure_observing("the fork storm finished")?;
    let report = snap.finish()?;
    skip_unsupported!(report.probes, "lifecycle");

    let procs = report.map("procs")?;
    ensure!(
        procs.end <= procs.start + 64,
        "expected maps.procs to stay within start + 64 after {} short-lived processes, got start {} end {}; maps: {}; drops: {}",
        FORKS + EXECS,
        procs.start,
        procs.end,
        brief(&report.maps),
        brief(&report.drops)
    );
    let c = report.cgroup(&cg.path())?;
    ensure!(
        c.exited_processes >= FORKS,
        "expected exited_processes >= {FORKS} for cgroup {} ({FORKS} fork+_exit and {EXECS} fork+exec children exited in the window), got {}; cgroup: {}",
        cg.path(),
        c.exited_processes,
        brief(c)
    );
    Ok(())
}

/// Processes that still write while they exit (ext4 flushes an O_TRUNC
/// rewritten file when the exiting process releases it) must not leave
/// entries behind: the map would fill on a long-running host.
#[test]
fn writes_during_exit_do_not_leak_procs_entries() -> Result<()> {
    writes_during_exit(&[])
}

/// The same where `PF_EXITING` cannot be read (Linux 5.10 has no
/// `bpf_get_current_task_btf`): the exit probe remembers the thread.
#[test]
fn writes_during_exit_do_not_leak_procs_entries_without_task_btf_helper() -> Result<()> {
    writes_during_exit(&[("SENTINEL_TEST_DISABLE_HELPERS", "get_current_task_btf")])
}

fn writes_during_exit(env: &[(&str, &str)]) -> Result<()> {
    let _serial = serial();
    require_root!();
    const WRITERS: u64 = 200;
    let Some(dir) = ScratchDir::on_disk("exitwriters")? else {
        skip!("no disk-backed scratch directory: the late flush happens only on a real filesystem");
    };
    let cg = TestCgroup::new("exitwriters")?;
    let mut w = Workload::spawn(
        workload_bin!(),
        &[
            "exit-writers",
            &dir.path().to_string_lossy(),
            &WRITERS.to_string(),
        ],
        &cg,
    )?;
    w.expect("ready", Duration::from_secs(60))?;
    let mut snap = Snapshot::start_env(&["--cgroup", &cg.path()], Duration::from_secs(8), env)?;
    w.go()?;
    let done = w.expect("done", Duration::from_secs(120))?;
    ensure!(
        field(&done, "failures")? == 0,
        "test setup: some writers failed: {done}"
    );
    snap.ensure_observing("the writers exited")?;
    let report = snap.finish()?;
    skip_unsupported!(report.probes, "lifecycle");
    let procs = report.map("procs")?;
    ensure!(
        procs.end < procs.start + WRITERS / 4,
        "expected maps.procs to stay near its start after {WRITERS} processes exited mid-write, got start {} end {}; drops: {}",
        procs.start,
        procs.end,
        brief(&report.drops)
    );
    let c = report.cgroup(&cg.path())?;
    ensure!(
        c.exited_processes >= WRITERS,
        "expected exited_processes >= {WRITERS} for cgroup {}, got {}; cgroup: {}",
        cg.path(),
        c.exited_processes,
        brief(c)
    );
    Ok(())
}
