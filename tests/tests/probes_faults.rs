//! Page faults and RSS, measured by the real probes on a real workload.

use std::time::Duration;

use anyhow::{Result, ensure};
use sentinel_tests::report::find_probe;
use sentinel_tests::workload::field;
use sentinel_tests::{
    MIB, Snapshot, TestCgroup, Workload, brief, pct, require_root, serial, skip_unsupported,
    vm_rss_bytes, workload_bin,
};

const WORK_TIMEOUT: Duration = Duration::from_secs(120);

/// Makes sentinel skip BTF tracepoints, so the classic-tracepoint fallbacks
/// that kernels without them use are measured on this one too.
const CLASSIC: &[(&str, &str)] = &[("SENTINEL_TEST_DISABLE_PROGRAM_TYPES", "tp_btf")];

/// Makes sentinel take `bpf_get_current_task_btf` as missing, as on Linux
/// 5.10: the programs must load and count without it.
const NO_TASK_BTF: &[(&str, &str)] = &[("SENTINEL_TEST_DISABLE_HELPERS", "get_current_task_btf")];

/// Touching N fresh anonymous pages once each shows >= 90% of N faults, for
/// the process and for its cgroup.
#[test]
fn anonymous_page_faults_are_counted() -> Result<()> {
    page_faults_are_counted(&[])
}

#[test]
fn anonymous_page_faults_are_counted_by_classic_tracepoints() -> Result<()> {
    page_faults_are_counted(CLASSIC)
}

#[test]
fn anonymous_page_faults_are_counted_without_task_btf_helper() -> Result<()> {
    page_faults_are_counted(NO_TASK_BTF)
}

fn page_faults_are_counted(env: &[(&str, &str)]) -> Result<()> {
    let _serial = serial();
    require_root!();
    let cg = TestCgroup::new("faults")?;
    let mut w = Workload::spawn(workload_bin!(), &["faults", "100"], &cg)?;
    w.expect("ready", WORK_TIMEOUT)?;
    let mut snap = Snapshot::start_env(&["--cgroup", &cg.path()], Duration::from_secs(5), env)?;
    w.go()?;
    let done = w.expect("done", WORK_TIMEOUT)?;
    snap.ensure_observing("the workload touched its pages")?;
    let report = snap.finish()?;
    let ty = (!env.is_empty()).then_some("tracepoint");
    skip_unsupported!(report.probes, "faults", ty);

    let pages = field(&done, "pages")? as u64;
    let want = pages * 9 / 10;
    let p = report.process(w.pid())?;
    ensure!(
        p.page_faults >= want,
        "expected >= {want} page faults for pid {} (touched {pages} fresh pages of 100 MiB), got {} ({} of the pages); process: {}",
        w.pid(),
        p.page_faults,
        pct(p.page_faults, pages),
        brief(p)
    );
    let c = report.cgroup(&cg.path())?;
    ensure!(
        c.page_faults >= want,
        "expected >= {want} page faults for cgroup {} (its only process touched {pages} fresh pages), got {}; cgroup: {}",
        cg.path(),
        c.page_faults,
        brief(c)
    );
    // The --cgroup filter: nothing from outside the test's cgroup.
    for other in &report.processes {
        ensure!(
            other.cgroup == cg.path(),
            "expected only processes of cgroup {} with --cgroup {}, got pid {} ({}) in {}",
            cg.path(),
            cg.path(),
            other.pid,
            other.comm,
            other.cgroup
        );
    }
    Ok(())
}

/// rss_bytes agrees with the process's own VmRSS within 10%.
#[test]
fn rss_matches_proc_status() -> Result<()> {
    rss_matches(&[])
}

#[test]
fn rss_from_classic_tracepoint_matches_proc_status() -> Result<()> {
    rss_matches(CLASSIC)
}

#[test]
fn rss_without_task_btf_helper_matches_proc_status() -> Result<()> {
    rss_matches(NO_TASK_BTF)
}

fn rss_matches(env: &[(&str, &str)]) -> Result<()> {
    let _serial = serial();
    require_root!();
    const HELD_MIB: u64 = 200;
    let cg = TestCgroup::new("rss")?;
    let mut w = Workload::spawn(workload_bin!(), &["rss", &HELD_MIB.to_string()], &cg)?;
    w.expect("ready", WORK_TIMEOUT)?;
    let mut snap = Snapshot::start_env(&["--cgroup", &cg.path()], Duration::from_secs(5), env)?;
    w.go()?;
    w.expect("done", WORK_TIMEOUT)?;
    snap.ensure_observing("the workload touched its memory")?;
    let report = snap.finish()?;
    // Both switches leave only the classic tracepoint.
    let want_type = if env.is_empty() {
        "tp_btf"
    } else {
        "tracepoint"
    };
    skip_unsupported!(report.probes, "rss", Some(want_type));
    // The workload is idle now (blocked reading stdin): its RSS is what it
    // was at the end of the window.
    let vm_rss = vm_rss_bytes(w.pid())?;
    ensure!(
        vm_rss >= HELD_MIB * MIB,
        "test setup: expected the workload to hold >= {HELD_MIB} MiB, /proc/{}/status says VmRSS {vm_rss} bytes",
        w.pid()
    );

    let p = report.process(w.pid())?;
    // The RSS must come from the kernel probe under test, not from the
    // /proc fallback (which would pass this comparison trivially).
    let rss = find_probe(&report.probes, "rss")?;
    ensure!(
        rss.status == "attached" && rss.program_type.as_deref() == Some(want_type),
        "expected the rss probe attached as {want_type}, got {} ({:?}): {}",
        rss.status,
        rss.program_type,
        rss.detail
    );
    let diff = p.rss_bytes.abs_diff(vm_rss);
    ensure!(
        diff * 10 <= vm_rss,
        "expected rss_bytes within 10% of /proc/{}/status VmRSS = {vm_rss} bytes, got {} ({} of VmRSS); process: {}",
        w.pid(),
        p.rss_bytes,
        pct(p.rss_bytes, vm_rss),
        brief(p)
    );
    Ok(())
}
