//! Where events go after the detectors: the log (stdout, always on) and
//! any number of webhooks, each with its own threads and spool, so a slow
//! or dead receiver never delays detection or another sink.
//!
//! `log.rs` writes stdout; `webhook.rs` runs a webhook's threads around its
//! `spool.rs`, posting through `http.rs` in a `format.rs` body; `summary.rs`
//! folds what is not sent one by one (rate limit, full spool).
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::config::{Config, WebhookFormat};
use crate::event::{Event, Severity};

pub mod format;
mod http;
mod log;
pub mod spool;
pub mod summary;
mod webhook;

pub use webhook::Timing;

/// Events waiting in memory per sink; past this the detection loop drops
/// rather than waits.
const QUEUE: usize = 1024;

/// The daemon locks all its memory, every thread stack included, and
/// these threads only format, write files and make small requests.
const STACK_SIZE: usize = 256 * 1024;

/// One sink's state, for `/metrics`, the local API and `sentinel top`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SinkStatus {
    /// `log`, or the webhook's `name`. Never its URL.
    pub name: String,
    /// `log` or `webhook`.
    pub kind: &'static str,
    /// `text`/`json` for the log; `json`/`slack`/`alertmanager` for webhooks.
    pub format: &'static str,
    /// Events handed to the sink's thread and not yet spooled or written.
    pub queued: usize,
    /// Events in the on-disk spool, waiting for delivery.
    pub spooled: usize,
    pub spool_bytes: u64,
    pub delivered: u64,
    /// Failed delivery attempts (each retry counts).
    pub failures: u64,
    /// Events lost because the spool was full (oldest info first) or
    /// could not be written (disk full).
    pub dropped_spool_full: u64,
    /// Events lost because the in-memory queue was full.
    pub dropped_queue_full: u64,
    /// Events folded into a summary by the rate limit.
    pub rate_limited: u64,
    /// Events the receiver rejected for good (a 4xx other than 408/429).
    pub rejected: u64,
    /// The last delivery error, worded without the URL.
    pub last_error: Option<String>,
}

/// Counters a sink's threads update and `status` reads.
#[derive(Debug, Default)]
struct Stats {
    queued: AtomicUsize,
    spooled: AtomicUsize,
    spool_bytes: AtomicU64,
    delivered: AtomicU64,
    failures: AtomicU64,
    dropped_spool_full: AtomicU64,
    dropped_queue_full: AtomicU64,
    rate_limited: AtomicU64,
    rejected: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    /// Adds and returns the new value.
    fn add(counter: &AtomicU64, n: u64) -> u64 {
        counter.fetch_add(n, Ordering::Relaxed) + n
    }

    fn set_spool(&self, len: usize, bytes: u64) {
        self.spooled.store(len, Ordering::Relaxed);
        self.spool_bytes.store(bytes, Ordering::Relaxed);
    }

    /// `msg` must not contain the URL or a header value.
    fn set_error(&self, msg: &str) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(msg.to_string());
    }

    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

struct Sink {
    name: String,
    kind: &'static str,
    format: &'static str,
    min_severity: Severity,
    /// Dropped to stop the sink: its thread drains the queue and exits.
    tx: Option<SyncSender<Arc<Event>>>,
    stats: Arc<Stats>,
    threads: Vec<JoinHandle<()>>,
    webhook: Option<webhook::Running>,
}

impl Sink {
    fn stop(&mut self) {
        self.tx = None;
        if let Some(w) = &self.webhook {
            w.stop();
        }
    }
}

/// The running sinks. Dropping them stops them without waiting; prefer
/// [`Sinks::shutdown`].
pub struct Sinks {
    sinks: Vec<Sink>,
}

impl Sinks {
    /// Creates `<state_dir>/spool/<name>/` for every webhook and checks it
    /// is writable (the error names the directory), checks every URL and
    /// header, then starts the log sink's thread and each webhook's.
    pub fn start(cfg: &Config) -> anyhow::Result<Sinks> {
        Sinks::start_with(cfg, &Timing::default(), Box::new(std::io::stdout()))
    }

    /// [`Sinks::start`] with other delays and the log written elsewhere
    /// (tests).
    pub fn start_with(
        cfg: &Config,
        timing: &Timing,
        log_out: Box<dyn std::io::Write + Send>,
    ) -> anyhow::Result<Sinks> {
        // Everything an operator must fix is checked before any thread
        // starts.
        let roots = if cfg.webhooks.iter().any(|h| {
            h.url
                .expose()
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("https:")
        }) {
            http::system_roots()
        } else {
            ureq::tls::RootCerts::WebPki
        };
        let mut ready = Vec::new();
        for hook in &cfg.webhooks {
            // The name becomes a path component.
            if hook.name.is_empty()
                || hook.name == "."
                || hook.name == ".."
                || hook.name.contains('/')
            {
                bail!("sink name {:?} cannot name a spool directory", hook.name);
            }
            let dir = cfg.daemon.state_dir.join("spool").join(&hook.name);
            let limits = spool::Limits {
                max_events: cfg.spool.max_events,
                max_bytes: cfg.spool.max_bytes,
            };
            let sp =
                spool::Spool::open(&dir, limits).with_context(|| format!("sink {}", hook.name))?;
            let url = match hook.format {
                WebhookFormat::Alertmanager => format::alertmanager_url(hook.url.expose()),
                _ => hook.url.expose().to_string(),
            };
            let client = http::Client::new(hook, &url, &roots)?;
            ready.push((hook, sp, client));
        }

        // From here on, an early return drops `sinks`, which stops what
        // was started.
        let mut sinks = Sinks { sinks: Vec::new() };
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let thread = log::spawn(cfg.log.format, rx, stats.clone(), log_out)
            .context("cannot start the log sink's thread")?;
        sinks.sinks.push(Sink {
            name: "log".into(),
            kind: "log",
            format: log::name(cfg.log.format),
            min_severity: Severity::Info,
            tx: Some(tx),
            stats,
            threads: vec![thread],
            webhook: None,
        });
        for (hook, sp, client) in ready {
            let (tx, rx) = sync_channel(QUEUE);
            let stats = Arc::new(Stats::default());
            let mut running = webhook::spawn(hook, sp, client, stats.clone(), rx, timing)?;
            tracing::debug!(sink = %hook.name, format = format::name(hook.format), "webhook sink started");
            sinks.sinks.push(Sink {
                name: hook.name.clone(),
                kind: "webhook",
                format: format::name(hook.format),
                min_severity: hook.min_severity,
                tx: Some(tx),
                stats,
                threads: std::mem::take(&mut running.threads),
                webhook: Some(running),
            });
        }
        Ok(sinks)
    }

    /// Queues `ev` for every sink that wants its severity. Never blocks:
    /// a sink whose queue is full loses the event (counted, logged).
    pub fn send(&self, ev: &Arc<Event>) {
        for s in &self.sinks {
            if ev.severity < s.min_severity {
                continue;
            }
            let Some(tx) = &s.tx else { continue };
            // Counted before sending so the thread never sees it negative.
            s.stats.queued.fetch_add(1, Ordering::Relaxed);
            match tx.try_send(ev.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    s.stats.queued.fetch_sub(1, Ordering::Relaxed);
                    let n = Stats::add(&s.stats.dropped_queue_full, 1);
                    if n.is_power_of_two() {
                        tracing::warn!(
                            sink = %s.name,
                            "sink queue full: {n} events dropped so far (event {})",
                            ev.id
                        );
                    }
                }
            }
        }
    }

    pub fn status(&self) -> Vec<SinkStatus> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.sinks
            .iter()
            .map(|s| {
                let st = &s.stats;
                SinkStatus {
                    name: s.name.clone(),
                    kind: s.kind,
                    format: s.format,
                    queued: st.queued.load(Ordering::Relaxed),
                    spooled: st.spooled.load(Ordering::Relaxed),
                    spool_bytes: load(&st.spool_bytes),
                    delivered: load(&st.delivered),
                    failures: load(&st.failures),
                    dropped_spool_full: load(&st.dropped_spool_full),
                    dropped_queue_full: load(&st.dropped_queue_full),
                    rate_limited: load(&st.rate_limited),
                    rejected: load(&st.rejected),
                    last_error: st.last_error(),
                }
            })
            .collect()
    }

    /// Stops every sink: the log writes what is queued, each webhook moves
    /// what is queued in memory into its spool and abandons a delivery in
    /// progress (it stays spooled). Returns within `deadline`; a thread
    /// still busy then (a slow disk, a request waiting on its timeout) is
    /// left to finish on its own.
    pub fn shutdown(mut self, deadline: Duration) {
        let end = Instant::now() + deadline;
        let mut threads = Vec::new();
        for s in &mut self.sinks {
            s.stop();
            threads.extend(s.threads.drain(..).map(|t| (s.name.clone(), t)));
        }
        while Instant::now() < end && threads.iter().any(|(_, t)| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        for (name, t) in threads {
            if !t.is_finished() {
                tracing::warn!(sink = %name, "still busy at shutdown; not waiting for it");
            } else if t.join().is_err() {
                tracing::error!(sink = %name, "sink thread panicked");
            }
        }
    }
}

impl Drop for Sinks {
    fn drop(&mut self) {
        for s in &mut self.sinks {
            s.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::path::Path;

    use super::*;
    use crate::config::{Secret, Webhook};
    use crate::event::{Kind, State};
    use crate::sink::summary::tests::event;

    #[derive(Debug, Clone)]
    struct Request {
        path: String,
        headers: HashMap<String, String>,
        body: serde_json::Value,
        status: u16,
    }

    /// A one-connection-at-a-time HTTP/1.1 receiver on 127.0.0.1 that
    /// answers the n-th request (from 0) with `status(n)`.
    fn receiver(
        status: impl Fn(usize) -> u16 + Send + 'static,
    ) -> (String, Arc<Mutex<Vec<Request>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                let mut headers = HashMap::new();
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
                }
                let len: usize = headers["content-length"].parse().unwrap();
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let mut seen = log.lock().unwrap();
                let status = status(seen.len());
                seen.push(Request {
                    path,
                    headers,
                    body: serde_json::from_slice(&body).unwrap(),
                    status,
                });
                drop(seen);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        (url, seen)
    }

    /// Fast retries, and the log sink's lines out of the test output.
    fn start(cfg: &Config) -> Sinks {
        Sinks::start_with(cfg, &fast(), Box::new(std::io::sink())).unwrap()
    }

    fn fast() -> Timing {
        Timing {
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(40),
            repost_every: Duration::from_millis(150),
            rate_window: Duration::from_millis(300),
            reject_attempts: 5,
        }
    }

    fn config(state: &Path, url: &str, format: WebhookFormat) -> Config {
        let mut cfg = Config::default();
        cfg.daemon.state_dir = state.to_owned();
        cfg.webhooks = vec![Webhook {
            name: "hook".into(),
            url: Secret::new(url),
            format,
            headers: vec![("X-Token".into(), Secret::new("s3cret"))],
            min_severity: Severity::Info,
            timeout: Duration::from_millis(500),
            max_per_minute: 0,
        }];
        cfg
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn ok(seen: &Mutex<Vec<Request>>) -> Vec<Request> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| r.status == 200)
            .cloned()
            .collect()
    }

    fn webhook_status(s: &Sinks) -> SinkStatus {
        s.status().into_iter().find(|s| s.name == "hook").unwrap()
    }

    #[test]
    fn retries_deliver_everything_in_order_with_stable_ids() {
        let (url, seen) = receiver(|n| if n < 2 { 500 } else { 200 });
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path(),
            &format!("{url}/hooks/T0/SECRET"),
            WebhookFormat::Json,
        );
        let sinks = start(&cfg);
        for n in 0..3 {
            sinks.send(&Arc::new(event(n, Kind::Hang, Severity::Warning)));
        }
        wait_for("3 deliveries", || ok(&seen).len() == 3);
        let all = seen.lock().unwrap().clone();
        let keys: Vec<&str> = all
            .iter()
            .map(|r| r.headers["idempotency-key"].as_str())
            .collect();
        assert_eq!(keys, ["id0000", "id0000", "id0000", "id0001", "id0002"]);
        for r in &all {
            assert_eq!(r.path, "/hooks/T0/SECRET");
            assert_eq!(r.headers["content-type"], "application/json");
            assert_eq!(r.headers["x-token"], "s3cret");
            assert_eq!(r.body["id"], r.headers["idempotency-key"].as_str());
        }
        wait_for("3 delivered", || webhook_status(&sinks).delivered == 3);
        let st = webhook_status(&sinks);
        assert_eq!((st.delivered, st.failures), (3, 2));
        assert_eq!(st.last_error.as_deref(), Some("HTTP 500"));
        let log = sinks
            .status()
            .into_iter()
            .find(|s| s.name == "log")
            .unwrap();
        assert_eq!((log.kind, log.format), ("log", "text"));
        // Idle threads stop at once.
        let t = Instant::now();
        sinks.shutdown(Duration::from_secs(2));
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("spool/hook"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn spooled_events_survive_a_restart() {
        // Nothing listens on the first run.
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), &dead_url, WebhookFormat::Json);
        cfg.spool.max_events = 3;
        let sinks = start(&cfg);
        sinks.send(&Arc::new(event(0, Kind::Hang, Severity::Info)));
        sinks.send(&Arc::new(event(1, Kind::Hang, Severity::Critical)));
        sinks.send(&Arc::new(event(2, Kind::Hang, Severity::Info)));
        sinks.send(&Arc::new(event(3, Kind::OomKill, Severity::Critical)));
        wait_for("a failure and a loss", || {
            let st = webhook_status(&sinks);
            st.failures > 0 && st.dropped_spool_full == 1
        });
        let st = webhook_status(&sinks);
        assert_eq!((st.spooled, st.dropped_spool_full), (3, 1));
        assert_eq!(st.last_error.as_deref(), Some("connection refused"));
        sinks.shutdown(Duration::from_secs(2));

        let (url, seen) = receiver(|_| 200);
        let cfg = Config {
            webhooks: vec![Webhook {
                url: Secret::new(url),
                ..cfg.webhooks[0].clone()
            }],
            ..cfg
        };
        let sinks = start(&cfg);
        assert_eq!(webhook_status(&sinks).spooled, 3);
        wait_for("3 deliveries", || ok(&seen).len() == 3);
        let ids: Vec<String> = ok(&seen).iter().map(|r| r.body["id"].to_string()).collect();
        assert_eq!(ids, ["\"id0001\"", "\"id0002\"", "\"id0003\""]);
        sinks.shutdown(Duration::from_secs(2));
    }

    #[test]
    fn spool_losses_are_reported_when_the_receiver_is_back() {
        let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let is_up = up.clone();
        let (url, seen) = receiver(move |_| {
            if is_up.load(Ordering::SeqCst) {
                200
            } else {
                503
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), &url, WebhookFormat::Json);
        cfg.spool.max_events = 2;
        let sinks = start(&cfg);
        for n in 0..4 {
            sinks.send(&Arc::new(event(n, Kind::Hang, Severity::Info)));
        }
        wait_for("2 losses", || {
            webhook_status(&sinks).dropped_spool_full == 2
        });
        up.store(true, Ordering::SeqCst);
        wait_for("the last event", || {
            ok(&seen).iter().any(|r| r.body["id"] == "id0003")
        });
        let got: Vec<serde_json::Value> = ok(&seen).into_iter().map(|r| r.body).collect();
        // Sent right after the first delivery.
        let at = got.iter().position(|b| b["type"] == "summary");
        assert_eq!(at, Some(1), "{got:?}");
        let s = &got[1];
        assert_eq!(s["reason"], "spool_full");
        assert_eq!(s["suppressed"], 2);
        assert_eq!(s["ids"], serde_json::json!(["id0000", "id0001"]));
        // A dropped event may have been read for a retry just before the
        // spool dropped it, and be delivered all the same (at least once).
        let kept: Vec<&str> = got
            .iter()
            .filter(|b| b["type"] != "summary")
            .filter_map(|b| b["id"].as_str())
            .filter(|id| !["id0000", "id0001"].contains(id))
            .collect();
        assert_eq!(kept, ["id0002", "id0003"]);
        sinks.shutdown(Duration::from_secs(2));
    }

    #[test]
    fn rate_limit_folds_a_storm_into_a_summary() {
        let (url, seen) = receiver(|_| 200);
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), &url, WebhookFormat::Json);
        cfg.webhooks[0].max_per_minute = 2;
        cfg.webhooks[0].min_severity = Severity::Warning;
        let sinks = start(&cfg);
        sinks.send(&Arc::new(event(99, Kind::Hang, Severity::Info)));
        for n in 0..6 {
            sinks.send(&Arc::new(event(n, Kind::Deadlock, Severity::Warning)));
        }
        wait_for("2 events and a summary", || ok(&seen).len() == 3);
        let got = ok(&seen);
        assert_eq!(got[0].body["id"], "id0000");
        assert_eq!(got[1].body["id"], "id0001");
        let s = &got[2].body;
        assert_eq!(
            (s["type"].as_str(), s["reason"].as_str()),
            (Some("summary"), Some("rate_limit"))
        );
        assert_eq!(s["suppressed"], 4);
        assert_eq!(s["by_kind"]["deadlock"], 4);
        assert_eq!(got[2].headers["idempotency-key"], s["id"].as_str().unwrap());
        assert_eq!(webhook_status(&sinks).rate_limited, 4);
        sinks.shutdown(Duration::from_secs(2));
    }

    #[test]
    fn alertmanager_posts_alert_arrays_and_keeps_them_alive() {
        let (url, seen) = receiver(|_| 200);
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), &format!("{url}/"), WebhookFormat::Alertmanager);
        cfg.webhooks[0].max_per_minute = 1;
        let sinks = start(&cfg);
        let firing = event(1, Kind::ThreadExplosion, Severity::Warning);
        sinks.send(&Arc::new(firing.clone()));
        // Re-posted while open.
        wait_for("a re-post", || seen.lock().unwrap().len() >= 2);
        let mut resolved = firing.clone();
        resolved.id = "id-resolved".into();
        resolved.state = State::Resolved;
        resolved.evidence = serde_json::json!({"duration_s": 1.0});
        sinks.send(&Arc::new(resolved));
        wait_for("the resolution", || {
            seen.lock()
                .unwrap()
                .iter()
                .any(|r| r.headers["idempotency-key"] == "id-resolved")
        });
        let all = seen.lock().unwrap().clone();
        assert!(all.iter().all(|r| r.path == "/api/v2/alerts"));
        assert_eq!(
            all[0].body[0]["labels"]["alertname"],
            "sentinel_thread_explosion"
        );
        assert!(all[1].headers["idempotency-key"].starts_with("refresh-"));
        assert_eq!(all[1].body[0]["labels"], all[0].body[0]["labels"]);
        // No rate limit for Alertmanager (max_per_minute = 1 above).
        assert_eq!(webhook_status(&sinks).rate_limited, 0);
        let n = all.len();
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(seen.lock().unwrap().len(), n, "nothing open is re-posted");
        sinks.shutdown(Duration::from_secs(2));
    }

    #[test]
    fn refused_events_are_dropped_after_five_attempts() {
        let (url, seen) = receiver(|n| if n < 5 { 400 } else { 200 });
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &url, WebhookFormat::Slack);
        let sinks = start(&cfg);
        sinks.send(&Arc::new(event(0, Kind::Hang, Severity::Warning)));
        sinks.send(&Arc::new(event(1, Kind::Hang, Severity::Warning)));
        wait_for("the second event", || webhook_status(&sinks).delivered == 1);
        let all = seen.lock().unwrap().clone();
        assert_eq!(all.len(), 6);
        assert!(
            all[..5]
                .iter()
                .all(|r| r.headers["idempotency-key"] == "id0000")
        );
        assert_eq!(all[5].headers["idempotency-key"], "id0001");
        assert!(
            all[5].body["text"]
                .as_str()
                .unwrap()
                .contains("hang firing")
        );
        let st = webhook_status(&sinks);
        assert_eq!((st.rejected, st.failures, st.delivered), (1, 5, 1));
        sinks.shutdown(Duration::from_secs(2));
    }

    #[test]
    fn shutdown_spools_what_is_queued() {
        // A receiver that never answers: the delivery thread is stuck in
        // a request while events queue up.
        let hang = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", hang.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), &url, WebhookFormat::Json);
        cfg.webhooks[0].timeout = Duration::from_secs(30);
        let sinks = start(&cfg);
        for n in 0..20 {
            sinks.send(&Arc::new(event(n, Kind::Hang, Severity::Warning)));
        }
        let t = Instant::now();
        sinks.shutdown(Duration::from_millis(500));
        assert!(t.elapsed() < Duration::from_secs(1));
        let s = spool::Spool::open(
            &dir.path().join("spool/hook"),
            spool::Limits {
                max_events: 100,
                max_bytes: 1 << 20,
            },
        )
        .unwrap();
        assert_eq!(s.len(), 20);
        drop(hang);
    }

    #[test]
    fn unwritable_state_dir_fails_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        let cfg = config(&file, "http://127.0.0.1:9/SECRET", WebhookFormat::Json);
        let msg = format!("{:#}", Sinks::start(&cfg).err().unwrap());
        assert!(
            msg.contains(&file.join("spool/hook").display().to_string()),
            "{msg}"
        );
        assert!(
            msg.starts_with("sink hook: cannot create spool directory"),
            "{msg}"
        );
        assert!(!msg.contains("SECRET"), "{msg}");

        let mut cfg = config(dir.path(), "http://127.0.0.1:9/SECRET", WebhookFormat::Json);
        cfg.webhooks[0].name = "..".into();
        assert!(Sinks::start(&cfg).is_err());
    }
}
