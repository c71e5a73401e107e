//! Appends to the store on a thread of its own, so a slow or full disk
//! never holds up the watch loop: the loop hands over events and frames
//! through a bounded queue and goes on.
//!
//! Crash safety comes from the format, not from care at shutdown: a record
//! is one `write(2)` at the end of the current segment, a restart always
//! opens a new segment, and readers skip a torn last record. Data reaches
//! the disk (`fdatasync`) after every frame and every batch of events, so
//! power loss costs at most one interval.
use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    SCHEMA, Start,
    format::{self, RecordKind},
    reader::segment_name,
};
use crate::{config, event::Event, event::unix_ms_now, top::frame::Frame, units};

/// Messages waiting for the writer; past this the newest are dropped and
/// counted (a disk that slow loses recording, never detection).
const QUEUE: usize = 256;
/// A segment is closed after this long or `max_size / SEGMENTS` bytes, so
/// retention frees space in steps of about an eighth of the bound.
const SEGMENT_AGE: Duration = Duration::from_secs(3600);
const SEGMENTS: u64 = 8;
const SEGMENT_MAX: u64 = 64 << 20;
const SEGMENT_MIN: u64 = 64 << 10;
/// While paused, how often space is looked at again.
const RETRY: Duration = Duration::from_secs(2);
/// Free space wanted above `min_free` before recording resumes, so a disk
/// at the edge does not flap between paused and recording.
const RESUME_MARGIN: u64 = 1 << 20;
/// A writer silent this long is reported paused: its disk is not answering.
const STUCK: Duration = Duration::from_secs(30);
/// Events kept in memory while paused, written when recording resumes.
const BACKLOG: usize = 1000;
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Why recording stopped, for the `recorder_paused` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Pause {
    pub since_ms: u64,
    pub dir: PathBuf,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct Status {
    pub paused: Option<Pause>,
    pub records: u64,
    pub bytes_written: u64,
    /// Records lost: the queue was full, or recording was paused (frames;
    /// events wait in a backlog of 1,000).
    pub dropped: u64,
    pub store_bytes: u64,
    pub segments: u64,
    /// Time spent encoding and writing, for the recorder's own cost.
    pub busy_s: f64,
}

enum Msg {
    Event(Box<Event>),
    Frame(Box<Frame>),
}

pub struct Recorder {
    tx: Option<SyncSender<Msg>>,
    status: Arc<Mutex<Status>>,
    /// Messages the full queue turned away.
    refused: AtomicU64,
    /// Milliseconds after `t0` when the writer last came round its loop:
    /// a write or fdatasync stuck on a dying disk stops it.
    heartbeat: Arc<AtomicU64>,
    t0: Instant,
    dir: PathBuf,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Clone)]
struct Bounds {
    max_size: u64,
    max_age: Duration,
    min_free: u64,
    segment_max: u64,
}

impl Recorder {
    /// Creates the directory and the first segment. A path that cannot be
    /// a directory, or one this process may not write, is an error naming
    /// it. A full, read-only or failing filesystem is not: that is a state
    /// the disk is in, so the recorder starts paused and the daemon still
    /// watches.
    pub fn start(cfg: &config::Config, start: Start) -> Result<Recorder> {
        let dir = cfg.recorder_dir();
        let r = &cfg.recorder;
        let bounds = Bounds {
            max_size: r.max_size,
            max_age: r.max_age,
            min_free: r.min_free,
            segment_max: (r.max_size / SEGMENTS).clamp(SEGMENT_MIN, SEGMENT_MAX),
        };
        let status = Arc::new(Mutex::new(Status::default()));
        let mut w = Writer {
            segments: VecDeque::new(),
            dir: dir.clone(),
            bounds,
            start,
            seg: None,
            lock: None,
            paused: None,
            last_try: Instant::now(),
            last_retention: Instant::now(),
            backlog: VecDeque::new(),
            status: status.clone(),
            heartbeat: Arc::new(AtomicU64::new(0)),
            t0: Instant::now(),
            unsynced: false,
            stats: Status::default(),
        };
        let fatal = |e: io::Error, what: &str| -> anyhow::Error {
            anyhow::Error::new(e).context(format!(
                "{what} the flight recorder's directory {} ([recorder] dir)",
                dir.display()
            ))
        };
        match w.prepare() {
            Ok(()) => {}
            Err(e) if is_disk_state(&e) => w.pause(format!("{}: {e}", dir.display())),
            Err(e) => return Err(fatal(e, "preparing")),
        }
        if w.paused.is_none() {
            match w.open_segment(unix_ms_now()) {
                Ok(()) => {}
                Err(e) if is_disk_state(&e) => w.pause(format!("{}: {e}", dir.display())),
                Err(e) => return Err(fatal(e, "writing to")),
            }
        }
        w.retention();
        w.publish();
        let heartbeat = w.heartbeat.clone();
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || w.run(rx))
            .context("starting the recorder thread")?;
        Ok(Recorder {
            tx: Some(tx),
            status,
            refused: AtomicU64::new(0),
            heartbeat,
            t0: Instant::now(),
            dir,
            thread: Some(thread),
        })
    }

    pub fn event(&self, e: &Event) {
        self.send(Msg::Event(Box::new(e.clone())));
    }

    /// A frame already trimmed by `select::trim`.
    pub fn frame(&self, f: Frame) {
        self.send(Msg::Frame(Box::new(f)));
    }

    fn send(&self, m: Msg) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(m) {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn status(&self) -> Status {
        let mut s = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        s.dropped += self.refused.load(Ordering::Relaxed);
        if s.paused.is_none() {
            let silent = Duration::from_millis(
                (self.t0.elapsed().as_millis() as u64)
                    .saturating_sub(self.heartbeat.load(Ordering::Relaxed)),
            );
            let reason = if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                Some("the recorder thread stopped".to_string())
            } else if silent >= STUCK {
                Some(format!(
                    "a write or fdatasync in {} has not returned for {}",
                    self.dir.display(),
                    units::duration(Duration::from_secs(silent.as_secs()))
                ))
            } else {
                None
            };
            s.paused = reason.map(|reason| Pause {
                since_ms: unix_ms_now().saturating_sub(silent.as_millis() as u64),
                dir: self.dir.clone(),
                reason,
            });
        }
        s
    }

    /// Writes what is queued, syncs, and stops; gives up after `deadline`.
    pub fn shutdown(mut self, deadline: Duration) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let end = Instant::now() + deadline;
            while !t.is_finished() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("the recorder did not finish writing within {deadline:?}");
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.tx = None;
    }
}

struct OpenSegment {
    file: File,
    path: PathBuf,
    len: u64,
    opened: Instant,
}

struct Writer {
    dir: PathBuf,
    bounds: Bounds,
    start: Start,
    /// `<dir>/.lock`, held while this writer lives: one writer per store.
    lock: Option<File>,
    heartbeat: Arc<AtomicU64>,
    t0: Instant,
    /// Every segment on disk, oldest first, the open one last.
    segments: VecDeque<(u64, PathBuf, u64)>,
    seg: Option<OpenSegment>,
    paused: Option<Pause>,
    last_try: Instant,
    last_retention: Instant,
    backlog: VecDeque<Box<Event>>,
    status: Arc<Mutex<Status>>,
    unsynced: bool,
    stats: Status,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let first = match rx.recv_timeout(RETRY) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let t0 = Instant::now();
            self.beat();
            if self.paused.is_some() && self.last_try.elapsed() >= RETRY {
                self.try_resume();
            }
            let mut next = first;
            while let Some(m) = next {
                self.handle(m);
                next = rx.try_recv().ok();
            }
            self.sync();
            if self.last_retention.elapsed() >= RETENTION_EVERY {
                self.retention();
            }
            self.stats.busy_s += t0.elapsed().as_secs_f64();
            self.beat();
            self.publish();
        }
        self.sync();
        self.publish();
    }

    fn handle(&mut self, m: Msg) {
        let (kind, unix_ms, json) = match &m {
            Msg::Event(e) => (
                RecordKind::Event,
                crate::event::parse_rfc3339(&e.ts).unwrap_or_else(unix_ms_now),
                serde_json::to_vec(e),
            ),
            Msg::Frame(f) => (
                RecordKind::Frame,
                f.unix_ms,
                serde_json::to_value(f).and_then(|mut v| {
                    round_floats(&mut v);
                    serde_json::to_vec(&v)
                }),
            ),
        };
        let json = match json {
            Ok(j) if j.len() <= format::MAX_PAYLOAD as usize => j,
            Ok(j) => {
                // No reader would take it: a frame with thousands of
                // blocked threads' stacks, say.
                tracing::warn!(
                    "recorder: dropping a {} record of {}, over the {} a record may hold",
                    kind.name(),
                    units::size(j.len() as u64),
                    units::size(format::MAX_PAYLOAD.into())
                );
                self.stats.dropped += 1;
                return;
            }
            Err(e) => {
                tracing::warn!("recorder: encoding a record: {e}");
                return;
            }
        };
        if self.paused.is_some() {
            match m {
                Msg::Event(e) => {
                    if self.backlog.len() >= BACKLOG {
                        self.backlog.pop_front();
                        self.stats.dropped += 1;
                    }
                    self.backlog.push_back(e);
                }
                Msg::Frame(_) => self.stats.dropped += 1,
            }
            return;
        }
        let rec = format::encode(kind, SCHEMA, unix_ms, &json);
        if !self.append(&rec) {
            match m {
                Msg::Event(e) => self.backlog.push_back(e),
                Msg::Frame(_) => self.stats.dropped += 1,
            }
        }
    }

    /// One record at the end of the open segment. False when it was not
    /// written (recording is now paused).
    fn append(&mut self, rec: &[u8]) -> bool {
        if let Err(reason) = self.room_for(rec.len() as u64) {
            self.pause(reason);
            return false;
        }
        let roll = self.seg.as_ref().is_none_or(|s| {
            s.len + rec.len() as u64 > self.bounds.segment_max || s.opened.elapsed() >= SEGMENT_AGE
        });
        if roll {
            self.sync();
            if let Err(e) = self.open_segment(unix_ms_now()) {
                self.pause(format!("opening a segment: {e}"));
                return false;
            }
            self.retention();
        }
        let Some(seg) = self.seg.as_mut() else {
            return false;
        };
        match seg.file.write_all(rec) {
            Ok(()) => {
                seg.len += rec.len() as u64;
                if let Some(last) = self.segments.back_mut() {
                    last.2 = seg.len;
                }
                self.unsynced = true;
                self.stats.records += 1;
                self.stats.bytes_written += rec.len() as u64;
                true
            }
            Err(e) => {
                // Cut what part of the record made it, so the segment
                // ends on a whole record; if even that fails the reader
                // skips the torn tail. What was written before is synced.
                let _ = seg.file.set_len(seg.len);
                let _ = seg.file.sync_data();
                self.seg = None;
                self.pause(format!("writing {}: {e}", seg_path_name(&self.segments)));
                false
            }
        }
    }

    fn room_for(&self, len: u64) -> Result<(), String> {
        let free =
            free_bytes(&self.dir).map_err(|e| format!("statfs {}: {e}", self.dir.display()))?;
        if free < len {
            return Err(format!(
                "the filesystem of {} is full ({} free)",
                self.dir.display(),
                units::size(free)
            ));
        }
        if free < self.bounds.min_free.saturating_add(len) {
            return Err(format!(
                "{} free on the filesystem of {}, below [recorder] min_free ({})",
                units::size(free),
                self.dir.display(),
                units::size(self.bounds.min_free)
            ));
        }
        Ok(())
    }

    fn pause(&mut self, reason: String) {
        if self.paused.is_none() {
            tracing::warn!(
                "the flight recorder is paused: {reason}; detection and sinks go on, and recording resumes when there is room"
            );
            self.paused = Some(Pause {
                since_ms: unix_ms_now(),
                dir: self.dir.clone(),
                reason,
            });
        }
        self.last_try = Instant::now();
        self.publish();
    }

    fn try_resume(&mut self) {
        self.last_try = Instant::now();
        // Old segments may be what fills the disk: retention first.
        self.retention();
        if let Err(e) = self.prepare() {
            tracing::debug!("recorder: still paused: {e}");
            return;
        }
        if self.room_for(RESUME_MARGIN).is_err() {
            return;
        }
        if let Err(e) = self.open_segment(unix_ms_now()) {
            tracing::debug!("recorder: still paused: {e}");
            return;
        }
        if let Some(p) = self.paused.take() {
            tracing::info!(
                "the flight recorder resumed after {}",
                units::duration(Duration::from_millis(
                    unix_ms_now().saturating_sub(p.since_ms)
                ))
            );
        }
        while let Some(e) = self.backlog.pop_front() {
            let ms = crate::event::parse_rfc3339(&e.ts).unwrap_or_else(unix_ms_now);
            let Ok(json) = serde_json::to_vec(&e) else {
                continue;
            };
            if !self.append(&format::encode(RecordKind::Event, SCHEMA, ms, &json)) {
                self.backlog.push_front(e);
                return;
            }
        }
    }

    /// The directory, its lock and the segments already in it; again on
    /// each attempt to resume, as the directory may be what failed.
    fn prepare(&mut self) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        if self.lock.is_none() {
            self.lock = Some(lock_dir(&self.dir)?);
            self.segments = list_segments(&self.dir)?;
        }
        Ok(())
    }

    fn beat(&self) {
        self.heartbeat
            .store(self.t0.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// A new segment, its Start record first. Every start of the writer
    /// opens a new one, so nothing is ever appended after a torn record.
    fn open_segment(&mut self, now_ms: u64) -> io::Result<()> {
        let mut first = now_ms;
        if let Some((last, _, _)) = self.segments.back() {
            // Names sort as time; a clock stepped back must not break that.
            first = first.max(last + 1);
        }
        let path = self.dir.join(segment_name(first));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        let mut start = self.start.clone();
        start.pid = std::process::id();
        let json = serde_json::to_vec(&start).map_err(io::Error::other)?;
        let rec = format::encode(RecordKind::Start, SCHEMA, now_ms, &json);
        if let Err(e) = file.write_all(&rec) {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        // The new name must survive a power cut with its directory entry.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.segments
            .push_back((first, path.clone(), rec.len() as u64));
        self.seg = Some(OpenSegment {
            file,
            path,
            len: rec.len() as u64,
            opened: Instant::now(),
        });
        self.unsynced = true;
        Ok(())
    }

    fn sync(&mut self) {
        if !self.unsynced {
            return;
        }
        self.unsynced = false;
        if let Some(seg) = &self.seg
            && let Err(e) = seg.file.sync_data()
        {
            // After a failed fdatasync the kernel may have dropped the
            // pages it could not write: what follows would sit on a hole.
            let reason = format!("fdatasync {}: {e}", seg.path.display());
            self.seg = None;
            self.pause(reason);
        }
    }

    /// Drops whole segments, oldest first, past the size or age bound; the
    /// open one stays.
    fn retention(&mut self) {
        self.last_retention = Instant::now();
        let cutoff = unix_ms_now().saturating_sub(self.bounds.max_age.as_millis() as u64);
        let open = self.seg.as_ref().map(|s| s.path.clone());
        loop {
            let total: u64 = self.segments.iter().map(|s| s.2).sum();
            let Some((_, path, _)) = self.segments.front() else {
                break;
            };
            if Some(path) == open.as_ref() {
                break;
            }
            // A segment's records end where the next one starts.
            let ends = self.segments.get(1).map_or(u64::MAX, |s| s.0);
            if total <= self.bounds.max_size && ends >= cutoff {
                break;
            }
            let Some((_, path, _)) = self.segments.pop_front() else {
                break;
            };
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!("recorder: removing {}: {e}", path.display());
            }
        }
    }

    fn publish(&mut self) {
        self.stats.paused = self.paused.clone();
        self.stats.segments = self.segments.len() as u64;
        self.stats.store_bytes = self.segments.iter().map(|s| s.2).sum();
        if let Ok(mut s) = self.status.lock() {
            *s = self.stats.clone();
        }
    }
}

/// Rates and percentages to 4 significant digits: the rest is noise, and
/// noise is what deflate cannot shrink (a frame's floats printed in full
/// were most of its compressed size).
fn round_floats(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            if let Some(x) = n.as_f64().filter(|x| *x != 0.0 && x.is_finite()) {
                let scale = 10f64.powi(3 - x.abs().log10().floor() as i32);
                let r = (x * scale).round() / scale;
                if let Some(m) = serde_json::Number::from_f64(r) {
                    *n = m;
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(round_floats),
        serde_json::Value::Object(o) => o.values_mut().for_each(round_floats),
        _ => {}
    }
}

fn seg_path_name(segments: &VecDeque<(u64, PathBuf, u64)>) -> String {
    segments
        .back()
        .map_or_else(String::new, |s| s.1.display().to_string())
}

fn list_segments(dir: &Path) -> io::Result<VecDeque<(u64, PathBuf, u64)>> {
    let mut out: Vec<(u64, PathBuf, u64)> = Vec::new();
    for e in fs::read_dir(dir)?.flatten() {
        let name = e.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
        out.push((first, e.path(), len));
    }
    out.sort();
    Ok(out.into())
}

fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a valid C string and a zeroed out-struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Errors that say what the disk is going through (full, read-only,
/// failing), not that the configuration is wrong.
fn is_disk_state(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS | libc::EIO)
    )
}

/// One writer per store: a second daemon, or a reload whose old writer is
/// still finishing, would delete the other's segments by its own list.
/// The old writer gets a few seconds to let go.
fn lock_dir(dir: &Path) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(".lock"))?;
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        // SAFETY: a valid open fd.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(e);
        }
        if Instant::now() >= end {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "another sentinel process is recording into this directory",
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::round_floats;

    #[test]
    fn floats_keep_four_significant_digits() {
        let mut v = serde_json::json!({"a": 0.25000281153161846, "b": [123456.789, -0.000123456], "n": 12218368, "z": 0.0});
        round_floats(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": 0.25, "b": [123500.0, -0.0001235], "n": 12218368, "z": 0.0})
        );
    }
}
