//! False positives: healthy workloads that look a little like trouble must
//! not raise any event.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use sentinel_tests::workload::describe_status;
use sentinel_tests::{
    Daemon, ScratchDir, TestCgroup, Workload, measured, print_skip, require_root, serial,
    workload_bin,
};

/// Tight deadlock/hang thresholds, so an idle pool's long condvar waits
/// would trip a detector that cannot tell idle from stuck.
const CONFIG: &str = "[deadlock]\nmin_wait = \"5s\"\nhang_after = \"10s\"\n";
const RUN: Duration = Duration::from_secs(60);
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// For 60 s after go, three healthy workloads, each in a cgroup of its own,
/// must raise no event at all:
/// - `pool 8`: eight threads idle on a Condvar while the main thread keeps
///   computing (not a deadlock, not a hang);
/// - `hold 1024`: 1 GiB allocated up front (while the daemon watches), then
///   flat (not memory bloat);
/// - `write-rate <file> 1 60`: 1 MiB/s of appends, about 90 GB a day, under
///   the default 100 GB daily budget (not a write anomaly).
#[test]
fn healthy_workloads_raise_no_events() -> Result<()> {
    let _serial = serial();
    require_root!();
    let scratch = ScratchDir::on_disk("daemon-quiet")?;
    let daemon = Daemon::start(CONFIG)?;

    let mut setups: Vec<(&str, Vec<String>)> = vec![
        ("pool", vec!["pool".into(), "8".into()]),
        ("hold", vec!["hold".into(), "1024".into()]),
    ];
    match &scratch {
        Some(dir) => setups.push((
            "write-rate",
            vec![
                "write-rate".into(),
                dir.path().join("data").to_string_lossy().into_owned(),
                "1".into(),
                RUN.as_secs().to_string(),
            ],
        )),
        None => print_skip(
            module_path!(),
            "the write-rate part only: the target dir and /var/tmp are both on tmpfs/ramfs",
        ),
    }

    let mut running: Vec<(&str, TestCgroup, Workload)> = Vec::new();
    for &(topic, ref args) in &setups {
        let cg = TestCgroup::new(&format!("daemon-quiet-{topic}"))?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut w = Workload::spawn(workload_bin!(), &args, &cg)?;
        w.expect("ready", SETUP_TIMEOUT)?;
        running.push((topic, cg, w));
    }
    for (_, _, w) in &mut running {
        w.go()?;
    }
    let go = Instant::now();
    std::thread::sleep(RUN);

    // Test setup: every workload did its part for the whole window.
    for (_, _, w) in &mut running {
        if let Some(status) = w.exited()? {
            bail!(
                "{:#}",
                w.failure(&format!(
                    "test setup: exited during the quiet window ({})",
                    describe_status(status)
                ))
            );
        }
    }
    if let Some((_, _, w)) = running
        .iter_mut()
        .find(|(topic, _, _)| *topic == "write-rate")
    {
        w.expect("done", Duration::from_secs(15))?;
    }

    let pids: Vec<i32> = running.iter().map(|(_, _, w)| w.pid()).collect();
    let cgroups: Vec<String> = running.iter().map(|(_, cg, _)| cg.path()).collect();
    daemon.ensure_no_event(
        &format!(
            "for the healthy workloads (pids {pids:?}, cgroups {cgroups:?}) in the {} s after go",
            RUN.as_secs()
        ),
        |e| pids.iter().any(|&p| e.pid_is(p)) || cgroups.iter().any(|cg| e.about_cgroup(cg)),
    )?;
    let elsewhere = daemon.events().len();
    let seconds = go.elapsed().as_secs();
    daemon.stop()?;
    measured(
        "daemon_quiet",
        &[
            ("events", &0),
            ("seconds", &seconds),
            ("workloads", &running.len()),
            ("other_events", &elsewhere),
        ],
    );
    Ok(())
}
