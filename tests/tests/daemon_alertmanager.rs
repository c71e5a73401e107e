//! `format = "alertmanager"` against a real Prometheus Alertmanager
//! (Debian's `prometheus-alertmanager`, started by the test on loopback):
//! a thread_explosion becomes an active alert with the workload's labels,
//! and its resolution resolves it. Alertmanager's own webhook notifications
//! (to a receiver of the test) show what it made of both.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use sentinel_tests::alertmanager::{Alertmanager, alertmanager_bin, parse_rfc3339};
use sentinel_tests::receiver::{Receiver, Request};
use sentinel_tests::{
    Daemon, Event, Kind, TestCgroup, Workload, measured, require_root, secs, serial, skip,
    workload_bin,
};
use serde_json::Value;

const CONFIG: &str = "[threads]\nmax_threads = 20\n[daemon]\nresolve_after = \"5s\"\n";

fn label<'a>(alert: &'a Value, key: &str) -> Option<&'a str> {
    alert.get("labels")?.get(key)?.as_str()
}

fn annotation<'a>(alert: &'a Value, key: &str) -> Option<&'a str> {
    alert.get("annotations")?.get(key)?.as_str()
}

fn time_of(alert: &Value, key: &str) -> Option<f64> {
    parse_rfc3339(alert.get(key)?.as_str()?)
}

fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The alerts of incident `incident` in Alertmanager's webhook notifications
/// so far, with the notification's arrival: `(arrived, alert)`.
fn notified(rx: &Receiver, incident: &str) -> Vec<(Request, Value)> {
    rx.requests()
        .into_iter()
        .flat_map(|r| {
            let alerts: Vec<Value> = r
                .json
                .as_ref()
                .and_then(|j| j.get("alerts"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            alerts
                .into_iter()
                .filter(|a| label(a, "incident") == Some(incident))
                .map(move |a| (r.clone(), a))
        })
        .collect()
}

/// Expected labels and annotations of the alert for `e`; returns the
/// mismatches.
fn check_alert(alert: &Value, e: &Event) -> Vec<String> {
    let mut bad = Vec::new();
    let mut expect = |what: &str, got: Option<&str>, want: Option<String>| {
        if got.map(str::to_string) != want {
            bad.push(format!("{what}: expected {want:?}, got {got:?}"));
        }
    };
    expect(
        "labels.alertname",
        label(alert, "alertname"),
        Some(format!("sentinel_{}", e.kind)),
    );
    expect(
        "labels.kind",
        label(alert, "kind"),
        Some(e.kind.to_string()),
    );
    expect("labels.host", label(alert, "host"), Some(e.host.clone()));
    expect(
        "labels.severity",
        label(alert, "severity"),
        Some(e.severity.to_string()),
    );
    expect(
        "labels.subject",
        label(alert, "subject"),
        Some(e.subject.to_string()),
    );
    expect(
        "labels.incident",
        label(alert, "incident"),
        Some(e.incident.clone()),
    );
    expect(
        "labels.container",
        label(alert, "container"),
        e.container.clone(),
    );
    expect(
        "annotations.summary",
        annotation(alert, "summary"),
        Some(e.summary.clone()),
    );
    expect(
        "annotations.pid",
        annotation(alert, "pid"),
        e.pid.map(|p| p.to_string()),
    );
    expect(
        "annotations.comm",
        annotation(alert, "comm"),
        e.comm.clone(),
    );
    expect(
        "annotations.cgroup",
        annotation(alert, "cgroup"),
        e.cgroup.clone(),
    );
    bad
}

/// A 40-thread workload over `max_threads = 20` becomes an active
/// `sentinel_thread_explosion` alert in Alertmanager with the event's
/// labels (and a firing notification); killing it resolves the alert
/// (gone from the active list, and a resolved notification whose endsAt is
/// the resolved event's time).
#[test]
fn alertmanager_gets_the_firing_alert_and_its_resolution() -> Result<()> {
    let _serial = serial();
    require_root!();
    let Some(bin) = alertmanager_bin() else {
        skip!(
            "no {} (Debian package prometheus-alertmanager)",
            sentinel_tests::alertmanager::ALERTMANAGER_BIN
        );
    };
    let notifications = Receiver::start(&[])?;
    let am = Alertmanager::start(&bin, &notifications.url("/notify"))?;
    let config = format!(
        "{CONFIG}[[sink.webhook]]\nname = \"am\"\nurl = \"{}\"\nformat = \"alertmanager\"\ntimeout = \"2s\"\n",
        am.url()
    );
    let daemon = Daemon::start(&config)?;
    let fail = |what: &str| -> anyhow::Error {
        daemon.failure(&format!(
            "{what}\n--- alertmanager notifications: {}\n--- alertmanager log ---\n{}",
            notifications.describe(),
            am.log()
        ))
    };

    let cg = TestCgroup::new("alertmanager")?;
    let mut w = Workload::spawn(workload_bin!(), &["threads", "40"], &cg)?;
    let pid = w.pid();
    w.expect("ready", Duration::from_secs(60))?;
    w.go()?;
    let firing = daemon.wait_for(
        &format!("a firing thread_explosion for pid {pid} (40 threads, max_threads 20)"),
        Duration::from_secs(15),
        |e| e.is_firing(Kind::ThreadExplosion) && e.pid_is(pid),
    )?;
    let incident = firing.incident.clone();
    let filter = [format!("incident=\"{incident}\"")];

    // Active in Alertmanager's API.
    let t0 = Instant::now();
    let active = loop {
        let alerts = am.alerts(&filter)?;
        if let Some(a) = alerts.iter().find(|a| {
            a.get("status")
                .and_then(|s| s.get("state"))
                .and_then(Value::as_str)
                == Some("active")
        }) {
            break a.clone();
        }
        if t0.elapsed() > Duration::from_secs(20) {
            return Err(fail(&format!(
                "expected an active alert with incident=\"{incident}\" in GET /api/v2/alerts within 20 s of the firing event; got {alerts:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let active_s = secs(firing.received.elapsed());
    let bad = check_alert(&active, &firing);
    ensure!(
        bad.is_empty(),
        "{}",
        fail(&format!(
            "the active alert for {}: {bad:?}; alert: {active}",
            firing.brief()
        ))
    );
    let firing_ts = parse_rfc3339(&firing.ts).expect("the harness checked ts");
    let starts = time_of(&active, "startsAt");
    ensure!(
        starts.is_some_and(|s| (s - firing_ts).abs() <= 1.5),
        "{}",
        fail(&format!(
            "expected the alert's startsAt to be the firing event's ts {} (±1.5 s), got {:?}; alert: {active}",
            firing.ts,
            active.get("startsAt")
        ))
    );
    let ends = time_of(&active, "endsAt");
    ensure!(
        ends.is_some_and(|e| e > now_epoch() + 60.0),
        "{}",
        fail(&format!(
            "expected a firing alert's endsAt minutes ahead (now + 5 min), got {:?}; alert: {active}",
            active.get("endsAt")
        ))
    );
    // Alertmanager's firing notification.
    let t1 = Instant::now();
    loop {
        if notified(&notifications, &incident)
            .iter()
            .any(|(_, a)| a.get("status").and_then(Value::as_str) == Some("firing"))
        {
            break;
        }
        if t1.elapsed() > Duration::from_secs(20) {
            return Err(fail(&format!(
                "expected Alertmanager to notify the firing alert of incident {incident} within 20 s (group_wait 1s)"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // Resolution.
    drop(w);
    let resolved = daemon.wait_for(
        &format!("the resolved thread_explosion of incident {incident}"),
        Duration::from_secs(15),
        |e| e.is_resolved(Kind::ThreadExplosion) && e.incident == incident,
    )?;
    let resolved_ts = parse_rfc3339(&resolved.ts).expect("the harness checked ts");
    let t2 = Instant::now();
    loop {
        let alerts = am.alerts(&filter)?;
        if alerts.is_empty() {
            break;
        }
        if t2.elapsed() > Duration::from_secs(20) {
            return Err(fail(&format!(
                "expected the alert of incident {incident} to leave GET /api/v2/alerts (Alertmanager lists no alert whose endsAt has passed) within 20 s of the resolved event; still there: {alerts:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let gone_after = t2.elapsed();
    let note = loop {
        if let Some((r, a)) = notified(&notifications, &incident)
            .into_iter()
            .find(|(_, a)| a.get("status").and_then(Value::as_str) == Some("resolved"))
        {
            break (r, a);
        }
        if t2.elapsed() > Duration::from_secs(25) {
            return Err(fail(&format!(
                "expected Alertmanager to notify the resolution of incident {incident} within 25 s (send_resolved, group_interval 1s)"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (_, alert) = &note;
    eprintln!(
        "active alert in Alertmanager: {active}\nresolved alert in its notification: {alert}"
    );
    let ends = time_of(alert, "endsAt");
    ensure!(
        ends.is_some_and(|e| (e - resolved_ts).abs() <= 1.5),
        "{}",
        fail(&format!(
            "expected the resolved alert's endsAt to be the resolved event's ts {} (±1.5 s), got {:?}; alert: {alert}",
            resolved.ts,
            alert.get("endsAt")
        ))
    );
    let starts = time_of(alert, "startsAt");
    ensure!(
        starts.is_some_and(|s| (s - firing_ts).abs() <= 1.5),
        "{}",
        fail(&format!(
            "expected the resolved alert's startsAt to stay the incident's start {} (±1.5 s), got {:?}; alert: {alert}",
            firing.ts,
            alert.get("startsAt")
        ))
    );
    measured(
        "daemon_alertmanager",
        &[
            ("active_after_firing_s", &active_s),
            ("resolved_gone_s", &secs(gone_after)),
        ],
    );
    daemon.stop()?;
    Ok(())
}
