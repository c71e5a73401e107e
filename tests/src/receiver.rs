//! A scripted HTTP/1.1 webhook receiver on 127.0.0.1, for the sink tests.
//!
//! Each incoming request takes the next [`Behaviour`] of the script (in
//! arrival order, across connections); once the script is used up every
//! request gets the default (`Ok` unless told otherwise). Every request is
//! recorded: method, path, headers, body (and the body parsed as JSON when it
//! is JSON), arrival time and the behaviour it got.
//!
//! "Refused connections" is a receiver whose port is reserved but not yet
//! listened on ([`Receiver::reserve`]); [`Receiver::listen`] binds it later on
//! the same port.
//!
//! Plain std: a non-blocking accept loop on one thread, one thread per
//! connection; all of them stop and are joined on drop.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::truncate;

/// What the receiver does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// `200 OK` with body `ok`.
    Ok,
    /// This status (e.g. 500) with a short body.
    Status(u16),
    /// Reads the request and then says nothing for this long (past the
    /// sink's timeout), then closes the connection.
    Hang(Duration),
    /// Reads the request and closes the connection without a reply.
    Close,
}

impl Behaviour {
    /// The request was answered with a 2xx.
    pub fn accepted(self) -> bool {
        match self {
            Behaviour::Ok => true,
            Behaviour::Status(s) => (200..300).contains(&s),
            Behaviour::Hang(_) | Behaviour::Close => false,
        }
    }
}

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Request {
    /// 0, 1, 2... in arrival order.
    pub seq: usize,
    /// Which TCP connection it came on (0, 1, 2... in accept order).
    pub connection: usize,
    pub arrived: Instant,
    pub method: String,
    /// The request target as sent (path and query).
    pub path: String,
    /// Header names lower-cased, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
    /// What the receiver did with it.
    pub answer: Behaviour,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn idempotency_key(&self) -> Option<&str> {
        self.header("idempotency-key")
    }

    /// `id` of a JSON object body.
    pub fn body_id(&self) -> Option<&str> {
        self.json.as_ref()?.get("id")?.as_str()
    }

    /// The event this request carries: the `Idempotency-Key` header, else
    /// the body's `id`.
    pub fn event_id(&self) -> Option<&str> {
        self.idempotency_key().or_else(|| self.body_id())
    }

    pub fn accepted(&self) -> bool {
        self.answer.accepted()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// One line for failure messages.
    pub fn brief(&self, since: Instant) -> String {
        format!(
            "+{:.1}s #{} conn {} {} {} key={} body_id={} -> {:?}; body: {}",
            self.arrived.saturating_duration_since(since).as_secs_f64(),
            self.seq,
            self.connection,
            self.method,
            self.path,
            self.idempotency_key().unwrap_or("-"),
            self.body_id().unwrap_or("-"),
            self.answer,
            truncate(&self.body_text(), 300)
        )
    }
}

struct Shared {
    script: Mutex<Script>,
    requests: Mutex<Vec<Request>>,
    changed: Condvar,
    stop: AtomicBool,
    connections: AtomicUsize,
    conn_threads: Mutex<Vec<JoinHandle<()>>>,
    /// Errors of the receiver itself (malformed requests and the like).
    errors: Mutex<Vec<String>>,
}

struct Script {
    steps: VecDeque<Behaviour>,
    default: Behaviour,
}

/// See the module docs.
pub struct Receiver {
    addr: SocketAddr,
    started: Instant,
    listening_since: Option<Instant>,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

/// A loopback port nobody listens on right now (bind :0, read, drop).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Receiver {
    /// Listens now, answering per `script`, then `Ok`.
    pub fn start(script: &[Behaviour]) -> Result<Self> {
        let mut r = Self::reserve(script)?;
        r.listen()?;
        Ok(r)
    }

    /// Picks a free port but does not listen yet: connections are refused
    /// until [`Receiver::listen`].
    pub fn reserve(script: &[Behaviour]) -> Result<Self> {
        let port = free_port()?;
        Ok(Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            started: Instant::now(),
            listening_since: None,
            shared: Arc::new(Shared {
                script: Mutex::new(Script {
                    steps: script.iter().copied().collect(),
                    default: Behaviour::Ok,
                }),
                requests: Mutex::new(Vec::new()),
                changed: Condvar::new(),
                stop: AtomicBool::new(false),
                connections: AtomicUsize::new(0),
                conn_threads: Mutex::new(Vec::new()),
                errors: Mutex::new(Vec::new()),
            }),
            accept_thread: None,
        })
    }

    /// What requests get once the script is used up (default `Ok`).
    pub fn set_default(&self, b: Behaviour) {
        self.shared.script.lock().unwrap().default = b;
    }

    /// Appends steps to the script.
    pub fn push_script(&self, steps: &[Behaviour]) {
        self.shared
            .script
            .lock()
            .unwrap()
            .steps
            .extend(steps.iter().copied());
    }

    /// Starts listening on the reserved port (retrying for a few seconds if
    /// the port is momentarily busy).
    pub fn listen(&mut self) -> Result<()> {
        if self.accept_thread.is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("binding the receiver's reserved port {}", self.addr)
                    });
                }
            }
        };
        listener.set_nonblocking(true)?;
        self.listening_since = Some(Instant::now());
        let shared = Arc::clone(&self.shared);
        self.accept_thread = Some(std::thread::spawn(move || accept_loop(listener, shared)));
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// When [`Receiver::listen`] bound the port.
    pub fn listening_since(&self) -> Option<Instant> {
        self.listening_since
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests answered with a 2xx.
    pub fn accepted(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(Request::accepted)
            .collect()
    }

    /// The event ids of the accepted requests, in order (duplicates kept).
    pub fn accepted_ids(&self) -> Vec<String> {
        self.accepted()
            .iter()
            .filter_map(|r| r.event_id().map(str::to_string))
            .collect()
    }

    /// How many requests (any outcome) carried event `id`.
    pub fn attempts(&self, id: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.event_id() == Some(id))
            .count()
    }

    /// Waits up to `timeout` until `pred` holds for the requests so far;
    /// returns them. The error lists every request.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Request]) -> bool,
    ) -> Result<Vec<Request>> {
        let deadline = Instant::now() + timeout;
        let mut reqs = self.shared.requests.lock().unwrap();
        loop {
            if pred(&reqs) {
                return Ok(reqs.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                drop(reqs);
                return Err(
                    self.failure(&format!("timed out after {timeout:?} waiting for {what}"))
                );
            }
            reqs = self
                .shared
                .changed
                .wait_timeout(reqs, (deadline - now).min(Duration::from_millis(200)))
                .unwrap()
                .0;
        }
    }

    /// Waits until at least `n` requests were accepted.
    pub fn wait_accepted(&self, n: usize, timeout: Duration) -> Result<Vec<Request>> {
        self.wait_until(&format!("{n} accepted requests"), timeout, |reqs| {
            reqs.iter().filter(|r| r.accepted()).count() >= n
        })
    }

    /// Waits until every id in `ids` was accepted at least once.
    pub fn wait_accepted_ids(&self, ids: &[String], timeout: Duration) -> Result<Vec<Request>> {
        self.wait_until(
            &format!("accepted deliveries of events {ids:?}"),
            timeout,
            |reqs| {
                ids.iter().all(|id| {
                    reqs.iter()
                        .any(|r| r.accepted() && r.event_id() == Some(id.as_str()))
                })
            },
        )
    }

    /// Problems the receiver itself ran into (malformed requests).
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().unwrap().clone()
    }

    /// Every request, one line each, times relative to the receiver's
    /// creation.
    pub fn describe(&self) -> String {
        let reqs = self.requests();
        let mut s = format!(
            "receiver {} ({}), {} requests:\n",
            self.addr,
            match self.listening_since {
                Some(t) => format!(
                    "listening since +{:.1}s",
                    t.saturating_duration_since(self.started).as_secs_f64()
                ),
                None => "not listening".into(),
            },
            reqs.len()
        );
        for r in reqs.iter().take(200) {
            s.push_str(&r.brief(self.started));
            s.push('\n');
        }
        if reqs.len() > 200 {
            s.push_str(&format!("[... {} more ...]\n", reqs.len() - 200));
        }
        let errors = self.errors();
        if !errors.is_empty() {
            s.push_str(&format!("receiver errors: {errors:?}\n"));
        }
        s
    }

    pub fn failure(&self, what: &str) -> anyhow::Error {
        anyhow!("{what}\n--- {}", self.describe())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        let threads: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.shared.conn_threads.lock().unwrap());
        for t in threads {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let conn = shared.connections.fetch_add(1, Ordering::SeqCst);
                let s = Arc::clone(&shared);
                let t = std::thread::spawn(move || {
                    if let Err(e) = serve(stream, conn, &s) {
                        s.errors
                            .lock()
                            .unwrap()
                            .push(format!("connection {conn}: {e:#}"));
                    }
                });
                shared.conn_threads.lock().unwrap().push(t);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Reading one request: `Ok(None)` when the peer closed (or we are stopping)
/// before a request began.
struct Conn<'a> {
    stream: TcpStream,
    buf: Vec<u8>,
    shared: &'a Shared,
}

impl Conn<'_> {
    /// Reads more bytes into `buf`; `Ok(false)` on EOF or stop.
    fn fill(&mut self) -> Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return Ok(false);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn read_request(&mut self) -> Result<Option<RawRequest>> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > 256 * 1024 {
                bail!("request head larger than 256 KiB");
            }
            if !self.fill()? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                bail!(
                    "connection closed inside a request head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
            })
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let body = if get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            self.read_chunked()?
        } else {
            let len: usize = match get("content-length") {
                Some(v) => v
                    .parse()
                    .with_context(|| format!("bad Content-Length {v:?}"))?,
                None => 0,
            };
            while self.buf.len() < len {
                if !self.fill()? {
                    bail!("connection closed inside a {len}-byte body");
                }
            }
            self.buf.drain(..len).collect()
        };
        Ok(Some((method, path, headers, body)))
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if !self.fill()? {
                    bail!("connection closed inside a chunked body");
                }
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            self.buf.drain(..line_end + 2);
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .with_context(|| format!("bad chunk size line {line:?}"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let end = loop {
                        if let Some(i) = find(&self.buf, b"\r\n") {
                            break i;
                        }
                        if !self.fill()? {
                            bail!("connection closed inside chunked trailers");
                        }
                    };
                    self.buf.drain(..end + 2);
                    if end == 0 {
                        return Ok(body);
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if !self.fill()? {
                    bail!("connection closed inside a chunk");
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }
}

/// Method, target, headers, body.
type RawRequest = (String, String, Vec<(String, String)>, Vec<u8>);

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn serve(stream: TcpStream, conn: usize, shared: &Shared) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    stream.set_nodelay(true)?;
    let mut c = Conn {
        stream,
        buf: Vec::new(),
        shared,
    };
    loop {
        let Some((method, path, headers, body)) = c.read_request()? else {
            return Ok(());
        };
        let arrived = Instant::now();
        let answer = {
            let mut script = shared.script.lock().unwrap();
            let default = script.default;
            script.steps.pop_front().unwrap_or(default)
        };
        let json = serde_json::from_slice(&body).ok();
        let close_after = headers
            .iter()
            .any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"));
        {
            let mut reqs = shared.requests.lock().unwrap();
            let seq = reqs.len();
            reqs.push(Request {
                seq,
                connection: conn,
                arrived,
                method,
                path,
                headers,
                body,
                json,
                answer,
            });
        }
        shared.changed.notify_all();
        let status = match answer {
            Behaviour::Ok => 200,
            Behaviour::Status(s) => s,
            Behaviour::Close => return Ok(()),
            Behaviour::Hang(d) => {
                let until = Instant::now() + d;
                while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return Ok(());
            }
        };
        let body: &[u8] = if (200..300).contains(&status) {
            b"ok"
        } else {
            b"scripted failure"
        };
        let resp = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
            reason(status),
            body.len(),
            if close_after {
                "Connection: close\r\n"
            } else {
                ""
            }
        );
        let mut out = resp.into_bytes();
        out.extend_from_slice(body);
        if c.stream.write_all(&out).is_err() {
            return Ok(());
        }
        let _ = c.stream.flush();
        if close_after {
            return Ok(());
        }
    }
}

/// `GET http://<addr><path>` with a fresh connection; returns status and
/// body. For the metrics endpoint and Alertmanager's API.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    http_request(addr, "GET", path, &[], None, timeout)
}

/// Waits up to `timeout` until `GET /-/ready` on `addr` answers 200 (a
/// Prometheus-style server that `child` runs). Fails, with `log()` in the
/// message, when the child exits first or time runs out. `what` names the
/// server in messages.
pub fn wait_http_ready(
    child: &mut Child,
    addr: SocketAddr,
    what: &str,
    timeout: Duration,
    log: impl Fn() -> String,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{what} exited before it was ready ({status}); log:\n{}",
                log()
            );
        }
        if let Ok((200, _)) = http_get(addr, "/-/ready", Duration::from_secs(1)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{what} not ready on {addr} within {timeout:?}; log:\n{}",
                log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `max` bytes of the file at `path` (empty when unreadable),
/// marked `[...]` when cut.
pub fn log_tail(path: &Path, max: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    if s.len() > max {
        let mut start = s.len() - max;
        while !s.is_char_boundary(start) {
            start += 1;
        }
        format!("[...]\n{}", &s[start..])
    } else {
        s
    }
}

/// A minimal HTTP/1.1 client (`Connection: close`, reads to EOF).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    s.write_all(&bytes)
        .with_context(|| format!("{method} {path} to {addr}"))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)
        .with_context(|| format!("reading the answer to {method} {path} from {addr}"))?;
    let Some(head_end) = find(&resp, b"\r\n\r\n") else {
        bail!(
            "{method} {path} on {addr}: no complete response head in {:?}",
            String::from_utf8_lossy(&resp)
        );
    };
    let head = String::from_utf8_lossy(&resp[..head_end]).into_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{method} {path} on {addr}: bad status line in {head:?}"))?;
    let raw = &resp[head_end + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(raw)? } else { raw.to_vec() };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let Some(i) = find(raw, b"\r\n") else {
            bail!("truncated chunked body");
        };
        let line = String::from_utf8_lossy(&raw[..i]).into_owned();
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {line:?}"))?;
        raw = &raw[i + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[(size + 2).min(raw.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(addr: SocketAddr, body: &str, key: &str) -> Result<(u16, String)> {
        http_request(
            addr,
            "POST",
            "/hook",
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", key),
            ],
            Some(body.as_bytes()),
            Duration::from_millis(500),
        )
    }

    #[test]
    fn scripted_answers_and_records() {
        let r = Receiver::start(&[
            Behaviour::Status(500),
            Behaviour::Close,
            Behaviour::Hang(Duration::from_secs(2)),
        ])
        .unwrap();
        let a = r.addr();
        assert_eq!(post(a, r#"{"id":"a"}"#, "a").unwrap().0, 500);
        assert!(post(a, r#"{"id":"a"}"#, "a").is_err());
        let t = Instant::now();
        assert!(post(a, r#"{"id":"a"}"#, "a").is_err());
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(post(a, r#"{"id":"a"}"#, "a").unwrap().0, 200);
        assert_eq!(post(a, r#"{"id":"b"}"#, "b").unwrap().0, 200);
        assert_eq!(r.attempts("a"), 4);
        assert_eq!(r.accepted_ids(), vec!["a".to_string(), "b".to_string()]);
        let reqs = r.requests();
        assert_eq!(reqs[0].path, "/hook");
        assert_eq!(reqs[0].json.as_ref().unwrap()["id"], "a");
        assert!(r.errors().is_empty(), "{:?}", r.errors());
    }

    #[test]
    fn refuses_until_listening() {
        let mut r = Receiver::reserve(&[]).unwrap();
        let e = post(r.addr(), "{}", "x").unwrap_err();
        assert!(format!("{e:#}").contains("refused"), "{e:#}");
        r.listen().unwrap();
        assert_eq!(post(r.addr(), "{}", "x").unwrap().0, 200);
        r.wait_accepted(1, Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn keep_alive_and_chunked() {
        let r = Receiver::start(&[]).unwrap();
        let mut s = TcpStream::connect(r.addr()).unwrap();
        let req = "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"i\r\n9\r\nd\":\"one\"}\r\n0\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{\"id\":\"two\"}";
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert_eq!(out.matches("200 OK").count(), 2, "{out}");
        assert_eq!(r.accepted_ids(), vec!["one".to_string(), "two".to_string()]);
    }
}
