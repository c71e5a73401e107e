//! The flight recorder under the two things that break stores: a daemon
//! killed in the middle of writing, and a disk that fills up. What the
//! store holds is read back the way a person would, with `sentinel export`.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use sentinel_tests::sentinel::run_sentinel;
use sentinel_tests::{
    Daemon, Kind, LoopFs, MIB, ScratchDir, State, TestCgroup, Workload, measured, require_root,
    sentinel_bin, serial, skip, workload_bin,
};

const KILLS: usize = 6;
const DETECT_WITHIN: Duration = Duration::from_secs(15);

/// Records every 200 ms, and a thread_explosion to record per daemon.
fn config(rec: &Path) -> String {
    format!(
        "[daemon]\ninterval = \"200ms\"\nresolve_after = \"2s\"\n\
         [threads]\nmax_threads = 50\n\
         [recorder]\ninterval = \"200ms\"\nmin_free = \"0\"\ndir = \"{}\"\n",
        rec.display()
    )
}

/// What `sentinel export` read back from the store.
struct Exported {
    events: Vec<serde_json::Value>,
    manifest: serde_json::Value,
    /// Data rows of timelines/host.csv: one per recorded frame.
    frames: usize,
}

impl Exported {
    fn ids(&self) -> HashSet<String> {
        self.events
            .iter()
            .filter_map(|e| e["id"].as_str().map(str::to_string))
            .collect()
    }

    /// Damaged stretches and records whose payload failed its checks.
    fn corrupt(&self) -> u64 {
        let store = &self.manifest["store"];
        store["corrupt"].as_u64().unwrap_or(0) + store["unreadable_records"].as_u64().unwrap_or(0)
    }
}

fn export(rec: &Path, scratch: &Path, n: usize) -> Result<Exported> {
    let out = scratch.join(format!("export-{n}.tar.gz"));
    let rec_s = rec.to_string_lossy().into_owned();
    let out_s = out.to_string_lossy().into_owned();
    let run = run_sentinel(
        &sentinel_bin()?,
        "export",
        &["--store", &rec_s, "--since", "1h", "-o", &out_s],
        |_| {},
    )?;
    ensure!(
        run.status.success(),
        "sentinel export --store {rec_s} failed: {}\nstderr: {}",
        run.status,
        run.stderr
    );
    let dir = scratch.join(format!("export-{n}"));
    std::fs::create_dir_all(&dir)?;
    let tar = Command::new("tar")
        .arg("-xzf")
        .arg(&out)
        .arg("-C")
        .arg(&dir)
        .output()
        .context("running tar")?;
    ensure!(
        tar.status.success(),
        "tar -xzf {}: {}",
        out.display(),
        String::from_utf8_lossy(&tar.stderr)
    );
    let find = |name: &str| -> Result<PathBuf> {
        let found = Command::new("find")
            .arg(&dir)
            .args(["-name", name])
            .output()?;
        let path = String::from_utf8_lossy(&found.stdout)
            .lines()
            .next()
            .map(PathBuf::from);
        path.with_context(|| format!("no {name} in the archive {}", out.display()))
    };
    let events = std::fs::read_to_string(find("events.ndjson")?)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<Vec<serde_json::Value>, _>>()
        .context("events.ndjson")?;
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(find("manifest.json")?)?)?;
    let frames = std::fs::read_to_string(find("host.csv")?)?
        .lines()
        .count()
        .saturating_sub(1);
    Ok(Exported {
        events,
        manifest,
        frames,
    })
}

/// A jitter unrelated to the recorder's 200 ms cadence, so the kills land
/// at different points of its writes.
fn jitter_ms() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos % 450)
}

/// The daemon is killed with SIGKILL six times at random points while it
/// records every 200 ms, each kill leaving a torn record behind. After each
/// kill the store must read back whole:
/// every event any earlier daemon reported, at least as many frames as the
/// previous read, and no more damaged stretches than kills so far (a kill
/// can tear at most the record being written).
#[test]
fn kill_9_while_recording_never_loses_what_was_written() -> Result<()> {
    let _serial = serial();
    require_root!();
    let scratch = ScratchDir::new_in(&std::env::temp_dir(), "recorder-kill")?;
    let rec = scratch.path().join("rec");
    let cg = TestCgroup::new("recorder-kill")?;
    let mut w = Workload::spawn(workload_bin!(), &["threads", "80"], &cg)?;
    let pid = w.pid();
    w.expect("ready", Duration::from_secs(60))?;
    w.go()?;

    let mut ids: Vec<String> = Vec::new();
    let mut frames = 0;
    for n in 1..=KILLS {
        let daemon = Daemon::start(&config(&rec))?;
        let fired = daemon.wait_for(
            &format!("a firing thread_explosion for pid {pid} (80 threads, max_threads 50)"),
            DETECT_WITHIN,
            |e| e.is_firing(Kind::ThreadExplosion) && e.pid_is(pid),
        )?;
        ids.push(fired.id.clone());
        std::thread::sleep(Duration::from_millis(250 + jitter_ms()));
        daemon.kill9()?;
        drop(daemon);
        // SIGKILL rarely lands inside the write(2) of a record: make every
        // kill leave what one that did would, the start of a record and no
        // more (a header cut short), at the end of the newest segment.
        tear_newest_segment(&rec)?;

        let got = export(&rec, scratch.path(), n)?;
        let have = got.ids();
        for id in &ids {
            ensure!(
                have.contains(id),
                "after kill {n}: the thread_explosion event {id} a killed daemon reported is missing from the store; export has {} events, manifest: {}",
                have.len(),
                got.manifest
            );
        }
        ensure!(
            got.frames >= frames,
            "after kill {n}: the store reads back {} frames, fewer than the {frames} it held before this daemon ran",
            got.frames
        );
        ensure!(
            got.corrupt() >= 1,
            "after kill {n}: the torn records were not noticed (manifest store: {})",
            got.manifest["store"]
        );
        ensure!(
            got.corrupt() <= n as u64,
            "after kill {n}: {} damaged stretches in the store, more than one per kill; manifest: {}",
            got.corrupt(),
            got.manifest
        );
        frames = got.frames;
    }
    measured(
        "kill_9_while_recording_never_loses_what_was_written",
        &[("kills", &KILLS), ("frames", &frames)],
    );
    Ok(())
}

/// The recorder's filesystem (a 16 MiB ext4) is filled to ENOSPC while
/// the daemon runs: a recorder_paused event must fire, detection must go
/// on (a thread_explosion is reported meanwhile), and when space returns
/// recording resumes, the event resolves, and the store holds the events
/// of the paused stretch, with nothing damaged.
#[test]
fn a_full_disk_pauses_recording_and_it_resumes() -> Result<()> {
    let _serial = serial();
    require_root!();
    let fs = match LoopFs::ext4("recorder-full", 16 * MIB)? {
        Ok(fs) => fs,
        Err(why) => skip!("no loop-mounted filesystem to fill: {why}"),
    };
    let scratch = ScratchDir::new_in(&std::env::temp_dir(), "recorder-full")?;
    let rec = fs.mount_point().join("rec");
    let daemon = Daemon::start(&config(&rec))?;
    std::thread::sleep(Duration::from_secs(1));

    let filler = fs.mount_point().join("filler");
    fill(&filler)?;
    let full_at = Instant::now();
    let paused = daemon.wait_for(
        "a firing recorder_paused event after its filesystem filled up",
        Duration::from_secs(15),
        |e| e.is_firing(Kind::RecorderPaused),
    )?;
    let reason = paused
        .evidence_str("reason")
        .unwrap_or_default()
        .to_string();
    ensure!(
        paused.evidence_str("dir") == Some(&*rec.to_string_lossy()),
        "recorder_paused should name the store {}; event: {}",
        rec.display(),
        daemon.describe(&paused)
    );

    let cg = TestCgroup::new("recorder-full")?;
    let mut w = Workload::spawn(workload_bin!(), &["threads", "80"], &cg)?;
    let pid = w.pid();
    w.expect("ready", Duration::from_secs(60))?;
    w.go()?;
    let during = daemon.wait_for(
        &format!("a firing thread_explosion for pid {pid} while recording is paused"),
        DETECT_WITHIN,
        |e| e.is_firing(Kind::ThreadExplosion) && e.pid_is(pid),
    )?;

    std::fs::remove_file(&filler).with_context(|| format!("removing {}", filler.display()))?;
    let resolved = daemon.wait_for(
        "the recorder_paused event resolved once space returned",
        Duration::from_secs(30),
        |e| e.kind == Kind::RecorderPaused && e.state == State::Resolved,
    )?;
    std::thread::sleep(Duration::from_secs(1));
    daemon.stop()?;

    let got = export(&rec, scratch.path(), 0)?;
    let have = got.ids();
    for (what, id) in [
        ("the thread_explosion reported while paused", &during.id),
        ("the recorder_paused event", &paused.id),
        ("its resolution", &resolved.id),
    ] {
        ensure!(
            have.contains(id),
            "{what} ({id}) is not in the store after recording resumed; export has {} events",
            have.len()
        );
    }
    ensure!(
        got.corrupt() == 0,
        "a full disk damaged the store: {}",
        got.manifest["store"]
    );
    measured(
        "a_full_disk_pauses_recording_and_it_resumes",
        &[
            (
                "paused_after_s",
                &format!("{:.1}", full_at.elapsed().as_secs_f64()),
            ),
            ("reason", &format!("{reason:?}")),
        ],
    );
    Ok(())
}

fn tear_newest_segment(rec: &Path) -> Result<()> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(rec)
        .with_context(|| format!("listing {}", rec.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let newest = segs
        .last()
        .with_context(|| format!("no segment in {}", rec.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(newest)
        .with_context(|| format!("opening {}", newest.display()))?;
    f.write_all(b"SNTR\x01\x00\x03\x01torn")?;
    Ok(())
}

/// Writes until the filesystem refuses (root may use the reserved blocks).
fn fill(path: &Path) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let chunk = vec![0x5au8; 256 << 10];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => bail!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    Ok(())
}
