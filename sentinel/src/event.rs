//! What leaves sentinel: one event schema for every detector and sink.
//!
//! An incident is one condition on one subject, from its first firing event
//! to its resolved one. Every event carries its own `id` and the `incident`
//! id (the id of the incident's first event), so a sink retrying a delivery
//! resends the same id and a receiver can thread firing and resolved.
use std::{
    fmt,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    MemoryBloat,
    Deadlock,
    Hang,
    WriteAnomaly,
    OomKill,
    ThreadExplosion,
    SwapThrashing,
    /// The flight recorder cannot write (disk full, I/O error).
    RecorderPaused,
}

impl Kind {
    pub fn name(self) -> &'static str {
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Firing,
    Resolved,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

/// What an event is about. Processes are named by pid *and* start time, so
/// a reused pid is another subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectKey {
    Process { pid: u32, start: u64 },
    Container { cgroup_id: u64 },
    Filesystem { dev: u32 },
    Host,
}

impl SubjectKey {
    pub fn kind(&self) -> &'static str {
        match self {
            SubjectKey::Process { .. } => "process",
            SubjectKey::Container { .. } => "container",
            SubjectKey::Filesystem { .. } => "filesystem",
            SubjectKey::Host => "host",
        }
    }
}

/// The people-facing names of a subject.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub cgroup: Option<String>,
    pub container: Option<String>,
}

/// Serialized to stdout, sinks and the API; read back from the spool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub incident: String,
    pub ts: String,
    pub host: String,
    pub kind: Kind,
    pub severity: Severity,
    pub state: State,
    /// process, container, filesystem or host.
    pub subject: String,
    #[serde(flatten)]
    pub names: Names,
    pub summary: String,
    pub evidence: serde_json::Value,
}

impl fmt::Display for Event {
    /// The `--log-format text` line: what a person tails.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Info => "INFO",
            Severity::Warning => "WARN",
            Severity::Critical => "CRIT",
        };
        let state = match self.state {
            State::Firing => "firing",
            State::Resolved => "resolved",
        };
        write!(f, "{} {sev} {} {state}", self.ts, self.kind.name())?;
        if let Some(pid) = self.names.pid {
            write!(f, " pid={pid}")?;
        }
        if let Some(c) = &self.names.container {
            write!(f, " container={c}")?;
        }
        write!(f, ": {}", self.summary)
    }
}

/// A 128-bit id from the incident's identity, so that the same incident on
/// the same host gets the same id whenever it is computed. FNV-1a twice
/// with different bases: stable across Rust versions, unlike `Hasher`.
pub fn event_id(parts: &[&[u8]]) -> String {
    let fnv = |basis: u64| {
        let mut h = basis;
        for p in parts {
            for &b in p.iter().chain(std::iter::once(&0xff)) {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T13:40:00.123Z`.
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// A time on the command line: RFC 3339 (`2026-11-23T03:12:00Z`), or a
/// duration ago (`10m`, `2h`). Unix milliseconds.
pub fn parse_when(s: &str) -> Option<u64> {
    if let Some(ms) = parse_rfc3339(s) {
        return Some(ms);
    }
    let ago = crate::units::parse_duration(s).ok()?;
    Some(unix_ms_now().saturating_sub(ago.as_millis() as u64))
}

/// The inverse of [`rfc3339`], for `--since`: `2026-11-23T13:40:00Z`,
/// with optional fractional seconds and a `Z` or `±HH:MM` offset; a space
/// may stand for the `T`. Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.trim();
    let num = |t: &str| -> Option<i64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().ok())?
    };
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, offset_s) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (h, mm) = time[at + 1..].split_once(':')?;
        let off = num(h)? * 3600 + num(mm)? * 60;
        (
            &time[..at],
            if &time[at..at + 1] == "-" { -off } else { off },
        )
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':');
    let (hh, mi, ss) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    if t.next().is_some() || hh > 23 || mi > 59 || ss > 60 {
        return None;
    }
    let ms = if frac.is_empty() {
        0
    } else {
        num(frac)?;
        format!("{frac:0<3}")[..3].parse::<i64>().ok()?
    };
    let days = days_from_civil(y, m as u32, day as u32);
    let secs = days * 86_400 + hh * 3600 + mi * 60 + ss - offset_s;
    u64::try_from(secs * 1000 + ms).ok()
}

/// Howard Hinnant's `days_from_civil`, the inverse of `civil_from_days`.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm: eras of 400 years starting in March).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// "5.5 days", "40 s": how long until something runs out, for summaries.
pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "never".into();
    }
    let s = secs.max(0.0);
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 90.0 * 60.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 36.0 * 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86_400.0)
    }
}

/// Decimal units, as the config's sizes ("22 GB a day").
pub fn human_bytes(b: f64) -> String {
    const U: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = b.max(0.0);
    let mut i = 0;
    while v >= 1000.0 && i < U.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else if v < 10.0 {
        format!("{v:.1} {}", U[i])
    } else {
        format!("{v:.0} {}", U[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_007), "2000-02-29T00:00:00.007Z");
        assert_eq!(rfc3339(1_795_441_200_123), "2026-11-23T13:40:00.123Z");
        assert_eq!(rfc3339(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn rfc3339_parses_back() {
        for ms in [0, 951_782_400_007, 1_795_441_200_123, 4_107_542_399_999] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(
            parse_rfc3339("2026-11-23T14:40:00+01:00"),
            parse_rfc3339("2026-11-23T13:40:00Z")
        );
        assert_eq!(
            parse_rfc3339("2026-11-23 13:40:00.5Z"),
            Some(1_795_441_200_500)
        );
        for bad in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-11-23T13:40Z",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = event_id(&[b"host", b"memory_bloat", b"42"]);
        assert_eq!(a, event_id(&[b"host", b"memory_bloat", b"42"]));
        assert_eq!(a.len(), 32);
        // Part boundaries count: ("ab","c") is not ("a","bc").
        assert_ne!(event_id(&[b"ab", b"c"]), event_id(&[b"a", b"bc"]));
    }

    #[test]
    fn human_units() {
        assert_eq!(human_duration(40.2), "40 s");
        assert_eq!(human_duration(5.5 * 86_400.0), "5.5 days");
        assert_eq!(human_duration(f64::INFINITY), "never");
        assert_eq!(human_bytes(22e9), "22 GB");
        assert_eq!(human_bytes(1.5e6), "1.5 MB");
    }
}
