//! Diagnostics while the full-screen UI is up: a log line written to the
//! terminal then would be drawn over the screen, and lost at the next
//! redraw. So they are held, and printed once the terminal is restored.
use std::{
    io::Write,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

/// More than a screenful of warnings is a flood; the first ones say why.
const MAX_HELD: usize = 64 << 10;

static HOLDING: AtomicBool = AtomicBool::new(false);
static HELD: Mutex<(Vec<u8>, u64)> = Mutex::new((Vec::new(), 0));

/// The log writer: stderr, or the held buffer while the UI runs.
#[derive(Default)]
pub struct Writer;

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !HOLDING.load(Ordering::Relaxed) {
            return std::io::stderr().write(buf);
        }
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        if held.0.len() + buf.len() <= MAX_HELD {
            held.0.extend_from_slice(buf);
        } else {
            held.1 += 1;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

pub fn hold() {
    HOLDING.store(true, Ordering::Relaxed);
}

/// Prints what was held, and writes go to stderr again.
pub fn release() {
    HOLDING.store(false, Ordering::Relaxed);
    let (text, lost) = std::mem::take(&mut *HELD.lock().unwrap_or_else(|e| e.into_inner()));
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(&text);
    if lost > 0 {
        let _ = writeln!(err, "sentinel top: {lost} more log lines were dropped");
    }
}
