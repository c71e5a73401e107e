//! `sentinel top` end to end: the real binary in a private tmux server, next
//! to a real workload in a cgroup of its own, driven with keys and read
//! with `capture-pane`, as a person at a terminal would.
//!
//! Each workload gets a comm no other process has (`workload named`), so
//! the `\` filter finds exactly its row however busy the host is. `top`
//! runs from a shell in the pane, so that after it exits the test can type
//! into the same terminal and check that it still works (line editing,
//! echo, main screen, cursor), comparing `stty -a` before and after.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use sentinel_tests::sentinel::run_sentinel_timeout;
use sentinel_tests::tmux::{Tmux, find_tmux};
use sentinel_tests::workload::describe_status;
use sentinel_tests::{
    Daemon, MIB, ScratchDir, TestCgroup, Workload, require_root, sentinel_bin, serial, skip,
    truncate, vm_rss_bytes, workload_bin,
};

/// What the workloads hold: enough to stand out in an RSS column.
const HOLD_MIB: u64 = 48;
/// From typing the command to the title: standalone, this is loading and
/// attaching every probe.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// For a process to show up (attached: the daemon's next ticks).
const ROW_TIMEOUT: Duration = Duration::from_secs(20);
/// For the screen to answer a key.
const KEY_TIMEOUT: Duration = Duration::from_secs(5);
/// For `top` to exit after `q` or a signal.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Forces standalone mode: nothing listens there.
const NO_DAEMON: &str = "/nonexistent/x.sock";

/// A comm of at most 15 bytes that no other process has: letters around
/// the test process's pid, so it never matches a pid either.
fn unique_comm() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "tt{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A workload holding [`HOLD_MIB`] MiB under `comm`, in `cg`, past ready.
fn holder(cg: &TestCgroup, comm: &str) -> Result<Workload> {
    let mut w = Workload::spawn(
        workload_bin!(),
        &["named", comm, "hold", &HOLD_MIB.to_string()],
        cg,
    )?;
    w.expect("ready", Duration::from_secs(30))?;
    Ok(w)
}

/// tmux, or a loud skip.
macro_rules! require_tmux {
    () => {
        match find_tmux() {
            Some(t) => t,
            None => skip!("needs tmux in PATH (`cargo xtask bootstrap` installs it)"),
        }
    };
}

/// `sentinel top` typed into a shell in a private tmux pane. The shell
/// runs it as `sh -c 'echo $$ > pidfile; exec sentinel top ...'; echo
/// top-exit=$?`, so the test knows top's pid and, once it is back at the
/// prompt, its exit code. Dropping it kills that top (if it still runs)
/// and the tmux server.
struct Top {
    tmux: Tmux,
    pid: i32,
    command: String,
    stty_before: PathBuf,
    dir: ScratchDir,
}

impl Top {
    fn launch(tmux_bin: &Path, width: u16, height: u16, args: &[&str]) -> Result<Self> {
        let tmux = Tmux::shell(tmux_bin, "top", width, height)?;
        let dir = ScratchDir::new_in(&std::env::temp_dir(), "top")?;
        let stty_before = dir.path().join("stty-before");
        type_and_wait(
            &tmux,
            &format!("stty -a > {}; echo saved-$((1+1))", stty_before.display()),
            "saved-2",
        )?;
        let pidfile = dir.path().join("pid");
        let bin = sentinel_bin()?;
        let command = format!("{} top {}", bin.display(), args.join(" "));
        tmux.type_line(&format!(
            "sh -c 'echo $$ > {}; exec {command}'; echo top-exit=$?",
            pidfile.display()
        ))?;
        let pid = sentinel_tests::wait_for("top's pidfile", Duration::from_secs(10), || {
            Ok(std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok()))
        })
        .map_err(|e| tmux.failure_now(&format!("{e:#}")))?;
        Ok(Self {
            tmux,
            pid,
            command,
            stty_before,
            dir,
        })
    }

    /// `sentinel top --socket <nowhere> --interval 1s`, past its title.
    fn standalone(tmux_bin: &Path, width: u16, height: u16) -> Result<Self> {
        let top = Self::launch(
            tmux_bin,
            width,
            height,
            &["--socket", NO_DAEMON, "--interval", "1s"],
        )?;
        top.wait_title("standalone")?;
        Ok(top)
    }

    /// Waits for the title bar (line 1) to hold `sentinel top` and `mode`.
    fn wait_title(&self, mode: &str) -> Result<String> {
        self.wait(
            &format!("the title bar (line 1) to say `sentinel top` ... `{mode}`"),
            START_TIMEOUT,
            |s| {
                let title = s.lines().next().unwrap_or_default();
                title.contains("sentinel top") && title.contains(mode)
            },
        )
    }

    /// Polls the screen until `pred` holds; fails at once, with the screen,
    /// when top has exited meanwhile.
    fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<String> {
        let exited = |s: &str| exit_code(s).is_some();
        let screen = self
            .tmux
            .wait_screen(what, timeout, |s| pred(s) || exited(s))
            .map_err(|e| anyhow!("`{}`: {e:#}", self.command))?;
        if !pred(&screen) {
            return Err(self.failure(&format!("top exited while waiting for {what}"), &screen));
        }
        Ok(screen)
    }

    fn failure(&self, what: &str, screen: &str) -> anyhow::Error {
        anyhow!("`{}`: {:#}", self.command, self.tmux.failure(what, screen))
    }

    fn failure_now(&self, what: &str) -> anyhow::Error {
        anyhow!("`{}`: {:#}", self.command, self.tmux.failure_now(what))
    }

    /// `\`, `text`, Enter: keeps the rows matching `text`; waits for the
    /// row of `pid` to be the only one.
    fn filter_to(&self, text: &str, pid: i32, timeout: Duration) -> Result<(String, ProcTable)> {
        self.tmux.type_text("\\")?;
        self.wait("the `Filter:` prompt on the footer", KEY_TIMEOUT, |s| {
            s.contains("Filter:")
        })?;
        self.tmux.type_text(text)?;
        self.tmux.keys(&["Enter"])?;
        let screen = self.wait(
            &format!("the filter {text:?} to leave only the row of pid {pid}"),
            timeout,
            |s| ProcTable::parse(s).is_some_and(|t| t.row(pid).is_some() && t.rows.len() == 1),
        )?;
        let table = ProcTable::parse(&screen).expect("the predicate parsed it");
        Ok((screen, table))
    }

    /// Waits for the shell's `top-exit=N` line; returns N.
    fn wait_exit(&self) -> Result<i32> {
        let screen = self
            .tmux
            .wait_screen(
                "top to exit (the shell's `top-exit=N` line)",
                EXIT_TIMEOUT,
                |s| exit_code(s).is_some(),
            )
            .map_err(|e| anyhow!("`{}`: {e:#}", self.command))?;
        Ok(exit_code(&screen).expect("the predicate found it"))
    }

    /// The terminal after top exited: main screen, cursor shown, the same
    /// `stty -a` as before top started (so canonical mode and echo are
    /// back), and a shell that runs what is typed and shows its output.
    fn ensure_terminal_usable(&self) -> Result<()> {
        ensure!(
            !self.tmux.alternate_on()?,
            "{:#}",
            self.failure_now("top exited but left the terminal on the alternate screen")
        );
        ensure!(
            self.tmux.cursor_visible()?,
            "{:#}",
            self.failure_now("top exited but left the cursor hidden")
        );
        let after = self.dir.path().join("stty-after");
        type_and_wait(
            &self.tmux,
            &format!("stty -a > {}; echo ok-$((40+2))", after.display()),
            "ok-42",
        )
        .map_err(|e| {
            anyhow!(
                "`{}`: after top exited, a command typed into the shell did not run: the \
                 terminal is not usable (raw mode left on?): {e:#}",
                self.command
            )
        })?;
        let before = read(&self.stty_before)?;
        let after = read(&after)?;
        let flags = stty_flags(&after);
        for flag in ["icanon", "echo", "isig", "icrnl", "opost"] {
            ensure!(
                flags.iter().any(|f| f == flag),
                "`{}`: after top exited, `stty -a` shows {flag} off (-{flag}): the terminal was \
                 not restored\n--- stty -a before top ---\n{before}\n--- after ---\n{after}",
                self.command
            );
        }
        ensure!(
            without_size(&before) == without_size(&after),
            "`{}`: the terminal settings after top exited differ from before it started\n\
             --- stty -a before top ---\n{before}\n--- after ---\n{after}",
            self.command
        );
        Ok(())
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        // Only if the pid is still top's: it may have exited and been
        // reused.
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.pid)).unwrap_or_default();
        if comm.trim() == "sentinel" {
            // SAFETY: plain syscall; a stale pid yields ESRCH.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

/// Types `line` and Enter into the pane's shell and waits for a line of
/// output equal to `marker` (the typed line itself holds the unexpanded
/// form, so the marker proves the shell ran it).
fn type_and_wait(tmux: &Tmux, line: &str, marker: &str) -> Result<()> {
    tmux.type_line(line)?;
    tmux.wait_screen(
        &format!("`{marker}` from the shell"),
        Duration::from_secs(10),
        |s| s.lines().any(|l| l.trim() == marker),
    )
    .map(drop)
}

/// True when `line` is the top border of a box (where ratatui puts a
/// block's title), not a line of text that happens to hold the word.
fn is_box_title(line: &str) -> bool {
    line.contains(['┌', '╭', '┏', '╔'])
}

/// N of the shell's `top-exit=N` line, once top has exited.
fn exit_code(screen: &str) -> Option<i32> {
    screen
        .lines()
        .find_map(|l| l.trim().strip_prefix("top-exit=")?.parse().ok())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// `stty -a` without the terminal's size (`rows N; columns M;`), which a
/// resize changes and top has no business restoring.
fn without_size(stty: &str) -> String {
    stty.split_inclusive(['\n', ';'])
        .filter(|part| {
            let p = part.trim();
            !(p.starts_with("rows ") || p.starts_with("columns "))
        })
        .collect()
}

/// The words of `stty -a` (settings such as `icanon`, `-echo`).
fn stty_flags(stty: &str) -> Vec<String> {
    stty.split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The process table as the screen shows it: the header row and the rows
/// under it, cut into cells by the header's columns.
struct ProcTable {
    /// Column names with their character span on the header row.
    columns: Vec<(String, usize, usize)>,
    /// The header row itself.
    header: String,
    /// Rows under the header whose PID cell is a number, in screen order.
    rows: Vec<String>,
}

/// Header words as the spec names the process columns.
const PROC_COLUMNS: &[&str] = &[
    "PID",
    "USER",
    "COMMAND",
    "CONTAINER",
    "RSS",
    "GROW/m",
    "CPU%",
    "FLT/s",
    "BLK",
    "WAIT",
    "READ/s",
    "WRITE/s",
    "FLAGS",
];

/// A header word names `column` when it is the name plus, at most, a sort
/// arrow or other marks that are neither letters nor digits.
fn names_column(word: &str, column: &str) -> bool {
    let marks = |s: &str| s.chars().all(|c| !c.is_alphanumeric());
    word == column
        || word.strip_prefix(column).is_some_and(marks)
        || word.strip_suffix(column).is_some_and(marks)
}

/// Words of `line` with their character spans.
fn words(line: &str) -> Vec<(usize, usize, String)> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() {
            i += 1;
        }
        out.push((start, i, chars[start..i].iter().collect()));
    }
    out
}

impl ProcTable {
    /// The first line holding PID, COMMAND and RSS is the header.
    fn parse(screen: &str) -> Option<Self> {
        let lines: Vec<&str> = screen.lines().collect();
        let (at, header) = lines.iter().enumerate().find(|(_, l)| {
            let w = words(l);
            ["PID", "COMMAND", "RSS"]
                .iter()
                .all(|c| w.iter().any(|(_, _, word)| names_column(word, c)))
        })?;
        let columns = words(header)
            .into_iter()
            .filter_map(|(s, e, word)| {
                let name = PROC_COLUMNS.iter().find(|c| names_column(&word, c))?;
                Some((name.to_string(), s, e))
            })
            .collect();
        let mut table = Self {
            columns,
            header: header.to_string(),
            rows: Vec::new(),
        };
        for line in &lines[at + 1..] {
            match table.cell(line, "PID") {
                Some(pid) if pid.parse::<u32>().is_ok() => table.rows.push(line.to_string()),
                _ => break,
            }
        }
        Some(table)
    }

    /// The word of `row` under `column`'s header word (the one overlapping
    /// it most: values may be aligned left or right).
    fn cell(&self, row: &str, column: &str) -> Option<String> {
        let &(_, hs, he) = self.columns.iter().find(|(c, _, _)| c == column)?;
        words(row)
            .into_iter()
            .filter_map(|(s, e, w)| {
                let overlap = e.min(he).saturating_sub(s.max(hs));
                (overlap > 0).then_some((overlap, w))
            })
            .max_by_key(|(o, _)| *o)
            .map(|(_, w)| w)
    }

    fn row(&self, pid: i32) -> Option<&str> {
        let pid = pid.to_string();
        self.rows
            .iter()
            .find(|r| self.cell(r, "PID").as_deref() == Some(pid.as_str()))
            .map(String::as_str)
    }

    /// Column names in screen order.
    fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|(c, _, _)| c.as_str()).collect()
    }
}

/// A human size as the spec writes them (`1.2G`, `512M`, `4.0K`, `0`), in
/// bytes; None for `-` or anything else.
fn parse_size(s: &str) -> Option<f64> {
    let (num, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, 'B'),
    };
    let scale = match unit {
        'B' => 1.0,
        'K' => 1024.0,
        'M' => 1024.0 * 1024.0,
        'G' => 1024.0 * 1024.0 * 1024.0,
        'T' => 1024.0f64.powi(4),
        _ => return None,
    };
    let n: f64 = num.parse().ok()?;
    Some(n * scale)
}

/// The header row with its colours and attributes (a sort marker may be
/// only a style).
fn styled_header(tmux: &Tmux) -> Result<Option<String>> {
    let styled = tmux.capture_styled()?;
    let plain = tmux.capture()?;
    // The same row in both captures: find it in the plain one.
    let at = plain.lines().position(|l| {
        let w = words(l);
        ["PID", "COMMAND", "RSS"]
            .iter()
            .all(|c| w.iter().any(|(_, _, word)| names_column(word, c)))
    });
    Ok(at.and_then(|i| styled.lines().nth(i)).map(str::to_string))
}

/// Waits for the styled header to satisfy `pred`.
fn wait_header(top: &Top, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = std::time::Instant::now() + KEY_TIMEOUT;
    loop {
        if let Some(h) = styled_header(&top.tmux)?
            && pred(&h)
        {
            return Ok(h);
        }
        if std::time::Instant::now() >= deadline {
            return Err(top.failure_now(&format!(
                "timed out after {KEY_TIMEOUT:?} waiting for {what}; styled header now: {:?}",
                styled_header(&top.tmux)?
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// RSS of the table's rows, top to bottom; an error names a cell that is
/// not a size.
fn rss_column(table: &ProcTable) -> Result<Vec<f64>> {
    table
        .rows
        .iter()
        .map(|r| {
            let cell = table.cell(r, "RSS").unwrap_or_default();
            parse_size(&cell).ok_or_else(|| anyhow!("RSS cell {cell:?} of row {r:?} is not a size"))
        })
        .collect()
}

/// Standalone in a 160x50 pane next to a workload holding 48 MiB: the
/// title says standalone; `<` `>` move the sort column and `M` brings it
/// back to RSS, rows sorted by RSS descending; the `\` filter leaves the
/// workload's row, with its pid and an RSS close to what it holds; Enter
/// opens its detail (title `Process <pid> (<comm>)`, the RSS, Faults/s and
/// Write/s sparklines), Esc goes back; `Z` pauses (PAUSED in the title) and
/// resumes; `q` exits 0 and leaves the terminal usable.
#[test]
fn standalone_shows_the_workload_sorts_opens_detail_and_quits_cleanly() -> Result<()> {
    let _serial = serial();
    require_root!();
    let tmux_bin = require_tmux!();
    let cg = TestCgroup::new("top")?;
    let comm = unique_comm();
    let w = holder(&cg, &comm)?;
    let pid = w.pid();
    let top = Top::standalone(&tmux_bin, 160, 50)?;

    // Sorting, on the whole table.
    let original = wait_header(&top, "the process table's header row", |_| true)?;
    top.tmux.type_text(">")?;
    wait_header(&top, "`>` to change the header (sort column moved)", |h| {
        h != original
    })?;
    top.tmux.type_text("<")?;
    wait_header(&top, "`<` to bring back the original header (RSS)", |h| {
        h == original
    })?;
    top.tmux.type_text(">")?;
    wait_header(&top, "`>` to change the header again", |h| h != original)?;
    top.tmux.type_text("M")?;
    wait_header(&top, "`M` to bring back the RSS sort's header", |h| {
        h == original
    })?;
    // A capture may catch a frame half drawn: look until one is whole.
    top.wait(
        "the visible rows sorted by RSS, largest first, after `M`",
        KEY_TIMEOUT,
        |s| {
            ProcTable::parse(s)
                .and_then(|t| rss_column(&t).ok().filter(|v| v.len() >= 2))
                .is_some_and(|v| v.windows(2).all(|p| p[0] >= p[1]))
        },
    )?;

    // The filter, and the workload's row.
    let (screen, table) = top.filter_to(&comm, pid, ROW_TIMEOUT)?;
    let row = table.row(pid).expect("filter_to found it");
    let rss_cell = table.cell(row, "RSS").unwrap_or_default();
    let held = vm_rss_bytes(pid)? as f64;
    let Some(rss) = parse_size(&rss_cell) else {
        return Err(top.failure(
            &format!("the RSS cell of pid {pid} is {rss_cell:?}, not a size; row {row:?}"),
            &screen,
        ));
    };
    ensure!(
        rss >= held / 2.0 && rss <= held * 2.0,
        "{:#}",
        top.failure(
            &format!(
                "the RSS cell of pid {pid} says {rss_cell} ({:.1} MiB), /proc says VmRSS {:.1} MiB",
                rss / MIB as f64,
                held / MIB as f64
            ),
            &screen
        )
    );

    // Detail and back.
    top.tmux.keys(&["Enter"])?;
    let title = format!("Process {pid} ({comm})");
    top.wait(
        &format!("the detail view: `{title}` and the RSS, Faults/s and Write/s sparklines"),
        KEY_TIMEOUT + Duration::from_secs(5),
        |s| {
            s.contains(&title)
                && ["RSS", "Faults/s", "Write/s"]
                    .iter()
                    .all(|t| s.lines().any(|l| l.contains(t) && is_box_title(l)))
        },
    )?;
    top.tmux.keys(&["Escape"])?;
    top.wait(
        &format!("Esc to go back to the process table with pid {pid}"),
        KEY_TIMEOUT,
        |s| ProcTable::parse(s).is_some_and(|t| t.row(pid).is_some()),
    )?;

    // Pause: the title says so, and says so no more after a second Z.
    top.tmux.type_text("Z")?;
    top.wait("`Z`: PAUSED in the title bar", KEY_TIMEOUT, |s| {
        s.lines().next().is_some_and(|l| l.contains("PAUSED"))
    })?;
    top.tmux.type_text("Z")?;
    top.wait(
        "a second `Z`: PAUSED gone from the title bar",
        KEY_TIMEOUT,
        |s| s.lines().next().is_some_and(|l| !l.contains("PAUSED")),
    )?;

    top.tmux.type_text("q")?;
    let code = top.wait_exit()?;
    ensure!(
        code == 0,
        "{:#}",
        top.failure_now(&format!("`q`: top exited with code {code}, expected 0"))
    );
    top.ensure_terminal_usable()?;
    drop(w);
    Ok(())
}

/// Attached to an isolated daemon (its own API socket): the title says
/// attached, the workload's row appears; `c` shows the Containers view,
/// where the test cgroup can be found by search; `z` zooms into it and
/// shows the workload's pid; `e` shows the Events view; `q` exits 0.
#[test]
fn attached_shows_the_workload_its_container_and_events() -> Result<()> {
    let _serial = serial();
    require_root!();
    let tmux_bin = require_tmux!();
    let cg = TestCgroup::new("top")?;
    let comm = unique_comm();
    let w = holder(&cg, &comm)?;
    let pid = w.pid();
    let daemon = Daemon::start("")?;
    let socket = daemon.dir().join("api.sock");
    let socket = socket.to_string_lossy();
    let top = Top::launch(
        &tmux_bin,
        160,
        50,
        &["--socket", &socket, "--interval", "1s"],
    )?;
    top.wait_title("attached").map_err(|e| {
        anyhow!(
            "{e:#}\n--- daemon stderr ---\n{}",
            truncate(&daemon.stderr(), 4000)
        )
    })?;

    top.filter_to(&comm, pid, ROW_TIMEOUT)?;
    // Clear the filter: it would apply to the containers too.
    top.tmux.type_text("\\")?;
    top.wait("the `Filter:` prompt", KEY_TIMEOUT, |s| {
        s.contains("Filter:")
    })?;
    top.tmux.keys(&["Escape"])?;
    top.wait(
        "Esc to clear the filter (more rows than ours)",
        KEY_TIMEOUT,
        |s| ProcTable::parse(s).is_some_and(|t| t.rows.len() > 1),
    )?;

    top.tmux.type_text("c")?;
    top.wait(
        "`c`: the Containers view (header NAME PROCS RSS)",
        KEY_TIMEOUT,
        |s| {
            s.contains("Containers")
                && s.lines().any(|l| {
                    let w = words(l);
                    ["NAME", "PROCS", "RSS"]
                        .iter()
                        .all(|c| w.iter().any(|(_, _, word)| names_column(word, c)))
                })
        },
    )?;
    top.tmux.type_text("/")?;
    top.wait("the `Search:` prompt", KEY_TIMEOUT, |s| {
        s.contains("Search:")
    })?;
    top.tmux.type_text(cg.name())?;
    top.tmux.keys(&["Enter"])?;
    // The name on a line of its own, not only in the prompt.
    top.wait(
        &format!("the test cgroup {} in the Containers view", cg.path()),
        ROW_TIMEOUT,
        |s| {
            s.lines()
                .any(|l| l.contains(cg.name()) && !l.contains("Search:"))
        },
    )?;
    top.tmux.type_text("z")?;
    top.wait(
        &format!(
            "`z`: the processes of {} (title `zoom:`) with pid {pid}",
            cg.path()
        ),
        KEY_TIMEOUT,
        |s| s.contains("zoom:") && ProcTable::parse(s).is_some_and(|t| t.row(pid).is_some()),
    )?;
    top.tmux.keys(&["Escape"])?;

    top.tmux.type_text("e")?;
    top.wait(
        "`e`: the Events view (header TIME SEV KIND STATE SUBJECT SUMMARY)",
        KEY_TIMEOUT,
        |s| {
            s.contains("Events")
                && s.lines().any(|l| {
                    let w: Vec<String> = words(l).into_iter().map(|(_, _, w)| w).collect();
                    ["TIME", "SEV", "KIND", "STATE", "SUBJECT", "SUMMARY"]
                        .iter()
                        .all(|c| w.iter().any(|word| names_column(word, c)))
                })
        },
    )?;

    top.tmux.type_text("q")?;
    let code = top.wait_exit()?;
    ensure!(
        code == 0,
        "{:#}",
        top.failure_now(&format!("`q`: top exited with code {code}, expected 0"))
    );
    top.ensure_terminal_usable()?;
    drop(top);
    daemon.stop()?;
    drop(w);
    Ok(())
}

/// `k` on the workload's row asks `Send SIGTERM to <pid> (<comm>)?`; `y`
/// sends it and the workload dies of SIGTERM.
#[test]
fn kill_from_top_terminates_the_selected_process() -> Result<()> {
    let _serial = serial();
    require_root!();
    let tmux_bin = require_tmux!();
    let cg = TestCgroup::new("top")?;
    let comm = unique_comm();
    let mut w = holder(&cg, &comm)?;
    let pid = w.pid();
    let top = Top::standalone(&tmux_bin, 160, 50)?;
    top.filter_to(&comm, pid, ROW_TIMEOUT)?;

    top.tmux.type_text("k")?;
    let prompt = format!("Send SIGTERM to {pid}");
    let screen = top.wait(
        &format!("`k`: the confirmation `{prompt} ({comm})?`"),
        KEY_TIMEOUT,
        |s| s.contains(&prompt),
    )?;
    ensure!(
        screen
            .lines()
            .any(|l| l.contains(&prompt) && l.contains(&comm)),
        "{:#}",
        top.failure(
            &format!("the confirmation names pid {pid} but not its command {comm}"),
            &screen
        )
    );
    ensure!(
        w.exited()?.is_none(),
        "the workload (pid {pid}) died before the kill was confirmed"
    );
    top.tmux.type_text("y")?;
    let status = w
        .wait_exit(Duration::from_secs(10))
        .map_err(|e| top.failure_now(&format!("`y` on the kill confirmation: {e:#}")))?;
    ensure!(
        status.signal() == Some(libc::SIGTERM),
        "{:#}",
        top.failure_now(&format!(
            "expected the workload (pid {pid}) to die of SIGTERM, it {}",
            describe_status(status)
        ))
    );

    top.tmux.type_text("q")?;
    let code = top.wait_exit()?;
    ensure!(
        code == 0,
        "{:#}",
        top.failure_now(&format!("`q`: top exited with code {code}, expected 0"))
    );
    Ok(())
}

/// SIGTERM and SIGHUP to a running top: it exits by itself (0, or 128 +
/// the signal) and leaves the terminal as it found it.
#[test]
fn signals_restore_the_terminal() -> Result<()> {
    let _serial = serial();
    require_root!();
    let tmux_bin = require_tmux!();
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGHUP, "SIGHUP")] {
        let top = Top::standalone(&tmux_bin, 120, 40)?;
        top.wait("the process table", KEY_TIMEOUT, |s| {
            ProcTable::parse(s).is_some()
        })?;
        // SAFETY: plain syscall on the pid top wrote itself, still running.
        if unsafe { libc::kill(top.pid, sig) } != 0 {
            bail!(
                "kill({}, {name}): {}",
                top.pid,
                std::io::Error::last_os_error()
            );
        }
        let code = top
            .wait_exit()
            .map_err(|e| anyhow!("after {name}: {e:#}"))?;
        ensure!(
            code == 0 || code == 128 + sig,
            "{:#}",
            top.failure_now(&format!(
                "after {name} top exited with code {code}, expected 0 or {}",
                128 + sig
            ))
        );
        top.ensure_terminal_usable()
            .map_err(|e| anyhow!("after {name}: {e:#}"))?;
    }
    Ok(())
}

/// The terminal itself goes away (an SSH session drops; here the tmux
/// server is killed, closing the pane's terminal): top must exit, not keep
/// polling a dead terminal. It once spun a whole core doing that.
#[test]
fn a_lost_terminal_ends_top() -> Result<()> {
    let _serial = serial();
    require_root!();
    let tmux_bin = require_tmux!();
    let top = Top::standalone(&tmux_bin, 120, 40)?;
    top.wait("the process table", KEY_TIMEOUT, |s| {
        ProcTable::parse(s).is_some()
    })?;
    top.tmux.run(&["kill-server"])?;
    let deadline = std::time::Instant::now() + EXIT_TIMEOUT;
    loop {
        // Reparented to init once its shell dies, so not ours to wait for:
        // gone (or a zombie about to be reaped) is what counts.
        let state = std::fs::read_to_string(format!("/proc/{}/stat", top.pid))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next().map(str::to_string))
            });
        match state.as_deref() {
            None | Some("Z") | Some("X") => return Ok(()),
            Some(st) if std::time::Instant::now() > deadline => {
                // Don't leave it behind.
                // SAFETY: plain syscall on a pid we started.
                unsafe { libc::kill(top.pid, libc::SIGKILL) };
                bail!(
                    "top (pid {}) still runs (state {st}) {}s after its terminal went away",
                    top.pid,
                    EXIT_TIMEOUT.as_secs()
                );
            }
            Some(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// At 80x24 the process table keeps PID, COMMAND, RSS, GROW/m and FLAGS,
/// in that order, and the workload's row still shows its pid and RSS;
/// resized to 132x40, top redraws to the new size.
#[test]
fn usable_at_80x24() -> Result<()> {
    let _serial = serial();
    require_root!();
    let tmux_bin = require_tmux!();
    let cg = TestCgroup::new("top")?;
    let comm = unique_comm();
    let w = holder(&cg, &comm)?;
    let pid = w.pid();
    let mut top = Top::standalone(&tmux_bin, 80, 24)?;
    let must = ["PID", "COMMAND", "RSS", "GROW/m", "FLAGS"];
    let screen = top.wait("the process table's header row", KEY_TIMEOUT, |s| {
        ProcTable::parse(s).is_some()
    })?;
    let table = ProcTable::parse(&screen).expect("the predicate parsed it");
    let names = table.names();
    let order: Vec<&str> = names.iter().copied().filter(|n| must.contains(n)).collect();
    ensure!(
        order == must,
        "{:#}",
        top.failure(
            &format!(
                "at 80x24 the header row {:?} has columns {names:?}; expected {must:?} among them, in that order",
                table.header
            ),
            &screen
        )
    );
    let (screen, table) = top.filter_to(&comm, pid, ROW_TIMEOUT)?;
    let row = table.row(pid).expect("filter_to found it");
    let rss = table.cell(row, "RSS").unwrap_or_default();
    ensure!(
        parse_size(&rss).is_some_and(|b| b > 0.0),
        "{:#}",
        top.failure(
            &format!("at 80x24 the RSS cell of pid {pid} is {rss:?}, not a size"),
            &screen
        )
    );

    // Bigger: the table follows, the footer moves to the new last row.
    top.tmux.resize(132, 40)?;
    top.wait(
        "a redraw at 132x40 (the footer on row 40, the table with CONTAINER)",
        KEY_TIMEOUT,
        |s| {
            let footer = s.lines().nth(39).unwrap_or_default();
            footer.contains("q Quit")
                && ProcTable::parse(s).is_some_and(|t| t.names().contains(&"CONTAINER"))
        },
    )?;
    top.tmux.type_text("q")?;
    let code = top.wait_exit()?;
    ensure!(
        code == 0,
        "{:#}",
        top.failure_now(&format!("`q`: exit code {code}"))
    );
    top.ensure_terminal_usable()?;
    Ok(())
}

/// `--once --json` prints one frame (schema 1, standalone) listing the
/// workload with its RSS and the test cgroup; `--once` prints a plain
/// screen (the process header, no escape sequences, at most 160x50 when
/// stdout is not a terminal); `--json` without `--once` is a usage error.
#[test]
fn once_prints_json_and_plain_text() -> Result<()> {
    let _serial = serial();
    require_root!();
    let bin = sentinel_bin()?;
    let cg = TestCgroup::new("top")?;
    let comm = unique_comm();
    let w = holder(&cg, &comm)?;
    let pid = w.pid();
    let standalone = ["--socket", NO_DAEMON, "--interval", "1s"];
    let timeout = Duration::from_secs(60);

    let mut args = vec!["--once", "--json"];
    args.extend(standalone);
    let out = run_sentinel_timeout(&bin, "top", &args, timeout, |_| {})?;
    ensure!(
        out.code() == Some(0),
        "`{}`: {}",
        out.command,
        out.describe()
    );
    ensure!(
        out.stdout.ends_with('\n') && out.stdout.trim_end().lines().count() == 1,
        "`{}`: expected one JSON object on one line; {}",
        out.command,
        out.describe()
    );
    let frame: serde_json::Value = serde_json::from_str(&out.stdout).map_err(|e| {
        anyhow!(
            "`{}`: stdout is not JSON ({e}); {}",
            out.command,
            out.describe()
        )
    })?;
    let brief = || truncate(&out.stdout, 3000);
    ensure!(
        frame["schema"] == 1,
        "`{}`: expected \"schema\": 1, got {}; {}",
        out.command,
        frame["schema"],
        brief()
    );
    ensure!(
        frame["mode"]["attached"] == false,
        "`{}`: expected mode.attached false (standalone), got {}",
        out.command,
        frame["mode"]
    );
    let procs = frame["procs"]
        .as_array()
        .ok_or_else(|| anyhow!("`{}`: no procs array; {}", out.command, brief()))?;
    let row = procs.iter().find(|p| p["pid"] == pid).ok_or_else(|| {
        anyhow!(
            "`{}`: no procs entry for the workload (pid {pid}) among {} processes",
            out.command,
            procs.len()
        )
    })?;
    let rss = row["rss"].as_u64().unwrap_or(0);
    ensure!(
        rss >= HOLD_MIB * MIB / 2 && row["comm"] == comm.as_str(),
        "`{}`: expected pid {pid} with comm {comm:?} and rss of about {HOLD_MIB} MiB, got {}",
        out.command,
        serde_json::to_string(row)?
    );
    let containers = frame["containers"]
        .as_array()
        .ok_or_else(|| anyhow!("`{}`: no containers array; {}", out.command, brief()))?;
    ensure!(
        containers.iter().any(|c| c["path"] == cg.path().as_str()),
        "`{}`: no containers entry with path {:?}; paths: {:?}",
        out.command,
        cg.path(),
        containers
            .iter()
            .map(|c| c["path"].as_str().unwrap_or("?"))
            .collect::<Vec<_>>()
    );

    let mut args = vec!["--once"];
    args.extend(standalone);
    let out = run_sentinel_timeout(&bin, "top", &args, timeout, |_| {})?;
    ensure!(
        out.code() == Some(0),
        "`{}`: {}",
        out.command,
        out.describe()
    );
    ensure!(
        !out.stdout.contains('\x1b'),
        "`{}`: plain text must hold no escape sequences; {}",
        out.command,
        out.describe()
    );
    ensure!(
        out.stdout
            .lines()
            .any(|l| l.contains("PID") && l.contains("COMMAND")),
        "`{}`: no PID ... COMMAND header line; {}",
        out.command,
        out.describe()
    );
    ensure!(
        out.stdout
            .lines()
            .next()
            .is_some_and(|l| l.contains("standalone")),
        "`{}`: the first line (title) does not say standalone; {}",
        out.command,
        out.describe()
    );
    let widest = out
        .stdout
        .lines()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    let lines = out.stdout.lines().count();
    ensure!(
        widest <= 160 && lines <= 50,
        "`{}`: stdout is not a terminal, so the screen should be 160x50 at most; got {lines} \
         lines, the widest {widest} characters; {}",
        out.command,
        out.describe()
    );

    let mut args = vec!["--json"];
    args.extend(standalone);
    let out = run_sentinel_timeout(&bin, "top", &args, Duration::from_secs(20), |_| {})?;
    ensure!(
        out.code() == Some(2),
        "`{}`: --json without --once must be a usage error (exit 2); {}",
        out.command,
        out.describe()
    );
    drop(w);
    Ok(())
}

/// The screen parsing itself, on a made-up screen (no root, no tmux).
#[test]
fn screen_parsing() {
    let screen = "\
 sentinel top  host  standalone: this process runs the probes
 Mem 1.2G/23.5G
  PID USER     COMMAND         CONTAINER     RSS\u{25bc} GROW/m  CPU% FLAGS
 4242 root     tt1x0           /sentinel-t  48.1M     -   0.0
   17 root     systemd-journal -             4.0K  1.5M   2.1 memory_bloat
 F1 Help  p Procs  q Quit";
    let t = ProcTable::parse(screen).expect("a header row");
    assert_eq!(
        t.names(),
        [
            "PID",
            "USER",
            "COMMAND",
            "CONTAINER",
            "RSS",
            "GROW/m",
            "CPU%",
            "FLAGS"
        ]
    );
    assert_eq!(t.rows.len(), 2);
    let row = t.row(4242).expect("row of 4242");
    assert_eq!(t.cell(row, "RSS").as_deref(), Some("48.1M"));
    assert_eq!(t.cell(row, "GROW/m").as_deref(), Some("-"));
    assert_eq!(t.cell(row, "FLAGS"), None);
    assert_eq!(
        t.cell(t.row(17).unwrap(), "FLAGS").as_deref(),
        Some("memory_bloat")
    );
    assert_eq!(rss_column(&t).unwrap(), [48.1 * MIB as f64, 4096.0]);
    assert_eq!(parse_size("1.5G"), Some(1.5 * 1024.0 * MIB as f64));
    assert_eq!(parse_size("0"), Some(0.0));
    assert_eq!(parse_size("-"), None);
    assert!(names_column("\u{25b2}RSS", "RSS") && !names_column("RSSX", "RSS"));
    assert_eq!(
        exit_code("$ x; echo top-exit=$?\ntop-exit=143\n$"),
        Some(143)
    );
    assert_eq!(exit_code("$ x; echo top-exit=$?"), None);
    assert_eq!(stty_flags("isig -icanon; echo")[1], "-icanon");
    assert_eq!(
        without_size("speed 38400 baud; rows 24; columns 80; line = 0;\nisig"),
        "speed 38400 baud; line = 0;\nisig"
    );
}

/// `sentinel top --at`: a daemon records a frame a second while a workload
/// holds memory in its cgroup; then the workload ends. `--at` the first
/// frame that lists it, `--once --json` prints that recorded frame, marked
/// as a replay, with the workload's pid, which the live system no longer
/// has. In tmux the title says REPLAY with the frame's time, the `\`
/// filter finds the workload's row, `→` moves to a later frame and `←`
/// back, and `q` exits 0. A time before the recording, and a directory
/// with no store, are errors (exit 1) that say what is there.
#[test]
fn at_replays_what_the_recorder_kept() -> Result<()> {
    let _serial = serial();
    require_root!();
    let bin = sentinel_bin()?;
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    let cg = TestCgroup::new("top")?;
    let comm = unique_comm();
    // Every process in every frame: the test is about replay, not about
    // which processes the recorder keeps.
    let daemon = Daemon::start("[recorder]\ninterval = \"1s\"\ntop_processes = 1000\n")?;
    let store = daemon.dir().join("state").join("recorder");
    let store_s = store.to_string_lossy().into_owned();
    let w = holder(&cg, &comm)?;
    let pid = w.pid();
    let replay_json = |at: &str| {
        run_sentinel_timeout(
            &bin,
            "top",
            &["--at", at, "--store", &store_s, "--once", "--json"],
            Duration::from_secs(30),
            |_| {},
        )
    };
    let has_workload = |frame: &serde_json::Value| {
        frame["procs"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["pid"] == pid && p["comm"] == comm.as_str())
        })
    };
    // The newest frame, read back while the daemon writes, until it lists
    // the workload.
    let seen = sentinel_tests::wait_for(
        &format!("the workload (pid {pid}) in the newest recorded frame of {store_s}"),
        Duration::from_secs(30),
        || {
            let out = replay_json("0s")?;
            let frame: serde_json::Value = match serde_json::from_str(&out.stdout) {
                Ok(f) if out.code() == Some(0) => f,
                // No frame yet.
                _ => return Ok(None),
            };
            Ok(has_workload(&frame)
                .then(|| frame["unix_ms"].as_u64())
                .flatten())
        },
    )
    .map_err(|e| {
        anyhow!(
            "{e:#}\n--- daemon stderr ---\n{}",
            truncate(&daemon.stderr(), 3000)
        )
    })?;
    std::thread::sleep(Duration::from_secs(2));
    drop(w);
    // Frames without it follow.
    std::thread::sleep(Duration::from_secs(3));
    ensure!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the workload (pid {pid}) still runs after it was killed"
    );

    let out = replay_json(&format!("{}ms", unix_ms() - seen))?;
    let fail = |what: &str| {
        anyhow!(
            "`{}`: {what}; {}\n--- daemon stderr ---\n{}",
            out.command,
            truncate(&out.describe(), 3000),
            truncate(&daemon.stderr(), 3000)
        )
    };
    ensure!(out.code() == Some(0), "{:#}", fail("expected exit 0"));
    let frame: serde_json::Value =
        serde_json::from_str(&out.stdout).map_err(|e| fail(&format!("stdout is not JSON: {e}")))?;
    let describe = frame["mode"]["describe"].as_str().unwrap_or_default();
    ensure!(
        frame["mode"]["attached"] == false
            && describe.starts_with("replay: ")
            && describe.contains(&store_s),
        "{:#}",
        fail(&format!(
            "expected a replay of {store_s} in mode, got {}",
            frame["mode"]
        ))
    );
    // At or before the time asked for, give or take the time it took to
    // ask: the frame seen, or one shortly after it (the workload ran on).
    let t = frame["unix_ms"].as_u64().unwrap_or(0);
    ensure!(
        t >= seen && t <= seen + 2000,
        "{:#}",
        fail(&format!(
            "asked for the frame at {seen} (unix ms), got the one at {t}"
        ))
    );
    ensure!(
        has_workload(&frame),
        "{:#}",
        fail(&format!(
            "the recorded frame has no row for the workload (pid {pid}, comm {comm})"
        ))
    );

    // Errors say what the store holds, or that there is none.
    let out = run_sentinel_timeout(
        &bin,
        "top",
        &["--at", "1h", "--store", &store_s, "--once"],
        Duration::from_secs(30),
        |_| {},
    )?;
    ensure!(
        out.code() == Some(1)
            && out.stderr.contains("no recorded frame at or before")
            && out.stderr.contains("covers"),
        "`{}`: an hour before the recording began: expected exit 1 naming the store's span; {}",
        out.command,
        out.describe()
    );
    let nowhere = daemon.dir().join("no-store");
    let out = run_sentinel_timeout(
        &bin,
        "top",
        &[
            "--at",
            "1m",
            "--store",
            &nowhere.to_string_lossy(),
            "--once",
        ],
        Duration::from_secs(30),
        |_| {},
    )?;
    ensure!(
        out.code() == Some(1) && out.stderr.contains("no flight recorder store"),
        "`{}`: expected exit 1 saying there is no store; {}",
        out.command,
        out.describe()
    );

    let Some(tmux_bin) = find_tmux() else {
        skip!("the tmux half needs tmux in PATH (`cargo xtask bootstrap` installs it)");
    };
    let at = format!("{}ms", unix_ms() - seen);
    let top = Top::launch(&tmux_bin, 160, 50, &["--at", &at, "--store", &store_s])?;
    // The tag's time, `2026-11-23 03:12:05` (the seconds are what moves).
    let time = |s: &str| -> Option<String> {
        let title = s.lines().next()?;
        let from = title.find("REPLAY ")? + "REPLAY ".len();
        title.get(from..from + 19).map(str::to_string)
    };
    let screen = top.wait_title("REPLAY")?;
    let first = time(&screen).ok_or_else(|| top.failure("no time after REPLAY", &screen))?;
    top.filter_to(&comm, pid, KEY_TIMEOUT)?;
    top.tmux.keys(&["Right"])?;
    let screen = top.wait(
        &format!("`→`: a frame later than {first} in the title"),
        KEY_TIMEOUT,
        |s| time(s).is_some_and(|t| t > first),
    )?;
    let later = time(&screen).expect("the predicate read it");
    top.tmux.keys(&["Left"])?;
    top.wait(
        &format!("`←`: back from {later} to {first} in the title"),
        KEY_TIMEOUT,
        |s| time(s).as_deref() == Some(first.as_str()),
    )?;
    top.tmux.type_text("q")?;
    let code = top.wait_exit()?;
    ensure!(
        code == 0,
        "{:#}",
        top.failure_now(&format!("`q`: exit code {code}"))
    );
    top.ensure_terminal_usable()?;
    drop(top);
    daemon.stop()?;
    Ok(())
}
