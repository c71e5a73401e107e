//! The flight recorder: what the daemon saw, kept on disk for `sentinel
//! export` and `sentinel top --at`. Every event, and every `interval` a
//! frame (`top::frame::Frame`, trimmed by `select::trim`): host context,
//! every container, and the top processes by each signal.
//!
//! The store is a directory of append-only segment files
//! (`<first unix ms>.seg`), each a run of checksummed records
//! (`format.rs`). `writer.rs` appends on its own thread, rolls segments and
//! drops the oldest past the size and age bounds; `reader.rs` walks them
//! back, skipping what a crash tore or a disk corrupted. The README says why
//! this format and not an embedded database.
pub mod format;
pub mod reader;
pub mod select;
pub mod writer;

use serde::{Deserialize, Serialize};

pub use format::RecordKind;
pub use reader::{Index, Loc, OpenError, Stats, Store};
pub use writer::Recorder;

use crate::{event::Event, top::frame::Frame};

/// The meaning of records' JSON. A reader accepts any schema up to its own;
/// records of a newer schema are counted and skipped. The rule that keeps
/// old stores readable: a field added to `Start`, `Event` or `Frame` (and
/// the rows inside it) gets `#[serde(default)]`, and a field is never
/// renamed or given a new meaning without bumping this.
/// `tests::a_schema_1_store_stays_readable` reads a store written by the
/// first release.
pub const SCHEMA: u16 = 1;

/// The first record of every segment: who wrote what follows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Start {
    pub version: String,
    pub host: String,
    /// `uname -r`.
    pub kernel: String,
    pub boot_id: String,
    pub pid: u32,
    /// Seconds between frames.
    pub interval_s: f64,
    /// The daemon's configuration, secrets shown as `<secret>`.
    pub config: serde_json::Value,
}

#[derive(Debug, Clone)]
pub enum Record {
    Start(Box<Start>),
    Event(Box<Event>),
    Frame(Box<Frame>),
}

#[cfg(test)]
mod tests {
    use std::{
        fs::OpenOptions,
        io::{Seek, SeekFrom, Write},
        path::Path,
        time::Duration,
    };

    use super::*;
    use crate::{config::Config, top::frame::ProcRow};

    fn config(dir: &Path) -> Config {
        let mut cfg = Config::default();
        cfg.recorder.dir = Some(dir.to_owned());
        cfg.recorder.min_free = 0;
        cfg
    }

    fn frame(ms: u64, rss: u64) -> Frame {
        Frame {
            schema: crate::top::frame::SCHEMA,
            unix_ms: ms,
            procs: vec![ProcRow {
                pid: 42,
                comm: "grower".into(),
                rss,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn record(cfg: &Config, frames: impl IntoIterator<Item = Frame>) {
        let r = Recorder::start(cfg, Start::default()).unwrap();
        for f in frames {
            r.frame(f);
        }
        r.shutdown(Duration::from_secs(10));
    }

    fn rss_of(store: &Store) -> (Vec<u64>, Stats) {
        let idx = store.index(0, u64::MAX, &[RecordKind::Frame]);
        let rss = idx
            .locs
            .iter()
            .filter_map(|l| match store.load(l) {
                Ok(Record::Frame(f)) => Some(f.procs[0].rss),
                _ => None,
            })
            .collect();
        (rss, idx.stats)
    }

    #[test]
    fn what_is_written_reads_back_in_order_across_restarts() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path());
        let t0 = crate::event::unix_ms_now();
        record(&cfg, (0..50).map(|i| frame(t0 + i, i)));
        record(&cfg, (50..60).map(|i| frame(t0 + i, i)));
        let store = Store::open(tmp.path()).unwrap();
        let (rss, stats) = rss_of(&store);
        assert_eq!(rss, (0..60).collect::<Vec<_>>());
        assert_eq!((stats.segments, stats.corrupt), (2, 0));
        let mid = store.index(t0 + 10, t0 + 19, &[RecordKind::Frame]);
        assert_eq!(mid.locs.len(), 10);
    }

    #[test]
    fn a_torn_tail_and_a_rotten_record_cost_only_themselves() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path());
        record(&cfg, (0..20).map(|i| frame(1_000 + i, i)));
        let seg = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .unwrap();
        let len = std::fs::metadata(&seg).unwrap().len();
        let mut f = OpenOptions::new().write(true).open(&seg).unwrap();
        // A crash in the middle of the last write.
        f.set_len(len - 7).unwrap();
        // Bit rot in the middle of the file.
        f.seek(SeekFrom::Start(len / 2)).unwrap();
        f.write_all(b"garbage!").unwrap();
        drop(f);
        let store = Store::open(tmp.path()).unwrap();
        let (rss, stats) = rss_of(&store);
        assert!(rss.len() >= 17 && rss.len() <= 18, "{rss:?}");
        assert!(rss.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(rss[0], 0);
        assert!(stats.corrupt >= 1, "{stats:?}");
        // The next writer starts a new segment and is read whole.
        record(&cfg, (20..25).map(|i| frame(2_000 + i, i)));
        let (rss, _) = rss_of(&Store::open(tmp.path()).unwrap());
        assert_eq!(rss[rss.len() - 5..], [20, 21, 22, 23, 24]);
    }

    #[test]
    fn the_oldest_segments_go_first_past_the_size_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path());
        cfg.recorder.max_size = 100_000;
        // Frames of about 500 bytes once deflated: 250 KB in all.
        let big = |i: u64| {
            let mut f = frame(1_000 + i, i);
            f.procs[0].comm = (0..8192)
                .map(|j| char::from(b'a' + ((i * 7919 + j * 104_729) % 26) as u8))
                .collect();
            f
        };
        for chunk in 0..8 {
            record(&cfg, (chunk * 64..chunk * 64 + 64).map(big));
        }
        let store = Store::open(tmp.path()).unwrap();
        let (rss, stats) = rss_of(&store);
        // The bound, plus the open segment (at least 64 KiB).
        assert!(stats.bytes <= 100_000 + (64 << 10) + 1000, "{stats:?}");
        assert_eq!(*rss.last().unwrap(), 511);
        assert!(rss[0] > 0, "the oldest frames should be gone");
    }

    #[test]
    fn a_disk_below_min_free_pauses_and_keeps_events_for_later() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path());
        cfg.recorder.min_free = u64::MAX / 2;
        let r = Recorder::start(&cfg, Start::default()).unwrap();
        r.frame(frame(1, 1));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while r.status().paused.is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let st = r.status();
        let p = st.paused.expect("paused");
        assert!(p.reason.contains("min_free"), "{}", p.reason);
        assert_eq!(st.dropped, 1);
        r.shutdown(Duration::from_secs(5));
    }

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/record/testdata");

    fn oom_event() -> Event {
        serde_json::from_value(serde_json::json!({
            "id": "e1", "incident": "e1", "ts": "2026-11-23T03:12:00.000Z", "host": "vm",
            "kind": "oom_kill", "severity": "critical", "state": "firing", "subject": "process",
            "pid": 42, "comm": "grower", "cgroup": "/job", "container": "/job",
            "summary": "OOM kill: grower (pid 42)", "evidence": {"victim_pid": 42}
        }))
        .unwrap()
    }

    /// Writes the fixture: `SENTINEL_WRITE_FIXTURE=1 cargo test --release
    /// -p sentinel write_schema_1_fixture -- --ignored`. Never rewrite it
    /// for a new schema: add a new one beside it.
    #[test]
    #[ignore]
    fn write_schema_1_fixture() {
        if std::env::var_os("SENTINEL_WRITE_FIXTURE").is_none() {
            return;
        }
        let dir = Path::new(FIXTURE);
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let start = Start {
            version: "0.1.0".into(),
            host: "vm".into(),
            kernel: "6.18.0".into(),
            interval_s: 5.0,
            ..Default::default()
        };
        let t = 1_795_460_000_000;
        let mut out = Vec::new();
        for (kind, ms, json) in [
            (RecordKind::Start, t, serde_json::to_vec(&start).unwrap()),
            (
                RecordKind::Frame,
                t + 5_000,
                serde_json::to_vec(&frame(t + 5_000, 100 << 20)).unwrap(),
            ),
            (
                RecordKind::Event,
                t + 7_000,
                serde_json::to_vec(&oom_event()).unwrap(),
            ),
            (
                RecordKind::Frame,
                t + 10_000,
                serde_json::to_vec(&frame(t + 10_000, 200 << 20)).unwrap(),
            ),
        ] {
            out.extend(format::encode(kind, SCHEMA, ms, &json));
        }
        std::fs::write(dir.join(reader::segment_name(t)), out).unwrap();
        std::fs::remove_file(dir.join(".lock")).ok();
    }

    #[test]
    fn a_schema_1_store_stays_readable() {
        let store = Store::open(Path::new(FIXTURE)).unwrap();
        let all = [RecordKind::Start, RecordKind::Event, RecordKind::Frame];
        let idx = store.index(0, u64::MAX, &all);
        assert_eq!((idx.locs.len(), idx.stats.corrupt), (4, 0));
        let recs: Vec<Record> = idx.locs.iter().map(|l| store.load(l).unwrap()).collect();
        assert!(matches!(&recs[0], Record::Start(s) if s.kernel == "6.18.0"));
        assert!(matches!(&recs[1], Record::Frame(f) if f.procs[0].rss == 100 << 20));
        assert!(matches!(&recs[2], Record::Event(e) if e.names.pid == Some(42)));
        assert!(matches!(&recs[3], Record::Frame(f) if f.procs[0].comm == "grower"));
    }

    #[test]
    fn records_of_a_newer_schema_are_skipped_not_fatal() {
        let tmp = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        out.extend(format::encode(
            RecordKind::Frame,
            SCHEMA + 1,
            1,
            b"{\"new\":true}",
        ));
        out.extend(format::encode(
            RecordKind::Frame,
            SCHEMA,
            2,
            &serde_json::to_vec(&frame(2, 7)).unwrap(),
        ));
        std::fs::write(tmp.path().join(reader::segment_name(1)), out).unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let (rss, stats) = rss_of(&store);
        assert_eq!((rss, stats.unknown, stats.corrupt), (vec![7], 1, 0));
    }

    /// Events kept back while the disk was full are written later, into a
    /// segment named after the resume: a range query by their own time
    /// still finds them.
    #[test]
    fn a_record_older_than_its_segment_is_found_by_its_time() {
        let tmp = tempfile::tempdir().unwrap();
        let t0 = 1_795_460_000_000u64;
        let write = |name_ms: u64, kind, ms: u64, json: Vec<u8>| {
            std::fs::write(
                tmp.path().join(reader::segment_name(name_ms)),
                format::encode(kind, SCHEMA, ms, &json),
            )
            .unwrap();
        };
        write(
            t0,
            RecordKind::Frame,
            t0,
            serde_json::to_vec(&frame(t0, 1)).unwrap(),
        );
        let e = serde_json::to_vec(&oom_event()).unwrap();
        write(t0 + 7_200_000, RecordKind::Event, t0 + 600_000, e);
        let store = Store::open(tmp.path()).unwrap();
        let idx = store.index(t0, t0 + 1_200_000, &[RecordKind::Event]);
        assert_eq!(idx.locs.len(), 1);
    }

    #[test]
    fn one_writer_per_store() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path());
        let first = Recorder::start(&cfg, Start::default()).unwrap();
        let err = format!(
            "{:#}",
            Recorder::start(&cfg, Start::default()).err().unwrap()
        );
        assert!(err.contains("another sentinel process"), "{err}");
        first.shutdown(Duration::from_secs(5));
        Recorder::start(&cfg, Start::default())
            .unwrap()
            .shutdown(Duration::from_secs(5));
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let cfg = config(&file.join("recorder"));
        let err = format!(
            "{:#}",
            Recorder::start(&cfg, Start::default()).err().unwrap()
        );
        assert!(err.contains("file/recorder"), "{err}");
    }
}
