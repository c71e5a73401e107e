//! The daemon's deadlock and hang detectors against real deadlocks: a C
//! program on pthread mutexes (owners known, so a wait-for cycle) and a
//! Python program on threading.Lock (no owner in memory: a hang at least).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use sentinel_tests::programs::{c_program, py_script, python3};
use sentinel_tests::workload::field;
use sentinel_tests::{
    Daemon, Event, Kind, Severity, TestCgroup, Workload, measured, require_root, secs, serial,
};

const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);

/// A deadlocked workload, started in `cg` once the daemon is watching.
struct Deadlocked {
    w: Workload,
    pid: i32,
    tid_a: i64,
    tid_b: i64,
    /// When the `tids` line arrived: both threads hold their first lock
    /// and are about to block on the second.
    formed: Instant,
}

fn start_deadlock(bin: &str, args: &[&str], cg: &TestCgroup) -> Result<Deadlocked> {
    let mut w = Workload::spawn(bin, args, cg)?;
    let pid = w.pid();
    w.expect("ready", SETUP_TIMEOUT)?;
    w.go()?;
    let line = w.expect("tids", SETUP_TIMEOUT)?;
    let formed = Instant::now();
    Ok(Deadlocked {
        pid,
        tid_a: field(&line, "a")?,
        tid_b: field(&line, "b")?,
        formed,
        w,
    })
}

/// Kills the workload and waits for the incident of `fired` to resolve.
fn kill_and_expect_resolved(daemon: &Daemon, d: Deadlocked, fired: &Event) -> Result<Duration> {
    let pid = d.pid;
    drop(d.w);
    let killed = Instant::now();
    let resolved = daemon.wait_for(
        &format!(
            "a resolved {} event for incident {} within {RESOLVE_TIMEOUT:?} of killing pid {pid}",
            fired.kind, fired.incident
        ),
        RESOLVE_TIMEOUT,
        |e| e.is_resolved(fired.kind) && e.incident == fired.incident,
    )?;
    Ok(resolved.received.saturating_duration_since(killed))
}

/// Two pthreads take two mutexes in opposite orders. With min_wait 5 s the
/// daemon must report a critical deadlock for the process within 10 s of
/// it forming, whose cycle names both threads, and resolve it once the
/// process is killed.
#[test]
fn c_pthread_deadlock_is_reported() -> Result<()> {
    let _serial = serial();
    require_root!();
    const MIN_WAIT: Duration = Duration::from_secs(5);
    let prog = c_program("deadlock")?;
    let prog = prog.to_str().context("C workload path is not UTF-8")?;
    let cg = TestCgroup::new("daemon-deadlock-c")?;
    let daemon = Daemon::start("[deadlock]\nmin_wait = \"5s\"\nhang_after = \"60s\"\n")?;
    let d = start_deadlock(prog, &[], &cg)?;
    let (pid, a, b) = (d.pid, d.tid_a, d.tid_b);

    let deadline = d.formed + MIN_WAIT + Duration::from_secs(5);
    let fired = daemon.wait_for(
        &format!(
            "a firing deadlock event for pid {pid} (threads {a} and {b} deadlocked on two pthread mutexes; min_wait 5 s) within 10 s of it forming"
        ),
        deadline.saturating_duration_since(Instant::now()),
        |e| e.is_firing(Kind::Deadlock) && e.pid_is(pid),
    )?;
    ensure!(
        fired.severity == Severity::Critical,
        "expected severity critical for the deadlock of pid {pid}, got {}; event: {}",
        fired.severity,
        serde_json::to_string(&fired)?
    );
    let cycle = fired.cycle_tids();
    ensure!(
        cycle.contains(&a) && cycle.contains(&b),
        "expected evidence.cycle of pid {pid}'s deadlock to contain tids {a} and {b}, got {cycle:?}; event: {}",
        serde_json::to_string(&fired)?
    );
    let detect = fired.received.saturating_duration_since(d.formed);

    let resolve = kill_and_expect_resolved(&daemon, d, &fired)?;
    measured(
        "daemon_deadlock_c",
        &[
            ("detect_s", &secs(detect)),
            ("resolve_after_kill_s", &secs(resolve)),
        ],
    );
    daemon.stop()?;
    Ok(())
}

/// Two Python threads take two threading.Locks in opposite orders. CPython
/// records no owner for such a lock, so the daemon may not see the cycle;
/// with hang_after 10 s it must report a deadlock or a hang for the process
/// within 20 s, naming both threads, and resolve it once the process is
/// killed.
#[test]
fn python_lock_deadlock_is_reported() -> Result<()> {
    let _serial = serial();
    require_root!();
    const HANG_AFTER: Duration = Duration::from_secs(10);
    let python = python3()?;
    let python = python.to_str().context("python3 path is not UTF-8")?;
    let script = py_script("deadlock.py")?;
    let script = script.to_str().context("script path is not UTF-8")?;
    let cg = TestCgroup::new("daemon-deadlock-py")?;
    let daemon = Daemon::start("[deadlock]\nmin_wait = \"5s\"\nhang_after = \"10s\"\n")?;
    let d = start_deadlock(python, &[script], &cg)?;
    let (pid, a, b) = (d.pid, d.tid_a, d.tid_b);

    let deadline = d.formed + HANG_AFTER + Duration::from_secs(10);
    let fired = daemon.wait_for(
        &format!(
            "a firing deadlock or hang event for pid {pid} (python3; threads {a} and {b} deadlocked on two threading.Locks; hang_after 10 s) within 20 s of it forming"
        ),
        deadline.saturating_duration_since(Instant::now()),
        |e| (e.is_firing(Kind::Deadlock) || e.is_firing(Kind::Hang)) && e.pid_is(pid),
    )?;
    let named = match fired.kind {
        Kind::Deadlock => fired.cycle_tids(),
        _ => fired.thread_tids(),
    };
    let key = if fired.kind == Kind::Deadlock {
        "cycle"
    } else {
        "threads[].tid"
    };
    ensure!(
        named.contains(&a) && named.contains(&b),
        "expected evidence.{key} of pid {pid}'s {} event to contain tids {a} and {b}, got {named:?}; event: {}",
        fired.kind,
        serde_json::to_string(&fired)?
    );
    let detect = fired.received.saturating_duration_since(d.formed);

    let resolve = kill_and_expect_resolved(&daemon, d, &fired)?;
    measured(
        "daemon_deadlock_python",
        &[
            ("kind", &fired.kind),
            ("detect_s", &secs(detect)),
            ("resolve_after_kill_s", &secs(resolve)),
        ],
    );
    daemon.stop()?;
    Ok(())
}
