//! What a webhook sends instead of events it did not deliver one by one:
//! a storm past `max_per_minute`, or events the full spool had to drop,
//! become one summary message.
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::event::{Event, Severity, event_id, rfc3339};

/// What a webhook's spool holds and its thread delivers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Item {
    Event(Event),
    Summary(Summary),
}

impl Item {
    pub fn id(&self) -> &str {
        match self {
            Item::Event(e) => &e.id,
            Item::Summary(s) => &s.id,
        }
    }

    /// Decides what the full spool drops first.
    pub fn severity(&self) -> Severity {
        match self {
            Item::Event(e) => e.severity,
            Item::Summary(s) => s.severity,
        }
    }

    /// The event kind, or `summary`.
    pub fn kind(&self) -> &'static str {
        match self {
            Item::Event(e) => e.kind.name(),
            Item::Summary(_) => "summary",
        }
    }

    pub fn host(&self) -> &str {
        match self {
            Item::Event(e) => &e.host,
            Item::Summary(s) => &s.host,
        }
    }
}

/// Why a summary was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// More events than the sink's `max_per_minute`.
    RateLimit,
    /// The spool was full and dropped these (oldest info first).
    SpoolFull,
}

/// Events folded into one message. The `json` format sends it as is:
///
/// ```json
/// {"type": "summary", "id": "6f1c…", "host": "web1", "ts": "2026-11-23T13:40:00.123Z",
///  "reason": "rate_limit", "severity": "critical", "suppressed": 42,
///  "by_kind": {"hang": 40, "oom_kill": 2}, "ids": ["9a0e…", "…"]}
/// ```
///
/// `reason` is `rate_limit` or `spool_full`; `severity` is the worst
/// folded; `ids` lists the first 20 folded event ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "summary")]
pub struct Summary {
    pub id: String,
    pub host: String,
    pub ts: String,
    pub reason: Reason,
    pub severity: Severity,
    pub suppressed: u64,
    pub by_kind: BTreeMap<String, u64>,
    pub ids: Vec<String>,
}

impl Summary {
    /// One line for people (Slack, logs).
    pub fn text(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let why = match self.reason {
            Reason::RateLimit => "over the sink's rate limit, not sent one by one",
            Reason::SpoolFull => "lost: the spool was full while the receiver was unreachable",
        };
        format!(
            "{} events on {} {why}: {}",
            self.suppressed,
            self.host,
            kinds.join(", ")
        )
    }
}

/// Only this many ids travel in a summary; the counts are complete.
const MAX_IDS: usize = 20;

/// Counts events until they are taken as one summary.
#[derive(Debug, Default)]
pub struct Tally {
    host: String,
    count: u64,
    worst: Option<Severity>,
    by_kind: BTreeMap<String, u64>,
    ids: Vec<String>,
}

impl Tally {
    pub fn add(&mut self, id: &str, kind: &str, severity: Severity, host: &str) {
        if self.host.is_empty() {
            self.host = host.to_string();
        }
        self.count += 1;
        self.worst = self.worst.max(Some(severity));
        *self.by_kind.entry(kind.to_string()).or_default() += 1;
        if self.ids.len() < MAX_IDS && !id.is_empty() {
            self.ids.push(id.to_string());
        }
    }

    pub fn add_item(&mut self, item: &Item) {
        self.add(item.id(), item.kind(), item.severity(), item.host());
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The summary so far, leaving the tally empty; None if nothing was
    /// counted.
    pub fn take(&mut self, reason: Reason, now_ms: u64) -> Option<Summary> {
        if self.is_empty() {
            return None;
        }
        let t = std::mem::take(self);
        let host = if t.host.is_empty() {
            crate::host::hostname()
        } else {
            t.host
        };
        let ts = rfc3339(now_ms);
        let reason_name = match reason {
            Reason::RateLimit => "rate_limit",
            Reason::SpoolFull => "spool_full",
        };
        Some(Summary {
            id: event_id(&[
                b"summary",
                host.as_bytes(),
                reason_name.as_bytes(),
                ts.as_bytes(),
            ]),
            host,
            ts,
            reason,
            severity: t.worst.unwrap_or(Severity::Info),
            suppressed: t.count,
            by_kind: t.by_kind,
            ids: t.ids,
        })
    }
}

/// At most `max` events in any rolling window (a minute); the rest are
/// folded into one summary, due one window after the first folded event.
#[derive(Debug)]
pub struct RateLimiter {
    max: usize,
    window: Duration,
    /// When the events still inside the window were let through.
    admitted: VecDeque<Instant>,
    folded: Tally,
    due: Option<Instant>,
}

impl RateLimiter {
    /// `max` 0 lets everything through.
    pub fn new(max: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            max: max as usize,
            window,
            admitted: VecDeque::new(),
            folded: Tally::default(),
            due: None,
        }
    }

    /// True: deliver the event. False: it was folded into the pending
    /// summary.
    pub fn admit(&mut self, ev: &Event, now: Instant) -> bool {
        if self.max == 0 {
            return true;
        }
        while let Some(&t) = self.admitted.front() {
            if now.duration_since(t) < self.window {
                break;
            }
            self.admitted.pop_front();
        }
        if self.admitted.len() < self.max {
            self.admitted.push_back(now);
            return true;
        }
        self.folded
            .add(&ev.id, ev.kind.name(), ev.severity, &ev.host);
        self.due.get_or_insert(now + self.window);
        false
    }

    /// When the pending summary is to be sent, if there is one.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The pending summary once it is due (or at once with `force`, when
    /// the sink stops).
    pub fn flush(&mut self, now: Instant, now_ms: u64, force: bool) -> Option<Summary> {
        let due = self.due?;
        if !force && now < due {
            return None;
        }
        self.due = None;
        self.folded.take(Reason::RateLimit, now_ms)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::{Kind, Names, State};

    pub fn event(n: u32, kind: Kind, severity: Severity) -> Event {
        Event {
            id: format!("id{n:04}"),
            incident: format!("inc{n:04}"),
            ts: rfc3339(1_795_441_200_000 + u64::from(n) * 1000),
            host: "web1".into(),
            kind,
            severity,
            state: State::Firing,
            subject: "process".into(),
            names: Names {
                pid: Some(4242),
                comm: Some("java".into()),
                cgroup: Some("/system.slice/app.service".into()),
                container: Some("app".into()),
            },
            summary: format!("event {n}"),
            evidence: serde_json::json!({"threads": 40}),
        }
    }

    #[test]
    fn rate_limiter_folds_the_excess_into_one_summary() {
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        let mut rl = RateLimiter::new(3, min);
        let admitted: Vec<bool> = (0..10)
            .map(|i| {
                let kind = if i == 9 { Kind::OomKill } else { Kind::Hang };
                let sev = if i == 9 {
                    Severity::Critical
                } else {
                    Severity::Warning
                };
                rl.admit(&event(i, kind, sev), t0 + Duration::from_secs(i.into()))
            })
            .collect();
        assert_eq!(admitted.iter().filter(|a| **a).count(), 3);
        assert!(admitted[..3].iter().all(|a| *a));
        // Due one window after the first folded event (at t0+3s).
        assert_eq!(rl.due(), Some(t0 + Duration::from_secs(63)));
        assert_eq!(rl.flush(t0 + Duration::from_secs(62), 0, false), None);
        let s = rl.flush(t0 + Duration::from_secs(63), 5000, false).unwrap();
        assert_eq!(s.suppressed, 7);
        assert_eq!(s.reason, Reason::RateLimit);
        assert_eq!(s.severity, Severity::Critical);
        assert_eq!(s.by_kind["hang"], 6);
        assert_eq!(s.by_kind["oom_kill"], 1);
        assert_eq!(s.ids.first().map(String::as_str), Some("id0003"));
        assert_eq!(s.host, "web1");
        assert_eq!(rl.due(), None);
        assert_eq!(rl.flush(t0 + Duration::from_secs(200), 0, true), None);

        // The window rolls: a minute after the first three, room again.
        assert!(rl.admit(
            &event(20, Kind::Hang, Severity::Info),
            t0 + Duration::from_secs(61)
        ));
    }

    #[test]
    fn unlimited_and_forced_flush() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(0, Duration::from_secs(60));
        assert!((0..1000).all(|i| rl.admit(&event(i, Kind::Hang, Severity::Info), t0)));
        assert_eq!(rl.due(), None);

        let mut rl = RateLimiter::new(1, Duration::from_secs(60));
        assert!(rl.admit(&event(1, Kind::Hang, Severity::Info), t0));
        assert!(!rl.admit(&event(2, Kind::Hang, Severity::Info), t0));
        let s = rl.flush(t0, 0, true).unwrap();
        assert_eq!((s.suppressed, s.severity), (1, Severity::Info));
    }

    #[test]
    fn tally_keeps_twenty_ids_and_all_counts() {
        let mut t = Tally::default();
        for i in 0..50 {
            t.add(&format!("e{i}"), "hang", Severity::Info, "h");
        }
        let s = t.take(Reason::SpoolFull, 0).unwrap();
        assert_eq!((s.suppressed, s.ids.len()), (50, 20));
        assert!(t.is_empty());
        assert_eq!(t.take(Reason::SpoolFull, 0), None);
    }

    #[test]
    fn summary_json_shape_and_round_trip() {
        let mut t = Tally::default();
        t.add("e1", "hang", Severity::Warning, "web1");
        let s = t.take(Reason::SpoolFull, 1_795_441_200_123).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["reason"], "spool_full");
        assert_eq!(v["ts"], "2026-11-23T13:40:00.123Z");
        assert_eq!(v["by_kind"]["hang"], 1);
        assert_eq!(v["ids"][0], "e1");
        assert_eq!(v["id"].as_str().map(str::len), Some(32));
        let item = Item::Summary(s.clone());
        let back: Item = serde_json::from_slice(&serde_json::to_vec(&item).unwrap()).unwrap();
        assert!(matches!(back, Item::Summary(b) if b == s));
        let ev = Item::Event(event(1, Kind::Hang, Severity::Info));
        let back: Item = serde_json::from_slice(&serde_json::to_vec(&ev).unwrap()).unwrap();
        assert_eq!(back.id(), "id0001");
    }
}
