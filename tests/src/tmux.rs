//! A private tmux server per test, for driving a terminal UI the way a
//! person would: send keys, read the screen with `capture-pane`.
//!
//! Every [`Tmux`] starts its own server on its own socket
//! (`tmux -L <unique name>`) with no configuration file (`-f /dev/null`), so
//! tests never see each other's sessions nor the user's, and dropping it
//! kills exactly that server and what runs in its pane. The status line is
//! off: the pane is the whole `width` x `height` terminal.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::{truncate, unique_name};

/// The session every server holds.
const SESSION: &str = "main";

/// How often [`Tmux::wait_screen`] looks at the screen.
const POLL: Duration = Duration::from_millis(100);

/// A tmux server with one session and one pane, killed on drop.
pub struct Tmux {
    bin: PathBuf,
    socket: String,
    /// The socket file, which tmux leaves behind when its server exits.
    socket_path: Option<PathBuf>,
    width: u16,
    height: u16,
}

/// `tmux` in PATH, else `None` (the caller skips: `cargo xtask bootstrap`
/// installs it).
pub fn find_tmux() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("tmux"))
        .find(|p| p.is_file())
}

impl Tmux {
    /// Starts a server `sentinel-test-<topic>-<pid>-<n>` whose only pane,
    /// `width` x `height`, runs `command` (argv, run without a shell by
    /// tmux). Fails when the pane does not have that size.
    pub fn start(
        bin: &Path,
        topic: &str,
        width: u16,
        height: u16,
        command: &[&str],
    ) -> Result<Self> {
        let mut tmux = Self {
            bin: bin.to_path_buf(),
            socket: unique_name(topic),
            socket_path: None,
            width,
            height,
        };
        let (w, h) = (width.to_string(), height.to_string());
        let mut args = vec!["new-session", "-d", "-s", SESSION, "-x", &w, "-y", &h, "--"];
        args.extend_from_slice(command);
        // One invocation, so the status line is off before anything draws;
        // turning it off gives its row back to the pane.
        args.extend_from_slice(&[";", "set-option", "-g", "status", "off"]);
        // From here on, drop kills the server whatever fails next.
        tmux.run(&args)?;
        tmux.socket_path = Some(PathBuf::from(tmux.display("#{socket_path}")?));
        let size = tmux.display("#{pane_width}x#{pane_height}")?;
        if size != format!("{width}x{height}") {
            bail!(
                "tmux server {}: asked for a {width}x{height} pane, got {size}",
                tmux.socket
            );
        }
        Ok(tmux)
    }

    /// A pane running `sh` (with a `$ ` prompt), to type commands into and
    /// to check afterwards that the terminal still works.
    pub fn shell(bin: &Path, topic: &str, width: u16, height: u16) -> Result<Self> {
        let tmux = Self::start(bin, topic, width, height, &["env", "PS1=$ ", "sh"])?;
        tmux.wait_screen("the shell's prompt", Duration::from_secs(10), |s| {
            s.lines().any(|l| l.starts_with('$'))
        })?;
        Ok(tmux)
    }

    /// Resizes the terminal, as a user dragging the window would: the
    /// program in the pane gets SIGWINCH.
    pub fn resize(&mut self, width: u16, height: u16) -> Result<()> {
        let (w, h) = (width.to_string(), height.to_string());
        self.run(&["resize-window", "-t", SESSION, "-x", &w, "-y", &h])?;
        let size = self.display("#{pane_width}x#{pane_height}")?;
        if size != format!("{width}x{height}") {
            bail!(
                "tmux server {}: resized to {width}x{height}, the pane is {size}",
                self.socket
            );
        }
        (self.width, self.height) = (width, height);
        Ok(())
    }

    /// The `-L` socket name, for messages and for rerunning by hand
    /// (`tmux -L <name> attach`).
    pub fn socket(&self) -> &str {
        &self.socket
    }

    pub fn size(&self) -> (u16, u16) {
        (self.width, self.height)
    }

    /// Runs `tmux -L <socket> <args>` and returns its stdout; fails with
    /// its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "`tmux -L {} {}` {}: {}",
                self.socket,
                args.join(" "),
                crate::workload::describe_status(out.status),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn output(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.bin)
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.bin.display()))
    }

    /// Sends key names (`Enter`, `Escape`, `F1`, `C-c`, or single
    /// characters) to the pane, one after the other.
    pub fn keys(&self, keys: &[&str]) -> Result<()> {
        let mut args = vec!["send-keys", "-t", SESSION];
        args.extend_from_slice(keys);
        self.run(&args).map(drop)
    }

    /// Types `text` as it is (no key names: `\`, `<`, `M` are themselves).
    pub fn type_text(&self, text: &str) -> Result<()> {
        self.run(&["send-keys", "-t", SESSION, "-l", "--", text])
            .map(drop)
    }

    /// Types `line` and presses Enter.
    pub fn type_line(&self, line: &str) -> Result<()> {
        self.type_text(line)?;
        self.keys(&["Enter"])
    }

    /// The visible screen as plain text, one line per row (trailing blanks
    /// trimmed by tmux).
    pub fn capture(&self) -> Result<String> {
        self.run(&["capture-pane", "-p", "-t", SESSION])
    }

    /// The visible screen with its SGR attributes (colours, reverse video)
    /// as escape sequences, for what plain text cannot show.
    pub fn capture_styled(&self) -> Result<String> {
        self.run(&["capture-pane", "-p", "-e", "-t", SESSION])
    }

    /// A tmux format expanded for the pane (`#{pane_pid}`, ...).
    pub fn display(&self, format: &str) -> Result<String> {
        Ok(self
            .run(&["display-message", "-p", "-t", SESSION, format])?
            .trim_end_matches('\n')
            .to_string())
    }

    /// True while the program in the pane uses the alternate screen.
    pub fn alternate_on(&self) -> Result<bool> {
        Ok(self.display("#{alternate_on}")? == "1")
    }

    /// True while the cursor is shown.
    pub fn cursor_visible(&self) -> Result<bool> {
        Ok(self.display("#{cursor_flag}")? == "1")
    }

    /// The pid of the pane's process (what `command` started).
    pub fn pane_pid(&self) -> Result<i32> {
        let s = self.display("#{pane_pid}")?;
        s.parse()
            .with_context(|| format!("tmux pane_pid {s:?} is not a pid"))
    }

    /// Polls the screen until `pred` holds and returns it; fails after
    /// `timeout` with the last screen in the message.
    pub fn wait_screen(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.capture()?;
            if pred(&screen) {
                return Ok(screen);
            }
            if Instant::now() >= deadline {
                return Err(self.failure(
                    &format!("timed out after {timeout:?} waiting for {what}"),
                    &screen,
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// An error naming the server, with `screen` framed so its blank lines
    /// and edges show.
    pub fn failure(&self, what: &str, screen: &str) -> anyhow::Error {
        anyhow!(
            "{what}\n--- screen of tmux -L {} ({}x{}) ---\n{}\n--- end of screen ---",
            self.socket,
            self.width,
            self.height,
            frame(screen)
        )
    }

    /// As [`Tmux::failure`], capturing the screen now.
    pub fn failure_now(&self, what: &str) -> anyhow::Error {
        match self.capture() {
            Ok(screen) => self.failure(what, &screen),
            Err(e) => anyhow!("{what}\n(could not capture the screen: {e:#})"),
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Closes the pane's terminal: what runs in it gets SIGHUP. A server
        // whose pane already exited has gone by itself.
        match self.output(&["kill-server"]) {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                if !err.contains("no server running") && !err.contains("error connecting") {
                    eprintln!(
                        "warning: tmux -L {} kill-server: {}",
                        self.socket,
                        err.trim()
                    );
                }
            }
            Err(e) => eprintln!("warning: {e:#}"),
        }
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `screen` with each line between `|`, trailing blank lines dropped.
pub fn frame(screen: &str) -> String {
    let lines: Vec<&str> = screen.lines().collect();
    let end = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1);
    let framed: Vec<String> = lines[..end].iter().map(|l| format!("|{l}|")).collect();
    truncate(&framed.join("\n"), 16000)
}
