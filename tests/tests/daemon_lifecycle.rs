//! The daemon's lifecycle in production: config errors (exit 2, naming
//! file, line and key, never a secret), `--check-config`, runtime errors
//! (exit 1, naming the directory or address), SIGHUP reloads with a good and
//! a broken file, SIGTERM and SIGINT.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use sentinel_tests::daemon::run_daemon_expect_exit_env;
use sentinel_tests::sentinel::CheckOutput;
use sentinel_tests::{
    Daemon, Event, Kind, ScratchDir, TestCgroup, Workload, measured, require_root, secs, serial,
    skip, workload_bin,
};

/// How long a daemon expected to fail at start may run.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// The lines that keep a test daemon off the host's real paths and ports,
/// at the top of every hand-written config (so line numbers stay ours).
fn isolation(dir: &Path) -> String {
    config_head(&dir.join("state"), &dir.join("api.sock"), "")
}

/// The `[daemon] state_dir`, `[api] socket` and `[metrics] listen` lines.
fn config_head(state_dir: &Path, socket: &Path, listen: &str) -> String {
    format!(
        "[daemon]\nstate_dir = \"{}\"\n[api]\nsocket = \"{}\"\n[metrics]\nlisten = \"{listen}\"\n",
        state_dir.display(),
        socket.display()
    )
}

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> u32 {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i as u32 + 1)
        .unwrap_or_else(|| panic!("test bug: {needle:?} not in the config"))
}

#[derive(Debug)]
struct ConfigError {
    line: u32,
    key: String,
    reason: String,
    raw: String,
}

/// The config error line `sentinel: error: <path>:<line>:<col>: <key>: <reason>`
/// on stderr (the last such line: tracing may have said something first).
fn config_error(out: &CheckOutput, path: &Path) -> Result<ConfigError> {
    let path = path.to_string_lossy();
    let prefix = format!("sentinel: error: {path}:");
    let line = out
        .stderr
        .lines()
        .rev()
        .find(|l| l.starts_with(&prefix))
        .ok_or_else(|| {
            anyhow!(
                "expected a stderr line `sentinel: error: {path}:<line>:<col>: <key>: <reason>`; {}",
                out.describe()
            )
        })?;
    let rest = &line[prefix.len()..];
    let mut parts = rest.splitn(4, ':');
    let num = |p: Option<&str>| p.and_then(|s| s.trim().parse::<u32>().ok());
    let l = num(parts.next());
    let c = num(parts.next());
    let key = parts.next().map(str::trim).unwrap_or_default().to_string();
    let reason = parts.next().map(str::trim).unwrap_or_default().to_string();
    ensure!(
        l.is_some() && c.is_some() && !key.is_empty() && !reason.is_empty(),
        "expected `{path}:<line>:<col>: <key>: <reason>` in the error line {line:?}; {}",
        out.describe()
    );
    Ok(ConfigError {
        line: l.unwrap_or(0),
        key,
        reason,
        raw: line.to_string(),
    })
}

/// Runs `sentinel daemon [--check-config] --config <path>`.
fn run(path: &Path, check_only: bool, env: &[(&str, &str)]) -> Result<(CheckOutput, Duration)> {
    let p = path.to_string_lossy().into_owned();
    let mut args = vec![];
    if check_only {
        args.push("--check-config");
    }
    args.extend(["--config", p.as_str(), "--log-format", "json"]);
    let t = Instant::now();
    let out = run_daemon_expect_exit_env(&args, env, EXIT_WITHIN)?;
    Ok((out, t.elapsed()))
}

/// A config error: exit 2 from both `daemon` and `daemon --check-config`,
/// nothing on stdout, and an error line naming the file, `line` and a key
/// for which `key_ok` holds; `must_mention` all appear in the line.
fn expect_config_error(
    dir: &ScratchDir,
    name: &str,
    text: &str,
    line: u32,
    key_ok: &dyn Fn(&str) -> bool,
    must_mention: &[&str],
) -> Result<()> {
    let path = dir.path().join(name);
    std::fs::write(&path, text)?;
    for check_only in [false, true] {
        let how = if check_only {
            "`sentinel daemon --check-config`"
        } else {
            "`sentinel daemon`"
        };
        let (out, took) = run(&path, check_only, &[])?;
        let what = format!("{how} on {name}:\n{text}");
        ensure!(
            out.code() == Some(2),
            "expected exit code 2 for {what}; {}",
            out.describe()
        );
        ensure!(
            out.stdout.trim().is_empty(),
            "expected nothing on stdout for {what}; {}",
            out.describe()
        );
        let err = config_error(&out, &path).with_context(|| what.clone())?;
        ensure!(
            err.line == line && key_ok(&err.key),
            "expected line {line} and the right key for {what}; got line {} key {:?} in {:?}",
            err.line,
            err.key,
            err.raw
        );
        for m in must_mention {
            ensure!(
                err.raw.contains(m),
                "expected the error line for {what} to mention {m:?}, got {:?}",
                err.raw
            );
        }
        ensure!(
            took < Duration::from_secs(5),
            "{how} took {} s to reject {name}: config errors come before any probe is loaded",
            secs(took)
        );
        eprintln!("{how} {name}: {} ({:?})", err.raw, err.reason);
    }
    Ok(())
}

fn webhook_key(field: &'static str) -> impl Fn(&str) -> bool {
    move |k: &str| k.starts_with("sink.webhook") && k.contains(field)
}

/// [`expect_config_error`] for a `[[sink.webhook]]` key `field`, on the
/// line of `text` holding `needle`.
fn expect_webhook_error(
    dir: &ScratchDir,
    name: &str,
    text: &str,
    needle: &str,
    field: &'static str,
    must_mention: &[&str],
) -> Result<()> {
    let line = line_of(text, needle);
    expect_config_error(dir, name, text, line, &webhook_key(field), must_mention)
}

/// Bad values and unknown keys in `[[sink.webhook]]` are config errors with
/// file, line and key.
#[test]
fn bad_sink_config_exits_2_with_file_line_and_key() -> Result<()> {
    let _serial = serial();
    let dir = ScratchDir::new_in(&std::env::temp_dir(), "lifecycle-config")?;
    let iso = isolation(dir.path());

    let text = format!(
        "{iso}[[sink.webhook]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/\"\nformat = \"xml\"\n"
    );
    expect_webhook_error(
        &dir,
        "format.toml",
        &text,
        "format = \"xml\"",
        "format",
        &["xml"],
    )?;

    let text = format!(
        "{iso}[[sink.webhook]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/\"\nmin_severty = \"critical\"\n"
    );
    expect_webhook_error(&dir, "typo.toml", &text, "min_severty", "min_severty", &[])?;

    let text = format!(
        "{iso}[[sink.webhook]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/\"\nmax_per_minute = \"lots\"\n"
    );
    expect_webhook_error(
        &dir,
        "rate.toml",
        &text,
        "max_per_minute",
        "max_per_minute",
        &["lots"],
    )?;
    Ok(())
}

/// `--check-config`: a good file (with a webhook whose URL comes from the
/// environment) exits 0, quickly; a bad one exits 2 (covered above);
/// without `--config`, a missing /etc/sentinel/sentinel.toml means defaults.
#[test]
fn check_config_accepts_a_good_file_quickly() -> Result<()> {
    let _serial = serial();
    let dir = ScratchDir::new_in(&std::env::temp_dir(), "lifecycle-check")?;
    let text = format!(
        "{}[threads]\nmax_threads = 500\n[spool]\nmax_events = 100\nmax_bytes = \"1MB\"\n\
         [[sink.webhook]]\nname = \"team-slack\"\nurl_env = \"SENTINEL_TEST_CHECK_URL\"\nformat = \"slack\"\n\
         headers = {{ X-Token = {{ env = \"SENTINEL_TEST_CHECK_TOKEN\" }} }}\nmin_severity = \"warning\"\ntimeout = \"3s\"\nmax_per_minute = 10\n\
         [[sink.webhook]]\nurl = \"http://127.0.0.1:9093\"\nformat = \"alertmanager\"\n",
        isolation(dir.path())
    );
    let path = dir.path().join("good.toml");
    std::fs::write(&path, &text)?;
    let env = [
        ("SENTINEL_TEST_CHECK_URL", "http://127.0.0.1:9/hook"),
        ("SENTINEL_TEST_CHECK_TOKEN", "tok"),
    ];
    let (out, took) = run(&path, true, &env)?;
    ensure!(
        out.code() == Some(0),
        "expected `sentinel daemon --check-config` to accept:\n{text}\n{}",
        out.describe()
    );
    ensure!(
        took < Duration::from_secs(5),
        "`--check-config` took {} s: it must not load probes",
        secs(took)
    );
    ensure!(
        !dir.path().join("state").exists(),
        "`--check-config` created the state dir {}: it must only validate",
        dir.path().join("state").display()
    );
    if Path::new("/etc/sentinel/sentinel.toml").exists() {
        eprintln!("/etc/sentinel/sentinel.toml exists: not checking the no-file default");
    } else {
        let t = Instant::now();
        let out = run_daemon_expect_exit_env(&["--check-config"], &[], EXIT_WITHIN)?;
        ensure!(
            out.code() == Some(0),
            "expected `sentinel daemon --check-config` with no /etc/sentinel/sentinel.toml to accept the defaults; {}",
            out.describe()
        );
        ensure!(
            t.elapsed() < Duration::from_secs(5),
            "--check-config took {} s",
            secs(t.elapsed())
        );
    }
    measured("daemon_lifecycle_check_config", &[("check_s", &secs(took))]);
    Ok(())
}

/// Secrets that cannot be read: `url_file` missing or a directory, a header
/// `{ file = ... }` missing, `url_env` unset. Exit 2 naming the key and the
/// file (or variable); a file's content is never shown.
#[test]
fn unreadable_secrets_exit_2_naming_key_and_file() -> Result<()> {
    let _serial = serial();
    let dir = ScratchDir::new_in(&std::env::temp_dir(), "lifecycle-secrets")?;
    let iso = isolation(dir.path());

    let absent = dir.path().join("absent.url");
    let text = format!(
        "{iso}[[sink.webhook]]\nurl_file = \"{}\"\n",
        absent.display()
    );
    let absent_s = absent.to_string_lossy().into_owned();
    expect_webhook_error(
        &dir,
        "absent.toml",
        &text,
        "url_file",
        "url_file",
        &[&absent_s],
    )?;

    let a_dir = dir.path().join("a-directory");
    std::fs::create_dir(&a_dir)?;
    let text = format!(
        "{iso}[[sink.webhook]]\nurl_file = \"{}\"\n",
        a_dir.display()
    );
    let a_dir_s = a_dir.to_string_lossy().into_owned();
    expect_webhook_error(&dir, "dir.toml", &text, "url_file", "url_file", &[&a_dir_s])?;

    let header_file = dir.path().join("absent.header");
    let text = format!(
        "{iso}[[sink.webhook]]\nurl = \"http://127.0.0.1:9/\"\nheaders = {{ Authorization = {{ file = \"{}\" }} }}\n",
        header_file.display()
    );
    let header_s = header_file.to_string_lossy().into_owned();
    expect_webhook_error(
        &dir,
        "header.toml",
        &text,
        "headers",
        "headers",
        &[&header_s],
    )?;

    let var = format!("SENTINEL_TEST_UNSET_{}", std::process::id());
    let text = format!("{iso}[[sink.webhook]]\nurl_env = \"{var}\"\n");
    expect_webhook_error(&dir, "env.toml", &text, "url_env", "url_env", &[&var])?;

    // A readable secret file whose content is not a usable URL: if it is
    // refused, the error must not quote the content.
    let marker = format!("SECRETCONTENT{}", std::process::id());
    let bad_url = dir.path().join("bad.url");
    std::fs::write(&bad_url, format!("not a url {marker}\n"))?;
    let text = format!(
        "{iso}[[sink.webhook]]\nurl_file = \"{}\"\n",
        bad_url.display()
    );
    let path = dir.path().join("badurl.toml");
    std::fs::write(&path, &text)?;
    let (out, _) = run(&path, true, &[])?;
    ensure!(
        !out.stderr.contains(&marker) && !out.stdout.contains(&marker),
        "`--check-config` printed the content of the secret file {}; {}",
        bad_url.display(),
        out.describe()
    );
    eprintln!(
        "url_file with a non-URL content: {}; stderr: {}",
        sentinel_tests::workload::describe_status(out.status),
        out.stderr.trim()
    );
    Ok(())
}

/// Runs the daemon expecting a runtime failure: exit 1, nothing on stdout,
/// stderr naming `name`.
fn expect_runtime_error(
    dir: &ScratchDir,
    file: &str,
    text: &str,
    name: &str,
    what: &str,
) -> Result<()> {
    let path = dir.path().join(file);
    std::fs::write(&path, text)?;
    let (out, took) = run(&path, false, &[])?;
    ensure!(
        out.code() == Some(1),
        "expected exit code 1 for {what}; config:\n{text}\n{}",
        out.describe()
    );
    ensure!(
        out.stderr.contains(name),
        "expected stderr to name {name} for {what}; {}",
        out.describe()
    );
    ensure!(
        out.stdout.trim().is_empty(),
        "expected nothing on stdout for {what}; {}",
        out.describe()
    );
    eprintln!(
        "{what}: exit 1 after {} s: {}",
        secs(took),
        out.stderr
            .lines()
            .rev()
            .find(|l| l.contains(name))
            .unwrap_or_default()
    );
    Ok(())
}

/// A read-only tmpfs mounted on a scratch directory; unmounted on drop.
struct ReadOnlyMount {
    path: PathBuf,
    mounted: bool,
}

impl ReadOnlyMount {
    fn new(path: PathBuf) -> Result<std::result::Result<Self, String>> {
        std::fs::create_dir_all(&path)?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "sentinel-test-ro"])
            .arg(&path)
            .output()
            .context("running mount")?;
        if !out.status.success() {
            return Ok(Err(format!(
                "mount -t tmpfs -o ro: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Ok(Self {
            path,
            mounted: true,
        }))
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        if self.mounted {
            let ok = std::process::Command::new("umount")
                .arg(&self.path)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.path)
                    .status();
            }
        }
    }
}

/// A spool that cannot be created (state_dir below a regular file; state_dir
/// on a read-only filesystem) or an API socket that cannot be created: exit
/// 1 naming the directory.
#[test]
fn unwritable_spool_or_socket_dir_exits_1_naming_it() -> Result<()> {
    let _serial = serial();
    require_root!();
    let dir = ScratchDir::new_in(&std::env::temp_dir(), "lifecycle-spool")?;
    let hook = "[[sink.webhook]]\nname = \"hook\"\nurl = \"http://127.0.0.1:9/\"\n";

    let a_file = dir.path().join("a-file");
    std::fs::write(&a_file, "not a directory\n")?;
    let state = a_file.join("state");
    let text = format!(
        "{}{hook}",
        config_head(&state, &dir.path().join("api.sock"), "")
    );
    expect_runtime_error(
        &dir,
        "under-file.toml",
        &text,
        &state.to_string_lossy(),
        &format!("state_dir {} below a regular file", state.display()),
    )?;

    match ReadOnlyMount::new(dir.path().join("ro"))? {
        Err(why) => eprintln!("not testing a read-only filesystem: {why}"),
        Ok(ro) => {
            let state = ro.path.join("state");
            let text = format!(
                "{}{hook}",
                config_head(&state, &dir.path().join("api.sock"), "")
            );
            expect_runtime_error(
                &dir,
                "read-only.toml",
                &text,
                &state.to_string_lossy(),
                &format!("state_dir {} on a read-only tmpfs", state.display()),
            )?;
            drop(ro);
        }
    }

    let socket = a_file.join("api.sock");
    let text = config_head(&dir.path().join("state"), &socket, "");
    expect_runtime_error(
        &dir,
        "socket.toml",
        &text,
        &socket.to_string_lossy(),
        &format!("api.socket {} below a regular file", socket.display()),
    )?;
    Ok(())
}

/// `[metrics] listen` on a port someone else holds: exit 1 naming the
/// address.
#[test]
fn metrics_port_in_use_exits_1_naming_the_address() -> Result<()> {
    let _serial = serial();
    require_root!();
    let dir = ScratchDir::new_in(&std::env::temp_dir(), "lifecycle-port")?;
    let holder = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = holder.local_addr()?.to_string();
    let text = config_head(
        &dir.path().join("state"),
        &dir.path().join("api.sock"),
        &addr,
    );
    expect_runtime_error(
        &dir,
        "port.toml",
        &text,
        &addr,
        &format!("[metrics] listen = {addr}, already bound by the test"),
    )?;
    drop(holder);
    Ok(())
}

const RESOLVE_FAST: &str = "[daemon]\nresolve_after = \"5s\"\n";

/// A 40-thread workload in `cg`, told to go.
fn start_threads(cg: &TestCgroup) -> Result<Workload> {
    let mut w = Workload::spawn(workload_bin!(), &["threads", "40"], cg)?;
    w.expect("ready", Duration::from_secs(60))?;
    w.go()?;
    Ok(w)
}

/// Waits up to 15 s for a firing thread_explosion for `pid` (a
/// [`start_threads`] workload); `why` ends the description.
fn wait_thread_explosion(daemon: &Daemon, pid: i32, why: &str) -> Result<Event> {
    daemon.wait_for(
        &format!("a firing thread_explosion for pid {pid} (40 threads) {why}"),
        Duration::from_secs(15),
        |e| e.is_firing(Kind::ThreadExplosion) && e.pid_is(pid),
    )
}

/// A 40-thread workload stays quiet under `max_threads = 1000`; after the
/// file says 20 and the daemon gets SIGHUP, it fires.
#[test]
fn sighup_with_a_good_file_applies_the_new_config() -> Result<()> {
    let _serial = serial();
    require_root!();
    let daemon = Daemon::start(&format!("[threads]\nmax_threads = 1000\n{RESOLVE_FAST}"))?;
    let cg = TestCgroup::new("lifecycle-sighup")?;
    let w = start_threads(&cg)?;
    let pid = w.pid();
    std::thread::sleep(Duration::from_secs(4));
    daemon.ensure_no_event(
        &format!("for pid {pid} (40 threads, under max_threads 1000)"),
        |e| e.pid_is(pid),
    )?;
    daemon.write_config(&format!("[threads]\nmax_threads = 20\n{RESOLVE_FAST}"))?;
    daemon.send_signal(libc::SIGHUP)?;
    let hup = Instant::now();
    let fired = wait_thread_explosion(&daemon, pid, "after SIGHUP with max_threads = 20")?;
    ensure!(
        daemon.exit_status()?.is_none(),
        "{}",
        daemon.failure("the daemon exited after SIGHUP")
    );
    measured(
        "daemon_lifecycle_sighup",
        &[(
            "fired_after_hup_s",
            &secs(fired.received.saturating_duration_since(hup)),
        )],
    );
    drop(w);
    daemon.stop()?;
    Ok(())
}

/// SIGHUP with a file that is not TOML, then with a bad value: the daemon
/// stays up, says why on stderr (naming the file), and the old config
/// (`max_threads = 20`) keeps working.
#[test]
fn sighup_with_a_broken_file_keeps_the_old_config() -> Result<()> {
    let _serial = serial();
    require_root!();
    let daemon = Daemon::start(&format!("[threads]\nmax_threads = 20\n{RESOLVE_FAST}"))?;
    let path = daemon.config_path().to_string_lossy().into_owned();
    let mentions = |s: &str| s.matches(path.as_str()).count();

    let before = mentions(&daemon.stderr());
    std::fs::write(daemon.config_path(), "[threads\nmax_threads = = 5\n")?;
    daemon.send_signal(libc::SIGHUP)?;
    let stderr = daemon.wait_stderr(
        &format!("a line naming {path} (SIGHUP with a file that is not TOML)"),
        Duration::from_secs(10),
        |s| mentions(s) > before,
    )?;
    let why: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(path.as_str()))
        .collect();
    eprintln!("after SIGHUP with a broken file: {why:?}");

    let before = mentions(&daemon.stderr());
    daemon.write_config(&format!(
        "[threads]\nmax_threads = \"many\"\n{RESOLVE_FAST}"
    ))?;
    daemon.send_signal(libc::SIGHUP)?;
    let stderr = daemon.wait_stderr(
        &format!(
            "a line naming {path} and threads.max_threads (SIGHUP with max_threads = \"many\")"
        ),
        Duration::from_secs(10),
        |s| mentions(s) > before && s.contains("max_threads"),
    )?;
    let _ = stderr;
    std::thread::sleep(Duration::from_millis(500));
    ensure!(
        daemon.exit_status()?.is_none(),
        "{}",
        daemon.failure(
            "the daemon exited after SIGHUP with a broken config; it must keep the old one"
        )
    );

    let cg = TestCgroup::new("lifecycle-sighup-broken")?;
    let w = start_threads(&cg)?;
    let pid = w.pid();
    wait_thread_explosion(
        &daemon,
        pid,
        "(the old max_threads = 20 must still apply after the broken reloads)",
    )?;
    drop(w);
    daemon.stop()?;
    Ok(())
}

/// SIGTERM and SIGINT: exit 0 within 5 s.
#[test]
fn sigterm_and_sigint_exit_0_within_5_s() -> Result<()> {
    let _serial = serial();
    require_root!();
    let mut took_all = Vec::new();
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let daemon = Daemon::start("[threads]\nmax_threads = 20\n")?;
        std::thread::sleep(Duration::from_secs(2));
        daemon.send_signal(sig)?;
        let t = Instant::now();
        let status = daemon.wait_exited(Duration::from_secs(15))?;
        let took = t.elapsed();
        ensure!(
            status.code() == Some(0) && took <= Duration::from_secs(5),
            "{}",
            daemon.failure(&format!(
                "expected exit code 0 within 5 s of {name}, got {status} after {} s",
                secs(took)
            ))
        );
        took_all.push(took);
    }
    if took_all.is_empty() {
        skip!("nothing ran");
    }
    measured(
        "daemon_lifecycle_signals",
        &[
            ("sigterm_exit_s", &secs(took_all[0])),
            ("sigint_exit_s", &secs(took_all[1])),
        ],
    );
    Ok(())
}
