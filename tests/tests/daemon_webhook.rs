//! Webhook sinks against scripted receivers on 127.0.0.1 (tests/src/receiver.rs):
//! retries through 500s, a hang past the timeout, a closed connection and
//! refused connections; the spool surviving `kill -9` and SIGTERM; the json
//! and slack formats and `min_severity`; secrets from the environment and
//! files never printed; the rate limit's summary.
//!
//! Events come from the quick recipe: `[threads] max_threads = 20` and a
//! 40-thread workload fire a thread_explosion within a second or two, and
//! killing the workload resolves it at once. The daemon watches the whole
//! host, so each test picks its own events out by pid.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use sentinel_tests::receiver::{Behaviour, Receiver, Request, free_port, http_get};
use sentinel_tests::sentinel::run_sentinel_timeout;
use sentinel_tests::{
    Daemon, Event, Kind, ScratchDir, TestCgroup, Workload, measured, require_root, secs,
    sentinel_bin, serial, workload_bin,
};
use serde_json::Value;

const DETECT: Duration = Duration::from_secs(15);
const RESOLVE: Duration = Duration::from_secs(15);

/// The detector part of every config here.
const BASE: &str = "[threads]\nmax_threads = 20\n[daemon]\nresolve_after = \"5s\"\n";

/// A `[[sink.webhook]]` table.
fn hook(name: &str, url: &str, extra: &str) -> String {
    format!("[[sink.webhook]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n")
}

/// The state dir line for tests that restart the daemon on the same spool.
fn with_state(state: &Path, rest: &str) -> String {
    // `[daemon]` is in BASE already: add the key under it.
    let base = BASE.replace(
        "[daemon]\n",
        &format!("[daemon]\nstate_dir = \"{}\"\n", state.display()),
    );
    format!("{base}{rest}")
}

/// One thread_explosion incident of a 40-thread workload: firing, then
/// resolved once the workload is killed.
struct Incident {
    pid: i32,
    firing: Event,
    #[allow(dead_code)]
    resolved: Event,
    /// When the workload had its threads.
    ready: Instant,
}

fn incident(daemon: &Daemon, topic: &str) -> Result<Incident> {
    let cg = TestCgroup::new(topic)?;
    let mut w = Workload::spawn(workload_bin!(), &["threads", "40"], &cg)?;
    let pid = w.pid();
    w.expect("ready", Duration::from_secs(60))?;
    let ready = Instant::now();
    w.go()?;
    let firing = daemon.wait_for(
        &format!("a firing thread_explosion for pid {pid} (40 threads, max_threads 20)"),
        DETECT,
        |e| e.is_firing(Kind::ThreadExplosion) && e.pid_is(pid),
    )?;
    drop(w);
    let resolved = daemon.wait_for(
        &format!(
            "the resolved thread_explosion of incident {} (pid {pid}, killed)",
            firing.incident
        ),
        RESOLVE,
        |e| e.is_resolved(Kind::ThreadExplosion) && e.incident == firing.incident,
    )?;
    Ok(Incident {
        pid,
        firing,
        resolved,
        ready,
    })
}

/// [`incident`], with its stdout events and their ids.
fn incident_events(daemon: &Daemon, topic: &str) -> Result<(Incident, Vec<Event>, Vec<String>)> {
    let a = incident(daemon, topic)?;
    let ours = events_of(daemon, &[a.pid]);
    let want = ids(&ours);
    Ok((a, ours, want))
}

/// The daemon's stdout events about `pids`, in stdout order.
fn events_of(daemon: &Daemon, pids: &[i32]) -> Vec<Event> {
    daemon
        .events()
        .into_iter()
        .filter(|e| pids.iter().any(|p| e.pid_is(*p)))
        .collect()
}

fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

/// First occurrences, in order.
fn dedup(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    ids.into_iter().filter(|i| seen.insert(i.clone())).collect()
}

/// `payload` carries every field of the stdout event, equal. Returns the
/// differences.
fn diff_event(payload: &Value, e: &Event) -> Vec<String> {
    let want = serde_json::to_value(e).expect("events serialise");
    let Value::Object(want) = want else {
        unreachable!()
    };
    want.iter()
        .filter(|(k, v)| payload.get(k.as_str()) != Some(v))
        .map(|(k, v)| {
            format!(
                "{k}: stdout {v}, payload {}",
                payload
                    .get(k.as_str())
                    .map_or("(absent)".into(), Value::to_string)
            )
        })
        .collect()
}

/// Regular files below `dir` (recursively); empty when it does not exist.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in rd.flatten() {
        let p = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_under(&p)),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
    out.sort();
    out
}

fn spool_dir(state: &Path, name: &str) -> PathBuf {
    state.join("spool").join(name)
}

/// Committed spool files: a file still being written (a dot-file or a
/// `.tmp`, renamed into place once fsynced) holds nothing yet; the daemon
/// discards it after a crash.
fn committed(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            !name.starts_with('.') && !name.ends_with(".tmp")
        })
        .collect()
}

/// Every committed spool file's bytes, concatenated (to look for event
/// ids).
fn spool_text(dir: &Path) -> String {
    committed(dir)
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn describe_spool(dir: &Path) -> String {
    let files = files_under(dir);
    if files.is_empty() {
        return format!("{}: no files (exists: {})", dir.display(), dir.exists());
    }
    files
        .iter()
        .map(|p| {
            format!(
                "{} ({} bytes)",
                p.display(),
                std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until the spool under `dir` holds each of `want` (by id text).
fn wait_spooled(daemon: &Daemon, dir: &Path, want: &[String], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = spool_text(dir);
        let missing: Vec<&String> = want
            .iter()
            .filter(|id| !text.contains(id.as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(daemon.failure(&format!(
                "expected the spool {} to hold events {missing:?} (their ids in the spool files) within {timeout:?} while the receiver refuses connections; spool: {}",
                dir.display(),
                describe_spool(dir)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A receiver that refuses connections until [`Receiver::listen`], and a
/// `[[sink.webhook]]` table `name` (`timeout = "2s"`) for it.
fn refusing_hook(name: &str) -> Result<(Receiver, String)> {
    let rx = Receiver::reserve(&[])?;
    let table = hook(name, &rx.url("/hook"), "timeout = \"2s\"");
    Ok((rx, table))
}

/// For daemons restarted on the same spool: a scratch state dir, a
/// [`refusing_hook`] `hook` in a config on that state dir, and that hook's
/// spool directory.
struct SpoolOnDisk {
    _state: ScratchDir,
    rx: Receiver,
    config: String,
    spool: PathBuf,
}

impl SpoolOnDisk {
    fn new() -> Result<Self> {
        let state = ScratchDir::new_in(&std::env::temp_dir(), "webhook-state")?;
        let (rx, hook) = refusing_hook("hook")?;
        Ok(Self {
            config: with_state(state.path(), &hook),
            spool: spool_dir(state.path(), "hook"),
            _state: state,
            rx,
        })
    }

    /// A daemon on the spool (the receiver still refusing) and one
    /// [`incident_events`].
    fn first_daemon(&self, topic: &str) -> Result<(Daemon, Vec<Event>, Vec<String>)> {
        let daemon = Daemon::start(&self.config)?;
        let (_, ours, want) = incident_events(&daemon, topic)?;
        Ok((daemon, ours, want))
    }

    /// The receiver starts listening and a new daemon starts on the spool.
    fn restart_listening(&mut self) -> Result<Daemon> {
        self.rx.listen()?;
        Daemon::start(&self.config)
    }
}

/// Both sides of a failure: the daemon's events and stderr, and every
/// request the receiver saw.
fn failure(daemon: &Daemon, rx: &Receiver, what: &str) -> anyhow::Error {
    daemon.failure(&format!("{what}\n--- {}", rx.describe()))
}

/// Waits for the accepted deliveries of `want`; the error carries both sides.
fn wait_delivered(
    daemon: &Daemon,
    rx: &Receiver,
    want: &[String],
    timeout: Duration,
) -> Result<Vec<Request>> {
    rx.wait_accepted_ids(want, timeout)
        .map_err(|e| daemon.failure(&format!("{e:#}")))
}

/// The accepted deliveries of `want` are in `want`'s order (first
/// deliveries; a later duplicate is allowed: delivery is at least once).
fn check_order(daemon: &Daemon, rx: &Receiver, want: &[String]) -> Result<()> {
    let wanted: HashSet<&String> = want.iter().collect();
    let got = dedup(rx.accepted_ids().into_iter().filter(|i| wanted.contains(i)));
    if got != want {
        return Err(failure(
            daemon,
            rx,
            &format!(
                "expected the receiver to accept the events in stdout order {want:?}, got (first deliveries) {got:?}"
            ),
        ));
    }
    Ok(())
}

fn duplicates(rx: &Receiver, want: &[String]) -> usize {
    let acc = rx.accepted_ids();
    want.iter()
        .map(|id| acc.iter().filter(|a| *a == id).count().saturating_sub(1))
        .sum()
}

/// Every request carrying one of `events` (by body id): same id and
/// Idempotency-Key on every attempt, and the body equal to the stdout event.
fn check_attempts(daemon: &Daemon, rx: &Receiver, events: &[Event]) -> Result<()> {
    for r in rx.requests() {
        let Some(e) = events.iter().find(|e| {
            r.body_id() == Some(e.id.as_str()) || r.idempotency_key() == Some(e.id.as_str())
        }) else {
            continue;
        };
        let ok_key = r.idempotency_key() == Some(e.id.as_str());
        let ok_id = r.body_id() == Some(e.id.as_str());
        if !(ok_key && ok_id) {
            return Err(failure(
                daemon,
                rx,
                &format!(
                    "request #{} ({:?}) carries event {}: expected body id and Idempotency-Key both {}, got body id {:?} and Idempotency-Key {:?}",
                    r.seq,
                    r.answer,
                    e.id,
                    e.id,
                    r.body_id(),
                    r.idempotency_key()
                ),
            ));
        }
        let diffs = diff_event(r.json.as_ref().unwrap_or(&Value::Null), e);
        if !diffs.is_empty() {
            return Err(failure(
                daemon,
                rx,
                &format!(
                    "request #{} ({:?}, format json): expected the body to be the stdout event {}, differences: {diffs:?}",
                    r.seq, r.answer, e.id
                ),
            ));
        }
        if r.method != "POST" {
            return Err(failure(
                daemon,
                rx,
                &format!("request #{}: expected POST, got {}", r.seq, r.method),
            ));
        }
    }
    Ok(())
}

/// How long the scripted receiver hangs: far past the sink's 1 s timeout,
/// so a retry that comes before the hang ends proves the timeout works.
const HANG: Duration = Duration::from_secs(30);

/// The receiver answers 500 three times, then hangs past the sink's 1 s
/// timeout, then closes a connection without a reply, then accepts. Two
/// incidents (four events) must all arrive, in stdout order; every attempt
/// of an event carries its `id` and the same `Idempotency-Key`; the failing
/// deliveries never delay detection.
#[test]
fn retries_through_500_hang_and_close_deliver_every_event_in_order() -> Result<()> {
    let _serial = serial();
    require_root!();
    let rx = Receiver::start(&[
        Behaviour::Status(500),
        Behaviour::Status(500),
        Behaviour::Status(500),
        Behaviour::Hang(HANG),
        Behaviour::Close,
    ])?;
    let config = format!(
        "{BASE}{}",
        hook("flaky", &rx.url("/hook"), "timeout = \"1s\"")
    );
    let daemon = Daemon::start(&config)?;
    let a = incident(&daemon, "webhook-retry-a")?;
    let b = incident(&daemon, "webhook-retry-b")?;
    let ours = events_of(&daemon, &[a.pid, b.pid]);
    let want = ids(&ours);
    ensure!(
        want.len() == 4,
        "test setup: expected 4 events (2 incidents) for pids {} and {}, got {}: {:?}",
        a.pid,
        b.pid,
        want.len(),
        ours.iter().map(Event::brief).collect::<Vec<_>>()
    );
    let t0 = Instant::now();
    wait_delivered(&daemon, &rx, &want, Duration::from_secs(120))?;
    let delivered_after = t0.elapsed();
    check_order(&daemon, &rx, &want)?;
    check_attempts(&daemon, &rx, &ours)?;

    // The script was played out: the first five requests failed, each on
    // an event that was later delivered.
    let reqs = rx.requests();
    ensure!(
        reqs.len() >= 6 && reqs[..5].iter().all(|r| !r.accepted()),
        "{}",
        failure(
            &daemon,
            &rx,
            "test setup: expected the five scripted failures first"
        )
    );
    // timeout = "1s": the sink gave up on the hung request and retried
    // long before the receiver would have closed it (backoff ≤ 16 s here).
    let hang = &reqs[3];
    let after_hang = reqs[4].arrived.saturating_duration_since(hang.arrived);
    ensure!(
        after_hang < HANG - Duration::from_secs(5),
        "{}",
        failure(
            &daemon,
            &rx,
            &format!(
                "the attempt after the hung request #3 came {} s later: with timeout = \"1s\" the sink must give up on a receiver that does not answer, not wait for it ({} s hang)",
                secs(after_hang),
                HANG.as_secs()
            )
        )
    );
    let accepted: HashSet<String> = rx.accepted_ids().into_iter().collect();
    for r in &reqs[..5] {
        let id = r.event_id().unwrap_or("-");
        ensure!(
            accepted.contains(id),
            "{}",
            failure(
                &daemon,
                &rx,
                &format!(
                    "failed request #{} ({:?}) carried event {id}, which was never delivered afterwards",
                    r.seq, r.answer
                )
            )
        );
    }
    let first = &want[0];
    let first_attempts = rx.attempts(first);
    if reqs[0].event_id() == Some(first.as_str()) {
        ensure!(
            first_attempts >= 6,
            "{}",
            failure(
                &daemon,
                &rx,
                &format!(
                    "expected event {first} to be attempted at least 6 times (3×500, hang, close, ok), got {first_attempts}"
                )
            )
        );
    }
    // A hang or a 500 on the sink never holds up detection.
    let detect_a = a.firing.received.saturating_duration_since(a.ready);
    let detect_b = b.firing.received.saturating_duration_since(b.ready);
    ensure!(
        detect_b < Duration::from_secs(10),
        "{}",
        failure(
            &daemon,
            &rx,
            &format!(
                "the second incident was detected {} s after its workload had its threads, while the sink was retrying: detection must not wait for the sink",
                secs(detect_b)
            )
        )
    );
    measured(
        "daemon_webhook_retries",
        &[
            ("requests", &reqs.len()),
            ("first_event_attempts", &first_attempts),
            ("delivered_all_s", &secs(delivered_after)),
            ("duplicates", &duplicates(&rx, &want)),
            ("retry_after_hang_s", &secs(after_hang)),
            ("detect_a_s", &secs(detect_a)),
            ("detect_b_s", &secs(detect_b)),
        ],
    );
    daemon.stop()?;
    Ok(())
}

/// Nothing listens on the webhook's port at first (connections refused);
/// the receiver appears ~8 s later and then gets every event, in order.
#[test]
fn refused_connections_then_receiver_appears_events_delivered() -> Result<()> {
    let _serial = serial();
    require_root!();
    let (mut rx, hook) = refusing_hook("late")?;
    let config = format!("{BASE}{hook}");
    let daemon = Daemon::start(&config)?;
    let (a, ours, want) = incident_events(&daemon, "webhook-refused")?;
    let spool = spool_dir(&daemon.dir().join("state"), "late");
    wait_spooled(&daemon, &spool, &want, Duration::from_secs(5))?;
    // Let it retry against the closed port for a while.
    let refused_until = a.firing.received + Duration::from_secs(8);
    std::thread::sleep(refused_until.saturating_duration_since(Instant::now()));
    rx.listen()?;
    let listening = Instant::now();
    wait_delivered(&daemon, &rx, &want, Duration::from_secs(120))?;
    let after = listening.elapsed();
    check_order(&daemon, &rx, &want)?;
    check_attempts(&daemon, &rx, &ours)?;
    measured(
        "daemon_webhook_refused",
        &[
            ("delivered_after_listen_s", &secs(after)),
            ("duplicates", &duplicates(&rx, &want)),
        ],
    );
    daemon.stop()?;
    Ok(())
}

/// Events spooled while the receiver refuses connections survive `kill -9`:
/// a daemon restarted on the same state dir, with the receiver up, delivers
/// exactly the spooled events, in order.
#[test]
fn kill_9_with_events_spooled_then_restart_delivers_them() -> Result<()> {
    let _serial = serial();
    require_root!();
    let mut on_disk = SpoolOnDisk::new()?;
    let (first, ours, want) = on_disk.first_daemon("webhook-kill9")?;
    wait_spooled(&first, &on_disk.spool, &want, Duration::from_secs(5))?;
    let status = first.kill9()?;
    // Everything the first daemon printed went to the webhook (no
    // min_severity); what its spool held at the kill is what must come out.
    let text = spool_text(&on_disk.spool);
    let all_first = first.events();
    let spooled: Vec<String> = all_first
        .iter()
        .map(|e| e.id.clone())
        .filter(|id| text.contains(id.as_str()))
        .collect();
    let files = describe_spool(&on_disk.spool);
    ensure!(
        !committed(&on_disk.spool).is_empty(),
        "expected spool files under {} after kill -9 ({status}), found none",
        on_disk.spool.display()
    );
    eprintln!(
        "spool after kill -9: {files}; {} of the first daemon's {} events spooled",
        spooled.len(),
        all_first.len()
    );

    let second = on_disk.restart_listening()?;
    let t0 = Instant::now();
    wait_delivered(&second, &on_disk.rx, &spooled, Duration::from_secs(60))?;
    let after = t0.elapsed();
    // The spooled events come first, in order, before anything new.
    let delivered = dedup(on_disk.rx.accepted_ids());
    let head: Vec<String> = delivered.iter().take(spooled.len()).cloned().collect();
    if head != spooled {
        return Err(failure(
            &second,
            &on_disk.rx,
            &format!(
                "expected the restarted daemon to deliver the spooled events {spooled:?} first and in order, got (first deliveries) {delivered:?}"
            ),
        ));
    }
    let first_ids: HashSet<String> = ids(&all_first).into_iter().collect();
    let stray: Vec<&String> = delivered
        .iter()
        .filter(|id| first_ids.contains(*id) && !spooled.contains(*id))
        .collect();
    ensure!(
        stray.is_empty(),
        "{}",
        failure(
            &second,
            &on_disk.rx,
            &format!("delivered events of the first daemon that were not in its spool: {stray:?}")
        )
    );
    check_attempts(&second, &on_disk.rx, &ours)?;
    measured(
        "daemon_webhook_kill9",
        &[
            ("spooled", &spooled.len()),
            ("delivered_after_restart_s", &secs(after)),
            ("duplicates", &duplicates(&on_disk.rx, &spooled)),
        ],
    );
    second.stop()?;
    drop(first);
    Ok(())
}

/// SIGTERM while the receiver refuses connections and events are pending:
/// exit 0 within 5 s, the spool stays, and a restarted daemon delivers it.
#[test]
fn sigterm_with_spool_pending_exits_promptly_and_restart_delivers() -> Result<()> {
    let _serial = serial();
    require_root!();
    let mut on_disk = SpoolOnDisk::new()?;
    let (first, ours, want) = on_disk.first_daemon("webhook-sigterm")?;
    // No waiting for the spool: SIGTERM itself must flush what is pending.
    first.send_signal(libc::SIGTERM)?;
    let t0 = Instant::now();
    let status = first.wait_exited(Duration::from_secs(15))?;
    let took = t0.elapsed();
    ensure!(
        status.code() == Some(0) && took <= Duration::from_secs(5),
        "{}",
        first.failure(&format!(
            "expected exit code 0 within 5 s of SIGTERM with events pending for a refusing receiver, got {status} after {} s",
            secs(took)
        ))
    );
    let text = spool_text(&on_disk.spool);
    let missing: Vec<&String> = want
        .iter()
        .filter(|id| !text.contains(id.as_str()))
        .collect();
    ensure!(
        missing.is_empty(),
        "{}",
        first.failure(&format!(
            "expected the spool {} to keep the undelivered events {want:?} after SIGTERM, missing {missing:?}; spool: {}",
            on_disk.spool.display(),
            describe_spool(&on_disk.spool)
        ))
    );

    let second = on_disk.restart_listening()?;
    wait_delivered(&second, &on_disk.rx, &want, Duration::from_secs(60))?;
    check_order(&second, &on_disk.rx, &want)?;
    check_attempts(&second, &on_disk.rx, &ours)?;
    measured("daemon_webhook_sigterm", &[("exit_s", &secs(took))]);
    second.stop()?;
    drop(first);
    Ok(())
}

/// One daemon, three webhooks: `format = "slack"` gets a `text`,
/// `format = "json"` gets the stdout event object itself, and
/// `min_severity = "critical"` gets nothing for a warning.
#[test]
fn formats_slack_json_and_min_severity() -> Result<()> {
    let _serial = serial();
    require_root!();
    let slack = Receiver::start(&[])?;
    let json = Receiver::start(&[])?;
    let critical = Receiver::start(&[])?;
    let config = format!(
        "{BASE}{}{}{}",
        hook(
            "slack",
            &slack.url("/services/T0/B0/x"),
            "format = \"slack\""
        ),
        hook("json", &json.url("/events"), "format = \"json\""),
        hook(
            "critical",
            &critical.url("/critical"),
            "format = \"json\"\nmin_severity = \"critical\""
        ),
    );
    let daemon = Daemon::start(&config)?;
    let (_, ours, want) = incident_events(&daemon, "webhook-formats")?;
    ensure!(
        ours.iter()
            .all(|e| e.severity == sentinel_tests::Severity::Warning),
        "test setup: expected warning events, got {:?}",
        ours.iter().map(Event::brief).collect::<Vec<_>>()
    );

    // json: the event object, as on stdout.
    wait_delivered(&daemon, &json, &want, Duration::from_secs(30))?;
    check_order(&daemon, &json, &want)?;
    check_attempts(&daemon, &json, &ours)?;
    for r in json
        .accepted()
        .iter()
        .filter(|r| r.body_id().is_some_and(|i| want.iter().any(|w| w == i)))
    {
        ensure!(
            r.header("content-type")
                .is_some_and(|c| c.contains("application/json")),
            "{}",
            failure(
                &daemon,
                &json,
                &format!(
                    "request #{}: expected Content-Type application/json, got {:?}",
                    r.seq,
                    r.header("content-type")
                )
            )
        );
        ensure!(
            r.path == "/events",
            "{}",
            failure(
                &daemon,
                &json,
                &format!(
                    "request #{}: expected path /events (the URL's), got {}",
                    r.seq, r.path
                )
            )
        );
    }

    // slack: {"text": ...}, one per event, keyed by Idempotency-Key.
    wait_delivered(&daemon, &slack, &want, Duration::from_secs(30)).context(
        "the slack webhook must get every event (matched by its Idempotency-Key header)",
    )?;
    for e in &ours {
        let r = slack
            .accepted()
            .into_iter()
            .find(|r| r.idempotency_key() == Some(e.id.as_str()))
            .expect("waited for it");
        let text = r
            .json
            .as_ref()
            .and_then(|j| j.get("text"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        eprintln!("slack text for {}: {text:?}", e.id);
        ensure!(
            !text.trim().is_empty(),
            "{}",
            failure(
                &daemon,
                &slack,
                &format!(
                    "request #{} for event {} (format slack): expected a JSON body with a non-empty string `text`",
                    r.seq, e.id
                )
            )
        );
        ensure!(
            text.contains(&e.summary)
                || text.contains(e.kind.as_str())
                || text.to_lowercase().contains("thread"),
            "{}",
            failure(
                &daemon,
                &slack,
                &format!(
                    "request #{} for event {} (format slack): expected `text` to say what happened (the summary {:?} or the kind), got {text:?}",
                    r.seq, e.id, e.summary
                )
            )
        );
        ensure!(
            r.path == "/services/T0/B0/x",
            "{}",
            failure(
                &daemon,
                &slack,
                &format!(
                    "request #{}: expected the URL's path /services/T0/B0/x, got {}",
                    r.seq, r.path
                )
            )
        );
    }

    // min_severity = critical: nothing for our warnings (give it the time
    // the others took, and a little more).
    std::thread::sleep(Duration::from_secs(3));
    let leaked: Vec<String> = critical
        .requests()
        .iter()
        .filter(|r| r.event_id().is_some_and(|i| want.iter().any(|w| w == i)))
        .map(|r| r.brief(critical.started()))
        .collect();
    ensure!(
        leaked.is_empty(),
        "{}",
        daemon.failure(&format!(
            "expected the min_severity = \"critical\" webhook to get none of the warning events {want:?}, got:\n{}",
            leaked.join("\n")
        ))
    );
    daemon.stop()?;
    Ok(())
}

/// A fresh marker that appears nowhere unless leaked.
fn marker(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{what}{}x{nanos:09}", std::process::id())
}

/// URL from `url_env` and from `url_file`, header values inline, from
/// `{ env = ... }` and `{ file = ... }`: requests reach the right paths with
/// the headers, and no secret appears on stdout, stderr (where a failed
/// delivery is logged), `--check-config`'s output or `/metrics`.
#[test]
fn secrets_from_env_and_files_are_used_but_never_printed() -> Result<()> {
    let _serial = serial();
    require_root!();
    let env_rx = Receiver::start(&[Behaviour::Status(500), Behaviour::Close])?;
    let file_rx = Receiver::start(&[Behaviour::Status(500), Behaviour::Close])?;
    let secrets = ScratchDir::new_in(&std::env::temp_dir(), "webhook-secrets")?;
    let url_token = marker("URLTOKENENV");
    let file_token = marker("URLTOKENFILE");
    let inline_secret = marker("HDRINLINE");
    let env_secret = marker("HDRENV");
    let file_secret = marker("HDRFILE");
    let url_file = secrets.path().join("hook.url");
    std::fs::write(
        &url_file,
        format!("{}\n", file_rx.url(&format!("/hook/{file_token}"))),
    )?;
    let header_file = secrets.path().join("header.secret");
    std::fs::write(&header_file, format!("Bearer {file_secret}\n"))?;
    let metrics_port = free_port()?;

    let config = format!(
        "{BASE}[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
         [[sink.webhook]]\nname = \"from-env\"\nurl_env = \"SENTINEL_TEST_HOOK_URL\"\n\
         headers = {{ Authorization = \"Bearer {inline_secret}\", X-Env-Secret = {{ env = \"SENTINEL_TEST_HOOK_HEADER\" }}, X-File-Secret = {{ file = \"{}\" }} }}\n\
         [[sink.webhook]]\nname = \"from-file\"\nurl_file = \"{}\"\n",
        header_file.display(),
        url_file.display()
    );
    let env_url = env_rx.url(&format!("/hook/{url_token}"));
    let env = [
        ("SENTINEL_TEST_HOOK_URL", env_url.as_str()),
        ("SENTINEL_TEST_HOOK_HEADER", env_secret.as_str()),
    ];
    let daemon = Daemon::start_env(&config, &env)?;
    let (_, _, want) = incident_events(&daemon, "webhook-secrets")?;
    wait_delivered(&daemon, &env_rx, &want, Duration::from_secs(60))?;
    wait_delivered(&daemon, &file_rx, &want, Duration::from_secs(60))?;

    for r in env_rx
        .accepted()
        .iter()
        .filter(|r| r.event_id().is_some_and(|i| want.iter().any(|w| w == i)))
    {
        let expect = [
            ("authorization", format!("Bearer {inline_secret}")),
            ("x-env-secret", env_secret.clone()),
            ("x-file-secret", format!("Bearer {file_secret}")),
        ];
        for (h, v) in &expect {
            ensure!(
                r.header(h) == Some(v.as_str()),
                "{}",
                failure(
                    &daemon,
                    &env_rx,
                    &format!(
                        "request #{}: expected header {h}: {v:?}, got {:?}",
                        r.seq,
                        r.header(h)
                    )
                )
            );
        }
        ensure!(
            r.path == format!("/hook/{url_token}"),
            "{}",
            failure(
                &daemon,
                &env_rx,
                &format!(
                    "request #{}: expected the path from url_env /hook/{url_token}, got {}",
                    r.seq, r.path
                )
            )
        );
    }
    for r in file_rx
        .accepted()
        .iter()
        .filter(|r| r.event_id().is_some_and(|i| want.iter().any(|w| w == i)))
    {
        ensure!(
            r.path == format!("/hook/{file_token}"),
            "{}",
            failure(
                &daemon,
                &file_rx,
                &format!(
                    "request #{}: expected the path from url_file /hook/{file_token}, got {}",
                    r.seq, r.path
                )
            )
        );
    }

    let all_secrets = [
        &url_token,
        &file_token,
        &inline_secret,
        &env_secret,
        &file_secret,
    ];
    let leaks = |what: &str, text: &str| -> Vec<String> {
        all_secrets
            .iter()
            .filter(|s| text.contains(s.as_str()))
            .map(|s| format!("{s} in {what}"))
            .collect()
    };
    let mut found = Vec::new();
    let stdout: String = daemon
        .events()
        .iter()
        .map(|e| serde_json::to_string(e).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    found.extend(leaks("stdout", &stdout));
    found.extend(leaks("stderr", &daemon.stderr()));
    let metrics_addr = format!("127.0.0.1:{metrics_port}").parse()?;
    match http_get(metrics_addr, "/metrics", Duration::from_secs(5)) {
        Ok((200, body)) => {
            found.extend(leaks("/metrics", &body));
            eprintln!(
                "/metrics sink lines: {:?}",
                body.lines()
                    .filter(|l| l.starts_with("sentinel_sink_"))
                    .take(12)
                    .collect::<Vec<_>>()
            );
        }
        Ok((status, body)) => {
            return Err(daemon.failure(&format!(
                "GET http://{metrics_addr}/metrics: status {status}: {}",
                sentinel_tests::truncate(&body, 500)
            )));
        }
        Err(e) => {
            return Err(daemon.failure(&format!("GET http://{metrics_addr}/metrics: {e:#}")));
        }
    }
    let check = run_sentinel_timeout(
        &sentinel_bin()?,
        "daemon",
        &[
            "--check-config",
            "--config",
            &daemon.config_path().to_string_lossy(),
        ],
        Duration::from_secs(30),
        |cmd| {
            cmd.envs(env.iter().copied());
        },
    )?;
    found.extend(leaks("--check-config stdout", &check.stdout));
    found.extend(leaks("--check-config stderr", &check.stderr));
    ensure!(
        check.code() == Some(0),
        "expected `sentinel daemon --check-config` on the running daemon's config to exit 0; {}",
        check.describe()
    );
    ensure!(
        found.is_empty(),
        "{}",
        daemon.failure(&format!(
            "secrets leaked: {found:?}\n--- env receiver ---\n{}\n--- file receiver ---\n{}",
            env_rx.describe(),
            file_rx.describe()
        ))
    );
    // The failed deliveries were logged (that is where a URL would leak).
    eprintln!(
        "stderr lines about the sinks: {:?}",
        daemon
            .stderr()
            .lines()
            .filter(|l| l.contains("from-env") || l.contains("from-file") || l.contains("webhook"))
            .take(10)
            .collect::<Vec<_>>()
    );
    daemon.stop()?;
    Ok(())
}

/// Integers mentioned by a JSON payload: numbers, and digit runs inside
/// strings.
fn integers_in(v: &Value, out: &mut Vec<u64>) {
    match v {
        Value::Number(n) => out.extend(n.as_u64()),
        Value::String(s) => out.extend(
            s.split(|c: char| !c.is_ascii_digit())
                .filter(|t| !t.is_empty() && t.len() < 8)
                .filter_map(|t| t.parse::<u64>().ok()),
        ),
        Value::Array(a) => a.iter().for_each(|x| integers_in(x, out)),
        Value::Object(m) => m.values().for_each(|x| integers_in(x, out)),
        _ => {}
    }
}

/// `max_per_minute = 2` and six events within seconds (three incidents):
/// at most two are delivered one by one, and a summary delivered within
/// about a minute mentions how many were held back.
#[test]
fn rate_limit_folds_a_storm_into_a_summary() -> Result<()> {
    let _serial = serial();
    require_root!();
    let rx = Receiver::start(&[])?;
    let config = format!(
        "{BASE}{}",
        hook(
            "limited",
            &rx.url("/hook"),
            "format = \"json\"\nmax_per_minute = 2"
        )
    );
    let daemon = Daemon::start(&config)?;

    let cgs: Vec<TestCgroup> = (0..3)
        .map(|i| TestCgroup::new(&format!("webhook-rate-{i}")))
        .collect::<Result<_>>()?;
    let mut ws: Vec<Workload> = cgs
        .iter()
        .map(|cg| Workload::spawn(workload_bin!(), &["threads", "40"], cg))
        .collect::<Result<_>>()?;
    let pids: Vec<i32> = ws.iter().map(Workload::pid).collect();
    for w in &mut ws {
        w.expect("ready", Duration::from_secs(60))?;
        w.go()?;
    }
    let mut firing = Vec::new();
    for &pid in &pids {
        firing.push(daemon.wait_for(
            &format!("a firing thread_explosion for pid {pid}"),
            DETECT,
            |e| e.is_firing(Kind::ThreadExplosion) && e.pid_is(pid),
        )?);
    }
    drop(ws);
    for f in &firing {
        daemon.wait_for(
            &format!("the resolved thread_explosion of incident {}", f.incident),
            RESOLVE,
            |e| e.is_resolved(Kind::ThreadExplosion) && e.incident == f.incident,
        )?;
    }
    let ours = events_of(&daemon, &pids);
    let want = ids(&ours);
    ensure!(
        want.len() == 6,
        "test setup: expected 6 events for pids {pids:?}, got {:?}",
        ours.iter().map(Event::brief).collect::<Vec<_>>()
    );
    let storm_start = ours[0].received;

    // A summary: an accepted request that is not one of the daemon's events.
    let is_summary = |r: &Request, stdout_ids: &HashSet<String>| {
        r.accepted() && !r.body_id().is_some_and(|i| stdout_ids.contains(i))
    };
    let deadline = Duration::from_secs(90);
    let summary = {
        let t0 = Instant::now();
        loop {
            let stdout_ids: HashSet<String> = ids(&daemon.events()).into_iter().collect();
            if let Some(r) = rx
                .requests()
                .into_iter()
                .find(|r| is_summary(r, &stdout_ids))
            {
                break r;
            }
            if t0.elapsed() > deadline {
                return Err(failure(
                    &daemon,
                    &rx,
                    &format!(
                        "expected a summary of the rate-limited events within {deadline:?} (max_per_minute = 2, 6 events)"
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let stdout_ids: HashSet<String> = ids(&daemon.events()).into_iter().collect();
    let ours_set: HashSet<&String> = want.iter().collect();
    let individual_ours = rx
        .accepted()
        .iter()
        .filter(|r| {
            r.body_id()
                .is_some_and(|i| ours_set.contains(&i.to_string()))
        })
        .count();
    ensure!(
        individual_ours <= 2,
        "{}",
        failure(
            &daemon,
            &rx,
            &format!(
                "expected at most 2 of the 6 events delivered individually with max_per_minute = 2, got {individual_ours}"
            )
        )
    );
    // Held back so far: every event the daemon printed before the summary
    // arrived, minus those delivered individually before it.
    let before: Vec<Event> = daemon
        .events()
        .into_iter()
        .filter(|e| e.received <= summary.arrived)
        .collect();
    let individual_before = rx
        .requests()
        .iter()
        .filter(|r| r.accepted() && r.arrived <= summary.arrived)
        .filter(|r| r.body_id().is_some_and(|i| stdout_ids.contains(i)))
        .count();
    let suppressed = before.len().saturating_sub(individual_before) as u64;
    let mut numbers = Vec::new();
    integers_in(summary.json.as_ref().unwrap_or(&Value::Null), &mut numbers);
    if summary.json.is_none() {
        integers_in(&Value::String(summary.body_text()), &mut numbers);
    }
    ensure!(
        numbers.contains(&suppressed),
        "{}",
        failure(
            &daemon,
            &rx,
            &format!(
                "expected the summary (request #{}) to mention the {suppressed} events held back ({} printed before it, {individual_before} delivered individually), numbers in it: {numbers:?}",
                summary.seq,
                before.len()
            )
        )
    );
    // When the summary lists the ids it folded, they are exactly the
    // held-back events.
    if let Some(listed) = summary
        .json
        .as_ref()
        .and_then(|j| j.get("ids"))
        .and_then(Value::as_array)
    {
        let delivered: HashSet<String> = rx
            .requests()
            .iter()
            .filter(|r| r.accepted() && r.arrived <= summary.arrived)
            .filter_map(|r| r.body_id().map(str::to_string))
            .collect();
        let held: HashSet<String> = before
            .iter()
            .map(|e| e.id.clone())
            .filter(|i| !delivered.contains(i))
            .collect();
        let listed: HashSet<String> = listed
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        ensure!(
            listed == held,
            "{}",
            failure(
                &daemon,
                &rx,
                &format!(
                    "the summary lists ids {listed:?}, but the events held back were {held:?}"
                )
            )
        );
    }
    eprintln!("rate-limit summary: {}", summary.body_text());
    measured(
        "daemon_webhook_rate_limit",
        &[
            ("individual", &individual_ours),
            ("suppressed", &suppressed),
            (
                "summary_after_s",
                &secs(summary.arrived.saturating_duration_since(storm_start)),
            ),
        ],
    );
    daemon.stop()?;
    Ok(())
}
