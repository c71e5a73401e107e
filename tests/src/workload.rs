//! Driving the `workload` binary (src/bin/workload.rs).
//!
//! Protocol: the workload sets up (allocations, open files), prints `ready`
//! (or `unsupported: <why>` when the kernel/filesystem cannot do the
//! scenario), waits for a `go` line on stdin, does the measured work, prints
//! `done [key=value ...]` and stays alive until stdin closes or it is killed.
//! `error: <why>` means the workload itself failed.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::TestCgroup;

pub struct Workload {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout_log: Arc<Mutex<Vec<String>>>,
    stderr_log: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
}

impl Workload {
    /// `workload write-rate FILE MIB_S SECONDS` in `cgroup`, spawned and
    /// ready. Not yet released: the caller sends `go` when its clock starts.
    pub fn writer(
        bin: &str,
        cgroup: &TestCgroup,
        file: &std::path::Path,
        mib_s: u64,
        seconds: u64,
    ) -> Result<Self> {
        let args = [
            "write-rate".to_string(),
            file.to_string_lossy().into_owned(),
            mib_s.to_string(),
            seconds.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut w = Workload::spawn(bin, &args, cgroup)?;
        w.expect("ready", Duration::from_secs(60))?;
        Ok(w)
    }

    /// Spawns `bin args...` already inside `cgroup` (it joins between fork
    /// and exec), with stdin/stdout/stderr piped.
    pub fn spawn(bin: &str, args: &[&str], cgroup: &TestCgroup) -> Result<Self> {
        let name = std::path::Path::new(bin)
            .file_name()
            .map_or(bin.into(), |n| n.to_string_lossy());
        let label = format!("{name} {}", args.join(" "));
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cgroup.attach_command(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {bin} {} in {}", args.join(" "), cgroup.path()))?;

        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = channel();
        let stdout_log = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&stdout_log);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_log = Arc::new(Mutex::new(String::new()));
        let log = Arc::clone(&stderr_log);
        std::thread::spawn(move || {
            let mut buf = String::new();
            let mut stderr = stderr;
            let _ = stderr.read_to_string(&mut buf);
            log.lock().unwrap().push_str(&buf);
        });
        Ok(Self {
            label,
            child,
            stdin,
            lines,
            stdout_log,
            stderr_log,
            exited: None,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for the next line starting with one of `prefixes` (other lines
    /// are skipped) and returns it. Fails on `error:`, on exit, on timeout.
    pub fn expect_any(&mut self, prefixes: &[&str], timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with("error") => {
                    return Err(self.failure(&format!("workload reported {line:?}")));
                }
                Ok(line) if prefixes.iter().any(|p| line.starts_with(p)) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.failure(&format!(
                        "timed out after {timeout:?} waiting for a line starting with {prefixes:?}"
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.wait_exit(Duration::from_secs(5));
                    return Err(self.failure(&format!(
                        "stdout closed while waiting for a line starting with {prefixes:?}"
                    )));
                }
            }
        }
    }

    pub fn expect(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        self.expect_any(&[prefix], timeout)
    }

    /// Waits for `ready`; `Ok(Err(reason))` when the workload says the
    /// scenario is unsupported here (the test should skip loudly).
    pub fn ready(&mut self) -> Result<std::result::Result<String, String>> {
        let line = self.expect_any(&["ready", "unsupported"], Duration::from_secs(60))?;
        Ok(match line.strip_prefix("unsupported") {
            Some(reason) => Err(reason.trim_start_matches(':').trim().to_string()),
            None => Ok(line),
        })
    }

    /// Tells the workload to start its measured work.
    pub fn go(&mut self) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("{}: stdin already closed", self.label))?;
        let res = stdin.write_all(b"go\n").and_then(|()| stdin.flush());
        res.map_err(|e| self.failure(&format!("sending go: {e}")))
    }

    /// The exit status if the workload has exited, without waiting.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    /// Waits up to `timeout` for the workload to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.exited = Some(status);
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} (pid {}) still running after {timeout:?}",
                    self.label,
                    self.pid()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// An error naming the workload, with everything it printed so far.
    pub fn failure(&self, what: &str) -> anyhow::Error {
        // Give the reader threads a moment to pick up the last output.
        std::thread::sleep(Duration::from_millis(50));
        let stdout = self.stdout_log.lock().unwrap().join("\n");
        let stderr = self.stderr_log.lock().unwrap().clone();
        let status = match self.exited {
            Some(s) => describe_status(s),
            None => "still running".into(),
        };
        anyhow!(
            "{} (pid {}): {what}; status: {status}\n--- workload stdout ---\n{}\n--- workload stderr ---\n{}",
            self.label,
            self.pid(),
            crate::truncate(&stdout, 4000),
            crate::truncate(&stderr, 4000)
        )
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn describe_status(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{s}"),
    }
}

/// The integer value of `key=value` in a workload line such as
/// `done tid_a=123 tid_b=124`.
pub fn field(line: &str, key: &str) -> Result<i64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .ok_or_else(|| anyhow!("no {key}= in workload line {line:?}"))?
        .parse()
        .with_context(|| format!("parsing {key}= in workload line {line:?}"))
}
