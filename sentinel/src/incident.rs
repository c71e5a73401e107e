//! Turns what the detectors find on each tick into events, with hysteresis:
//! one firing event when a condition appears on a subject, another only if
//! its severity rises, and one resolved event when the condition has stayed
//! clear for `resolve_after` or the subject is gone.
use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::event::{
    Event, Kind, Names, Severity, State, SubjectKey, event_id, human_duration, rfc3339, unix_ms_now,
};

/// A condition a detector sees true on this tick.
#[derive(Debug, Clone)]
pub struct Finding {
    pub kind: Kind,
    pub key: SubjectKey,
    pub severity: Severity,
    pub names: Names,
    pub summary: String,
    pub evidence: Value,
}

#[derive(Debug, Clone)]
pub struct Open {
    pub incident: String,
    /// The worst severity this incident has reached.
    pub peak: Severity,
    pub finding: Finding,
    /// Daemon seconds when it first fired and when it was last seen true.
    pub since: f64,
    pub last_true: f64,
    /// Reminders sent so far, and when the next is due (daemon seconds).
    pub repeats: u32,
    pub next_repeat: f64,
}

pub struct Incidents {
    open: BTreeMap<(Kind, SubjectKey), Open>,
    host: String,
    /// Part of every incident id, so ids from one boot never collide with
    /// another's (pids and daemon clocks restart).
    boot_id: String,
    resolve_after: f64,
    /// Reminder gaps while an incident stays open: the first, and the cap
    /// the doubling grows to.
    repeat_after: f64,
    repeat_max: f64,
}

impl Incidents {
    pub fn new(host: String, resolve_after: f64) -> Incidents {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Incidents {
            open: BTreeMap::new(),
            host,
            boot_id,
            resolve_after,
            repeat_after: f64::INFINITY,
            repeat_max: f64::INFINITY,
        }
    }

    pub fn set_resolve_after(&mut self, secs: f64) {
        self.resolve_after = secs;
    }

    /// A condition that keeps firing is repeated after `after` seconds,
    /// then after twice that, and so on up to every `max` seconds: a person
    /// who missed the first alert hears again, and a hopeless condition
    /// does not page every minute.
    pub fn set_repeat(&mut self, after: f64, max: f64) {
        self.repeat_after = after;
        self.repeat_max = max.max(after);
    }

    fn repeat_gap(&self, n: u32) -> f64 {
        (self.repeat_after * 2f64.powi(n.min(30) as i32)).min(self.repeat_max)
    }

    /// A point event such as an OOM kill: it fires once and has nothing to
    /// resolve.
    pub fn instant(&self, f: Finding, unix_ms: u64) -> Event {
        let incident = self.incident_id(&f, unix_ms);
        self.event(incident.clone(), &incident, &f, State::Firing, unix_ms)
    }

    /// One tick. `alive` tells whether a subject still exists; a gone
    /// subject's incidents resolve at once.
    pub fn step(
        &mut self,
        t: f64,
        findings: Vec<Finding>,
        alive: impl Fn(&SubjectKey) -> bool,
    ) -> Vec<Event> {
        let now_ms = unix_ms_now();
        let mut out = Vec::new();
        // The worst finding per condition and subject.
        let mut current: BTreeMap<(Kind, SubjectKey), Finding> = BTreeMap::new();
        for f in findings {
            let k = (f.kind, f.key);
            if current.get(&k).is_none_or(|o| f.severity > o.severity) {
                current.insert(k, f);
            }
        }
        let gaps = |n: u32| self.repeat_gap(n);
        let gaps: Vec<f64> = (0..=31).map(gaps).collect();
        for (k, f) in current {
            match self.open.get_mut(&k) {
                Some(o) => {
                    o.last_true = t;
                    // Only a new peak fires again: warning, critical, warning,
                    // critical is one escalation, and the incident keeps its
                    // worst severity until it resolves.
                    let escalated = f.severity > o.peak;
                    o.peak = o.peak.max(f.severity);
                    o.finding = f;
                    o.finding.severity = o.peak;
                    if escalated {
                        let o = &self.open[&k];
                        let id = derived_id(&o.incident, "firing", o.finding.severity);
                        out.push(self.event(id, &o.incident, &o.finding, State::Firing, now_ms));
                    } else if t >= o.next_repeat {
                        o.repeats += 1;
                        let n = o.repeats;
                        o.next_repeat = t + gaps[n.min(31) as usize];
                        let o = &self.open[&k];
                        let id =
                            derived_id(&o.incident, &format!("repeat-{n}"), o.finding.severity);
                        let mut e = self.event(id, &o.incident, &o.finding, State::Firing, now_ms);
                        e.summary = format!(
                            "Still firing after {}: {}",
                            human_duration(t - o.since),
                            o.finding.summary
                        );
                        if let Value::Object(m) = &mut e.evidence {
                            m.insert("repeat".into(), json!(n));
                        }
                        out.push(e);
                    }
                }
                None => {
                    let incident = self.incident_id(&f, now_ms);
                    out.push(self.event(incident.clone(), &incident, &f, State::Firing, now_ms));
                    self.open.insert(
                        k,
                        Open {
                            incident,
                            peak: f.severity,
                            finding: f,
                            since: t,
                            last_true: t,
                            repeats: 0,
                            next_repeat: t + self.repeat_gap(0),
                        },
                    );
                }
            }
        }
        let mut closed = Vec::new();
        for (k, o) in &self.open {
            if o.last_true == t {
                continue;
            }
            let gone = !alive(&k.1);
            if gone || t - o.last_true >= self.resolve_after {
                closed.push((*k, gone));
            }
        }
        for (k, gone) in closed {
            if let Some(o) = self.open.remove(&k) {
                out.push(self.resolved(&o, t, gone, now_ms));
            }
        }
        out
    }

    pub fn is_open(&self, kind: Kind, key: &SubjectKey) -> bool {
        self.open.contains_key(&(kind, *key))
    }

    pub fn open(&self) -> impl Iterator<Item = &Open> {
        self.open.values()
    }

    fn incident_id(&self, f: &Finding, unix_ms: u64) -> String {
        event_id(&[
            self.host.as_bytes(),
            self.boot_id.as_bytes(),
            f.kind.name().as_bytes(),
            format!("{:?}", f.key).as_bytes(),
            &unix_ms.to_le_bytes(),
        ])
    }

    fn event(&self, id: String, incident: &str, f: &Finding, state: State, unix_ms: u64) -> Event {
        Event {
            id,
            incident: incident.to_string(),
            ts: rfc3339(unix_ms),
            host: self.host.clone(),
            kind: f.kind,
            severity: f.severity,
            state,
            subject: f.key.kind().to_string(),
            names: f.names.clone(),
            summary: f.summary.clone(),
            evidence: f.evidence.clone(),
        }
    }

    fn resolved(&self, o: &Open, t: f64, gone: bool, now_ms: u64) -> Event {
        let lasted = human_duration(t - o.since);
        let why = match (gone, o.finding.key) {
            (true, SubjectKey::Process { .. }) => "the process exited",
            (true, SubjectKey::Container { .. }) => "the container has no processes left",
            (true, _) => "the subject is gone",
            (false, _) => "the condition cleared",
        };
        let id = derived_id(&o.incident, "resolved", o.finding.severity);
        let mut e = self.event(id, &o.incident, &o.finding, State::Resolved, now_ms);
        e.summary = format!("Resolved after {lasted}: {why}. Was: {}", o.finding.summary);
        e.evidence = json!({
            "reason": if gone { "subject_gone" } else { "cleared" },
            "duration_s": round1(t - o.since),
            "last": o.finding.evidence,
        });
        e
    }
}

/// Later events of an incident: stable for the same incident, state and
/// severity, so a retried delivery carries the same id.
fn derived_id(incident: &str, state: &str, severity: Severity) -> String {
    event_id(&[
        incident.as_bytes(),
        state.as_bytes(),
        format!("{severity:?}").as_bytes(),
    ])
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(sev: Severity) -> Finding {
        Finding {
            kind: Kind::MemoryBloat,
            key: SubjectKey::Process { pid: 7, start: 1 },
            severity: sev,
            names: Names {
                pid: Some(7),
                ..Default::default()
            },
            summary: "grows".into(),
            evidence: json!({}),
        }
    }

    #[test]
    fn fires_once_escalates_once_and_resolves_after_the_hold() {
        let mut inc = Incidents::new("h".into(), 30.0);
        let alive = |_: &SubjectKey| true;
        let e = inc.step(0.0, vec![finding(Severity::Warning)], alive);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].state, e[0].severity),
            (State::Firing, Severity::Warning)
        );
        let first = e[0].clone();
        assert_eq!(first.id, first.incident);
        assert!(
            inc.step(1.0, vec![finding(Severity::Warning)], alive)
                .is_empty()
        );
        let e = inc.step(2.0, vec![finding(Severity::Critical)], alive);
        assert_eq!(e.len(), 1, "escalation fires again");
        assert_eq!(e[0].incident, first.incident);
        assert_ne!(e[0].id, first.id);
        // Flapping back to warning or clearing briefly emits nothing.
        assert!(
            inc.step(3.0, vec![finding(Severity::Warning)], alive)
                .is_empty()
        );
        assert!(inc.step(4.0, vec![], alive).is_empty());
        assert!(
            inc.step(20.0, vec![finding(Severity::Warning)], alive)
                .is_empty()
        );
        assert!(inc.step(49.0, vec![], alive).is_empty());
        let e = inc.step(50.0, vec![], alive);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].state, State::Resolved);
        assert_eq!(e[0].severity, Severity::Critical, "resolves at its peak");
        assert_eq!(e[0].incident, first.incident);
        assert!(inc.step(51.0, vec![], alive).is_empty());
    }

    #[test]
    fn a_gone_subject_resolves_at_once() {
        let mut inc = Incidents::new("h".into(), 30.0);
        inc.step(0.0, vec![finding(Severity::Critical)], |_| true);
        let e = inc.step(1.0, vec![], |_| false);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].evidence["reason"], "subject_gone");
        assert!(e[0].summary.contains("the process exited"));
    }

    #[test]
    fn instants_never_open_an_incident() {
        let inc = Incidents::new("h".into(), 30.0);
        let mut f = finding(Severity::Critical);
        f.kind = Kind::OomKill;
        let e = inc.instant(f, 1000);
        assert_eq!(e.state, State::Firing);
        assert_eq!(inc.open().count(), 0);
    }

    #[test]
    fn a_condition_that_keeps_firing_is_repeated_with_growing_gaps() {
        let mut inc = Incidents::new("h".into(), 30.0);
        inc.set_repeat(900.0, 3600.0);
        let alive = |_: &SubjectKey| true;
        let mut at = Vec::new();
        let mut ids = std::collections::HashSet::new();
        let mut incident = None;
        for t in 0..=(4 * 3600) {
            for e in inc.step(t as f64, vec![finding(Severity::Warning)], alive) {
                assert_eq!(e.state, State::Firing);
                assert!(ids.insert(e.id.clone()), "each repeat has its own id");
                assert_eq!(incident.get_or_insert(e.incident.clone()), &e.incident);
                if t > 0 {
                    assert!(e.summary.starts_with("Still firing after"), "{}", e.summary);
                    assert_eq!(e.evidence["repeat"], at.len());
                }
                at.push(t);
            }
        }
        // 15 min, then 30, then every hour.
        assert_eq!(at, [0, 900, 2700, 6300, 9900, 13500]);
    }
}
