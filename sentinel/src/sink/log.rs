//! The log sink, always on: one line per event on stdout, which journald
//! (or whoever reads the pipe) stores. Nothing else may go to stdout:
//! people and tests parse it line by line; diagnostics go to stderr.
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;

use super::{STACK_SIZE, Stats};
use crate::config::LogFormat;
use crate::event::Event;

pub fn name(f: LogFormat) -> &'static str {
    match f {
        LogFormat::Json => "json",
        LogFormat::Text => "text",
    }
}

/// Its own thread, so a stdout that blocks (a full pipe, a stalled
/// journald) delays only this sink.
/// `out` is stdout but in tests.
pub fn spawn(
    format: LogFormat,
    rx: Receiver<Arc<Event>>,
    stats: Arc<Stats>,
    mut out: Box<dyn Write + Send>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sink-log".into())
        .stack_size(STACK_SIZE)
        .spawn(move || run(format, rx, &stats, &mut out))
}

fn run(format: LogFormat, rx: Receiver<Arc<Event>>, stats: &Stats, out: &mut dyn Write) {
    // Ends when the sender is dropped and the queue is drained.
    for ev in rx {
        let written = out
            .write_all(line(&ev, format).as_bytes())
            .and_then(|()| out.flush());
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        match written {
            Ok(()) => {
                Stats::add(&stats.delivered, 1);
            }
            Err(e) => {
                let n = Stats::add(&stats.failures, 1);
                stats.set_error(&format!("stdout: {e}"));
                if n.is_power_of_two() {
                    tracing::warn!(
                        sink = "log",
                        "cannot write events to stdout ({n} so far): {e}"
                    );
                }
            }
        }
    }
}

/// The event as one line, newline included.
pub fn line(ev: &Event, format: LogFormat) -> String {
    let mut s = match format {
        // An Event always serializes (string keys, finite numbers from
        // serde_json values); the text line is the fallback all the same.
        LogFormat::Json => serde_json::to_string(ev).unwrap_or_else(|_| ev.to_string()),
        LogFormat::Text => ev.to_string(),
    };
    // A summary or comm with a newline must not split a text line (JSON
    // escapes them already).
    if s.contains('\n') {
        s = s.replace('\n', " ");
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Kind, Severity};
    use crate::sink::summary::tests::event;

    #[test]
    fn one_line_per_event() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let stats = Stats::default();
        let mut e = event(1, Kind::Hang, Severity::Warning);
        e.summary = "two\nlines".into();
        let e = Arc::new(e);
        for _ in 0..2 {
            stats.queued.fetch_add(1, Ordering::Relaxed);
            tx.send(e.clone()).unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        run(LogFormat::Json, rx, &stats, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["id"], "id0001");
        assert_eq!(v["summary"], "two\nlines");
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 2);
        assert_eq!(stats.queued.load(Ordering::Relaxed), 0);

        let text = line(&e, LogFormat::Text);
        assert!(
            text.ends_with("WARN hang firing pid=4242 container=app: two lines\n"),
            "{text}"
        );
    }
}
