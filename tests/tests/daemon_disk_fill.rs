//! The daemon's disk_fill detector against a writer filling a small
//! loop-mounted ext4 filesystem.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use sentinel_tests::{
    Daemon, Kind, LoopFs, MIB, Severity, Subject, TestCgroup, Workload, measured, require_root,
    secs, serial, skip, workload_bin,
};
use serde_json::Value;

/// resolve_after short, so the resolution comes soon after the fill stops.
const CONFIG: &str = "[daemon]\nresolve_after = \"10s\"\n";
const FS_BYTES: u64 = 512 * MIB;
/// About 450 MiB are free on a fresh 512 MiB ext4: at 4 MiB/s it is full
/// in under two minutes, well inside the default 6 h critical horizon.
/// 100 s of it (400 MiB) still fits, so the writer never hits ENOSPC.
const RATE_MIB_S: u64 = 4;
const WRITE_SECONDS: u64 = 100;
/// The 1-minute window needs 54 s of history, and the daemon starts just
/// before go: about 60 s, plus room for a loaded machine.
const DETECT_WITHIN: Duration = Duration::from_secs(100);
const RESOLVE_WITHIN: Duration = Duration::from_secs(60);

fn mount_point_of(e: &sentinel_tests::Event) -> Option<&str> {
    e.evidence("filesystem")?.get("mount_point")?.as_str()
}

/// 4 MiB/s of buffered appends into a fresh 512 MiB ext4 (loop-mounted
/// before the daemon starts, so it is followed from the first tick): a
/// critical write_anomaly with reason "disk_fill" about that filesystem
/// (subject "filesystem", evidence.filesystem.mount_point its mount point)
/// must fire within 100 s of go, name the writer as its top writer, and
/// report a fill rate and a time to full close to what statvfs shows.
/// Once the writer is killed and its file deleted, the same incident must
/// resolve within 60 s (resolve_after is 10 s).
#[test]
fn disk_fill_fires_for_the_filling_filesystem_and_resolves() -> Result<()> {
    let _serial = serial();
    require_root!();
    let mut fs = match LoopFs::ext4("daemon-disk-fill", FS_BYTES)? {
        Ok(fs) => fs,
        Err(why) => skip!("cannot make a loop-mounted ext4 filesystem here: {why}"),
    };
    let mount_point = fs.mount_point().to_string_lossy().into_owned();
    let file = fs.mount_point().join("fill");
    let cg = TestCgroup::new("daemon-disk-fill")?;
    let path = cg.path();
    // After the mount: the daemon reads mountinfo at start and then only
    // every 60 s.
    let daemon = Daemon::start(CONFIG)?;

    let mut w = Workload::writer(workload_bin!(), &cg, &file, RATE_MIB_S, WRITE_SECONDS)?;
    let pid = w.pid();
    let at_go = fs.space()?;
    w.go()?;
    let go = Instant::now();

    let fired = daemon.wait_for(
        &format!(
            "a firing write_anomaly with reason \"disk_fill\" for {mount_point} (pid {pid} appends {RATE_MIB_S} MiB/s to a {} MiB ext4 with {} MiB free at go) within {DETECT_WITHIN:?} of go",
            FS_BYTES / MIB,
            at_go.free / MIB
        ),
        (go + DETECT_WITHIN).saturating_duration_since(Instant::now()),
        |e| {
            e.is_firing(Kind::WriteAnomaly)
                && e.evidence_str("reason") == Some("disk_fill")
                && mount_point_of(e) == Some(mount_point.as_str())
        },
    )?;
    // The truth at the moment the event arrived.
    let at_fire = fs.space()?;
    let fire_t = Instant::now();
    let json = serde_json::to_string(&fired)?;
    eprintln!("EVENT daemon_disk_fill {json}");

    ensure!(
        fired.subject == Subject::Filesystem,
        "expected subject \"filesystem\" on the disk_fill event for {mount_point}, got {}; event: {json}",
        fired.subject
    );
    let fs_ev = fired.evidence("filesystem").cloned().unwrap_or_default();
    let reported_size = fs_ev.get("size_bytes").and_then(Value::as_u64);
    ensure!(
        fs_ev.get("fstype").and_then(Value::as_str) == Some("ext4")
            && reported_size.is_some_and(|s| s == at_go.size),
        "expected evidence.filesystem to be the ext4 of {} bytes (statvfs) at {mount_point}, got {fs_ev}; event: {json}",
        at_go.size
    );
    // Everything fills in about a minute: critical under the 6 h horizon.
    ensure!(
        fired.severity == Severity::Critical,
        "expected severity critical: {mount_point} fills in about {} s at {RATE_MIB_S} MiB/s, inside the default 6 h fill_crit_horizon; got {}; event: {json}",
        at_fire.free / (RATE_MIB_S * MIB),
        fired.severity
    );

    // The top writer. sentinel ranks writers host-wide, so a heavier writer
    // elsewhere on the machine (another test suite) may come first; ours
    // must be listed either way.
    let writers = fired
        .evidence("top_writers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let rate_of = |w: &Value| w.get("write_bytes_per_s").and_then(Value::as_f64);
    let ours = writers
        .iter()
        .find(|w| w.get("pid").and_then(Value::as_i64) == Some(i64::from(pid)));
    let Some(ours) = ours else {
        return Err(daemon.failure(&format!(
            "expected the writer (pid {pid}, cgroup {path}) among evidence.top_writers of the disk_fill event for {mount_point}; event: {json}"
        )));
    };
    let our_rate = rate_of(ours).unwrap_or(0.0);
    let outwritten = writers
        .first()
        .is_some_and(|w| w != ours && rate_of(w).unwrap_or(0.0) >= our_rate);
    if fired.pid_is(pid) {
        ensure!(
            fired.about_cgroup(&path),
            "the disk_fill event names pid {pid} but not its cgroup {path}; event: {json}"
        );
    } else if outwritten {
        eprintln!(
            "NOTE daemon_disk_fill: the event names pid {:?} ({:?}), which out-wrote the workload (pid {pid}) somewhere on the host; sentinel ranks top writers host-wide, not per filesystem",
            fired.pid, fired.comm
        );
    } else {
        return Err(daemon.failure(&format!(
            "expected the disk_fill event for {mount_point} to name its top writer, pid {pid} (cgroup {path}), got pid {:?} cgroup {:?}; event: {json}",
            fired.pid, fired.cgroup
        )));
    }

    // Fill rate and time to full against statvfs over go..now.
    let elapsed = fire_t.duration_since(go).as_secs_f64();
    let actual_rate = at_go.free.saturating_sub(at_fire.free) as f64 / elapsed;
    let reported_rate = fired.evidence_f64("fill_bytes_per_s").unwrap_or(0.0);
    let true_tte = at_fire.free as f64 / actual_rate;
    let reported_tte = fired.evidence_f64("time_to_full_s").unwrap_or(f64::NAN);
    let nominal = (RATE_MIB_S * MIB) as f64;
    ensure!(
        (0.5..=1.5).contains(&(reported_rate / nominal)),
        "expected evidence.fill_bytes_per_s within 50% of the writer's {RATE_MIB_S} MiB/s (statvfs saw {:.2} MiB/s since go), got {:.2} MiB/s; event: {json}",
        actual_rate / MIB as f64,
        reported_rate / MIB as f64
    );
    ensure!(
        (0.5..=2.0).contains(&(reported_tte / true_tte)),
        "expected evidence.time_to_full_s near the truth ({true_tte:.0} s: {} MiB free at {:.2} MiB/s), got {reported_tte}; event: {json}",
        at_fire.free / MIB,
        actual_rate / MIB as f64
    );

    // Stop the fill and give the space back.
    drop(w);
    std::fs::remove_file(&file)?;
    let freed = Instant::now();
    let after_delete = fs.space()?;
    let resolved = daemon.wait_for(
        &format!(
            "a resolved write_anomaly for incident {} (disk_fill on {mount_point}) within {RESOLVE_WITHIN:?} of the writer stopping and its file being deleted ({} MiB free again)",
            fired.incident,
            after_delete.free / MIB
        ),
        RESOLVE_WITHIN,
        |e| e.is_resolved(Kind::WriteAnomaly) && e.incident == fired.incident,
    )?;
    ensure!(
        resolved.received >= freed,
        "the disk_fill incident {} resolved before the writer stopped (+{} s after go, while it still wrote)",
        fired.incident,
        secs(resolved.received - go)
    );

    measured(
        "daemon_disk_fill",
        &[
            ("detect_s", &secs(fired.received - go)),
            ("severity", &fired.severity),
            (
                "reported_fill_mib_per_s",
                &format!("{:.2}", reported_rate / MIB as f64),
            ),
            (
                "statvfs_fill_mib_per_s",
                &format!("{:.2}", actual_rate / MIB as f64),
            ),
            ("reported_time_to_full_s", &format!("{reported_tte:.1}")),
            ("true_time_to_full_s", &format!("{true_tte:.1}")),
            (
                "reported_free_mib",
                &fs_ev
                    .get("free_bytes")
                    .and_then(Value::as_u64)
                    .map_or("null".into(), |b| format!("{:.1}", b as f64 / MIB as f64)),
            ),
            (
                "statvfs_free_mib",
                &format!("{:.1}", at_fire.free as f64 / MIB as f64),
            ),
            ("top_writer_is_workload", &fired.pid_is(pid)),
            (
                "workload_write_mib_per_s",
                &format!("{:.2}", our_rate / MIB as f64),
            ),
            ("resolve_after_delete_s", &secs(resolved.received - freed)),
        ],
    );
    daemon.stop()?;
    fs.unmount()?;
    Ok(())
}
