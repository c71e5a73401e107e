//! Self-tests of the harness (cgroups, workloads); they do not run sentinel.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use anyhow::{Result, ensure};
use sentinel_tests::workload::field;
use sentinel_tests::{
    MIB, MemoryController, ScratchDir, TestCgroup, Workload, require_root, serial, vm_rss_bytes,
    workload_bin,
};

const T: Duration = Duration::from_secs(60);

fn cgroup_lines(pid: i32) -> Result<String> {
    Ok(std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?)
}

#[test]
fn workload_is_born_in_its_cgroup_and_cleaned_up() -> Result<()> {
    let _serial = serial();
    require_root!();
    let cg = TestCgroup::new("harness")?;
    let dir = cg.dir().to_path_buf();
    ensure!(dir.is_dir(), "{} was not created", dir.display());
    let mut w = Workload::spawn(workload_bin!(), &["idle"], &cg)?;
    w.expect("ready", T)?;
    let lines = cgroup_lines(w.pid())?;
    ensure!(
        lines.lines().any(|l| l == format!("0::{}", cg.path())),
        "expected 0::{} in /proc/{}/cgroup, got:\n{lines}",
        cg.path(),
        w.pid()
    );
    ensure!(
        cg.pids()? == vec![w.pid()],
        "cgroup.procs: {:?}",
        cg.pids()?
    );
    w.go()?;
    w.expect("done", T)?;

    // Dropping the cgroup first kills what is left inside and removes it.
    drop(cg);
    ensure!(!dir.exists(), "{} still exists after drop", dir.display());
    let status = w.wait_exit(Duration::from_secs(10))?;
    ensure!(
        status.signal() == Some(libc::SIGKILL),
        "expected the cgroup guard to SIGKILL the workload, got {status}"
    );
    Ok(())
}

#[test]
fn memory_limit_oom_kills_inside_the_cgroup_only() -> Result<()> {
    let _serial = serial();
    require_root!();
    let cg = TestCgroup::with_memory_limit("harness-oom", 64 * MIB)?;
    let mut w = Workload::spawn(workload_bin!(), &["oom", "512"], &cg)?;
    w.expect("ready", T)?;
    if let Some(MemoryController::V1 { .. }) = cg.layout().memory {
        let lines = cgroup_lines(w.pid())?;
        let want = format!("memory:{}", cg.memory_path().unwrap());
        ensure!(
            lines.lines().any(|l| l.ends_with(&want)),
            "expected {want} in /proc/{}/cgroup, got:\n{lines}",
            w.pid()
        );
    }
    w.go()?;
    let status = w.wait_exit(T)?;
    ensure!(
        status.signal() == Some(libc::SIGKILL),
        "{:#}",
        w.failure("expected an OOM kill")
    );
    Ok(())
}

#[test]
fn workload_scenarios_run() -> Result<()> {
    let _serial = serial();
    require_root!();
    let cg = TestCgroup::new("harness-scenarios")?;

    let mut w = Workload::spawn(workload_bin!(), &["rss", "64"], &cg)?;
    w.expect("ready", T)?;
    w.go()?;
    let done = w.expect("done", T)?;
    ensure!(field(&done, "pages")? > 0, "{done}");
    let rss = vm_rss_bytes(w.pid())?;
    ensure!(rss >= 64 * MIB, "VmRSS {rss} after touching 64 MiB");
    drop(w);

    let mut w = Workload::spawn(workload_bin!(), &["deadlock"], &cg)?;
    w.expect("ready", T)?;
    w.go()?;
    let done = w.expect("done", T)?;
    for key in ["tid_a", "tid_b"] {
        let tid = field(&done, key)?;
        let wchan = std::fs::read_to_string(format!("/proc/{}/task/{tid}/wchan", w.pid()))?;
        ensure!(wchan.contains("futex"), "{key} {tid} wchan {wchan:?}");
    }
    drop(w);

    let mut w = Workload::spawn(workload_bin!(), &["forkstorm", "200", "20"], &cg)?;
    w.expect("ready", T)?;
    w.go()?;
    let done = w.expect("done", T)?;
    ensure!(field(&done, "failures")? == 0, "{done}");
    drop(w);

    if let Some(dir) = ScratchDir::on_disk("harness-io")? {
        for mode in ["direct-write", "buffered-write"] {
            let file = dir.path().join(mode);
            let mut w =
                Workload::spawn(workload_bin!(), &[mode, &file.to_string_lossy(), "8"], &cg)?;
            if let Err(reason) = w.ready()? {
                eprintln!("{mode} unsupported: {reason}");
                continue;
            }
            w.go()?;
            let done = w.expect("done", T)?;
            let len = std::fs::metadata(&file)?.len();
            ensure!(
                field(&done, "bytes")? as u64 == 8 * MIB && len == 8 * MIB,
                "{mode}: {done}, file is {len} bytes"
            );
        }
    }
    Ok(())
}
