//! Request bodies for the three webhook formats.
use serde_json::{Map, Value, json};

use super::summary::{Item, Summary};
use crate::config::WebhookFormat;
use crate::event::{Event, Severity, State, parse_rfc3339, rfc3339};

/// How long Alertmanager keeps a firing alert that is not re-posted. The
/// webhook re-posts open alerts every minute, well within it.
pub const ALERT_TTL_MS: u64 = 5 * 60 * 1000;

pub fn name(f: WebhookFormat) -> &'static str {
    match f {
        WebhookFormat::Json => "json",
        WebhookFormat::Slack => "slack",
        WebhookFormat::Alertmanager => "alertmanager",
    }
}

/// The body for `json` and `slack`. Alertmanager bodies depend on what
/// was sent before (see `webhook::Alerts`), so they are built there from
/// [`alert`]. `json` keeps the fields in the order stdout shows them.
pub fn body(f: WebhookFormat, item: &Item) -> Vec<u8> {
    let v = match (f, item) {
        (WebhookFormat::Slack, Item::Event(e)) => slack_event(e),
        (WebhookFormat::Slack, Item::Summary(s)) => slack_summary(s),
        // serde_json fails only on maps with non-string keys, which
        // neither type has.
        (_, Item::Event(e)) => return serde_json::to_vec(e).unwrap_or_default(),
        (_, Item::Summary(s)) => return serde_json::to_vec(s).unwrap_or_default(),
    };
    v.to_string().into_bytes()
}

/// Slack treats `&`, `<` and `>` as markup.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack's incoming-webhook payload: a plain `text` (what notifications
/// and clients without attachments show) and one attachment coloured by
/// severity, green once resolved. Mattermost and Rocket.Chat read the
/// same fields.
fn slack_event(e: &Event) -> Value {
    let sev = e.severity.name();
    let state = e.state.name();
    let kind = e.kind.name();
    let text = slack_escape(&format!(
        "[{sev}] {kind} {state} on {}: {}",
        e.host, e.summary
    ));
    let color = match (e.state, e.severity) {
        (State::Resolved, _) => "#2eb886",
        (_, Severity::Critical) => "#d40e0d",
        (_, Severity::Warning) => "#daa038",
        (_, Severity::Info) => "#439fe0",
    };
    let mut fields = vec![field("host", &e.host)];
    if let Some(c) = &e.names.container {
        fields.push(field("container", c));
    }
    match (&e.names.comm, e.names.pid) {
        (Some(comm), Some(pid)) => fields.push(field("process", &format!("{comm} ({pid})"))),
        (None, Some(pid)) => fields.push(field("process", &pid.to_string())),
        (Some(comm), None) => fields.push(field("process", comm)),
        (None, None) => {}
    }
    if let Some(cg) = &e.names.cgroup {
        fields.push(field("cgroup", cg));
    }
    fields.push(field("incident", &e.incident));
    let mut att = json!({
        "fallback": text,
        "color": color,
        "title": format!("{kind} {state} ({sev})"),
        "text": slack_escape(&e.summary),
        "fields": fields,
        "footer": format!("sentinel · event {}", e.id),
    });
    if let Some(ms) = parse_rfc3339(&e.ts) {
        att["ts"] = json!(ms / 1000);
    }
    json!({ "text": text, "attachments": [att] })
}

fn field(title: &str, value: &str) -> Value {
    json!({ "title": title, "value": slack_escape(value), "short": true })
}

fn slack_summary(s: &Summary) -> Value {
    json!({ "text": slack_escape(&s.text()) })
}

/// One Alertmanager API v2 alert. Labels identify it (Alertmanager groups
/// and deduplicates on them); annotations only inform. Firing alerts end
/// `ALERT_TTL_MS` from `now_ms` unless re-posted; resolved ones end at the
/// event's time.
pub fn alert(e: &Event, now_ms: u64) -> Value {
    let mut labels = Map::new();
    let mut label = |k: &str, v: &str| {
        // An empty label value is the same as no label to Alertmanager.
        if !v.is_empty() {
            labels.insert(k.into(), v.into());
        }
    };
    label("alertname", &format!("sentinel_{}", e.kind.name()));
    label("kind", e.kind.name());
    label("host", &e.host);
    label("severity", e.severity.name());
    label("subject", &e.subject);
    label("incident", &e.incident);
    if let Some(c) = &e.names.container {
        label("container", c);
    }
    let mut ann = Map::new();
    ann.insert("summary".into(), e.summary.clone().into());
    ann.insert("event_id".into(), e.id.clone().into());
    if let Some(pid) = e.names.pid {
        ann.insert("pid".into(), pid.to_string().into());
    }
    if let Some(comm) = &e.names.comm {
        ann.insert("comm".into(), comm.clone().into());
    }
    if let Some(cg) = &e.names.cgroup {
        ann.insert("cgroup".into(), cg.clone().into());
    }
    let ends = match e.state {
        State::Firing => rfc3339(now_ms + ALERT_TTL_MS),
        State::Resolved => e.ts.clone(),
    };
    json!({
        "labels": labels,
        "annotations": ann,
        "startsAt": incident_start(e),
        "endsAt": ends,
    })
}

/// The same alert ending at `ends` (a superseded severity, a resolution).
pub fn ended(alert: &Value, ends: &str) -> Value {
    let mut a = alert.clone();
    a["endsAt"] = ends.into();
    a
}

/// A firing alert kept alive for another `ALERT_TTL_MS`.
pub fn refreshed(alert: &Value, now_ms: u64) -> Value {
    ended(alert, &rfc3339(now_ms + ALERT_TTL_MS))
}

/// When the incident began: a resolved event's time less how long it
/// lasted (`evidence.duration_s`), else the event's own time.
fn incident_start(e: &Event) -> String {
    let lasted = e.evidence.get("duration_s").and_then(Value::as_f64);
    match (parse_rfc3339(&e.ts), lasted) {
        (Some(ms), Some(s)) if s.is_finite() && s > 0.0 => {
            rfc3339(ms.saturating_sub((s * 1000.0).round() as u64))
        }
        _ => e.ts.clone(),
    }
}

/// The URL alerts go to: as configured, or with `/api/v2/alerts` when
/// only the server is given.
pub fn alertmanager_url(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let path_at = after_scheme + rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let tail_at = path_at
        + url[path_at..]
            .find(['?', '#'])
            .unwrap_or(url.len() - path_at);
    match &url[path_at..tail_at] {
        "" | "/" => format!("{}/api/v2/alerts{}", &url[..path_at], &url[tail_at..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;
    use crate::sink::summary::{Reason, Tally, tests::event};

    fn body(f: WebhookFormat, item: &Item) -> Value {
        serde_json::from_slice(&super::body(f, item)).unwrap()
    }

    #[test]
    fn json_is_the_event_as_serialized() {
        let e = event(1, Kind::Hang, Severity::Warning);
        let raw = super::body(WebhookFormat::Json, &Item::Event(e.clone()));
        assert_eq!(raw, serde_json::to_vec(&e).unwrap(), "as on stdout");
        let v = body(WebhookFormat::Json, &Item::Event(e.clone()));
        assert_eq!(v["kind"], "hang");
        assert_eq!(v["container"], "app");
    }

    #[test]
    fn slack_payload() {
        let mut e = event(1, Kind::ThreadExplosion, Severity::Critical);
        e.summary = "40 threads <limit 20> & rising".into();
        let v = body(WebhookFormat::Slack, &Item::Event(e.clone()));
        let text = v["text"].as_str().unwrap();
        assert!(
            text.starts_with("[critical] thread_explosion firing on web1: "),
            "{text}"
        );
        assert!(text.contains("&lt;limit 20&gt; &amp; rising"), "{text}");
        let att = &v["attachments"][0];
        assert_eq!(att["color"], "#d40e0d");
        assert_eq!(att["ts"], 1_795_441_201);
        let fields: Vec<(&str, &str)> = att["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["title"].as_str().unwrap(), f["value"].as_str().unwrap()))
            .collect();
        assert!(fields.contains(&("container", "app")));
        assert!(fields.contains(&("process", "java (4242)")));
        e.state = State::Resolved;
        let v = body(WebhookFormat::Slack, &Item::Event(e));
        assert_eq!(v["attachments"][0]["color"], "#2eb886");

        let mut t = Tally::default();
        t.add("x", "hang", Severity::Info, "web1");
        let s = t.take(Reason::RateLimit, 0).unwrap();
        let v = body(WebhookFormat::Slack, &Item::Summary(s));
        assert!(
            v["text"]
                .as_str()
                .unwrap()
                .starts_with("1 events on web1 over")
        );
    }

    #[test]
    fn alertmanager_alert_shape() {
        let now = 1_795_441_300_000;
        let e = event(1, Kind::ThreadExplosion, Severity::Warning);
        let a = alert(&e, now);
        assert_eq!(
            a["labels"],
            json!({
                "alertname": "sentinel_thread_explosion",
                "kind": "thread_explosion",
                "host": "web1",
                "severity": "warning",
                "subject": "process",
                "incident": "inc0001",
                "container": "app",
            })
        );
        assert_eq!(
            a["annotations"],
            json!({
                "summary": "event 1",
                "event_id": "id0001",
                "pid": "4242",
                "comm": "java",
                "cgroup": "/system.slice/app.service",
            })
        );
        assert_eq!(a["startsAt"], e.ts.as_str());
        assert_eq!(a["endsAt"], rfc3339(now + ALERT_TTL_MS).as_str());
        assert_eq!(
            refreshed(&a, now + 60_000)["endsAt"],
            rfc3339(now + 60_000 + ALERT_TTL_MS)
        );

        // Resolved: it started duration_s before and ends at its own time.
        let mut r = event(1, Kind::ThreadExplosion, Severity::Warning);
        r.state = State::Resolved;
        r.ts = "2026-11-23T13:45:00.000Z".into();
        r.evidence = json!({"duration_s": 90.5, "reason": "cleared"});
        r.names.container = None;
        let a = alert(&r, now);
        assert_eq!(a["startsAt"], "2026-11-23T13:43:29.500Z");
        assert_eq!(a["endsAt"], "2026-11-23T13:45:00.000Z");
        assert!(a["labels"].get("container").is_none());
    }

    #[test]
    fn alertmanager_urls() {
        for (given, want) in [
            ("http://am:9093", "http://am:9093/api/v2/alerts"),
            ("http://am:9093/", "http://am:9093/api/v2/alerts"),
            (
                "https://am.example/?x=1",
                "https://am.example/api/v2/alerts?x=1",
            ),
            (
                "http://am:9093/api/v2/alerts",
                "http://am:9093/api/v2/alerts",
            ),
            (
                "http://am:9093/prefix/api/v2/alerts",
                "http://am:9093/prefix/api/v2/alerts",
            ),
            ("http://u:p@am:9093", "http://u:p@am:9093/api/v2/alerts"),
        ] {
            assert_eq!(alertmanager_url(given), want, "{given}");
        }
    }
}
