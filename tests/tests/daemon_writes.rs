//! The daemon's write detector against a writer far over its daily budget.

use std::time::{Duration, Instant};

use anyhow::Result;
use sentinel_tests::{
    Daemon, Kind, MIB, ScratchDir, TestCgroup, Workload, measured, require_root, secs, serial,
    skip, workload_bin,
};

const CONFIG: &str = "[writes]\ndaily_budget = \"1GB\"\n";
const RATE_MIB_S: u64 = 40;
const WRITE_SECONDS: u64 = 30;
const DETECT_WITHIN: Duration = Duration::from_secs(35);
const RESOLVE_WITHIN: Duration = Duration::from_secs(150);

/// 40 MiB/s of buffered appends for 30 s projects to about 3.6 TB a day
/// against a 1 GB budget: a write_anomaly for the writer's cgroup (or the
/// writer in it) must fire within 35 s of go with reason "daily_budget",
/// and the same incident must resolve within 150 s of the writer stopping.
#[test]
fn write_budget_overrun_fires_and_resolves() -> Result<()> {
    let _serial = serial();
    require_root!();
    let Some(dir) = ScratchDir::on_disk("daemon-writes")? else {
        skip!(
            "the target dir and /var/tmp are both on tmpfs/ramfs; writes there never reach a disk"
        );
    };
    let file = dir.path().join("data");
    let cg = TestCgroup::new("daemon-writes")?;
    let path = cg.path();
    let daemon = Daemon::start(CONFIG)?;

    let mut w = Workload::writer(workload_bin!(), &cg, &file, RATE_MIB_S, WRITE_SECONDS)?;
    let pid = w.pid();
    w.go()?;
    let go = Instant::now();

    let fired = daemon.wait_for(
        &format!(
            "a firing write_anomaly with reason \"daily_budget\" for cgroup {path} (pid {pid} appends {RATE_MIB_S} MiB/s against a 1 GB daily budget) within {DETECT_WITHIN:?} of go"
        ),
        (go + DETECT_WITHIN).saturating_duration_since(Instant::now()),
        |e| {
            e.is_firing(Kind::WriteAnomaly)
                && e.about_cgroup(&path)
                && e.evidence_str("reason") == Some("daily_budget")
        },
    )?;

    w.expect(
        "done",
        (go + Duration::from_secs(WRITE_SECONDS + 30)).saturating_duration_since(Instant::now()),
    )?;
    let stopped = Instant::now();
    let resolved = daemon.wait_for(
        &format!(
            "a resolved write_anomaly for incident {} (cgroup {path}) within {RESOLVE_WITHIN:?} of the writer stopping",
            fired.incident
        ),
        RESOLVE_WITHIN,
        |e| e.is_resolved(Kind::WriteAnomaly) && e.incident == fired.incident,
    )?;

    let rate = fired
        .evidence_f64("write_bytes_per_s")
        .map_or("null".into(), |r| format!("{:.1}", r / MIB as f64));
    measured(
        "daemon_writes",
        &[
            ("detect_s", &secs(fired.received - go)),
            (
                "resolve_after_stop_s",
                &secs(resolved.received.saturating_duration_since(stopped)),
            ),
            ("subject", &fired.subject),
            ("reported_mib_per_s", &rate),
        ],
    );
    daemon.stop()?;
    Ok(())
}
