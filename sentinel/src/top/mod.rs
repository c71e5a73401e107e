//! `sentinel top`: the live view. It reads `Frame`s (`frame.rs`) from the
//! running daemon or from probes it loads itself (`source.rs`), and shows
//! them (`tui.rs`, `ui.rs`, `app.rs`), or prints one (`text.rs`).
pub mod app;
pub mod build;
pub mod frame;
pub mod logs;
pub mod procs;
pub mod source;
pub mod text;
pub mod tui;
pub mod ui;

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};

use source::Feed;

pub struct Options {
    pub interval: Duration,
    pub socket: PathBuf,
    pub once: bool,
    pub json: bool,
}

pub fn run(opts: &Options) -> Result<()> {
    let feed = match Feed::attach(&opts.socket, opts.interval)? {
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
    };
    if !opts.once {
        logs::hold();
        let r = tui::run(feed, opts.interval);
        logs::release();
        return r;
    }
    // A standalone feed's first frame has no rates yet (one sample); the
    // second has them.
    let mut frame = None;
    for _ in 0..if feed.attached { 1 } else { 2 } {
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
