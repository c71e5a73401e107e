//! The local API: a Unix socket through which `sentinel events` (and
//! `sentinel top`, `sentinel export`) talk to the running daemon.
//!
//! The protocol is line-delimited JSON. A client sends one request line:
//! `{"cmd":"events","since_ms":N,"follow":true}` streams the recent events
//! at or after N (unix ms), then, with `follow`, each new one as it
//! happens; `{"cmd":"status"}` answers one line with the daemon's status;
//! `{"cmd":"top","detail":SUBJECT|null}` answers one line, the next
//! `top::frame::Frame` the daemon builds (with SUBJECT's detail).
//! Status and frames cost the daemon something, so it builds them only
//! while someone asks: a request waits for the next tick's.
//! Answers are JSON lines; an error is `{"error":"..."}`.
//!
//! Access is the socket file's: 0600 root by default, 0660 with `[api]
//! group`. Nothing here listens on the network.
use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read, Write},
    os::unix::{
        fs::{FileTypeExt, PermissionsExt},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::top::frame::{Frame, Subject};

/// Recent events kept for `sentinel events --since`: enough for an
/// operator's "what just happened", small next to the daemon's 30 MB. The
/// flight recorder keeps the long history.
const RECENT_EVENTS: usize = 1000;
const RECENT_BYTES: usize = 2 << 20;
/// Clients served at once; more wait in the listen backlog.
const MAX_CLIENTS: usize = 16;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST: u64 = 4096;
/// How long after the last request the daemon keeps building status or
/// frames: longer than any client's polling interval is likely to be.
const WANT_TTL: Duration = Duration::from_secs(15);
/// How long a request waits for the next tick's status or frame before it
/// takes the latest one (or, with none, an error).
const FRESH_WAIT: Duration = Duration::from_secs(4);

/// What the daemon publishes and clients read.
#[derive(Default)]
pub struct Hub {
    state: Mutex<HubState>,
    changed: Condvar,
    closed: AtomicBool,
}

#[derive(Default)]
struct HubState {
    /// (unix ms, sequence number, JSON line), oldest first.
    recent: VecDeque<(u64, u64, Arc<str>)>,
    bytes: usize,
    next_seq: u64,
    status: Arc<str>,
    /// When status and frame were last built, and last asked for.
    status_at: Option<Instant>,
    status_asked: Option<Instant>,
    frame: Option<Arc<Frame>>,
    frame_at: Option<Instant>,
    /// The details clients asked for (None: a frame without one), and when.
    frame_asked: Vec<(Option<Subject>, Instant)>,
}

impl Hub {
    pub fn publish(&self, unix_ms: u64, json: &str) {
        let mut st = lock(&self.state);
        let seq = st.next_seq;
        st.next_seq += 1;
        st.bytes += json.len();
        st.recent.push_back((unix_ms, seq, Arc::from(json)));
        while st.recent.len() > RECENT_EVENTS || st.bytes > RECENT_BYTES {
            match st.recent.pop_front() {
                Some((_, _, old)) => st.bytes -= old.len(),
                None => break,
            }
        }
        drop(st);
        self.changed.notify_all();
    }

    pub fn set_status(&self, json: String) {
        let mut st = lock(&self.state);
        st.status = Arc::from(json);
        st.status_at = Some(Instant::now());
        drop(st);
        self.changed.notify_all();
    }

    /// Whether a client asked for the status lately.
    pub fn status_wanted(&self) -> bool {
        lock(&self.state)
            .status_asked
            .is_some_and(|t| t.elapsed() < WANT_TTL)
    }

    /// The details clients asked for lately; None when nobody wants frames.
    pub fn frame_wanted(&self) -> Option<Vec<Subject>> {
        let mut st = lock(&self.state);
        st.frame_asked.retain(|(_, t)| t.elapsed() < WANT_TTL);
        if st.frame_asked.is_empty() {
            // Nobody watches: the last frame's memory goes back.
            st.frame = None;
            return None;
        }
        Some(st.frame_asked.iter().filter_map(|(s, _)| *s).collect())
    }

    pub fn set_frame(&self, frame: Arc<Frame>) {
        let mut st = lock(&self.state);
        st.frame = Some(frame);
        st.frame_at = Some(Instant::now());
        drop(st);
        self.changed.notify_all();
    }

    /// Waits (up to FRESH_WAIT) for a status built after now.
    fn fresh_status(&self) -> Arc<str> {
        let asked = Instant::now();
        let mut st = lock(&self.state);
        st.status_asked = Some(asked);
        self.wait_built(st, asked, |st| st.status_at).status.clone()
    }

    /// Waits (up to FRESH_WAIT) for a frame built after now, which has
    /// `detail`'s detail if it can be had.
    fn fresh_frame(&self, detail: Option<Subject>) -> Option<Arc<Frame>> {
        let asked = Instant::now();
        let mut st = lock(&self.state);
        match st.frame_asked.iter_mut().find(|(s, _)| *s == detail) {
            Some(w) => w.1 = asked,
            None => st.frame_asked.push((detail, asked)),
        }
        self.wait_built(st, asked, |st| st.frame_at).frame.clone()
    }

    /// Waits until `built` says something was built at or after `asked`,
    /// the hub closes, or FRESH_WAIT passes.
    fn wait_built<'a>(
        &self,
        mut st: std::sync::MutexGuard<'a, HubState>,
        asked: Instant,
        built: impl Fn(&HubState) -> Option<Instant>,
    ) -> std::sync::MutexGuard<'a, HubState> {
        let deadline = asked + FRESH_WAIT;
        while built(&st).is_none_or(|t| t < asked) && !self.closed.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        st
    }

    /// Wakes every follower so it can see the hub is closed.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.changed.notify_all();
    }

    /// Events after sequence `after` (or from `since_ms` when `after` is
    /// None), waiting up to `wait` for one to arrive. Also how many were
    /// lost because the ring moved past `after`.
    fn read(
        &self,
        after: Option<u64>,
        since_ms: u64,
        wait: Duration,
    ) -> (Vec<(u64, Arc<str>)>, u64) {
        let mut st = lock(&self.state);
        if let Some(a) = after
            && st.next_seq == a + 1
            && !wait.is_zero()
            && !self.closed.load(Ordering::Relaxed)
        {
            st = self
                .changed
                .wait_timeout(st, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let first = st.recent.front().map_or(st.next_seq, |e| e.1);
        let lost = after.map_or(0, |a| first.saturating_sub(a + 1));
        let out = st
            .recent
            .iter()
            .filter(|(ms, seq, _)| match after {
                Some(a) => *seq > a,
                None => *ms >= since_ms,
            })
            .map(|(_, seq, line)| (*seq, line.clone()))
            .collect();
        (out, lost)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicked client thread must not take the API down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
enum Request {
    Events {
        #[serde(default)]
        since_ms: u64,
        #[serde(default)]
        follow: bool,
    },
    Status,
    Top {
        #[serde(default)]
        detail: Option<Subject>,
    },
}

pub struct Server {
    path: PathBuf,
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
    /// The listening socket, shut down to wake the blocked accept.
    fd: std::os::fd::RawFd,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds the socket (creating its directory), sets its access, and
    /// serves in a thread. Fails if another daemon answers on `path`.
    pub fn start(path: &Path, group: Option<&str>, hub: Arc<Hub>) -> Result<Server> {
        let gid = group.map(group_id).transpose()?;
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("creating the API socket's directory {}", dir.display())
            })?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                bail!(
                    "{} exists and is not a socket; remove it or set [api] socket",
                    path.display()
                );
            }
            if UnixStream::connect(path).is_ok() {
                bail!(
                    "another sentinel daemon is listening on {} ([api] socket)",
                    path.display()
                );
            }
            // Left by a daemon that was killed.
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("creating the API socket {}", path.display()))?;
        let mode = if gid.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(path, None, Some(gid))
                .with_context(|| format!("giving {} to group {gid}", path.display()))?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let thread = {
            let (hub, stop) = (hub.clone(), stop.clone());
            std::thread::Builder::new()
                .name("api".into())
                .stack_size(128 << 10)
                .spawn(move || accept(listener, hub, stop))
                .context("starting the API thread")?
        };
        Ok(Server {
            path: path.to_owned(),
            hub,
            stop,
            fd,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.hub.close();
        // Wakes the blocking accept (with EINVAL), even if someone removed
        // the socket file and a connect could not. The accept thread owns
        // the fd and closes it when it returns.
        // SAFETY: the fd stays open until that thread is joined below.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept(listener: UnixListener, hub: Arc<Hub>, stop: Arc<AtomicBool>) {
    let clients = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(conn) = conn else { continue };
        if clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
            let _ = answer_error(&conn, "too many clients; try again");
            continue;
        }
        clients.fetch_add(1, Ordering::Relaxed);
        let (hub, stop, done) = (hub.clone(), stop.clone(), clients.clone());
        let spawned = std::thread::Builder::new()
            .name("api-client".into())
            .stack_size(128 << 10)
            .spawn(move || {
                if let Err(e) = serve(conn, &hub, &stop) {
                    tracing::debug!("API client: {e:#}");
                }
                done.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            clients.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn answer_error(mut conn: &UnixStream, msg: &str) -> std::io::Result<()> {
    let line = serde_json::json!({ "error": msg }).to_string();
    conn.write_all(line.as_bytes())?;
    conn.write_all(b"\n")
}

fn serve(conn: UnixStream, hub: &Hub, stop: &AtomicBool) -> Result<()> {
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    conn.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&conn).take(MAX_REQUEST)).read_line(&mut line)?;
    let req: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            answer_error(&conn, &format!("bad request: {e}"))?;
            return Ok(());
        }
    };
    let mut out = std::io::BufWriter::new(&conn);
    match req {
        Request::Status => {
            let status = hub.fresh_status();
            writeln!(out, "{status}")?;
        }
        Request::Top { detail } => match hub.fresh_frame(detail) {
            Some(frame) => {
                serde_json::to_writer(&mut out, &*frame)?;
                writeln!(out)?;
            }
            None => {
                drop(out);
                answer_error(&conn, "the daemon has not built a frame yet; try again")?;
                return Ok(());
            }
        },
        Request::Events { since_ms, follow } => {
            let (events, _) = hub.read(None, since_ms, Duration::ZERO);
            let mut last = events.last().map(|e| e.0);
            if last.is_none() {
                last = lock(&hub.state).next_seq.checked_sub(1);
            }
            for (_, e) in &events {
                writeln!(out, "{e}")?;
            }
            out.flush()?;
            if !follow {
                return Ok(());
            }
            // A follower is idle most of the time; the write timeout only
            // guards against one that stops reading.
            while !stop.load(Ordering::Relaxed) && !hub.closed.load(Ordering::Relaxed) {
                let after = last.unwrap_or(u64::MAX);
                let (events, lost) = if last.is_some() {
                    hub.read(Some(after), 0, Duration::from_secs(1))
                } else {
                    // Nothing was ever published: wait for sequence 0.
                    std::thread::sleep(Duration::from_millis(200));
                    hub.read(None, 0, Duration::ZERO)
                };
                if lost > 0 {
                    let note = serde_json::json!({ "lost": lost }).to_string();
                    writeln!(out, "{note}")?;
                }
                for (seq, e) in &events {
                    writeln!(out, "{e}")?;
                    last = Some(*seq);
                }
                if !events.is_empty() || lost > 0 {
                    out.flush()?;
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn group_id(name: &str) -> Result<u32> {
    let cname = std::ffi::CString::new(name).context("[api] group: a group name has no NUL")?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 16 << 10];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is to live, correctly sized storage.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        bail!("[api] group: no group named {name:?} on this host");
    }
    Ok(grp.gr_gid)
}

/// The client side, for `sentinel events`.
pub mod client {
    use super::*;

    /// Connects, with errors that say what to do.
    pub fn connect(path: &Path) -> Result<UnixStream> {
        UnixStream::connect(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                anyhow::anyhow!(
                    "no sentinel daemon answers on {} (is `sentinel daemon` running? \
                 its [api] socket may be elsewhere: pass --socket)",
                    path.display()
                )
            }
            std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
                "permission denied on {}: run as root, or as a member of the daemon's [api] group",
                path.display()
            ),
            _ => anyhow::Error::new(e).context(format!("connecting to {}", path.display())),
        })
    }

    /// Sends `request` and calls `line` for each answer line until the
    /// daemon closes the stream or `line` returns false.
    pub fn request(
        path: &Path,
        request: &serde_json::Value,
        mut line: impl FnMut(&str) -> Result<bool>,
    ) -> Result<()> {
        let mut conn = connect(path)?;
        let mut req = request.to_string();
        req.push('\n');
        conn.write_all(req.as_bytes())
            .with_context(|| format!("sending a request to {}", path.display()))?;
        let reader = BufReader::new(conn);
        for l in reader.lines() {
            let l = l.with_context(|| format!("reading from {}", path.display()))?;
            if let Ok(serde_json::Value::Object(m)) = serde_json::from_str(&l)
                && let Some(e) = m.get("error").and_then(|e| e.as_str())
            {
                bail!("the daemon refused the request: {e}");
            }
            if !line(&l)? {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path, req: serde_json::Value, max: usize) -> Vec<String> {
        let mut got = Vec::new();
        client::request(path, &req, |l| {
            got.push(l.to_string());
            Ok(got.len() < max)
        })
        .unwrap();
        got
    }

    #[test]
    fn events_since_status_and_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/api.sock");
        let hub = Arc::new(Hub::default());
        hub.publish(1000, r#"{"n":1}"#);
        hub.publish(2000, r#"{"n":2}"#);
        hub.set_status(r#"{"up":true}"#.into());
        let server = Server::start(&path, None, hub.clone()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let all = lines(&path, serde_json::json!({"cmd":"events"}), 10);
        assert_eq!(all, [r#"{"n":1}"#, r#"{"n":2}"#]);
        let since = lines(
            &path,
            serde_json::json!({"cmd":"events","since_ms":1500}),
            10,
        );
        assert_eq!(since, [r#"{"n":2}"#]);
        assert_eq!(
            lines(&path, serde_json::json!({"cmd":"status"}), 10),
            [r#"{"up":true}"#]
        );

        let p = path.clone();
        let follower = std::thread::spawn(move || {
            lines(
                &p,
                serde_json::json!({"cmd":"events","since_ms":1500,"follow":true}),
                3,
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        hub.publish(3000, r#"{"n":3}"#);
        hub.publish(4000, r#"{"n":4}"#);
        assert_eq!(
            follower.join().unwrap(),
            [r#"{"n":2}"#, r#"{"n":3}"#, r#"{"n":4}"#]
        );

        let err = client::request(&path, &serde_json::json!({"cmd":"nope"}), |_| Ok(true));
        assert!(err.unwrap_err().to_string().contains("bad request"));

        // A second daemon on the same socket is refused; the first's socket
        // is removed when it stops, and a stale one is replaced.
        let again = Server::start(&path, None, Arc::new(Hub::default()));
        assert!(
            again
                .err()
                .unwrap()
                .to_string()
                .contains("another sentinel daemon")
        );
        drop(server);
        assert!(!path.exists());
        // Stopping does not depend on the socket file still being there.
        let gone = Server::start(&path, None, Arc::new(Hub::default())).unwrap();
        std::fs::remove_file(&path).unwrap();
        drop(gone);
        let _stale = UnixListener::bind(&path).unwrap();
        drop(_stale);
        let _server = Server::start(&path, None, hub).unwrap();
    }

    #[test]
    fn frames_are_built_only_while_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let hub = Arc::new(Hub::default());
        let _server = Server::start(&path, None, hub.clone()).unwrap();
        assert!(hub.frame_wanted().is_none(), "nobody asked");
        assert!(!hub.status_wanted());

        let want = Subject::Process { pid: 7, start: 9 };
        let p = path.clone();
        let client = std::thread::spawn(move || {
            lines(&p, serde_json::json!({"cmd":"top","detail": want}), 1)
        });
        // The daemon's loop: it sees the request, builds, publishes.
        let wanted = loop {
            if let Some(w) = hub.frame_wanted() {
                break w;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(wanted, [want]);
        hub.set_frame(Arc::new(Frame {
            host: "h".into(),
            ..Default::default()
        }));
        let got = client.join().unwrap();
        let frame: Frame = serde_json::from_str(&got[0]).unwrap();
        assert_eq!(frame.host, "h");
    }

    #[test]
    fn the_ring_is_bounded() {
        let hub = Hub::default();
        for i in 0..(RECENT_EVENTS + 10) {
            hub.publish(i as u64, "{}");
        }
        let (all, _) = hub.read(None, 0, Duration::ZERO);
        assert_eq!(all.len(), RECENT_EVENTS);
        // A follower that had seen sequence 0 missed 1 to 9.
        let (_, lost) = hub.read(Some(0), 0, Duration::ZERO);
        assert_eq!(lost, 9);
    }

    #[test]
    fn no_daemon_says_so() {
        let e = client::connect(Path::new("/nonexistent/s.sock")).unwrap_err();
        assert!(
            e.to_string()
                .contains("no sentinel daemon answers on /nonexistent/s.sock")
        );
    }
}
