//! The interactive terminal: raw mode and the alternate screen, the event
//! loop, and the few side effects the UI state asks for (wanting a detail,
//! sending a signal).
//!
//! The terminal must come back usable however `top` ends: normal exit and
//! errors restore it through a guard's `Drop`, a panic through the panic
//! hook (before the message prints, so the message is readable), and
//! SIGTERM/SIGHUP/SIGINT by setting a flag the loop checks at least every
//! `POLL`. Restoring is idempotent, so whichever runs first wins.
use std::{
    io::{self, Stdout},
    panic,
    path::Path,
    sync::{
        Once,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor,
        event::{self, Event as TermEvent},
        execute,
        terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
    },
};

use super::{
    app::{Action, App, SignalRequest},
    source::Feed,
    ui,
};
use crate::procfs;

/// The longest the loop waits for a key before it looks at the feed and the
/// stop flag again: keys feel immediate and a signal ends `top` promptly.
const POLL: Duration = Duration::from_millis(100);

/// Set by SIGTERM, SIGHUP and SIGINT.
static STOP: AtomicBool = AtomicBool::new(false);

/// True while the terminal is in raw mode on the alternate screen.
static ACTIVE: AtomicBool = AtomicBool::new(false);

type Term = Terminal<CrosstermBackend<Stdout>>;

/// Runs the live view until the user quits or a signal arrives.
pub fn run(feed: Feed, interval: Duration) -> anyhow::Result<()> {
    let _signals = SignalGuard::install();
    install_panic_hook();
    let mut screen = Screen::enter().context("setting up the terminal")?;
    event_loop(&mut screen.term, &feed, interval)
    // `screen` drops here, on success and on error alike.
}

fn event_loop(term: &mut Term, feed: &Feed, interval: Duration) -> anyhow::Result<()> {
    let mut app = App::new();
    feed.want(None);
    // A feed quiet for a few intervals is worth saying, not only a failed one.
    let stale_after = (interval * 3).max(Duration::from_secs(5));
    let mut last_frame = Instant::now();
    let mut dirty = true;
    while !STOP.load(Ordering::Relaxed) {
        if dirty {
            term.draw(|f| ui::draw(f, &app))
                .context("drawing the screen")?;
            dirty = false;
        }
        if read_input(&mut app, feed, &mut dirty)? == Flow::Quit {
            break;
        }
        match feed.try_recv() {
            Some(Ok(frame)) => {
                last_frame = Instant::now();
                dirty |= app.on_frame(frame);
            }
            Some(Err(msg)) => {
                app.on_feed_error(msg);
                dirty = true;
            }
            // A replay sends frames when the user moves, not on a clock.
            None if feed.replay => {}
            None => {
                let quiet = last_frame.elapsed();
                dirty |= app.set_stale((quiet > stale_after).then_some(quiet.as_secs()));
            }
        }
    }
    Ok(())
}

#[derive(PartialEq)]
enum Flow {
    Continue,
    Quit,
}

/// Waits up to `POLL` for terminal input, then handles everything queued
/// (a held key, a paste) before the next draw.
fn read_input(app: &mut App, feed: &Feed, dirty: &mut bool) -> anyhow::Result<Flow> {
    let mut timeout = POLL;
    while poll(timeout)? {
        timeout = Duration::ZERO;
        let ev = match event::read() {
            Ok(ev) => ev,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the terminal"),
        };
        match ev {
            TermEvent::Key(key) => {
                *dirty = true;
                let action = app.on_key(key);
                if act(app, feed, action) == Flow::Quit {
                    return Ok(Flow::Quit);
                }
            }
            // `draw` picks up the new size by itself.
            TermEvent::Resize(..) => *dirty = true,
            _ => {}
        }
    }
    Ok(Flow::Continue)
}

/// Whether an event is ready, waiting up to `timeout`. The wait is a
/// poll(2) on the terminal of our own: when the terminal hangs up (the SSH
/// session drops, tmux is killed), crossterm's reader sees a readable fd
/// that never yields an event and spins a core forever. A hang-up ends
/// `top` instead.
fn poll(timeout: Duration) -> anyhow::Result<bool> {
    // Events crossterm has already read and parsed come first.
    if crossterm_ready(Duration::ZERO)? {
        return Ok(true);
    }
    let mut p = libc::pollfd {
        fd: tty_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e).context("waiting for terminal input");
    }
    if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        STOP.store(true, Ordering::Relaxed);
        return Ok(false);
    }
    if p.revents & libc::POLLIN != 0 {
        return crossterm_ready(Duration::ZERO);
    }
    Ok(false)
}

fn crossterm_ready(timeout: Duration) -> anyhow::Result<bool> {
    match event::poll(timeout) {
        Ok(ready) => Ok(ready),
        // A signal arrived: the loop will look at the stop flag.
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e).context("waiting for terminal input"),
    }
}

/// The descriptor crossterm reads keys from: stdin when it is the
/// terminal, else /dev/tty (opened once and kept).
fn tty_fd() -> libc::c_int {
    static TTY: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } == 1 {
        return libc::STDIN_FILENO;
    }
    TTY.get_or_init(|| std::fs::File::open("/dev/tty").ok())
        .as_ref()
        .map_or(libc::STDIN_FILENO, std::os::fd::AsRawFd::as_raw_fd)
}

fn act(app: &mut App, feed: &Feed, action: Action) -> Flow {
    match action {
        Action::None => {}
        Action::Quit => return Flow::Quit,
        Action::Want(subject) => feed.want(subject),
        Action::Travel(t) => feed.travel(t),
        Action::Signal(req) => {
            let msg = send_signal(Path::new("/proc"), &req);
            tracing::debug!("top: {msg}");
            app.set_status(msg);
        }
    }
    Flow::Continue
}

/// Sends the confirmed signal, unless the pid now names another process:
/// between the frame and the keypress the process may have exited and its
/// pid been reused, and signalling a stranger is the one thing `k` must not
/// do. Returns what happened, for the status line.
pub(super) fn send_signal(proc_root: &Path, req: &SignalRequest) -> String {
    let who = format!("{} ({})", req.pid, req.comm);
    // kill(2) reads 0 and negative pids as process groups: never those.
    let pid = match i32::try_from(req.pid) {
        Ok(p) if p > 0 => p,
        _ => return format!("refused: {who} is not a process id"),
    };
    match procfs::stat(proc_root, req.pid) {
        None => return format!("{who} has exited"),
        Some(st) if st.starttime != req.start => {
            return format!(
                "refused: pid {} is now another process (pid reused)",
                req.pid
            );
        }
        Some(_) => {}
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid, req.sig.number()) } == 0 {
        format!("sent {} to {who}", req.sig.name())
    } else {
        let err = io::Error::last_os_error();
        format!("{} to {who} failed: {err}", req.sig.name())
    }
}

/// The terminal in raw mode on the alternate screen; restored on drop.
struct Screen {
    term: Term,
}

impl Screen {
    fn enter() -> io::Result<Screen> {
        terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        // From here on a failure must undo raw mode: `restore` does.
        let setup = || -> io::Result<Term> {
            execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
            let mut term = Terminal::new(CrosstermBackend::new(io::stdout()))?;
            term.clear()?;
            Ok(term)
        };
        match setup() {
            Ok(term) => Ok(Screen { term }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves the alternate screen and raw mode, once. Errors are ignored:
/// this runs on the way out (even inside a panic) and there is nobody left
/// to tell.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
    }
}

/// A panic restores the terminal first, then the previous hook prints the
/// message on the normal screen where it can be read. A panic on another
/// thread (the feed's) also stops the loop: drawing on after the terminal
/// was restored would scribble over the message.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if ACTIVE.load(Ordering::SeqCst) {
                STOP.store(true, Ordering::Relaxed);
            }
            restore();
            previous(info);
        }));
    });
}

extern "C" fn on_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Catches SIGTERM, SIGHUP and SIGINT for as long as the UI runs, and puts
/// back whatever handled them before. SIGINT still matters in raw mode:
/// Ctrl-C arrives as a key, but `kill -INT` does not.
struct SignalGuard {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl SignalGuard {
    fn install() -> SignalGuard {
        STOP.store(false, Ordering::Relaxed);
        let mut previous = Vec::new();
        for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
            // SAFETY: the handler only stores to an atomic (async-signal-
            // safe); both structs are plain data the kernel fills or reads.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut sa.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &sa, &mut old) == 0 {
                    previous.push((sig, old));
                } else {
                    tracing::warn!(
                        "top: cannot catch signal {sig}: {}",
                        io::Error::last_os_error()
                    );
                }
            }
        }
        SignalGuard { previous }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, old) in &self.previous {
            // SAFETY: puts back the action sigaction(2) gave us.
            unsafe {
                libc::sigaction(*sig, old, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::process::ExitStatusExt, process::Command};

    use super::*;
    use crate::top::app::Sig;

    fn req(pid: u32, start: u64, sig: Sig) -> SignalRequest {
        SignalRequest {
            pid,
            start,
            sig,
            comm: "sleep".into(),
        }
    }

    #[test]
    fn signals_the_process_it_confirmed() {
        let mut child = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let proc = Path::new("/proc");
        let start = procfs::stat(proc, child.id()).expect("stat").starttime;
        // Another start time: the pid was reused, nothing is sent.
        let msg = send_signal(proc, &req(child.id(), start + 1, Sig::Term));
        assert!(msg.contains("pid reused"), "{msg}");
        assert!(child.try_wait().expect("wait").is_none(), "still running");
        let msg = send_signal(proc, &req(child.id(), start, Sig::Term));
        assert!(msg.starts_with("sent SIGTERM to"), "{msg}");
        let status = child.wait().expect("wait");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        let msg = send_signal(proc, &req(child.id(), start, Sig::Term));
        assert!(msg.contains("has exited"), "{msg}");
    }

    #[test]
    fn never_signals_a_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        for pid in [0, u32::MAX] {
            let msg = send_signal(dir.path(), &req(pid, 1, Sig::Kill));
            assert!(msg.starts_with("refused"), "{msg}");
        }
    }

    #[test]
    fn restore_is_idempotent_when_not_active() {
        // Outside a terminal session it must not touch the terminal.
        restore();
        restore();
        assert!(!ACTIVE.load(Ordering::SeqCst));
    }
}
