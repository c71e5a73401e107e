//! The event contract of `sentinel daemon --log-format json`: one JSON
//! object per stdout line.
//!
//! [`parse_line`] is the whole protocol check the daemon harness applies to
//! every line: it must be one JSON object carrying every common field (null
//! where the schema allows it, never absent), with the closed vocabularies
//! (`kind`, `severity`, `state`, `subject`) spelled as promised, and, on
//! firing events, the evidence fields the schema says tests can rely on.
//! Unknown extra fields are ignored.

use std::fmt;
use std::time::Instant;

use anyhow::{Result, anyhow, bail, ensure};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    MemoryBloat,
    Deadlock,
    Hang,
    WriteAnomaly,
    OomKill,
    ThreadExplosion,
    SwapThrashing,
    RecorderPaused,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MemoryBloat => "memory_bloat",
            Kind::Deadlock => "deadlock",
            Kind::Hang => "hang",
            Kind::WriteAnomaly => "write_anomaly",
            Kind::OomKill => "oom_kill",
            Kind::ThreadExplosion => "thread_explosion",
            Kind::SwapThrashing => "swap_thrashing",
            Kind::RecorderPaused => "recorder_paused",
        }
    }

    /// Evidence keys the schema promises on a firing event of this kind.
    fn required_evidence(self) -> &'static [&'static str] {
        match self {
            Kind::MemoryBloat => &[
                "rss_bytes",
                "growth_bytes_per_s",
                "time_to_exhaustion_s",
                "bound",
                "headroom_bytes",
                "top_contributors",
            ],
            Kind::Deadlock => &["cycle", "threads"],
            Kind::Hang => &["threads", "blocked_s"],
            Kind::WriteAnomaly => &[
                "reason",
                "write_bytes_per_s",
                "projected_bytes_per_day",
                "daily_budget_bytes",
                "filesystem",
                "time_to_full_s",
            ],
            Kind::OomKill => &[
                "victim_pid",
                "victim_comm",
                "trigger_pid",
                "oom",
                "limit_cgroup",
                "rss",
                "profile",
            ],
            Kind::ThreadExplosion | Kind::SwapThrashing => &[],
            Kind::RecorderPaused => &["dir", "reason", "paused_since"],
        }
    }

    /// Evidence keys that must hold arrays when present.
    fn array_evidence(self) -> &'static [&'static str] {
        match self {
            Kind::MemoryBloat => &["top_contributors"],
            Kind::Deadlock => &["cycle", "threads"],
            Kind::Hang => &["threads"],
            _ => &[],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Firing,
    Resolved,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Firing => "firing",
            State::Resolved => "resolved",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Process,
    Container,
    Host,
    Filesystem,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Subject::Process => "process",
            Subject::Container => "container",
            Subject::Host => "host",
            Subject::Filesystem => "filesystem",
        })
    }
}

/// One event line, as the daemon printed it, plus when the harness read it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Event {
    pub id: String,
    pub incident: String,
    pub ts: String,
    pub host: String,
    pub kind: Kind,
    pub severity: Severity,
    pub state: State,
    pub subject: Subject,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// v2 path relative to the cgroup2 mount, like `TestCgroup::path()`.
    pub cgroup: Option<String>,
    /// Display name; for a plain test cgroup, its path.
    pub container: Option<String>,
    pub summary: String,
    pub evidence: Value,
    /// When the harness read the line off the daemon's stdout.
    #[serde(skip, default = "Instant::now")]
    pub received: Instant,
}

/// Every common field; each must be present on every line (null allowed
/// only where the schema says `|null`).
const FIELDS: &[&str] = &[
    "id",
    "incident",
    "ts",
    "host",
    "kind",
    "severity",
    "state",
    "subject",
    "pid",
    "comm",
    "cgroup",
    "container",
    "summary",
    "evidence",
];

/// Parses and validates one stdout line. The error says what is wrong; the
/// caller adds the line itself.
pub fn parse_line(line: &str, received: Instant) -> Result<Event> {
    let value: Value =
        serde_json::from_str(line).map_err(|e| anyhow!("not one JSON value: {e}"))?;
    let Value::Object(map) = &value else {
        bail!("not a JSON object");
    };
    let missing: Vec<&str> = FIELDS
        .iter()
        .copied()
        .filter(|f| !map.contains_key(*f))
        .collect();
    ensure!(missing.is_empty(), "missing fields {missing:?}");
    let mut event: Event =
        serde_json::from_value(value).map_err(|e| anyhow!("does not match the schema: {e}"))?;
    event.received = received;
    event.validate()?;
    Ok(event)
}

fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, as in the schema's example.
fn is_utc_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() < 20 || !s.ends_with('Z') {
        return false;
    }
    let fixed = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    let rest = &b[19..b.len() - 1];
    let fraction = rest.is_empty()
        || (rest.len() >= 2 && rest[0] == b'.' && rest[1..].iter().all(u8::is_ascii_digit));
    fixed && fraction
}

impl Event {
    fn validate(&self) -> Result<()> {
        ensure!(is_id(&self.id), "id {:?} is not 32 hex digits", self.id);
        ensure!(
            is_id(&self.incident),
            "incident {:?} is not 32 hex digits",
            self.incident
        );
        ensure!(
            is_utc_timestamp(&self.ts),
            "ts {:?} is not an RFC 3339 UTC timestamp like 2026-11-23T13:40:00.123Z",
            self.ts
        );
        ensure!(!self.host.is_empty(), "host is empty");
        ensure!(!self.summary.trim().is_empty(), "summary is empty");
        if let Some(cg) = &self.cgroup {
            ensure!(
                cg.starts_with('/'),
                "cgroup {cg:?} is not a path relative to the cgroup2 mount (expected a leading /)"
            );
        }
        if self.subject == Subject::Process {
            ensure!(self.pid.is_some(), "subject is \"process\" but pid is null");
        }
        let Value::Object(evidence) = &self.evidence else {
            bail!("evidence is not a JSON object");
        };
        if self.state == State::Firing {
            let missing: Vec<&str> = self
                .kind
                .required_evidence()
                .iter()
                .copied()
                .filter(|k| !evidence.contains_key(*k))
                .collect();
            ensure!(
                missing.is_empty(),
                "firing {} event lacks evidence {missing:?}",
                self.kind
            );
        }
        for key in self.kind.array_evidence() {
            if let Some(v) = evidence.get(*key) {
                ensure!(v.is_array(), "evidence.{key} is not an array: {v}");
            }
        }
        if self.kind == Kind::OomKill {
            let victim = evidence.get("victim_pid").and_then(Value::as_u64);
            ensure!(
                victim.is_none() || self.pid.map(u64::from) == victim,
                "oom_kill event has pid {:?} but evidence.victim_pid {victim:?}",
                self.pid
            );
        }
        Ok(())
    }

    pub fn is(&self, kind: Kind, state: State) -> bool {
        self.kind == kind && self.state == state
    }

    pub fn is_firing(&self, kind: Kind) -> bool {
        self.is(kind, State::Firing)
    }

    pub fn is_resolved(&self, kind: Kind) -> bool {
        self.is(kind, State::Resolved)
    }

    /// The event names this process (pid as `Workload::pid` returns it).
    pub fn pid_is(&self, pid: i32) -> bool {
        u32::try_from(pid).is_ok_and(|p| self.pid == Some(p))
    }

    /// The event's cgroup is `path` or a descendant of it.
    pub fn in_cgroup(&self, path: &str) -> bool {
        self.cgroup.as_deref().is_some_and(|cg| within(cg, path))
    }

    /// The event is about `path`: its cgroup lies within it, or its
    /// container is it (the display name of a plain cgroup is its path).
    pub fn about_cgroup(&self, path: &str) -> bool {
        self.in_cgroup(path) || self.container.as_deref() == Some(path)
    }

    pub fn evidence(&self, key: &str) -> Option<&Value> {
        self.evidence.get(key)
    }

    pub fn evidence_str(&self, key: &str) -> Option<&str> {
        self.evidence.get(key).and_then(Value::as_str)
    }

    pub fn evidence_f64(&self, key: &str) -> Option<f64> {
        self.evidence.get(key).and_then(Value::as_f64)
    }

    /// `evidence.cycle` of a deadlock, as tids.
    pub fn cycle_tids(&self) -> Vec<i64> {
        self.evidence
            .get("cycle")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    }

    /// The `tid`s of `evidence.threads[]` (deadlock, hang).
    pub fn thread_tids(&self) -> Vec<i64> {
        self.evidence
            .get("threads")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.get("tid").and_then(Value::as_i64))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One line for failure messages: kind, state, severity, subject, who,
    /// the evidence's `reason` when it has one, and the summary.
    pub fn brief(&self) -> String {
        let opt = |v: &Option<String>| v.as_deref().unwrap_or("-").to_string();
        let pid = self.pid.map_or("-".to_string(), |p| p.to_string());
        let reason = self
            .evidence_str("reason")
            .map(|r| format!(" reason={r}"))
            .unwrap_or_default();
        format!(
            "{} {} {} subject={} pid={pid} comm={} cgroup={} container={}{reason} incident={} summary={:?}",
            self.kind,
            self.state,
            self.severity,
            self.subject,
            opt(&self.comm),
            opt(&self.cgroup),
            opt(&self.container),
            &self.incident[..self.incident.len().min(8)],
            self.summary
        )
    }
}

/// `cgroup` is `ancestor` or below it (`/a/b` is within `/a`, `/ab` is not).
pub fn within(cgroup: &str, ancestor: &str) -> bool {
    let ancestor = ancestor.trim_end_matches('/');
    if ancestor.is_empty() {
        return cgroup.starts_with('/');
    }
    cgroup == ancestor
        || cgroup
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn line(overrides: &[(&str, Value)], remove: &[&str]) -> String {
        let mut v = serde_json::json!({
            "id": ID, "incident": ID, "ts": "2026-11-23T13:40:00.123Z", "host": "vm",
            "kind": "deadlock", "severity": "critical", "state": "firing", "subject": "process",
            "pid": 42, "comm": "deadlock", "cgroup": "/t", "container": "/t",
            "summary": "threads 43 and 44 wait for each other",
            "evidence": {"cycle": [43, 44], "threads": []}
        });
        for (k, val) in overrides {
            v[*k] = val.clone();
        }
        for k in remove {
            v.as_object_mut().unwrap().remove(*k);
        }
        v.to_string()
    }

    #[test]
    fn accepts_a_schema_line() {
        let e = parse_line(&line(&[], &[]), Instant::now()).unwrap();
        assert!(e.is(Kind::Deadlock, State::Firing));
        assert!(e.pid_is(42));
        assert_eq!(e.cycle_tids(), vec![43, 44]);
        assert!(e.about_cgroup("/t"));
    }

    #[test]
    fn rejects_violations() {
        let bad = [
            line(&[("kind", "lockup".into())], &[]),
            line(&[("id", "xyz".into())], &[]),
            line(&[("ts", "2026-11-23 13:40:00".into())], &[]),
            line(&[("pid", Value::Null)], &[]),
            line(&[("evidence", serde_json::json!({"threads": []}))], &[]),
            line(&[("evidence", serde_json::json!([]))], &[]),
            line(&[("cgroup", "t".into())], &[]),
            line(&[], &["container"]),
            format!("{} {}", line(&[], &[]), line(&[], &[])),
            "sentinel daemon: watching".into(),
            "[]".into(),
            String::new(),
        ];
        for l in bad {
            assert!(parse_line(&l, Instant::now()).is_err(), "accepted {l}");
        }
        // null where the schema allows it
        let host = line(
            &[
                ("subject", "host".into()),
                ("pid", Value::Null),
                ("comm", Value::Null),
                ("cgroup", Value::Null),
                ("container", Value::Null),
            ],
            &[],
        );
        parse_line(&host, Instant::now()).unwrap();
        // resolved events need not repeat the evidence
        let resolved = line(
            &[
                ("state", "resolved".into()),
                ("evidence", serde_json::json!({})),
            ],
            &[],
        );
        parse_line(&resolved, Instant::now()).unwrap();
    }

    #[test]
    fn timestamps() {
        assert!(is_utc_timestamp("2026-11-23T13:40:00Z"));
        assert!(is_utc_timestamp("2026-11-23T13:40:00.123456Z"));
        assert!(!is_utc_timestamp("2026-11-23T13:40:00.Z"));
        assert!(!is_utc_timestamp("2026-11-23T13:40:00+00:00"));
    }

    #[test]
    fn cgroup_within() {
        assert!(within("/a", "/a"));
        assert!(within("/a/b", "/a"));
        assert!(within("/a/b", "/a/"));
        assert!(!within("/ab", "/a"));
        assert!(within("/x", "/"));
    }
}
