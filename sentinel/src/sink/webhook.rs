//! One `[[sink.webhook]]`: two threads around its spool. `sink-<name>`
//! takes events off the channel and spools them (disk only, so it keeps
//! up while the receiver is down); `post-<name>` delivers the spool oldest
//! first, backing off while the receiver fails. At least once: an item
//! leaves the spool only after a 2xx.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::Value;

use super::format::{self, ALERT_TTL_MS};
use super::http::{Client, PostError};
use super::spool::{Lost, Spool};
use super::summary::{Item, RateLimiter, Reason, Tally};
use super::{STACK_SIZE, Stats};
use crate::config::{self, WebhookFormat};
use crate::event::{Event, Kind, State, rfc3339, unix_ms_now};

/// Delays, injectable so tests run in milliseconds.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The first retry waits up to this, doubling per failure...
    pub backoff_base: Duration,
    /// ...up to this.
    pub backoff_cap: Duration,
    /// Open Alertmanager alerts are re-posted this often.
    pub repost_every: Duration,
    /// The rate limit's window.
    pub rate_window: Duration,
    /// A receiver that refuses an event (4xx) this many times makes the
    /// sink give up on that event.
    pub reject_attempts: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            repost_every: Duration::from_secs(60),
            rate_window: Duration::from_secs(60),
            reject_attempts: 5,
        }
    }
}

/// How long a thread with nothing to do sleeps before looking again; any
/// new work wakes it sooner.
const IDLE: Duration = Duration::from_secs(3600);

/// More open alerts than this are not re-posted (they still resolve).
const MAX_OPEN_ALERTS: usize = 1000;

struct Shared {
    name: String,
    format: WebhookFormat,
    spool: Mutex<Spool>,
    /// Signalled when something is spooled or the sink stops.
    wake: Condvar,
    stop: AtomicBool,
    stats: Arc<Stats>,
    /// Dropped by the full spool, to report once the receiver is back.
    losses: Mutex<Tally>,
}

/// A running webhook sink.
pub struct Running {
    shared: Arc<Shared>,
    pub threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// Asks the delivery thread to stop after its current request; the
    /// spool thread stops when its channel closes.
    pub fn stop(&self) {
        // Under the lock, so the delivery thread cannot miss the wake-up
        // between checking `stop` and starting to wait.
        let guard = self.shared.lock_spool();
        self.shared.stop.store(true, Ordering::SeqCst);
        drop(guard);
        self.shared.wake.notify_all();
    }
}

pub fn spawn(
    hook: &config::Webhook,
    spool: Spool,
    client: Client,
    stats: Arc<Stats>,
    rx: Receiver<Arc<Event>>,
    timing: &Timing,
) -> anyhow::Result<Running> {
    stats.set_spool(spool.len(), spool.bytes());
    let shared = Arc::new(Shared {
        name: hook.name.clone(),
        format: hook.format,
        spool: Mutex::new(spool),
        wake: Condvar::new(),
        stop: AtomicBool::new(false),
        stats,
        losses: Mutex::new(Tally::default()),
    });
    // Alertmanager groups and throttles notifications itself.
    let per_minute = match hook.format {
        WebhookFormat::Alertmanager => 0,
        _ => hook.max_per_minute,
    };
    let limiter = RateLimiter::new(per_minute, timing.rate_window);
    let sh = shared.clone();
    let receiver = std::thread::Builder::new()
        .name(format!("sink-{}", hook.name))
        .stack_size(STACK_SIZE)
        .spawn(move || receive(&sh, rx, limiter))
        .with_context(|| format!("sink {}: cannot start its thread", hook.name))?;
    let sh = shared.clone();
    let timing = timing.clone();
    let poster = std::thread::Builder::new()
        .name(format!("post-{}", hook.name))
        .stack_size(STACK_SIZE)
        .spawn(move || deliver(&sh, &client, &timing))
        .with_context(|| format!("sink {}: cannot start its thread", hook.name))?;
    Ok(Running {
        shared,
        threads: vec![receiver, poster],
    })
}

impl Shared {
    fn lock_spool(&self) -> MutexGuard<'_, Spool> {
        // A panic elsewhere must not take the spool with it: its state is
        // on disk and the index is rebuilt on the next start anyway.
        self.spool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spool_item(&self, item: &Item) {
        let mut sp = self.lock_spool();
        let lost = match sp.push(item) {
            Ok(lost) => lost,
            Err(e) => {
                tracing::error!(
                    sink = %self.name,
                    "cannot write to the spool in {}: {e}; event {} lost",
                    sp.dir().display(),
                    item.id()
                );
                vec![Lost::of(item)]
            }
        };
        self.stats.set_spool(sp.len(), sp.bytes());
        drop(sp);
        self.wake.notify_all();
        if lost.is_empty() {
            return;
        }
        let n = Stats::add(&self.stats.dropped_spool_full, lost.len() as u64);
        if crosses_power_of_two(n, lost.len() as u64) {
            tracing::warn!(
                sink = %self.name,
                "spool full: {n} events dropped so far (oldest info first, then warnings; criticals are kept)"
            );
        }
        let mut t = self.losses.lock().unwrap_or_else(PoisonError::into_inner);
        for l in lost {
            t.add(&l.id, &l.kind, l.severity, &l.host);
        }
    }

    fn remove(&self, seq: u64) {
        let mut sp = self.lock_spool();
        sp.remove(seq);
        self.stats.set_spool(sp.len(), sp.bytes());
    }

    /// Blocks until there is something to do, or returns None once the
    /// sink stops.
    fn next_work(&self, retry_at: Option<Instant>, repost_at: Option<Instant>) -> Option<Work> {
        let mut sp = self.lock_spool();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            let now = Instant::now();
            let backing_off = retry_at.filter(|t| now < *t);
            if backing_off.is_none() {
                if repost_at.is_some_and(|t| now >= t) {
                    return Some(Work::Repost);
                }
                let front = sp.front();
                self.stats.set_spool(sp.len(), sp.bytes());
                if let Some((seq, item)) = front {
                    return Some(Work::Deliver(seq, Box::new(item)));
                }
            }
            let until = backing_off.into_iter().chain(repost_at).min();
            let wait = until.map_or(IDLE, |t| t.saturating_duration_since(now));
            sp = self
                .wake
                .wait_timeout(sp, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

fn receive(sh: &Shared, rx: Receiver<Arc<Event>>, mut limiter: RateLimiter) {
    loop {
        let wait = limiter
            .due()
            .map_or(IDLE, |t| t.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait) {
            Ok(ev) => {
                if limiter.admit(&ev, Instant::now()) {
                    sh.spool_item(&Item::Event((*ev).clone()));
                } else {
                    Stats::add(&sh.stats.rate_limited, 1);
                }
                sh.stats.queued.fetch_sub(1, Ordering::Relaxed);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // Stopping: what the rate limit folded so far is spooled
                // now rather than lost.
                if let Some(s) = limiter.flush(Instant::now(), unix_ms_now(), true) {
                    sh.spool_item(&Item::Summary(s));
                }
                return;
            }
        }
        if let Some(s) = limiter.flush(Instant::now(), unix_ms_now(), false) {
            tracing::info!(sink = %sh.name, "rate limit: {}", s.text());
            sh.spool_item(&Item::Summary(s));
        }
    }
}

enum Work {
    Deliver(u64, Box<Item>),
    Repost,
}

fn deliver(sh: &Shared, client: &Client, timing: &Timing) {
    let mut backoff = Backoff::new(timing.backoff_base, timing.backoff_cap);
    let mut retry_at = None;
    // The item being refused, and how often it was.
    let mut refused: Option<(u64, u32)> = None;
    let mut failing_since: Option<Instant> = None;
    let mut alerts = Alerts::new(timing.repost_every);

    while let Some(work) = sh.next_work(retry_at, alerts.due()) {
        let (seq, item) = match work {
            Work::Repost => {
                alerts.repost(client, &sh.name);
                continue;
            }
            Work::Deliver(seq, item) => (seq, *item),
        };
        let now_ms = unix_ms_now();
        let (body, alert) = match (sh.format, &item) {
            (WebhookFormat::Alertmanager, Item::Summary(s)) => {
                // Not an alert; Alertmanager has nowhere to put it.
                tracing::info!(sink = %sh.name, "{}", s.text());
                sh.remove(seq);
                continue;
            }
            (WebhookFormat::Alertmanager, Item::Event(e)) => {
                let sent = alerts.payload(e, now_ms);
                let first = sent.get(0).cloned();
                (sent.to_string().into_bytes(), first)
            }
            (f, item) => (format::body(f, item), None),
        };
        match client.post(item.id(), &body) {
            Ok(()) => {
                sh.remove(seq);
                Stats::add(&sh.stats.delivered, 1);
                backoff.reset();
                retry_at = None;
                refused = None;
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        sink = %sh.name,
                        "delivering again after {:.0} s of failures",
                        since.elapsed().as_secs_f64()
                    );
                }
                if let (Item::Event(e), Some(a)) = (&item, &alert) {
                    alerts.delivered(e, a);
                }
                report_losses(sh, client);
            }
            Err(PostError::Retry { msg, after }) => {
                let n = Stats::add(&sh.stats.failures, 1);
                sh.stats.set_error(&msg);
                let since = *failing_since.get_or_insert_with(Instant::now);
                let wait = backoff
                    .next_wait()
                    .max(after.unwrap_or_default().min(timing.backoff_cap));
                if crosses_power_of_two(n, 1) {
                    tracing::warn!(
                        sink = %sh.name,
                        "delivery failed: {msg}; retrying in {:.1} s ({} spooled, failing for {:.0} s)",
                        wait.as_secs_f64(),
                        sh.stats.spooled.load(Ordering::Relaxed),
                        since.elapsed().as_secs_f64()
                    );
                }
                retry_at = Some(Instant::now() + wait);
            }
            Err(PostError::Reject(msg)) => {
                Stats::add(&sh.stats.failures, 1);
                sh.stats.set_error(&msg);
                let n = match refused {
                    Some((s, n)) if s == seq => n + 1,
                    _ => 1,
                };
                if n >= timing.reject_attempts {
                    tracing::error!(
                        sink = %sh.name,
                        event = item.id(),
                        "the receiver refused the event {n} times ({msg}); dropping it"
                    );
                    sh.remove(seq);
                    Stats::add(&sh.stats.rejected, 1);
                    refused = None;
                    retry_at = None;
                    backoff.reset();
                } else {
                    tracing::warn!(
                        sink = %sh.name,
                        event = item.id(),
                        "the receiver refused the event ({msg}), attempt {n} of {}",
                        timing.reject_attempts
                    );
                    refused = Some((seq, n));
                    retry_at = Some(Instant::now() + backoff.next_wait());
                }
            }
        }
    }
}

/// Once the receiver takes events again, tell it what the full spool
/// dropped meanwhile: now if it takes the summary, else in order from
/// the spool.
fn report_losses(sh: &Shared, client: &Client) {
    let summary = sh
        .losses
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take(Reason::SpoolFull, unix_ms_now());
    let Some(s) = summary else { return };
    tracing::warn!(sink = %sh.name, "{}", s.text());
    if sh.format == WebhookFormat::Alertmanager {
        return;
    }
    let item = Item::Summary(s);
    let body = format::body(sh.format, &item);
    if client.post(item.id(), &body).is_err() {
        sh.spool_item(&item);
    }
}

/// True when a counter that just grew by `by` to `n` passed a power of
/// two: logs a storm at 1, 2, 4, 8... rather than every time.
fn crosses_power_of_two(n: u64, by: u64) -> bool {
    let before = n.saturating_sub(by);
    (before + 1)
        .checked_next_power_of_two()
        .is_some_and(|p| p <= n)
}

/// Alertmanager forgets a firing alert at its `endsAt` unless it is
/// posted again, so alerts whose resolution has not been delivered yet are
/// re-posted every `every`. Best effort: kept in memory, not spooled.
struct Alerts {
    /// The last firing alert delivered, by incident.
    open: HashMap<String, Value>,
    every: Duration,
    next: Option<Instant>,
}

impl Alerts {
    fn new(every: Duration) -> Alerts {
        Alerts {
            open: HashMap::new(),
            every,
            next: None,
        }
    }

    fn due(&self) -> Option<Instant> {
        self.next
    }

    /// The alert for `e`, plus the incident's previous alert ended when
    /// its labels differ (severity rose): Alertmanager tells alerts apart
    /// by labels, so the old one would otherwise linger.
    fn payload(&self, e: &Event, now_ms: u64) -> Value {
        let alert = format::alert(e, now_ms);
        let mut out = vec![alert];
        if let Some(prev) = self.open.get(&e.incident)
            && prev["labels"] != out[0]["labels"]
        {
            out.push(format::ended(prev, &rfc3339(now_ms)));
        }
        Value::Array(out)
    }

    /// `alert` is the first of the payload, the one for `e`.
    fn delivered(&mut self, e: &Event, alert: &Value) {
        match e.state {
            // An OOM kill is a point in time: nothing will resolve it, so
            // it is left to expire.
            State::Firing if e.kind == Kind::OomKill => {}
            State::Firing => {
                if self.open.len() < MAX_OPEN_ALERTS || self.open.contains_key(&e.incident) {
                    self.open.insert(e.incident.clone(), alert.clone());
                    self.next.get_or_insert_with(|| Instant::now() + self.every);
                }
            }
            State::Resolved => {
                self.open.remove(&e.incident);
            }
        }
        if self.open.is_empty() {
            self.next = None;
        }
    }

    fn repost(&mut self, client: &Client, sink: &str) {
        self.next = Some(Instant::now() + self.every);
        let now_ms = unix_ms_now();
        let alerts: Vec<Value> = self
            .open
            .values()
            .map(|a| format::refreshed(a, now_ms))
            .collect();
        let key = format!("refresh-{now_ms}");
        match client.post(&key, Value::Array(alerts).to_string().as_bytes()) {
            Ok(()) => tracing::debug!(
                sink,
                "re-posted {} open alerts, ending in {} s unless re-posted",
                self.open.len(),
                ALERT_TTL_MS / 1000
            ),
            Err(e) => tracing::debug!(sink, "re-posting open alerts failed: {e}"),
        }
    }
}

/// Exponential backoff with full jitter: the n-th wait is uniform in
/// [0, min(cap, base * 2^n)], so many senders that failed together do not
/// retry together.
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let here = &nanos as *const u64 as u64;
        Backoff {
            base,
            cap,
            attempt: 0,
            rng: (nanos ^ here.rotate_left(32)) | 1,
        }
    }

    /// The longest the next wait can be.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(30);
        self.base.saturating_mul(factor).min(self.cap)
    }

    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(self.uniform())
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// xorshift64*: plenty for spreading retries, and no dependency.
    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Severity;
    use crate::sink::summary::tests::event;

    #[test]
    fn backoff_doubles_to_the_cap_with_full_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let ceilings: Vec<u64> = (0..12)
            .map(|_| {
                let c = b.ceiling();
                let d = b.next_wait();
                assert!(d <= c, "{d:?} > {c:?}");
                c.as_secs()
            })
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        for _ in 0..100 {
            b.next_wait();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(300));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));

        // Jitter spreads over the whole range.
        let mut b = Backoff::new(Duration::from_secs(300), Duration::from_secs(300));
        let waits: Vec<f64> = (0..1000).map(|_| b.next_wait().as_secs_f64()).collect();
        let (lo, hi) = waits
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), w| (lo.min(*w), hi.max(*w)));
        assert!(lo < 30.0 && hi > 270.0 && hi <= 300.0, "{lo} {hi}");
        let mean = waits.iter().sum::<f64>() / waits.len() as f64;
        assert!((120.0..180.0).contains(&mean), "{mean}");
    }

    #[test]
    fn powers_of_two() {
        let hits: Vec<u64> = (1..=20).filter(|n| crosses_power_of_two(*n, 1)).collect();
        assert_eq!(hits, [1, 2, 4, 8, 16]);
        assert!(crosses_power_of_two(7, 4)); // from 3 to 7 passes 4
        assert!(!crosses_power_of_two(7, 2));
        assert!(!crosses_power_of_two(0, 0));
    }

    #[test]
    fn alertmanager_tracks_open_alerts() {
        let mut a = Alerts::new(Duration::from_secs(60));
        let warn = event(1, Kind::Hang, Severity::Warning);
        let p = a.payload(&warn, 0);
        assert_eq!(p.as_array().map(Vec::len), Some(1));
        a.delivered(&warn, &p[0]);
        assert!(a.due().is_some());

        // Escalation: the warning alert ends alongside the critical one.
        let mut crit = warn.clone();
        crit.severity = Severity::Critical;
        crit.id = "id-crit".into();
        let p = a.payload(&crit, 1_000_000);
        let sent = p.as_array().unwrap();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0]["labels"]["severity"], "critical");
        assert_eq!(sent[1]["labels"]["severity"], "warning");
        assert_eq!(sent[1]["endsAt"], rfc3339(1_000_000));
        a.delivered(&crit, &sent[0]);

        let mut resolved = crit.clone();
        resolved.state = State::Resolved;
        let p = a.payload(&resolved, 2_000_000);
        assert_eq!(p.as_array().map(Vec::len), Some(1));
        a.delivered(&resolved, &p[0]);
        assert!(a.open.is_empty() && a.due().is_none());

        let oom = event(2, Kind::OomKill, Severity::Critical);
        let p = a.payload(&oom, 0);
        a.delivered(&oom, &p[0]);
        assert!(a.open.is_empty());
    }
}
