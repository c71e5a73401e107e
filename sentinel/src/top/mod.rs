//! `sentinel top`: the live view. It reads `Frame`s (`frame.rs`) from the
//! running daemon or from probes it loads itself (`source.rs`), or with
//! `--at` from the flight recorder (`replay.rs`), and shows them (`tui.rs`,
//! `ui.rs`, `app.rs`), or prints one (`text.rs`).
pub mod app;
pub mod build;
pub mod frame;
pub mod logs;
pub mod procs;
pub mod replay;
pub mod source;
pub mod text;
pub mod tui;
pub mod ui;

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use source::Feed;

use crate::daemon;

pub struct Options {
    pub interval: Duration,
    pub socket: PathBuf,
    pub once: bool,
    pub json: bool,
    /// Replay the flight recorder from this time (Unix ms) instead of
    /// showing the live system.
    pub at: Option<u64>,
    /// The recorder's store for `at`; None: the configuration's.
    pub store: Option<PathBuf>,
}

pub fn run(opts: &Options) -> Result<()> {
    let feed = match opts.at {
        Some(at) => replay_feed(opts.store.as_deref(), at)?,
        None => live_feed(opts)?,
    };
    if !opts.once {
        logs::hold();
        let r = tui::run(feed, opts.interval);
        logs::release();
        return r;
    }
    // A standalone feed's first frame has no rates yet (one sample); the
    // second has them. Attached and replayed frames have them at once.
    let mut frame = None;
    for _ in 0..if feed.attached || feed.replay { 1 } else { 2 } {
        match feed.recv_timeout(opts.interval + Duration::from_secs(15)) {
            Some(Ok(f)) => frame = Some(f),
            Some(Err(e)) => bail!("{e}"),
            None => bail!("no frame arrived in time"),
        }
    }
    let Some(frame) = frame else {
        bail!("no frame arrived");
    };
    let text = if opts.json {
        let mut t = serde_json::to_string(&frame).context("encoding the frame")?;
        t.push('\n');
        t
    } else {
        let (w, h) = screen_size();
        text::once_text(&frame, w, h)
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        // `sentinel top --once | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// The recorder's store named on the command line, or the daemon's as its
/// configuration says.
fn replay_feed(store: Option<&Path>, at: u64) -> Result<Feed> {
    if let Some(dir) = store {
        return Feed::replay(dir, at);
    }
    let source = daemon::Source::resolve(None, None);
    let cfg = source.load().with_context(|| {
        format!(
            "reading {} to find the flight recorder's store (or pass --store DIR)",
            source.describe()
        )
    })?;
    Feed::replay(&cfg.recorder_dir(), at).with_context(|| {
        format!(
            "the recorder store of {}; --store DIR reads another",
            source.describe()
        )
    })
}

fn live_feed(opts: &Options) -> Result<Feed> {
    Ok(match Feed::attach(&opts.socket, opts.interval)? {
        Some(f) => f,
        None => {
            let why = format!("no daemon at {}", opts.socket.display());
            Feed::standalone(opts.interval, &why).with_context(|| {
                format!(
                    "no sentinel daemon answers on {} (start one, or pass its --socket), \
                     and running the probes here failed",
                    opts.socket.display()
                )
            })?
        }
    })
}

/// The terminal's size when stdout is one; else wide enough for every
/// column, for a ticket or a script.
fn screen_size() -> (u16, u16) {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct given.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        (ws.ws_col, ws.ws_row)
    } else {
        (160, 50)
    }
}
