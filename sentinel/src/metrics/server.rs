//! A deliberately small HTTP/1.1 server for `/metrics`: one thread, one
//! connection at a time, every read and write under a deadline, one
//! request per connection. A scraper needs no more, and a slow or hostile
//! client can hold it for a few seconds at most, never the daemon.
use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::Page;

/// The daemon locks its memory, so every thread's stack is resident: this
/// one needs little.
const STACK_BYTES: usize = 256 * 1024;
/// How long a client has to send its request headers.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long a client has to take the response.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(10);
/// Request line plus headers; Prometheus sends a few hundred bytes.
const MAX_REQUEST: usize = 8 * 1024;
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the endpoint could not start, naming the address
/// ("127.0.0.1:9464: address already in use").
#[derive(Debug, thiserror::Error)]
#[error("{addr}: {reason}")]
pub struct ServeError {
    pub addr: SocketAddr,
    pub reason: String,
}

/// The running endpoint; stops its thread when stopped or dropped.
pub struct Server {
    addr: SocketAddr,
    /// Writing to it wakes the thread to stop.
    wake: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

/// Binds `addr` and serves `page` from a thread of its own.
pub fn serve(addr: SocketAddr, page: Page) -> Result<Server, ServeError> {
    let err = |reason: String| ServeError { addr, reason };
    let listener = TcpListener::bind(addr).map_err(|e| err(bind_reason(&e, addr)))?;
    let local = listener.local_addr().map_err(|e| err(e.to_string()))?;
    // Accepting never blocks: readiness comes from poll, and a client that
    // hung up in between must not stall the thread in accept.
    listener
        .set_nonblocking(true)
        .map_err(|e| err(format!("setting the socket non-blocking: {e}")))?;
    let (wait, wake) = pipe().map_err(|e| err(format!("creating a wake-up pipe: {e}")))?;
    let thread = std::thread::Builder::new()
        .name("sentinel-metrics".into())
        .stack_size(STACK_BYTES)
        .spawn(move || run(listener, wait, page))
        .map_err(|e| err(format!("starting its thread: {e}")))?;
    tracing::info!("metrics at http://{local}/metrics");
    Ok(Server {
        addr: local,
        wake: Some(wake),
        thread: Some(thread),
    })
}

impl Server {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread and closes the socket; waits for a connection in
    /// progress (at most its deadlines).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Closing the write end makes the read end readable (EOF).
        drop(self.wake.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::warn!("the metrics thread panicked");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bind_reason(e: &io::Error, addr: SocketAddr) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => "address already in use".into(),
        io::ErrorKind::AddrNotAvailable => "address not available on this host".into(),
        io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)".into()
        }
        _ => e.to_string(),
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn run(listener: TcpListener, wait: OwnedFd, page: Page) {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wait.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!("metrics endpoint stopped: poll: {e}");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = handle(stream, &page, wait.as_raw_fd()) {
                    tracing::debug!("metrics request from {peer}: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                // Out of descriptors or memory: pause rather than spin, the
                // connection stays queued for the next try.
                tracing::warn!("metrics endpoint: accept: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

struct Request<'a> {
    method: &'a str,
    path: &'a str,
}

/// Serves one connection. Its socket is non-blocking and every wait is a
/// poll that also watches `stop`, so stopping the server never waits for a
/// slow client.
fn handle(stream: TcpStream, page: &Page, stop: RawFd) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    let mut conn = Conn { stream, stop };
    let mut buf = [0u8; MAX_REQUEST];
    let len = match read_head(&mut conn, &mut buf)? {
        Some(len) => len,
        None => {
            return respond(
                &mut conn,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
                false,
            );
        }
    };
    let Some(req) = parse(&buf[..len]) else {
        return respond(
            &mut conn,
            "400 Bad Request",
            "text/plain",
            b"bad request\n",
            false,
        );
    };
    let head = req.method == "HEAD";
    if req.method != "GET" && !head {
        return respond(
            &mut conn,
            "405 Method Not Allowed",
            "text/plain",
            b"only GET and HEAD\n",
            false,
        );
    }
    match req.path {
        "/metrics" => {
            let text = page.get();
            respond(&mut conn, "200 OK", CONTENT_TYPE, text.as_bytes(), head)
        }
        "/" => respond(
            &mut conn,
            "200 OK",
            "text/html; charset=utf-8",
            b"<html><body>sentinel: <a href=\"/metrics\">/metrics</a></body></html>\n",
            head,
        ),
        _ => respond(
            &mut conn,
            "404 Not Found",
            "text/plain",
            b"not found; try /metrics\n",
            head,
        ),
    }
}

struct Conn {
    stream: TcpStream,
    stop: RawFd,
}

impl Conn {
    /// Waits until the socket is ready for `events`, the deadline passes
    /// (`TimedOut`) or the server is told to stop (`Interrupted`).
    fn wait(&self, events: i16, deadline: Instant) -> io::Result<()> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "client too slow"));
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.stream.as_raw_fd(),
                    events,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.stop,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            // SAFETY: `fds` is a valid array of two pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if fds[1].revents != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "server stopping",
                ));
            }
            if fds[0].revents != 0 {
                return Ok(());
            }
        }
    }

    fn read(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        loop {
            match self.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(libc::POLLIN, deadline)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    fn write_all(&mut self, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
        while !buf.is_empty() {
            match self.stream.write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(libc::POLLOUT, deadline)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Reads until the end of the headers. `Ok(None)` when they do not fit.
fn read_head(conn: &mut Conn, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // The deadline is for the whole request: a client trickling a byte at
    // a time cannot extend it.
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Ok(None);
        }
        let n = conn.read(&mut buf[len..], deadline)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the end of the request",
            ));
        }
        let from = len.saturating_sub(3);
        len += n;
        let head = &buf[from..len];
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(len));
        }
    }
}

/// The request line; the headers do not matter to this server.
fn parse(head: &[u8]) -> Option<Request<'_>> {
    let line_end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?.trim_end();
    let mut it = line.split(' ');
    let (method, target, version) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split(['?', '#']).next()?;
    Some(Request { method, path })
}

fn respond(
    conn: &mut Conn,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let deadline = Instant::now() + RESPONSE_DEADLINE;
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\nCache-Control: no-store\r\n\r\n",
        body.len()
    );
    conn.write_all(header.as_bytes(), deadline)?;
    if !head_only {
        conn.write_all(body, deadline)?;
    }
    conn.stream.shutdown(Shutdown::Write)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn page(text: &str) -> Page {
        let p = Page::default();
        p.set(text.into());
        p
    }

    #[test]
    fn serves_the_page_and_nothing_else() {
        let p = page("# HELP a b\n# TYPE a gauge\na 1\n");
        let server = serve((Ipv4Addr::LOCALHOST, 0).into(), p.clone()).unwrap();
        let addr = server.local_addr();
        assert!(p.since_scrape().is_none());
        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
        assert!(
            r.ends_with("\r\n\r\n# HELP a b\n# TYPE a gauge\na 1\n"),
            "{r}"
        );
        assert!(p.since_scrape().is_some_and(|s| s < 5.0));
        let r = get(addr, "GET /metrics?x=1 HTTP/1.0\n\n");
        assert!(r.contains("a 1\n"), "{r}");
        let r = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        assert!(get(addr, "GET / HTTP/1.1\r\n\r\n").contains("href=\"/metrics\""));
        assert!(get(addr, "GET /x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(addr, "nonsense\r\n\r\n").starts_with("HTTP/1.1 400"));
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(10_000));
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(big.as_bytes());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");
        server.stop();
        assert!(TcpStream::connect(addr).is_err(), "stopped means closed");
    }

    #[test]
    fn a_silent_client_does_not_wedge_the_server() {
        let server = serve((Ipv4Addr::LOCALHOST, 0).into(), page("a 1\n")).unwrap();
        let addr = server.local_addr();
        // Connects and says nothing: the next client waits at most the
        // request deadline.
        let _silent = TcpStream::connect(addr).unwrap();
        let t = Instant::now();
        let r = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.ends_with("a 1\n"), "{r}");
        assert!(t.elapsed() < REQUEST_DEADLINE + Duration::from_secs(2));
        // Stopping with a silent connection open does not wait for it.
        let _open = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        drop(server);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[test]
    fn binds_v6_and_any_and_names_the_address_in_use() {
        if let Ok(s) = serve((Ipv6Addr::LOCALHOST, 0).into(), page("a 1\n")) {
            let r = get(s.local_addr(), "GET /metrics HTTP/1.1\r\n\r\n");
            assert!(r.ends_with("a 1\n"));
        }
        let any = serve((Ipv4Addr::UNSPECIFIED, 0).into(), page("b 2\n")).unwrap();
        let port = any.local_addr().port();
        let r = get(
            (Ipv4Addr::LOCALHOST, port).into(),
            "GET /metrics HTTP/1.1\r\n\r\n",
        );
        assert!(r.ends_with("b 2\n"));
        let e = serve((Ipv4Addr::UNSPECIFIED, port).into(), Page::default())
            .err()
            .expect("the port is taken");
        assert_eq!(
            e.to_string(),
            format!("0.0.0.0:{port}: address already in use")
        );
    }
}
