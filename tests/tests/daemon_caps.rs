//! The daemon under exactly the capabilities of the shipped systemd unit.
//!
//! The capability set is read from `deploy/systemd/sentinel.service`
//! (`CapabilityBoundingSet=`), so these tests check the unit as shipped, not
//! a copy of its list. The unit runs sentinel as an unprivileged dynamic
//! user with those capabilities ambient; `setpriv` reproduces that: a
//! non-root uid, the set as bounding, inheritable and ambient set, and
//! no_new_privs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sentinel_tests::report::PROBE_NAMES;
use sentinel_tests::sentinel::wait_timeout;
use sentinel_tests::workload::field;
use sentinel_tests::{
    CheckOutput, Daemon, Event, Kind, ScratchDir, TestCgroup, Workload, measured, require_root,
    secs, sentinel_bin, serial, skip, workload_bin, workspace_dir,
};
use serde_json::Value;

/// The unit the capability set comes from.
const UNIT: &str = "deploy/systemd/sentinel.service";

/// The unit's `DynamicUser=yes` gets some unprivileged uid; for capabilities
/// any non-root uid is the same, and nobody exists everywhere.
const UID: u32 = 65534;

const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// The deadlock detector's `min_wait` in these tests.
const MIN_WAIT: Duration = Duration::from_secs(3);
const THREADS_MAX: u64 = 20;
const THREADS: u64 = 40;
const DETECT_WITHIN: Duration = Duration::from_secs(10);

/// The capabilities `key` gives in the unit: every `key=` line adds its
/// names, an empty assignment clears the list (systemd's merging). The
/// inverted form (`~CAP_...`) is refused: the test needs the list itself.
fn unit_caps(unit: &str, key: &str) -> Result<Vec<String>> {
    let mut caps: Vec<String> = Vec::new();
    let mut seen = false;
    for (n, line) in unit.lines().enumerate() {
        let line = line.trim();
        let Some(value) = line
            .strip_prefix(key)
            .and_then(|rest| rest.trim_start().strip_prefix('='))
        else {
            continue;
        };
        seen = true;
        let value = value.trim();
        if value.is_empty() {
            caps.clear();
            continue;
        }
        if value.starts_with('~') {
            bail!(
                "{UNIT}:{}: {key}= is inverted ({value}); list the capabilities",
                n + 1
            );
        }
        for cap in value.split_whitespace() {
            ensure!(
                cap.starts_with("CAP_") && cap.len() > 4,
                "{UNIT}:{}: {key}= has {cap:?}, not a CAP_ name",
                n + 1
            );
            if !caps.iter().any(|c| c == cap) {
                caps.push(cap.to_string());
            }
        }
    }
    ensure!(seen, "{UNIT} has no {key}= line");
    Ok(caps)
}

/// The unit's value of a single-valued key, the last assignment winning.
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .rev()
        .find_map(|l| {
            l.trim()
                .strip_prefix(key)
                .and_then(|rest| rest.trim_start().strip_prefix('='))
        })
        .map(str::trim)
}

/// The shipped unit's capability set, after checking that the unit really
/// runs sentinel as a non-root user holding exactly that set.
fn shipped_caps() -> Result<Vec<String>> {
    let path = workspace_dir().join(UNIT);
    let unit =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let bounding = unit_caps(&unit, "CapabilityBoundingSet")?;
    let ambient = unit_caps(&unit, "AmbientCapabilities")?;
    let (b, a): (BTreeSet<_>, BTreeSet<_>) = (bounding.iter().collect(), ambient.iter().collect());
    ensure!(
        b == a,
        "{UNIT}: AmbientCapabilities= ({ambient:?}) must list the same capabilities as \
         CapabilityBoundingSet= ({bounding:?}): a non-root service only has what is ambient"
    );
    let dynamic = unit_value(&unit, "DynamicUser") == Some("yes");
    let user = unit_value(&unit, "User").filter(|u| !u.is_empty() && *u != "root" && *u != "0");
    ensure!(
        dynamic || user.is_some(),
        "{UNIT}: expected DynamicUser=yes or a non-root User=, which these tests reproduce with uid {UID}"
    );
    ensure!(
        unit_value(&unit, "NoNewPrivileges") == Some("yes"),
        "{UNIT}: expected NoNewPrivileges=yes, which these tests reproduce"
    );
    Ok(bounding)
}

/// `setpriv` arguments running a program as uid/gid [`UID`] with exactly
/// `caps` (bounding, inheritable and ambient) and no_new_privs, as systemd
/// runs the unit.
fn setpriv_prefix(setpriv: &Path, caps: &[String]) -> Vec<String> {
    let list: String = caps
        .iter()
        .map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    vec![
        setpriv.display().to_string(),
        format!("--reuid={UID}"),
        format!("--regid={UID}"),
        "--clear-groups".into(),
        format!("--inh-caps=-all{list}"),
        format!("--ambient-caps=-all{list}"),
        format!("--bounding-set=-all{list}"),
        "--no-new-privs".into(),
        "--".into(),
    ]
}

fn find_setpriv() -> Option<PathBuf> {
    ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The bit mask of capability names, as in /proc/PID/status.
fn cap_mask(caps: &[String]) -> Result<u64> {
    let mut mask = 0u64;
    for cap in caps {
        let bit = match cap.as_str() {
            "CAP_CHOWN" => 0,
            "CAP_DAC_OVERRIDE" => 1,
            "CAP_DAC_READ_SEARCH" => 2,
            "CAP_FOWNER" => 3,
            "CAP_KILL" => 5,
            "CAP_SETGID" => 6,
            "CAP_SETUID" => 7,
            "CAP_NET_BIND_SERVICE" => 10,
            "CAP_IPC_LOCK" => 14,
            "CAP_SYS_PTRACE" => 19,
            "CAP_SYS_ADMIN" => 21,
            "CAP_SYS_RESOURCE" => 24,
            "CAP_SYSLOG" => 34,
            "CAP_PERFMON" => 38,
            "CAP_BPF" => 39,
            "CAP_CHECKPOINT_RESTORE" => 40,
            other => {
                bail!("{UNIT}: this test does not know the bit of {other}; add it to cap_mask")
            }
        };
        mask |= 1 << bit;
    }
    Ok(mask)
}

/// A directory the unprivileged daemon can write: state dir and API socket.
fn writable_dir(topic: &str) -> Result<ScratchDir> {
    let dir = ScratchDir::new_in(&std::env::temp_dir(), topic)?;
    std::os::unix::fs::chown(dir.path(), Some(UID), Some(UID))
        .with_context(|| format!("chown {UID} {}", dir.path().display()))?;
    Ok(dir)
}

/// Runs `prefix... sentinel <args>` to completion.
fn run_sentinel_as(prefix: &[String], args: &[&str], timeout: Duration) -> Result<CheckOutput> {
    let bin = sentinel_bin()?;
    let command = format!("{} {} {}", prefix.join(" "), bin.display(), args.join(" "));
    let mut child = Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(&bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {command}"))?;
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = wait_timeout(&mut child, timeout).with_context(|| command.clone());
    let (stdout, stderr) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let status = status.with_context(|| format!("stdout: {stdout}\nstderr: {stderr}"))?;
    Ok(CheckOutput {
        command,
        status,
        stdout,
        stderr,
    })
}

/// The libc this test process runs on, from its own maps.
fn own_libc() -> Result<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))
        })
        .map(PathBuf::from)
        .context("no libc.so in /proc/self/maps")
}

/// One `Key:` line of /proc/PID/status.
fn status_field(pid: u32, key: &str) -> Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("no {key}: in /proc/{pid}/status"))
}

/// Under the unit's capabilities, as an unprivileged user:
/// - `sentinel check` passes with every core probe attached (or degraded to
///   its fallback);
/// - the daemon reaches ready holding exactly the unit's capabilities, with
///   its memory locked;
/// - it fires thread_explosion for a process with 40 threads
///   (max_threads 20) within 10 s;
/// - it finds a deadlock that formed in a root process *before* it started,
///   which takes reading that process's /proc/PID/task/TID/syscall and
///   /proc/PID/mem (CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH), names both lock
///   owners, and symbolizes the blocked threads' stacks although the libc
///   they are in was deleted (/proc/PID/map_files: CAP_CHECKPOINT_RESTORE);
/// - SIGTERM ends it with exit code 0.
#[test]
fn the_units_capabilities_are_enough() -> Result<()> {
    let _serial = serial();
    require_root!();
    let Some(setpriv) = find_setpriv() else {
        skip!("setpriv (util-linux) is not installed");
    };
    let caps = shipped_caps()?;
    let prefix = setpriv_prefix(&setpriv, &caps);

    let check = run_sentinel_as(&prefix, &["check", "--json"], CHECK_TIMEOUT)?;
    let report = check.json()?;
    ensure!(
        check.code() == Some(0) && report.ok && report.privileges.ok,
        "`sentinel check` under {UNIT}'s capabilities {caps:?} as uid {UID}: expected exit 0, \
         ok and privileges ok; {}",
        check.describe()
    );
    for name in PROBE_NAMES {
        let p = report.probe(name)?;
        ensure!(
            p.status == "attached" || p.status == "degraded",
            "probe {name} under {UNIT}'s capabilities: status {:?} ({}), expected attached or degraded; {}",
            p.status,
            p.detail,
            check.describe()
        );
    }

    // A deadlock already formed when the daemon starts, in a process whose
    // libc has since been deleted (as after a libc upgrade): its stacks can
    // only be read through /proc/PID/map_files.
    let libdir = ScratchDir::new_in(&std::env::temp_dir(), "daemon-caps-lib")?;
    let libc_copy = libdir.path().join("libc.so.6");
    std::fs::copy(own_libc()?, &libc_copy)
        .with_context(|| format!("copying libc to {}", libc_copy.display()))?;
    let cg_dead = TestCgroup::new("daemon-caps-deadlock")?;
    let preload = format!("LD_LIBRARY_PATH={}", libdir.path().display());
    let mut dead = Workload::spawn(
        "/usr/bin/env",
        &[&preload, workload_bin!(), "deadlock"],
        &cg_dead,
    )?;
    let dead_pid = dead.pid();
    dead.expect("ready", SETUP_TIMEOUT)?;
    dead.go()?;
    let line = dead.expect("done", SETUP_TIMEOUT)?;
    let (tid_a, tid_b) = (field(&line, "tid_a")?, field(&line, "tid_b")?);
    let maps = std::fs::read_to_string(format!("/proc/{dead_pid}/maps"))?;
    ensure!(
        maps.contains(&libc_copy.display().to_string()),
        "test setup: pid {dead_pid} does not map {} (LD_LIBRARY_PATH ignored?)",
        libc_copy.display()
    );
    std::fs::remove_file(&libc_copy)?;

    let dir = writable_dir("daemon-caps")?;
    let config = format!(
        "[daemon]\nresolve_after = \"5s\"\nstate_dir = \"{state}\"\n\
         [api]\nsocket = \"{sock}\"\n\
         [threads]\nmax_threads = {THREADS_MAX}\n\
         [deadlock]\nmin_wait = \"{wait}s\"\nhang_after = \"60s\"\n",
        state = dir.path().join("state").display(),
        sock = dir.path().join("api.sock").display(),
        wait = MIN_WAIT.as_secs(),
    );
    let prefix_refs: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let daemon = Daemon::start_with_prefix(&config, &[], &prefix_refs)?;
    let ready = Instant::now();

    // It runs as the unit would run it.
    let pid = daemon.pid();
    let want = cap_mask(&caps)?;
    for key in ["CapEff", "CapAmb", "CapBnd"] {
        let got = u64::from_str_radix(&status_field(pid, key)?, 16)?;
        ensure!(
            got == want,
            "daemon pid {pid}: {key} is {got:#x}, expected exactly {UNIT}'s {caps:?} ({want:#x})"
        );
    }
    let uid = status_field(pid, "Uid")?;
    ensure!(
        uid.split_whitespace().all(|u| u == UID.to_string()),
        "daemon pid {pid}: Uid {uid:?}, expected {UID}"
    );
    // mlockall took (CAP_IPC_LOCK: the test cannot raise RLIMIT_MEMLOCK to
    // infinity as the unit's LimitMEMLOCK= does).
    let locked = status_field(pid, "VmLck")?;
    let locked_kb: u64 = locked
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ensure!(
        locked_kb > 0 && !daemon.stderr().contains("mlockall"),
        "daemon pid {pid}: memory not locked under {UNIT}'s capabilities (VmLck {locked}); stderr:\n{}",
        daemon.stderr()
    );

    let cg_threads = TestCgroup::new("daemon-caps-threads")?;
    let mut many = Workload::spawn(
        workload_bin!(),
        &["threads", &THREADS.to_string()],
        &cg_threads,
    )?;
    let many_pid = many.pid();
    many.expect("ready", SETUP_TIMEOUT)?;
    let threads_ready = Instant::now();
    many.go()?;
    let fired = daemon.wait_for(
        &format!(
            "a firing thread_explosion for pid {many_pid} ({THREADS} threads, max_threads {THREADS_MAX}) \
             within {DETECT_WITHIN:?}, the daemon holding only {caps:?}"
        ),
        DETECT_WITHIN,
        |e| e.is_firing(Kind::ThreadExplosion) && e.pid_is(many_pid),
    )?;

    let deadline = ready + MIN_WAIT + DETECT_WITHIN;
    let deadlock = daemon.wait_for(
        &format!(
            "a firing deadlock for pid {dead_pid} (root; threads {tid_a} and {tid_b} deadlocked before \
             the daemon started, so found only through /proc/PID/task/TID/syscall and /proc/PID/mem) \
             within min_wait + {DETECT_WITHIN:?} of ready, the daemon holding only {caps:?}"
        ),
        deadline.saturating_duration_since(Instant::now()),
        |e| e.is_firing(Kind::Deadlock) && e.pid_is(dead_pid),
    )?;
    check_deadlock(&deadlock, tid_a, tid_b)?;

    measured(
        "daemon_caps",
        &[
            ("thread_explosion_s", &secs(fired.received - threads_ready)),
            ("seeded_deadlock_s", &secs(deadlock.received - ready)),
            ("locked_kb", &locked_kb),
        ],
    );
    drop(many);
    drop(dead);
    daemon.stop()?;
    Ok(())
}

/// Both threads are in the cycle, each with its lock's owner and a stack
/// with at least one symbolized frame (`object!symbol+off`).
fn check_deadlock(e: &Event, tid_a: i64, tid_b: i64) -> Result<()> {
    let json = serde_json::to_string(e)?;
    let cycle = e.cycle_tids();
    ensure!(
        cycle.contains(&tid_a) && cycle.contains(&tid_b),
        "deadlock evidence.cycle {cycle:?} lacks tids {tid_a} and {tid_b}; event: {json}"
    );
    let threads = e
        .evidence("threads")
        .and_then(Value::as_array)
        .with_context(|| format!("deadlock event without evidence.threads: {json}"))?;
    for tid in [tid_a, tid_b] {
        let t = threads
            .iter()
            .find(|t| t.get("tid").and_then(Value::as_i64) == Some(tid))
            .with_context(|| format!("no evidence.threads entry for tid {tid}: {json}"))?;
        let owner = t.get("owner_tid").and_then(Value::as_i64);
        let other = if tid == tid_a { tid_b } else { tid_a };
        ensure!(
            owner == Some(other),
            "tid {tid}: owner_tid {owner:?}, expected {other} (read from the process's memory); event: {json}"
        );
        let stack: Vec<&str> = t
            .get("stack")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        ensure!(
            stack.iter().any(|f| f.contains('!')),
            "tid {tid}: no symbolized frame in stack {stack:?}: the frames are in a deleted libc, \
             which only /proc/PID/map_files still opens (CAP_CHECKPOINT_RESTORE, with \
             CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH); event: {json}"
        );
    }
    Ok(())
}

/// The capabilities without which the daemon refuses to start: without
/// each, `sentinel daemon` exits 1 naming it and prints no event, and
/// `sentinel check` exits 1 listing it as missing. CAP_DAC_READ_SEARCH is
/// one of them only because the unit's user is not root: tracefs is mode
/// 0700.
#[test]
fn each_capability_the_daemon_cannot_start_without_is_named() -> Result<()> {
    let _serial = serial();
    require_root!();
    let Some(setpriv) = find_setpriv() else {
        skip!("setpriv (util-linux) is not installed");
    };
    let caps = shipped_caps()?;
    let dir = writable_dir("daemon-caps-missing")?;
    let config = dir.path().join("sentinel.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"{}\"\n[api]\nsocket = \"{}\"\n[metrics]\nlisten = \"\"\n",
            dir.path().join("state").display(),
            dir.path().join("api.sock").display()
        ),
    )?;
    let config = config.to_string_lossy().into_owned();

    for missing in ["CAP_BPF", "CAP_PERFMON", "CAP_DAC_READ_SEARCH"] {
        ensure!(
            caps.iter().any(|c| c == missing),
            "{UNIT}'s CapabilityBoundingSet= {caps:?} lacks {missing}, which the daemon cannot start without"
        );
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let prefix = setpriv_prefix(&setpriv, &fewer);

        let out = run_sentinel_as(
            &prefix,
            &["daemon", "--config", &config, "--log-format", "json"],
            Duration::from_secs(30),
        )?;
        ensure!(
            out.code() == Some(1) && out.stderr.contains(missing) && out.stdout.trim().is_empty(),
            "without {missing} (holding {fewer:?}): expected `sentinel daemon` to exit 1 naming \
             {missing} on stderr, with no event on stdout; {}",
            out.describe()
        );

        let check = run_sentinel_as(&prefix, &["check", "--json"], CHECK_TIMEOUT)?;
        let report = check.json()?;
        ensure!(
            check.code() == Some(1)
                && !report.ok
                && !report.privileges.ok
                && report.privileges.missing == [missing],
            "without {missing} (holding {fewer:?}): expected `sentinel check` to exit 1 with \
             privileges.missing = [{missing:?}], got {:?}; {}",
            report.privileges.missing,
            check.describe()
        );
    }
    Ok(())
}
