//! Where `top`'s frames come from: the running daemon, through its API
//! socket, probes this process loads itself when no daemon runs, or the
//! flight recorder's store (`--at`, `replay.rs`). Each way a thread
//! produces frames and the UI takes the newest, so a slow daemon answer, a
//! long tick or a slow disk never freezes the screen.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    app::Travel,
    build::Builder,
    frame::{Frame, Mode, Subject},
    replay::{self, Cmd, Replay},
};
use crate::{
    daemon,
    engine::Engine,
    loader::{LoadError, Sentinel},
};

/// Longer than the daemon waits for its next tick's frame.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a lost daemon is tried again.
const RETRY: Duration = Duration::from_secs(2);

type Want = Arc<Mutex<Option<Subject>>>;

pub struct Feed {
    rx: mpsc::Receiver<Result<Frame, String>>,
    want: Want,
    /// Tells the producing thread to stop when the feed is dropped.
    stop: Arc<AtomicBool>,
    /// True when frames come from a daemon (they have history from the
    /// first one; a standalone feed's first frame has no rates yet).
    pub attached: bool,
    /// True when frames come from a recording: they come when the user
    /// moves, so a quiet feed is not a stale one.
    pub replay: bool,
    /// A replay's thread takes wants and moves here.
    cmd: Option<mpsc::Sender<Cmd>>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Feed {
    /// Ask for this subject's detail in the frames to come.
    pub fn want(&self, s: Option<Subject>) {
        *self.want.lock().unwrap_or_else(|e| e.into_inner()) = s;
        if let Some(cmd) = &self.cmd {
            // Fails only once the replay thread has ended: a panic, which
            // ends top as well.
            let _ = cmd.send(Cmd::Want(s));
        }
    }

    /// Move through a recording; nothing for live feeds.
    pub fn travel(&self, t: Travel) {
        if let Some(cmd) = &self.cmd {
            let _ = cmd.send(Cmd::Travel(t));
        }
    }

    /// The newest frame since the last call (older ones are dropped).
    pub fn try_recv(&self) -> Option<Result<Frame, String>> {
        let mut last = None;
        while let Ok(f) = self.rx.try_recv() {
            last = Some(f);
        }
        last
    }

    pub fn recv_timeout(&self, timeout: Duration) -> Option<Result<Frame, String>> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// A feed of frames handed in by the caller (tests, benchmarks).
    pub fn channel() -> (Feed, mpsc::SyncSender<Result<Frame, String>>) {
        let (tx, rx) = mpsc::sync_channel(4);
        let feed = Feed {
            rx,
            want: Arc::default(),
            stop: Arc::default(),
            attached: false,
            replay: false,
            cmd: None,
        };
        (feed, tx)
    }

    /// Frames from the daemon at `socket`; None when no daemon listens
    /// there (no socket, or a socket nobody accepts on).
    pub fn attach(socket: &Path, interval: Duration) -> Result<Option<Feed>> {
        let first = match ask(socket, None) {
            Ok(f) => f,
            Err(Ask::Absent) => return Ok(None),
            Err(Ask::Failed(e)) => return Err(e),
        };
        let (mut feed, tx) = Feed::channel();
        feed.attached = true;
        let _ = tx.try_send(Ok(first));
        let (want, stop, socket) = (feed.want.clone(), feed.stop.clone(), socket.to_owned());
        std::thread::Builder::new()
            .name("top-attach".into())
            .spawn(move || poll_daemon(&socket, interval, &want, &stop, &tx))
            .context("starting the thread that reads the daemon")?;
        Ok(Some(feed))
    }

    /// Frames from the recorder's store at `dir`, starting at the frame
    /// nearest at or before `at` (Unix ms). What the user must hear (no
    /// store there, nothing recorded that early) is an error now, before
    /// any screen.
    pub fn replay(dir: &Path, at: u64) -> Result<Feed> {
        let mut r = Replay::open(dir, at)?;
        let first = r.frame(None);
        let (mut feed, tx) = Feed::channel();
        let (cmd_tx, cmd_rx) = mpsc::channel();
        feed.replay = true;
        feed.cmd = Some(cmd_tx);
        let _ = tx.try_send(first);
        let stop = feed.stop.clone();
        std::thread::Builder::new()
            .name("top-replay".into())
            .spawn(move || replay::serve(r, None, &cmd_rx, &stop, &tx))
            .context("starting the replay thread")?;
        Ok(feed)
    }

    /// Loads the probes and runs the watch loop in a thread. Fails (with
    /// the privilege explanation) when this process cannot load them.
    pub fn standalone(interval: Duration, why: &str) -> Result<Feed> {
        let (feed, tx) = Feed::channel();
        let (want, stop) = (feed.want.clone(), feed.stop.clone());
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<()>>(1);
        let describe = format!("standalone: this process runs the probes ({why})");
        std::thread::Builder::new()
            .name("top-probes".into())
            .spawn(move || {
                let mut s = match Sentinel::load() {
                    Ok(s) => s,
                    Err(LoadError::Privilege(p)) => {
                        let _ = ready_tx.send(Err(anyhow::anyhow!("{}", p.explain())));
                        return;
                    }
                    Err(LoadError::Other(e)) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Detector thresholds come from the daemon's configuration
                // when there is one, so flags mean the same on both.
                let source = daemon::Source::resolve(None, None);
                let cfg = source.load().unwrap_or_else(|e| {
                    tracing::warn!("{e}: using the built-in thresholds");
                    Default::default()
                });
                let mut engine = match Engine::new(&mut s, &cfg) {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Loading parsed kernel BTF: give that heap back before
                // settling in.
                // SAFETY: no pointers.
                unsafe { libc::malloc_trim(0) };
                let _ = ready_tx.send(Ok(()));
                run_local(
                    &mut s,
                    &mut engine,
                    &cfg,
                    interval,
                    &describe,
                    &want,
                    &stop,
                    &tx,
                );
            })
            .context("starting the probe thread")?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(feed),
            Ok(Err(e)) => Err(e),
            Err(_) => bail!("the probe thread ended before it was ready"),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_local(
    s: &mut Sentinel,
    engine: &mut Engine,
    cfg: &crate::config::Config,
    interval: Duration,
    describe: &str,
    want: &Want,
    stop: &AtomicBool,
    tx: &mpsc::SyncSender<Result<Frame, String>>,
) {
    let mut builder = Builder::default();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(100)));
            engine.poll_ooms();
            continue;
        }
        next = (next + interval).max(now);
        if let Err(e) = engine.tick(s, cfg) {
            if tx.send(Err(format!("{e:#}"))).is_err() {
                return;
            }
            continue;
        }
        let wanted: Vec<Subject> = want
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        let mode = Mode {
            attached: false,
            replay: false,
            describe: describe.to_string(),
        };
        let frame = builder.build(engine, s, mode, interval, &wanted);
        // The UI takes the newest; a full channel means it is behind and
        // this frame would only be dropped there.
        match tx.try_send(Ok(frame)) {
            Ok(()) | Err(mpsc::TrySendError::Full(_)) => {}
            Err(mpsc::TrySendError::Disconnected(_)) => return,
        }
    }
}

fn poll_daemon(
    socket: &Path,
    interval: Duration,
    want: &Want,
    stop: &AtomicBool,
    tx: &mpsc::SyncSender<Result<Frame, String>>,
) {
    let mut next = Instant::now() + interval;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(100)));
            continue;
        }
        next = now + interval;
        let detail = *want.lock().unwrap_or_else(|e| e.into_inner());
        let msg = match ask(socket, detail) {
            Ok(f) => Ok(f),
            Err(Ask::Absent) => Err(format!(
                "the daemon at {} went away; retrying",
                socket.display()
            )),
            Err(Ask::Failed(e)) => Err(format!("{e:#}; retrying")),
        };
        let failed = msg.is_err();
        match tx.try_send(msg) {
            Ok(()) | Err(mpsc::TrySendError::Full(_)) => {}
            Err(mpsc::TrySendError::Disconnected(_)) => return,
        }
        if failed {
            next = Instant::now() + RETRY;
        }
    }
}

enum Ask {
    /// Nobody listens on the socket.
    Absent,
    Failed(anyhow::Error),
}

/// One `top` request: the daemon answers with its next frame.
fn ask(socket: &Path, detail: Option<Subject>) -> Result<Frame, Ask> {
    let conn = match UnixStream::connect(socket) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(Ask::Absent);
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(Ask::Failed(anyhow::anyhow!(
                "permission denied on {}: run as root, or as a member of the daemon's [api] group",
                socket.display()
            )));
        }
        Err(e) => {
            return Err(Ask::Failed(
                anyhow::Error::new(e).context(format!("connecting to {}", socket.display())),
            ));
        }
    };
    let fail = |e: anyhow::Error| Ask::Failed(e);
    conn.set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|_| conn.set_write_timeout(Some(ANSWER_TIMEOUT)))
        .map_err(|e| fail(e.into()))?;
    let mut req = serde_json::json!({ "cmd": "top", "detail": detail }).to_string();
    req.push('\n');
    (&conn)
        .write_all(req.as_bytes())
        .with_context(|| format!("sending a request to {}", socket.display()))
        .map_err(fail)?;
    let mut line = String::new();
    BufReader::new(&conn)
        .read_line(&mut line)
        .with_context(|| format!("reading the daemon's answer on {}", socket.display()))
        .map_err(fail)?;
    if line.is_empty() {
        return Err(fail(anyhow::anyhow!(
            "the daemon at {} closed the connection without answering",
            socket.display()
        )));
    }
    if line.starts_with("{\"error\"") {
        let msg = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(line);
        return Err(fail(anyhow::anyhow!(
            "the daemon at {} refused: {msg} (is it older than this sentinel?)",
            socket.display()
        )));
    }
    serde_json::from_str(&line)
        .with_context(|| {
            format!(
                "the daemon at {} answered something that is not a frame",
                socket.display()
            )
        })
        .map_err(fail)
}
