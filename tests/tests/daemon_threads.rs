//! The daemon's thread_explosion detector: a process over `max_threads`
//! and one under it.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use sentinel_tests::workload::field;
use sentinel_tests::{
    Daemon, Kind, Severity, TestCgroup, Workload, measured, require_root, secs, serial,
    workload_bin,
};

const CONFIG: &str = "[threads]\nmax_threads = 100\n[daemon]\nresolve_after = \"5s\"\n";
const MANY: u64 = 150;
const FEW: u64 = 50;
const DETECT_WITHIN: Duration = Duration::from_secs(10);
const RESOLVE_WITHIN: Duration = Duration::from_secs(10);
/// How long the process under the threshold stays watched, at least.
const QUIET_FOR: Duration = Duration::from_secs(5);

/// With max_threads = 100: a process with 150 parked threads must get a
/// firing thread_explosion (warning, evidence.threads >= 150) within 10 s
/// of having them, and its incident must resolve within 10 s of the
/// process being killed. A process with 50 threads in another cgroup,
/// alive the whole time, must get no event at all.
#[test]
fn thread_explosion_fires_over_the_threshold_and_resolves_at_exit() -> Result<()> {
    let _serial = serial();
    require_root!();
    let cg_many = TestCgroup::new("daemon-threads-many")?;
    let cg_few = TestCgroup::new("daemon-threads-few")?;
    let (many_path, few_path) = (cg_many.path(), cg_few.path());
    let daemon = Daemon::start(CONFIG)?;

    let mut few = Workload::spawn(workload_bin!(), &["threads", &FEW.to_string()], &cg_few)?;
    let few_pid = few.pid();
    let few_ready = few.expect("ready", Duration::from_secs(60))?;
    few.go()?;
    let mut many = Workload::spawn(workload_bin!(), &["threads", &MANY.to_string()], &cg_many)?;
    let pid = many.pid();
    let ready_line = many.expect("ready", Duration::from_secs(60))?;
    let ready = Instant::now();
    many.go()?;
    let threads = field(&ready_line, "threads")?;
    ensure!(
        threads > MANY as i64 && field(&few_ready, "threads")? > FEW as i64,
        "test setup: the workloads report {ready_line:?} and {few_ready:?}, expected more than {MANY} and {FEW} threads"
    );

    let fired = daemon.wait_for(
        &format!(
            "a firing thread_explosion for pid {pid} ({threads} threads, max_threads 100) within {DETECT_WITHIN:?} of it having them"
        ),
        DETECT_WITHIN,
        |e| e.is_firing(Kind::ThreadExplosion) && e.pid_is(pid),
    )?;
    let json = serde_json::to_string(&fired)?;
    let reported = fired.evidence_f64("threads");
    ensure!(
        reported.is_some_and(|n| n >= MANY as f64),
        "expected evidence.threads >= {MANY} on the thread_explosion event for pid {pid} ({threads} threads), got {:?}; event: {json}",
        fired.evidence("threads")
    );
    ensure!(
        fired.severity == Severity::Warning && fired.about_cgroup(&many_path),
        "expected a warning about cgroup {many_path} for pid {pid}, got severity {} cgroup {:?}; event: {json}",
        fired.severity,
        fired.cgroup
    );

    // The process under the threshold has been watched as long as the
    // other; keep it a little longer before the other goes.
    let quiet_until = ready + QUIET_FOR;
    std::thread::sleep(quiet_until.saturating_duration_since(Instant::now()));
    drop(many);
    let killed = Instant::now();
    let resolved = daemon.wait_for(
        &format!(
            "a resolved thread_explosion for incident {} (pid {pid}, killed) within {RESOLVE_WITHIN:?}",
            fired.incident
        ),
        RESOLVE_WITHIN,
        |e| e.is_resolved(Kind::ThreadExplosion) && e.incident == fired.incident,
    )?;
    ensure!(
        few.exited()?.is_none(),
        "test setup: the {FEW}-thread workload (pid {few_pid}) exited early"
    );
    daemon.ensure_no_event(
        &format!("for pid {few_pid} (cgroup {few_path}, {FEW} threads, under max_threads 100)"),
        |e| e.pid_is(few_pid) || e.about_cgroup(&few_path),
    )?;
    let firings = daemon
        .events()
        .iter()
        .filter(|e| e.incident == fired.incident && e.is_firing(Kind::ThreadExplosion))
        .count();

    measured(
        "daemon_threads",
        &[
            ("detect_s", &secs(fired.received - ready)),
            ("resolve_after_kill_s", &secs(resolved.received - killed)),
            ("reported_threads", &reported.unwrap_or(0.0)),
            ("actual_threads", &threads),
            ("firing_events", &firings),
        ],
    );
    daemon.stop()?;
    Ok(())
}
