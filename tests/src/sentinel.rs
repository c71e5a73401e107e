//! Running the real `sentinel` binary.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::report::{CheckReport, Report};
use crate::workload::describe_status;
use crate::{TestCgroup, truncate};

/// The line sentinel prints on stderr once every probe is attached and
/// blocked futex waiters are seeded.
pub const READY_MARKER: &str = "observing for";

/// How long sentinel may take to load and attach before a test gives up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `$SENTINEL_BIN`, else `<target>/release/sentinel`. A missing binary is a
/// failure, not a skip: the suite exists to test it.
pub fn sentinel_bin() -> Result<PathBuf> {
    let path = match std::env::var_os("SENTINEL_BIN") {
        Some(p) => PathBuf::from(p),
        None => crate::target_dir().join("release").join("sentinel"),
    };
    if !path.is_file() {
        bail!(
            "sentinel binary not found at {} (build it with `cargo xtask build`, or set SENTINEL_BIN)",
            path.display()
        );
    }
    Ok(path)
}

/// A running `sentinel snapshot --json`, already past its ready line.
pub struct Snapshot {
    child: Child,
    command: String,
    duration: Duration,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
}

impl Snapshot {
    /// Observes `cgroup` (and its descendants) for `duration`.
    pub fn for_cgroup(cgroup: &TestCgroup, duration: Duration) -> Result<Self> {
        Self::start(&["--cgroup", &cgroup.path()], duration)
    }

    /// Observes one process for `duration`.
    pub fn for_pid(pid: i32, duration: Duration) -> Result<Self> {
        Self::start(&["--pid", &pid.to_string()], duration)
    }

    /// Spawns `sentinel snapshot --json --duration <d> <filter...>` and
    /// waits until it prints its ready line.
    pub fn start(filter: &[&str], duration: Duration) -> Result<Self> {
        Self::start_env(filter, duration, &[])
    }

    /// As [`Snapshot::start`], with extra environment for sentinel (its
    /// test-only switches).
    pub fn start_env(filter: &[&str], duration: Duration, env: &[(&str, &str)]) -> Result<Self> {
        let bin = sentinel_bin()?;
        let secs = duration.as_secs().max(1);
        let mut args: Vec<String> = vec![
            "snapshot".into(),
            "--json".into(),
            "--duration".into(),
            format!("{secs}s"),
        ];
        args.extend(filter.iter().map(|s| s.to_string()));
        let env_words: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let command = format!("{}{} {}", env_words.concat(), bin.display(), args.join(" "));
        let mut child = Command::new(&bin)
            .args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {command}"))?;

        let mut stdout = child.stdout.take().expect("stdout is piped");
        let stdout = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let log = Arc::clone(&stderr);
        let (ready_tx, ready_rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                let ready = line.contains(READY_MARKER);
                {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                if ready {
                    let _ = ready_tx.send(());
                }
            }
        });

        let mut snap = Self {
            child,
            command,
            duration: Duration::from_secs(secs),
            stdout: Some(stdout),
            stderr,
            exited: None,
        };
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => Ok(snap),
            Err(RecvTimeoutError::Timeout) => Err(snap.failure(&format!(
                "no {READY_MARKER:?} line on stderr within {READY_TIMEOUT:?}"
            ))),
            Err(RecvTimeoutError::Disconnected) => {
                let _ = snap.wait(Duration::from_secs(10));
                Err(snap.failure(&format!("stderr closed before a {READY_MARKER:?} line")))
            }
        }
    }

    /// Fails when the observation window is already over, i.e. the work the
    /// test just finished may have fallen (partly) outside it. This guards
    /// the test's own setup; it is not an assertion on sentinel's speed.
    pub fn ensure_observing(&mut self, what: &str) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            self.exited = Some(status);
            bail!(
                "sentinel's {:?} window was over before {what}; the test needs a longer --duration. \
                 sentinel {}; stderr:\n{}",
                self.duration,
                describe_status(status),
                truncate(&self.stderr.lock().unwrap(), 4000)
            );
        }
        Ok(())
    }

    /// Waits for the window to end and parses the report.
    pub fn finish(mut self) -> Result<Report> {
        let status = self.wait(self.duration + Duration::from_secs(120))?;
        let stdout = self
            .stdout
            .take()
            .expect("finish runs once")
            .join()
            .unwrap_or_default();
        let stdout = String::from_utf8_lossy(&stdout).into_owned();
        if !status.success() {
            return Err(self.failure(&format!("stdout:\n{}", truncate(&stdout, 4000))));
        }
        let value: serde_json::Value = serde_json::from_str(&stdout).map_err(|e| {
            self.failure(&format!(
                "stdout is not JSON ({e}):\n{}",
                truncate(&stdout, 4000)
            ))
        })?;
        serde_json::from_value(value).map_err(|e| {
            self.failure(&format!(
                "report does not match the JSON contract ({e}):\n{}",
                truncate(&stdout, 4000)
            ))
        })
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(s) = self.exited {
            return Ok(s);
        }
        let status =
            wait_timeout(&mut self.child, timeout).map_err(|e| self.failure(&format!("{e:#}")))?;
        self.exited = Some(status);
        Ok(status)
    }

    fn failure(&self, what: &str) -> anyhow::Error {
        std::thread::sleep(Duration::from_millis(50));
        let status = match self.exited {
            Some(s) => describe_status(s),
            None => "still running".into(),
        };
        anyhow!(
            "`{}`: {what}\nsentinel status: {status}\n--- sentinel stderr ---\n{}",
            self.command,
            truncate(&self.stderr(), 8000)
        )
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` up to `timeout`, killing it when the time is up.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("still running after {timeout:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Output of a finished `sentinel` command.
pub struct CheckOutput {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CheckOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// stdout parsed as the `check --json` contract.
    pub fn json(&self) -> Result<CheckReport> {
        serde_json::from_str(&self.stdout).map_err(|e| {
            anyhow!(
                "`{}`: stdout does not match the check JSON contract ({e}); {}",
                self.command,
                self.describe()
            )
        })
    }

    /// Exit status plus both streams, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            describe_status(self.status),
            truncate(&self.stdout, 6000),
            truncate(&self.stderr, 4000)
        )
    }
}

/// Runs `sentinel check <args>` with the default binary.
pub fn run_check(args: &[&str], configure: impl FnOnce(&mut Command)) -> Result<CheckOutput> {
    run_sentinel(&sentinel_bin()?, "check", args, configure)
}

/// Runs `bin <subcommand> <args>` to completion (2 minutes at most);
/// `configure` may set env, uid/gid, etc.
pub fn run_sentinel(
    bin: &Path,
    subcommand: &str,
    args: &[&str],
    configure: impl FnOnce(&mut Command),
) -> Result<CheckOutput> {
    run_sentinel_timeout(bin, subcommand, args, Duration::from_secs(120), configure)
}

/// As [`run_sentinel`], killing the command (and failing) after `timeout`.
pub fn run_sentinel_timeout(
    bin: &Path,
    subcommand: &str,
    args: &[&str],
    timeout: Duration,
    configure: impl FnOnce(&mut Command),
) -> Result<CheckOutput> {
    let command = format!("{} {subcommand} {}", bin.display(), args.join(" "));
    let mut cmd = Command::new(bin);
    cmd.arg(subcommand).args(args);
    configure(&mut cmd);
    run_command(cmd, command, timeout)
}

/// Runs `cmd` with stdin closed and its output captured, killing it (and
/// failing, with what it printed) after `timeout`. `command` names it in
/// messages.
pub fn run_command(mut cmd: Command, command: String, timeout: Duration) -> Result<CheckOutput> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {command}"))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_timeout(&mut child, timeout);
    // A killed command's pipes close too, so its output is kept either way.
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let status = status.map_err(|e| {
        anyhow!(
            "running {command}: {e:#}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            truncate(&stdout, 4000),
            truncate(&stderr, 4000)
        )
    })?;
    Ok(CheckOutput {
        command,
        status,
        stdout,
        stderr,
    })
}
