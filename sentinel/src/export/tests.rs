//! Exports of small stores written record by record, as the recorder
//! would have written them.
use std::{
    collections::BTreeMap,
    fs::File,
    io::Read,
    path::{Path, PathBuf},
};

use serde_json::json;

use super::*;
use crate::{
    event::{Event, Kind, Names, Severity, State},
    record::{SCHEMA, format},
    top::frame::{ContainerRow, Detail, Frame, Header, ProcRow, Subject},
};

const MIB: u64 = 1 << 20;
/// 2026-11-23T03:00:00Z
const T0: u64 = 1_795_402_800_000;
const STEP: u64 = 5_000;

struct Seg {
    first_ms: u64,
    bytes: Vec<u8>,
}

impl Seg {
    fn new(first_ms: u64) -> Seg {
        let mut s = Seg {
            first_ms,
            bytes: Vec::new(),
        };
        let start = Start {
            version: "0.1.0-test".into(),
            host: "box".into(),
            kernel: "6.1.0-test".into(),
            boot_id: "b00t".into(),
            pid: 99,
            interval_s: 5.0,
            config: json!({"recorder": {"interval": "5s"}, "webhook": {"url": "<secret>"}}),
        };
        s.push(
            RecordKind::Start,
            first_ms,
            &serde_json::to_vec(&start).unwrap(),
        );
        s
    }

    fn push(&mut self, kind: RecordKind, t: u64, json: &[u8]) {
        self.bytes
            .extend_from_slice(&format::encode(kind, SCHEMA, t, json));
    }

    fn frame(&mut self, f: &Frame) {
        self.push(
            RecordKind::Frame,
            f.unix_ms,
            &serde_json::to_vec(f).unwrap(),
        );
    }

    fn event(&mut self, t: u64, e: &Event) {
        self.push(RecordKind::Event, t, &serde_json::to_vec(e).unwrap());
    }

    fn write(&self, dir: &Path) -> PathBuf {
        let p = dir.join(format!("{:016}.seg", self.first_ms));
        std::fs::write(&p, &self.bytes).unwrap();
        p
    }
}

fn proc(pid: u32, comm: &str, rss: u64) -> ProcRow {
    ProcRow {
        pid,
        start: u64::from(pid) * 100,
        comm: comm.into(),
        state: 'R',
        rss,
        cpu_pct: Some(1.0),
        threads: 1,
        ..Default::default()
    }
}

fn event(id: &str, kind: Kind, sev: Severity, state: State, pid: u32, comm: &str, t: u64) -> Event {
    Event {
        id: id.into(),
        incident: id.into(),
        ts: rfc3339(t),
        host: "box".into(),
        kind,
        severity: sev,
        state,
        subject: "process".into(),
        names: Names {
            pid: Some(pid),
            comm: Some(comm.into()),
            cgroup: Some("/x".into()),
            container: None,
        },
        summary: format!("{} about {comm}", kind.name()),
        evidence: json!({}),
    }
}

const OOM_ID: &str = "00000000000000000000000000000oom";
const EVIL: &str = "<script>alert(1)</script>";

/// 3 minutes at 5 s: pid 42 "grower" rises from 80 MiB by 12 MiB a frame
/// (to 512 MiB) and is OOM-killed by /x's limit; pid 7 named like an
/// attack sits at 300 MiB; container "web" writes; 20 small bystanders.
fn incident_store(dir: &Path) {
    let mut seg = Seg::new(T0);
    let frames = 37;
    for i in 0..frames {
        let t = T0 + i * STEP;
        let mut procs = vec![
            proc(42, "grower", 80 * MIB + i * 12 * MIB),
            proc(7, EVIL, 300 * MIB),
        ];
        for b in 0..20 {
            procs.push(proc(1000 + b, &format!("small{b}"), u64::from(b + 1) * MIB));
        }
        procs[0].container = Some("web".into());
        procs[0].cgroup = Some("/x".into());
        procs[0].rss_growth_per_min = Some(144.0 * MIB as f64);
        if i > 20 {
            procs[1].blocked = 2;
        }
        let f = Frame {
            schema: 1,
            unix_ms: t,
            time: rfc3339(t),
            host: "box".into(),
            interval_s: 5.0,
            header: Header {
                mem_total: 8 << 30,
                mem_available: (4 << 30) - i * 12 * MIB,
                load: [1.0, 0.5, 0.2],
                ..Default::default()
            },
            procs,
            containers: vec![
                ContainerRow {
                    cgroup_id: 5,
                    path: "/x".into(),
                    name: "web".into(),
                    rss: 80 * MIB + i * 12 * MIB,
                    write_per_s: Some(4.0 * MIB as f64),
                    ..Default::default()
                },
                ContainerRow {
                    cgroup_id: 6,
                    path: "/y\"<b>".into(),
                    name: "a,\"b\"<i>".into(),
                    rss: MIB,
                    write_per_s: Some(1.0 * MIB as f64),
                    ..Default::default()
                },
            ],
            details: if i > 20 {
                vec![Detail {
                    subject: Subject::Process { pid: 7, start: 700 },
                    title: format!("Process 7 ({EVIL})"),
                    alive: true,
                    blocked: vec![crate::top::frame::BlockedThread {
                        pid: 7,
                        tid: 8,
                        comm: Some("worker".into()),
                        wait_s: (i - 20) as f64 * 5.0,
                        uaddr: 0x1000,
                        op: "wait".into(),
                        owner: Some(9),
                        stack: vec!["pthread_mutex_lock".into(), "take_both".into()],
                    }],
                    rss: vec![],
                    faults_per_s: vec![],
                    write_per_s: vec![],
                    events: vec![],
                    members: vec![],
                }]
            } else {
                vec![]
            },
            ..Default::default()
        };
        seg.frame(&f);
        if i == 20 {
            let mut bloat = event(
                "bloat-1",
                Kind::MemoryBloat,
                Severity::Warning,
                State::Firing,
                42,
                "grower",
                t,
            );
            bloat.summary = "grower grows 144 MiB/min".into();
            seg.event(t, &bloat);
        }
    }
    let t = T0 + (frames - 1) * STEP + 1_000;
    let mut oom = event(
        OOM_ID,
        Kind::OomKill,
        Severity::Critical,
        State::Firing,
        42,
        "grower",
        t,
    );
    oom.evidence = json!({"oom": "cgroup", "limit_cgroup": "/x", "limit_bytes": 512 * MIB});
    seg.event(t, &oom);
    seg.write(dir);
}

fn opts(store: &Path, out: &Path) -> Options {
    Options {
        store: store.to_owned(),
        output: Some(out.to_owned()),
        config: json!({"webhook": {"url": "<secret>"}}),
        config_source: "test".into(),
        ..Default::default()
    }
}

/// The archive's files by path under the top directory.
fn unpack(path: &Path) -> BTreeMap<String, String> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(File::open(path).unwrap()));
    let stem = archive::stem(path);
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let rel = p
            .strip_prefix(&format!("{stem}/"))
            .unwrap_or_else(|| panic!("{p} is outside {stem}/"))
            .to_string();
        if e.header().entry_type().is_dir() {
            continue;
        }
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        out.insert(rel, s);
    }
    out
}

fn export_err(o: &Options) -> Error {
    let e = run(o).expect_err("export should fail");
    match e.downcast::<Error>() {
        Ok(e) => e,
        Err(e) => panic!("not a typed export error: {e:#}"),
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn around_an_oom_kill_holds_the_event_the_growth_and_a_report() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    incident_store(&store);
    let out = tmp.path().join("x.tar.gz");
    let mut o = opts(&store, &out);
    o.around = Some(OOM_ID.into());
    assert_eq!(run(&o).unwrap(), out);
    let files = unpack(&out);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    for want in [
        "manifest.json",
        "events.ndjson",
        "report.html",
        "stacks.txt",
        "host.json",
        "timelines/host.csv",
        "timelines/processes/42-grower.csv",
        "timelines/containers/web.csv",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // The only file in the directory is the archive.
    assert_eq!(leftovers(tmp.path()), vec!["store", "x.tar.gz"]);

    let events: Vec<serde_json::Value> = files["events.ndjson"]
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["id"], OOM_ID);

    let csv = &files["timelines/processes/42-grower.csv"];
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rss_col = header.iter().position(|h| *h == "rss_bytes").unwrap();
    let rss: Vec<u64> = lines
        .map(|l| l.split(',').nth(rss_col).unwrap().parse().unwrap())
        .collect();
    assert_eq!(rss.len(), 37);
    assert_eq!(rss[0], 80 * MIB);
    assert_eq!(*rss.last().unwrap(), 512 * MIB);
    assert_eq!(files["timelines/host.csv"].lines().count(), 38);

    let m: serde_json::Value = serde_json::from_str(&files["manifest.json"]).unwrap();
    assert_eq!(m["schema"], 1);
    assert_eq!(m["host"], "box");
    assert_eq!(m["kernel"], "6.1.0-test");
    assert_eq!(m["recorders"][0]["version"], "0.1.0-test");
    assert_eq!(m["range"]["around"]["id"], OOM_ID);
    assert_eq!(m["store"]["corrupt"], 0);
    assert_eq!(m["store"]["frames"], 37);
    assert_eq!(m["config"]["recorder"]["webhook"]["url"], "<secret>");
    let listed: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&"timelines/processes/42-grower.csv"));
    for f in m["files"].as_array().unwrap() {
        let p = f["path"].as_str().unwrap();
        assert_eq!(f["bytes"].as_u64().unwrap(), files[p].len() as u64, "{p}");
    }

    let html = &files["report.html"];
    assert!(
        html.contains(
            "pid 42 (grower) grew from 80.0 MiB to 512.0 MiB in 3 min and was OOM-killed by the 512.0 MiB memory limit of /x at 03:03:01."
        ),
        "{html}"
    );
    assert!(html.contains(r#"<svg class="chart" id="chart-rss""#));
    assert!(html.contains(r#"data-pid="42""#));
    assert!(html.contains(&format!(
        r#"<line class="event-mark sev-critical state-firing" data-event-id="{OOM_ID}""#
    )));
    // No markup from the store, and nothing fetched from anywhere.
    assert!(!html.contains("<script") && !html.contains("<i>") && !html.contains("<b>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    for bad in ["http:", "https:", "src=", "@import", "url("] {
        assert!(!html.contains(bad), "report.html has {bad}");
    }

    let stacks = &files["stacks.txt"];
    assert!(
        stacks.contains("thread 8 (worker): futex wait on 0x1000"),
        "{stacks}"
    );
    assert!(stacks.contains("#1  take_both"), "{stacks}");
    let host: serde_json::Value = serde_json::from_str(&files["host.json"]).unwrap();
    assert_eq!(host["recorded"]["header"]["mem_total"], 8u64 << 30);
    assert!(host["exporter"]["uname"]["release"].is_string());
}

#[test]
fn selection_takes_event_subjects_and_the_top_and_narrows_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    incident_store(&store);
    let all = BTreeMap::from([("since", T0), ("until", T0 + 3_600_000)]);
    let mut o = opts(&store, &tmp.path().join("a.tar.gz"));
    o.since = Some(all["since"]);
    o.until = Some(all["until"]);
    run(&o).unwrap();
    let files = unpack(&tmp.path().join("a.tar.gz"));
    let procs: Vec<&String> = files
        .keys()
        .filter(|k| k.starts_with("timelines/processes/"))
        .collect();
    // grower (event, growth, rss), the evil one (rss), and the largest
    // bystanders: 8 by peak RSS, plus growth leaders (only grower grows).
    assert!(
        procs.iter().any(|p| p.ends_with("/42-grower.csv")),
        "{procs:?}"
    );
    assert!(
        procs
            .iter()
            .any(|p| p.ends_with("/7-_script_alert_1___script_.csv")),
        "{procs:?}"
    );
    assert!(
        procs.iter().any(|p| p.ends_with("/1019-small19.csv")),
        "{procs:?}"
    );
    assert!(
        !procs.iter().any(|p| p.ends_with("/1000-small0.csv")),
        "{procs:?}"
    );
    assert_eq!(procs.len(), 8, "{procs:?}");
    // Both containers; a name with quotes and markup becomes a safe file.
    assert!(
        files.contains_key("timelines/containers/a__b__i_.csv"),
        "{:?}",
        files.keys()
    );
    let c = &files["timelines/containers/a__b__i_.csv"];
    assert!(
        c.lines()
            .nth(1)
            .unwrap()
            .contains(r#","a,""b""<i>","/y""<b>","#),
        "{c}"
    );

    let mut o2 = o.clone();
    o2.output = Some(tmp.path().join("b.tar.gz"));
    o2.pids = vec![1005, 4242];
    run(&o2).unwrap();
    let files = unpack(&tmp.path().join("b.tar.gz"));
    let procs: Vec<&String> = files
        .keys()
        .filter(|k| k.starts_with("timelines/processes/"))
        .collect();
    assert_eq!(procs, vec!["timelines/processes/1005-small5.csv"]);
    let m: serde_json::Value = serde_json::from_str(&files["manifest.json"]).unwrap();
    assert_eq!(m["selection"]["not_found"], json!(["pid 4242"]));
    assert!(files["report.html"].contains("No pid 4242 was recorded in this range."));

    let mut o3 = o.clone();
    o3.output = Some(tmp.path().join("c.tar.gz"));
    o3.containers = vec!["web".into()];
    run(&o3).unwrap();
    let files = unpack(&tmp.path().join("c.tar.gz"));
    let subjects: Vec<&String> = files
        .keys()
        .filter(|k| k.starts_with("timelines/") && k.as_str() != "timelines/host.csv")
        .collect();
    assert_eq!(
        subjects,
        vec![
            "timelines/containers/web.csv",
            "timelines/processes/42-grower.csv"
        ]
    );
}

#[test]
fn an_unknown_event_id_fails_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    incident_store(&store);
    let mut o = opts(&store, &tmp.path().join("x.tar.gz"));
    o.around = Some("nope".into());
    let e = export_err(&o);
    assert!(matches!(e, Error::UnknownEvent { events: 2, .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("nope") && msg.contains("2026-11-23T03:00:00.000Z"),
        "{msg}"
    );
    assert_eq!(leftovers(tmp.path()), vec!["store"]);
}

#[test]
fn a_range_without_records_names_what_the_store_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    incident_store(&store);
    let mut o = opts(&store, &tmp.path().join("x.tar.gz"));
    o.since = Some(978_307_200_000);
    o.until = Some(978_393_600_000);
    let e = export_err(&o);
    let msg = e.to_string();
    assert!(matches!(e, Error::NoData { .. }), "{msg}");
    assert!(
        msg.contains("2001-01-01T00:00:00.000Z")
            && msg.contains("the store holds 2026-11-23T03:00:00.000Z to 2026-11-23T03:03:01.000Z"),
        "{msg}"
    );
    assert_eq!(leftovers(tmp.path()), vec!["store"]);

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut o = opts(&empty, &tmp.path().join("y.tar.gz"));
    o.since = Some(T0);
    let msg = export_err(&o).to_string();
    assert!(msg.contains("the store holds no records"), "{msg}");
}

#[test]
fn an_unwritable_output_fails_before_the_store_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    // The store does not exist either: the output is checked first.
    let o = opts(&tmp.path().join("missing"), &file.join("x.tar.gz"));
    let e = export_err(&o);
    assert!(matches!(e, Error::Unwritable { .. }), "{e}");
    assert!(e.to_string().contains("file/x.tar.gz"), "{e}");
    assert_eq!(leftovers(tmp.path()), vec!["file"]);

    let o = opts(&tmp.path().join("missing"), &tmp.path().join("x.tar.gz"));
    let e = export_err(&o);
    assert!(matches!(e, Error::Store(OpenError::Missing(_))), "{e}");
    assert_eq!(leftovers(tmp.path()), vec!["file"]);
}

#[test]
fn a_corrupt_record_is_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    incident_store(&store);
    let seg = std::fs::read_dir(&store)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&seg).unwrap();
    // Rot in the middle of the segment: inside some frame.
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&seg, &bytes).unwrap();
    let out = tmp.path().join("x.tar.gz");
    let mut o = opts(&store, &out);
    o.since = Some(T0);
    o.until = Some(T0 + 3_600_000);
    run(&o).unwrap();
    let files = unpack(&out);
    let m: serde_json::Value = serde_json::from_str(&files["manifest.json"]).unwrap();
    let corrupt = m["store"]["corrupt"].as_u64().unwrap();
    assert!(corrupt >= 1, "{}", m["store"]);
    let frames = m["store"]["frames"].as_u64().unwrap();
    assert!((34..37).contains(&frames), "{}", m["store"]);
    assert!(files["report.html"].contains("damaged records in the store were skipped"));
}

#[test]
fn events_written_twice_are_exported_once_and_the_default_name_is_unique() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    incident_store(&store);
    // A second segment repeating the OOM event (a daemon restarted and
    // re-sent it), and one frame.
    let mut seg = Seg::new(T0 + 600_000);
    let mut oom = event(
        OOM_ID,
        Kind::OomKill,
        Severity::Critical,
        State::Firing,
        42,
        "grower",
        T0 + 181_000,
    );
    oom.evidence = json!({});
    seg.event(T0 + 181_000, &oom);
    seg.frame(&Frame {
        unix_ms: T0 + 600_000,
        ..Default::default()
    });
    seg.write(&store);
    let outdir = tmp.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let mut o = opts(&store, &outdir);
    o.since = Some(T0);
    o.until = Some(T0 + 3_600_000);
    let a = run(&o).unwrap();
    let b = run(&o).unwrap();
    assert_ne!(a, b);
    let name = a.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("sentinel-box-") && name.ends_with("Z.tar.gz"),
        "{name}"
    );
    let files = unpack(&a);
    assert_eq!(files["events.ndjson"].lines().count(), 2);
    let m: serde_json::Value = serde_json::from_str(&files["manifest.json"]).unwrap();
    assert_eq!(m["recorders"].as_array().unwrap().len(), 2);
}

/// 24 hours at 5 s (17,280 frames of 40 processes and 100 containers):
/// run by hand with `--ignored --nocapture` to see the time and memory.
#[test]
#[ignore]
fn a_day_of_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    std::fs::create_dir(&store).unwrap();
    let started = std::time::Instant::now();
    let mut seg = Seg::new(T0);
    for i in 0..17_280u64 {
        if i % 720 == 0 && i > 0 {
            seg.write(&store);
            seg = Seg::new(T0 + i * STEP);
        }
        let procs = (0..40)
            .map(|p| {
                let mut r = proc(
                    p + (i as u32 / 1000) * 40,
                    &format!("proc{p}"),
                    (p as u64 + 1) * MIB + i * 1000,
                );
                r.rss_growth_per_min = Some(1000.0);
                r.write_per_s = Some(p as f64);
                r
            })
            .collect();
        let containers = (0..100)
            .map(|c| ContainerRow {
                cgroup_id: c,
                path: format!("/system.slice/svc{c}.service"),
                name: format!("svc{c}"),
                rss: c * MIB,
                write_per_s: Some((c * i % 977) as f64 * 1000.0),
                ..Default::default()
            })
            .collect();
        seg.frame(&Frame {
            unix_ms: T0 + i * STEP,
            interval_s: 5.0,
            procs,
            containers,
            ..Default::default()
        });
    }
    seg.write(&store);
    let bytes: u64 = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    eprintln!("built {bytes} bytes of store in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let idx = Store::open(&store)
        .unwrap()
        .index(0, u64::MAX, &[RecordKind::Frame]);
    eprintln!(
        "indexed {} frames in {:?}",
        idx.locs.len(),
        started.elapsed()
    );
    let started = std::time::Instant::now();
    let out = tmp.path().join("day.tar.gz");
    let mut o = opts(&store, &out);
    o.since = Some(T0);
    o.until = Some(T0 + 86_400_000);
    run(&o).unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("");
    eprintln!(
        "exported in {:?}: {} bytes; {hwm}",
        started.elapsed(),
        std::fs::metadata(&out).unwrap().len()
    );
}
