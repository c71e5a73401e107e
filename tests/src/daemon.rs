//! Running `sentinel daemon --log-format json` and reading its event stream.
//!
//! stdout is the protocol: every line must be one event object
//! ([`crate::event::parse_line`]), and an event's `incident` must be its own
//! id or the id of an event seen earlier in the same run. Anything else is
//! recorded as a protocol violation, which makes [`Daemon::wait_for`] and
//! [`Daemon::stop`] fail with the offending line. stderr is diagnostics: kept
//! (bounded) for failure messages, and scanned for the ready marker.
//!
//! The daemon watches the whole machine, so tests pick their own events out
//! by pid or cgroup ([`Event::pid_is`], [`Event::about_cgroup`]).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::event::{Event, Kind, State, parse_line};
use crate::sentinel::{CheckOutput, READY_TIMEOUT, run_sentinel_timeout, sentinel_bin};
use crate::workload::describe_status;
use crate::{ScratchDir, truncate};

/// What the daemon prints on stderr once every probe is attached.
pub const DAEMON_READY_MARKER: &str = "sentinel daemon: watching";

/// How long the daemon may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a daemon that is expected to exit (bad arguments or config) may
/// run before the harness kills it and fails.
pub const EXPECT_EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// stderr kept for failure messages: the first `HEAD` bytes, and the last
/// `TAIL` bytes of whole lines.
const STDERR_HEAD: usize = 8 * 1024;
const STDERR_TAIL: usize = 32 * 1024;

/// Events listed in a failure message, most recent last.
const EVENTS_SHOWN: usize = 80;

/// A running `sentinel daemon`, past its ready marker. Killed on drop.
pub struct Daemon {
    command: String,
    child: Mutex<Child>,
    exited: Mutex<Option<ExitStatus>>,
    shared: Arc<Shared>,
    started: Instant,
    config_path: PathBuf,
    stdout_thread: Option<JoinHandle<()>>,
    // Removed on drop, after the child is gone.
    _dir: ScratchDir,
}

#[derive(Default)]
struct Shared {
    state: Mutex<Stream>,
    changed: Condvar,
}

#[derive(Default)]
struct Stream {
    events: Vec<Event>,
    /// id → kind of every event seen, for the incident check.
    ids: HashMap<String, Kind>,
    /// Protocol violations, each with the offending line.
    violations: Vec<String>,
    stdout_closed: bool,
    stderr: BoundedLog,
}

#[derive(Default)]
struct BoundedLog {
    head: String,
    tail: VecDeque<String>,
    tail_bytes: usize,
    dropped_lines: usize,
}

impl BoundedLog {
    fn push(&mut self, line: &str) {
        if self.head.len() + line.len() < STDERR_HEAD && self.tail.is_empty() {
            self.head.push_str(line);
            self.head.push('\n');
            return;
        }
        let line = truncate(line, 2000);
        self.tail_bytes += line.len() + 1;
        self.tail.push_back(line);
        while self.tail_bytes > STDERR_TAIL {
            let Some(old) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= old.len() + 1;
            self.dropped_lines += 1;
        }
    }

    fn render(&self) -> String {
        let mut s = self.head.clone();
        if self.dropped_lines > 0 {
            s.push_str(&format!(
                "[... {} lines left out ...]\n",
                self.dropped_lines
            ));
        }
        for line in &self.tail {
            s.push_str(line);
            s.push('\n');
        }
        s
    }
}

/// Tests run side by side, so each daemon gets its own state directory
/// and API socket under its scratch dir, and no metrics endpoint, unless the
/// test's config sets them.
fn isolated(config_toml: &str, dir: &Path) -> Result<String> {
    let mut root: toml::Table = config_toml
        .parse()
        .with_context(|| format!("the test's config is not TOML:\n{config_toml}"))?;
    let mut set = |section: &str, key: &str, value: toml::Value| -> Result<()> {
        let t = root
            .entry(section)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .with_context(|| format!("[{section}] in the test's config is not a table"))?;
        t.entry(key).or_insert(value);
        Ok(())
    };
    let path = |name: &str| toml::Value::String(dir.join(name).to_string_lossy().into_owned());
    set("daemon", "state_dir", path("state"))?;
    set("api", "socket", path("api.sock"))?;
    set("metrics", "listen", toml::Value::String(String::new()))?;
    Ok(root.to_string())
}

impl Daemon {
    /// Writes `config_toml` to a scratch file and starts
    /// `sentinel daemon --config <file> --log-format json`; returns once the
    /// ready marker is on stderr.
    pub fn start(config_toml: &str) -> Result<Self> {
        Self::start_env(config_toml, &[])
    }

    /// As [`Daemon::start`], with extra environment for sentinel (its
    /// test-only switches, `SENTINEL_LOG`).
    pub fn start_env(config_toml: &str, env: &[(&str, &str)]) -> Result<Self> {
        Self::start_with_prefix(config_toml, env, &[])
    }

    /// As [`Daemon::start_env`], run through `prefix`: the command is
    /// `prefix... sentinel daemon --config ...` (for example `setpriv` with
    /// a capability set). The prefix must exec sentinel in place, so that
    /// [`Daemon::pid`] and the signals are the daemon's.
    pub fn start_with_prefix(
        config_toml: &str,
        env: &[(&str, &str)],
        prefix: &[&str],
    ) -> Result<Self> {
        let bin = sentinel_bin()?;
        let dir = ScratchDir::new_in(&std::env::temp_dir(), "daemon")?;
        let config_path = dir.path().join("sentinel.toml");
        let config_toml = isolated(config_toml, dir.path())?;
        std::fs::write(&config_path, config_toml)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let args: Vec<String> = vec![
            "daemon".into(),
            "--config".into(),
            config_path.to_string_lossy().into_owned(),
            "--log-format".into(),
            "json".into(),
        ];
        let env_words: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let prefix_words: Vec<String> = prefix.iter().map(|w| format!("{w} ")).collect();
        let command = format!(
            "{}{}{} {}",
            env_words.concat(),
            prefix_words.concat(),
            bin.display(),
            args.join(" ")
        );
        let started = Instant::now();
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = cmd
            .args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {command}"))?;

        let shared = Arc::new(Shared::default());
        let stdout = child.stdout.take().expect("stdout is piped");
        let reader = Arc::clone(&shared);
        let stdout_thread = std::thread::spawn(move || read_events(stdout, &reader));

        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::clone(&shared);
        let (ready_tx, ready_rx) = channel();
        std::thread::spawn(move || {
            let mut stderr = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match stderr.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                log.state.lock().unwrap().stderr.push(line);
                if line.contains(DAEMON_READY_MARKER) {
                    let _ = ready_tx.send(());
                }
            }
        });

        let daemon = Self {
            command,
            child: Mutex::new(child),
            exited: Mutex::new(None),
            shared,
            started,
            config_path,
            stdout_thread: Some(stdout_thread),
            _dir: dir,
        };
        let deadline = started + READY_TIMEOUT;
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => break,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = daemon.wait_exit(Duration::from_secs(10));
                    return Err(daemon.failure(&format!(
                        "stderr closed before a {DAEMON_READY_MARKER:?} line"
                    )));
                }
            }
            if daemon.try_wait()?.is_some() {
                // Let the stderr reader catch the last words.
                std::thread::sleep(Duration::from_millis(200));
                return Err(daemon.failure(&format!(
                    "exited before printing {DAEMON_READY_MARKER:?} on stderr"
                )));
            }
            if Instant::now() >= deadline {
                return Err(daemon.failure(&format!(
                    "no {DAEMON_READY_MARKER:?} line on stderr within {READY_TIMEOUT:?}"
                )));
            }
        }
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// When the daemon was spawned; event times in failure messages are
    /// relative to it.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The daemon's scratch dir: its config, and its default `state/` and
    /// `api.sock` (see [`isolated`]).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Every event so far, in arrival order.
    pub fn events(&self) -> Vec<Event> {
        self.shared.state.lock().unwrap().events.clone()
    }

    /// The stderr kept so far (head and tail).
    pub fn stderr(&self) -> String {
        self.shared.state.lock().unwrap().stderr.render()
    }

    /// Sends `sig` to the daemon, unless it has already exited.
    pub fn send_signal(&self, sig: libc::c_int) -> Result<()> {
        if self.try_wait()?.is_some() {
            bail!("cannot send signal {sig}: the daemon has already exited");
        }
        let pid = self.pid() as libc::pid_t;
        // SAFETY: plain syscall on our own, not yet reaped, child.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("kill({pid}, {sig})"));
        }
        Ok(())
    }

    /// SIGKILL, then waits for the exit and for stdout to close (so
    /// [`Daemon::events`] holds everything it printed).
    pub fn kill9(&self) -> Result<ExitStatus> {
        self.send_signal(libc::SIGKILL)?;
        let status = self.wait_exited(Duration::from_secs(10))?;
        self.wait_stdout_closed(Duration::from_secs(5))?;
        Ok(status)
    }

    /// The exit status, when the daemon has exited (does not wait).
    pub fn exit_status(&self) -> Result<Option<ExitStatus>> {
        self.try_wait()
    }

    /// Waits up to `timeout` for the daemon to exit (after a signal the test
    /// sent); fails with the daemon's stderr when it does not.
    pub fn wait_exited(&self, timeout: Duration) -> Result<ExitStatus> {
        self.wait_exit(timeout)
            .map_err(|e| self.failure(&format!("waiting for the daemon to exit: {e:#}")))
    }

    /// Waits up to `timeout` for the daemon's stdout to close.
    pub fn wait_stdout_closed(&self, timeout: Duration) -> Result<()> {
        let st = self.shared.state.lock().unwrap();
        let (st, _) = self
            .shared
            .changed
            .wait_timeout_while(st, timeout, |s| !s.stdout_closed)
            .unwrap();
        if !st.stdout_closed {
            drop(st);
            return Err(self.failure(&format!("stdout still open after {timeout:?}")));
        }
        Ok(())
    }

    /// Rewrites the daemon's config file with `config_toml`, given the same
    /// per-daemon state dir, API socket and metrics defaults as at start
    /// (for SIGHUP tests; write [`Daemon::config_path`] directly for a file
    /// that is not even TOML).
    pub fn write_config(&self, config_toml: &str) -> Result<()> {
        let text = isolated(config_toml, self.dir())?;
        std::fs::write(&self.config_path, text)
            .with_context(|| format!("writing {}", self.config_path.display()))
    }

    /// Polls the kept stderr every 50 ms until `pred` holds; returns it.
    pub fn wait_stderr(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stderr();
            if pred(&s) {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "timed out after {timeout:?} waiting for {what} on stderr"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `timeout` for an event matching `pred`, searching every
    /// event since the start (so one that arrived before the call counts;
    /// filter on [`Event::received`] for "after"). Fails at once on a
    /// protocol violation or when the daemon's stdout closes.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<Event> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state.lock().unwrap();
        loop {
            if let Some(v) = st.violations.first() {
                let v = v.clone();
                drop(st);
                return Err(self.failure(&format!(
                    "protocol violation on stdout while waiting for {what}: {v}"
                )));
            }
            if let Some(e) = st.events.iter().find(|e| pred(e)) {
                return Ok(e.clone());
            }
            if st.stdout_closed {
                drop(st);
                let _ = self.wait_exit(Duration::from_secs(2));
                return Err(self.failure(&format!(
                    "stdout closed (the daemon exited?) while waiting for {what}"
                )));
            }
            let now = Instant::now();
            if now >= deadline {
                drop(st);
                return Err(
                    self.failure(&format!("timed out after {timeout:?} waiting for {what}"))
                );
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Fails (listing them) if any event so far matches `pred`, or if the
    /// stream broke the protocol.
    pub fn ensure_no_event(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Result<()> {
        let st = self.shared.state.lock().unwrap();
        if let Some(v) = st.violations.first() {
            let v = v.clone();
            drop(st);
            return Err(self.failure(&format!("protocol violation on stdout: {v}")));
        }
        let bad: Vec<String> = st
            .events
            .iter()
            .filter(|e| pred(e))
            .map(|e| self.describe(e))
            .collect();
        drop(st);
        if !bad.is_empty() {
            return Err(self.failure(&format!(
                "expected no event {what}, got {}:\n{}",
                bad.len(),
                bad.join("\n")
            )));
        }
        Ok(())
    }

    /// SIGTERM, then waits up to [`STOP_TIMEOUT`] for exit code 0 and the
    /// end of stdout; returns every event. Fails on a protocol violation.
    pub fn stop(mut self) -> Result<Vec<Event>> {
        let pid = self.pid() as libc::pid_t;
        if self.try_wait()?.is_none() {
            // SAFETY: plain syscall on our own, not yet reaped, child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let status = self.wait_exit(STOP_TIMEOUT).map_err(|e| {
            self.failure(&format!(
                "did not exit within {STOP_TIMEOUT:?} of SIGTERM: {e:#}"
            ))
        })?;
        // The reader thread ends at EOF; stdout closes with the process
        // unless something inherited it.
        {
            let st = self.shared.state.lock().unwrap();
            let (st, _) = self
                .shared
                .changed
                .wait_timeout_while(st, Duration::from_secs(5), |s| !s.stdout_closed)
                .unwrap();
            if !st.stdout_closed {
                drop(st);
                return Err(self.failure("stdout still open 5 s after the daemon exited"));
            }
        }
        if let Some(t) = self.stdout_thread.take() {
            let _ = t.join();
        }
        let violation = self
            .shared
            .state
            .lock()
            .unwrap()
            .violations
            .first()
            .cloned();
        if let Some(v) = violation {
            return Err(self.failure(&format!("protocol violation on stdout: {v}")));
        }
        if status.code() != Some(0) {
            return Err(self.failure(&format!(
                "expected exit code 0 after SIGTERM, it {}",
                describe_status(status)
            )));
        }
        Ok(self.events())
    }

    /// An error naming the daemon, with its status, the events seen so far
    /// and its stderr.
    pub fn failure(&self, what: &str) -> anyhow::Error {
        // Give the reader threads a moment to pick up the last output.
        std::thread::sleep(Duration::from_millis(50));
        let status = match *self.exited.lock().unwrap() {
            Some(s) => describe_status(s),
            None => "still running".into(),
        };
        let st = self.shared.state.lock().unwrap();
        let mut events: Vec<String> = st
            .events
            .iter()
            .rev()
            .take(EVENTS_SHOWN)
            .map(|e| self.describe(e))
            .collect();
        events.reverse();
        let left_out = st.events.len().saturating_sub(EVENTS_SHOWN);
        let violations = if st.violations.is_empty() {
            String::new()
        } else {
            format!(
                "--- protocol violations ({}) ---\n{}\n",
                st.violations.len(),
                st.violations
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        };
        anyhow!(
            "`{}`: {what}\ndaemon status: {status}\n--- events so far ({}{}; +seconds since spawn) ---\n{}\n{violations}--- daemon stderr ---\n{}",
            self.command,
            st.events.len(),
            if left_out > 0 {
                format!(", the first {left_out} left out")
            } else {
                String::new()
            },
            if events.is_empty() {
                "(none)".to_string()
            } else {
                events.join("\n")
            },
            truncate(&st.stderr.render(), 12000)
        )
    }

    /// `+12.3s <event brief>`.
    pub fn describe(&self, e: &Event) -> String {
        format!(
            "+{:.1}s {}",
            e.received
                .saturating_duration_since(self.started)
                .as_secs_f64(),
            e.brief()
        )
    }

    fn try_wait(&self) -> Result<Option<ExitStatus>> {
        let mut exited = self.exited.lock().unwrap();
        if exited.is_none() {
            *exited = self.child.lock().unwrap().try_wait()?;
        }
        Ok(*exited)
    }

    fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited.lock().unwrap().is_none() {
            let mut child = self.child.lock().unwrap();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The stdout reader: parses, checks and stores each line, wakes waiters.
fn read_events(stdout: impl std::io::Read, shared: &Shared) {
    let mut stdout = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match stdout.read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(e) => {
                let mut st = shared.state.lock().unwrap();
                st.violations.push(format!("reading stdout: {e}"));
                break;
            }
        };
        if n == 0 {
            break;
        }
        let received = Instant::now();
        let terminated = buf.last() == Some(&b'\n');
        let raw = if terminated {
            &buf[..buf.len() - 1]
        } else {
            &buf[..]
        };
        let mut st = shared.state.lock().unwrap();
        let result = match std::str::from_utf8(raw) {
            Err(e) => Err(anyhow!("not UTF-8: {e}")),
            Ok(_) if !terminated => Err(anyhow!("last line has no terminating newline")),
            Ok(line) => parse_line(line, received).and_then(|e| check_incident(&st.ids, e)),
        };
        match result {
            Ok(event) => {
                st.ids.insert(event.id.clone(), event.kind);
                st.events.push(event);
            }
            Err(e) => {
                let line = String::from_utf8_lossy(raw);
                st.violations
                    .push(format!("{e:#}; line: {}", truncate(&line, 2000)));
            }
        }
        drop(st);
        shared.changed.notify_all();
    }
    shared.state.lock().unwrap().stdout_closed = true;
    shared.changed.notify_all();
}

/// An id is new; the incident is the event's own id (a firing event that
/// opens it) or the id of an earlier event of the same kind.
fn check_incident(ids: &HashMap<String, Kind>, e: Event) -> Result<Event> {
    if ids.contains_key(&e.id) {
        bail!("id {} was already used by an earlier event", e.id);
    }
    if e.incident == e.id {
        if e.state == State::Resolved {
            bail!("a resolved event cannot open its own incident (incident == id)");
        }
        return Ok(e);
    }
    match ids.get(&e.incident) {
        Some(kind) if *kind == e.kind => Ok(e),
        Some(kind) => bail!(
            "incident {} is a {kind} incident, but this event is {}",
            e.incident,
            e.kind
        ),
        None => bail!(
            "incident {} is neither this event's id nor the id of an earlier event",
            e.incident
        ),
    }
}

/// As [`run_daemon_expect_exit`], with extra environment and a timeout.
pub fn run_daemon_expect_exit_env(
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<CheckOutput> {
    let bin = sentinel_bin()?;
    run_sentinel_timeout(&bin, "daemon", args, timeout, |cmd| {
        cmd.envs(env.iter().copied());
    })
    .with_context(|| {
        format!(
            "`sentinel daemon {}` was expected to exit by itself",
            args.join(" ")
        )
    })
}

/// Runs `sentinel daemon <args>` expecting it to exit on its own (bad
/// arguments or config): killed and failed after [`EXPECT_EXIT_TIMEOUT`].
/// Returns the exit status and both streams.
pub fn run_daemon_expect_exit(args: &[&str]) -> Result<CheckOutput> {
    let bin = sentinel_bin()?;
    run_sentinel_timeout(&bin, "daemon", args, EXPECT_EXIT_TIMEOUT, |_| {}).with_context(|| {
        format!(
            "`sentinel daemon {}` was expected to exit by itself",
            args.join(" ")
        )
    })
}
