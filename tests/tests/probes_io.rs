//! Writes attributed to the writer: O_DIRECT and buffered (page cache).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use sentinel_tests::report::find_probe;
use sentinel_tests::workload::field;
use sentinel_tests::{
    MIB, ScratchDir, Snapshot, TestCgroup, Workload, brief, pct, require_root, serial, skip,
    skip_unsupported, workload_bin,
};

const WORK_TIMEOUT: Duration = Duration::from_secs(180);

struct WriteResult {
    expected: u64,
    process_write: u64,
    process: String,
    cgroup_write: u64,
    cgroup: String,
    root: String,
}

/// Runs `workload <mode> <file> <mib>` in its own cgroup under a window of
/// `window`; `Ok(Err(reason))` when the scenario cannot run here, which
/// includes a kernel that cannot run `probe`, or only without `needs`.
fn run_writer(
    (probe, needs): (&str, Option<&str>),
    topic: &str,
    mode: &str,
    mib: u64,
    window: Duration,
) -> Result<Result<WriteResult, String>> {
    let Some(dir) = ScratchDir::on_disk(topic)? else {
        return Ok(Err(
            "the target dir and /var/tmp are both on tmpfs/ramfs; writes there never reach a disk"
                .into(),
        ));
    };
    let file = dir.path().join("data");
    let cg = TestCgroup::new(topic)?;
    let mut w = Workload::spawn(
        workload_bin!(),
        &[mode, &file.to_string_lossy(), &mib.to_string()],
        &cg,
    )?;
    if let Err(reason) = w.ready()? {
        return Ok(Err(format!("{reason} (in {})", dir.path().display())));
    }
    let mut snap = Snapshot::for_cgroup(&cg, window)?;
    w.go()?;
    let done = w.expect("done", WORK_TIMEOUT)?;
    snap.ensure_observing("the workload's writes and fsync finished")?;
    let report = snap.finish()?;
    let status = find_probe(&report.probes, probe)?;
    if let Some(why) = status
        .unsupported_here(None)
        .or_else(|| needs.and_then(|t| status.lacks_tracepoint(t)))
    {
        return Ok(Err(why));
    }

    let p = report.process(w.pid())?;
    let c = report.cgroup(&cg.path())?;
    let root = report
        .cgroups
        .iter()
        .find(|c| c.path == "/")
        .map(brief)
        .unwrap_or_else(|| "not in report".into());
    Ok(Ok(WriteResult {
        expected: field(&done, "bytes")? as u64,
        process_write: p.write_bytes,
        process: brief(p),
        cgroup_write: c.write_bytes,
        cgroup: brief(c),
        root,
    }))
}

fn within(got: u64, expected: u64, pct_tolerance: u64) -> bool {
    got.abs_diff(expected) * 100 <= expected * pct_tolerance
}

/// 64 MiB of O_DIRECT writes land (within 10%) in the writer's cgroup and
/// process write_bytes.
#[test]
fn direct_writes_are_charged_to_writer() -> Result<()> {
    let _serial = serial();
    require_root!();
    let r = match run_writer(
        // Direct I/O is charged to the writer between the iomap_dio
        // events, which older kernels (6.1 among them) lack.
        ("writes", Some("iomap:iomap_dio_rw_begin")),
        "direct-write",
        "direct-write",
        64,
        Duration::from_secs(10),
    )? {
        Ok(r) => r,
        Err(reason) => skip!("{reason}"),
    };
    ensure!(
        within(r.cgroup_write, r.expected, 10),
        "expected cgroup write_bytes within 10% of {} (64 MiB of O_DIRECT writes), got {} ({}); cgroup: {}; writer process: {}; root cgroup: {}",
        r.expected,
        r.cgroup_write,
        pct(r.cgroup_write, r.expected),
        r.cgroup,
        r.process,
        r.root
    );
    ensure!(
        within(r.process_write, r.expected, 10),
        "expected process write_bytes within 10% of {} (64 MiB of O_DIRECT writes), got {} ({}); process: {}",
        r.expected,
        r.process_write,
        pct(r.process_write, r.expected),
        r.process
    );
    Ok(())
}

/// 256 MiB of buffered writes + fsync land (within 25%) in the writer's
/// cgroup, not in the root cgroup of the flusher threads.
#[test]
fn buffered_writes_are_charged_to_writer_not_flusher() -> Result<()> {
    let _serial = serial();
    require_root!();
    let r = match run_writer(
        ("writes", None),
        "buffered-write",
        "buffered-write",
        256,
        Duration::from_secs(15),
    )? {
        Ok(r) => r,
        Err(reason) => skip!("{reason}"),
    };
    ensure!(
        r.cgroup_write >= r.expected * 3 / 4 && within(r.cgroup_write, r.expected, 25),
        "expected the writer's cgroup write_bytes within 25% of {} (256 MiB buffered + fsync; >= 75% must be charged to the writer, not the flusher's root cgroup), got {} ({}); cgroup: {}; writer process: {}; root cgroup: {}",
        r.expected,
        r.cgroup_write,
        pct(r.cgroup_write, r.expected),
        r.cgroup,
        r.process,
        r.root
    );
    ensure!(
        within(r.process_write, r.expected, 25),
        "expected process write_bytes within 25% of {} (256 MiB buffered + fsync), got {} ({}); process: {}",
        r.expected,
        r.process_write,
        pct(r.process_write, r.expected),
        r.process
    );
    Ok(())
}

/// A process moved to another cgroup half way leaves what it wrote before
/// the move charged to the first cgroup, and only the rest to the second.
#[test]
fn a_moved_writer_is_charged_per_cgroup() -> Result<()> {
    let _serial = serial();
    require_root!();
    const MIB_PER_PHASE: u64 = 64;
    let Some(dir) = ScratchDir::on_disk("moved-writer")? else {
        skip!(
            "the target dir and /var/tmp are both on tmpfs/ramfs; writes there never reach a disk"
        );
    };
    let file = dir.path().join("data");
    let first = TestCgroup::new("moved-from")?;
    let second = TestCgroup::new("moved-to")?;
    let mut w = Workload::spawn(
        workload_bin!(),
        &[
            "write-phases",
            &file.to_string_lossy(),
            &MIB_PER_PHASE.to_string(),
        ],
        &first,
    )?;
    w.expect("ready", WORK_TIMEOUT)?;
    // Whole machine: the two cgroups are siblings.
    let mut snap = Snapshot::start(&[], Duration::from_secs(20))?;
    w.go()?;
    w.expect("phase1", WORK_TIMEOUT)?;
    std::fs::write(second.dir().join("cgroup.procs"), w.pid().to_string())
        .with_context(|| format!("moving pid {} into {}", w.pid(), second.path()))?;
    w.go()?;
    w.expect("done", WORK_TIMEOUT)?;
    snap.ensure_observing("both write phases finished")?;
    let report = snap.finish()?;
    skip_unsupported!(report.probes, "writes");
    let want = MIB_PER_PHASE * MIB;
    for cg in [&first, &second] {
        let c = report.cgroup(&cg.path())?;
        ensure!(
            within(c.write_bytes, want, 25),
            "expected write_bytes within 25% of {want} for {} ({MIB_PER_PHASE} MiB written while the process was in it), got {} ({}); cgroup: {}",
            cg.path(),
            c.write_bytes,
            pct(c.write_bytes, want),
            brief(c)
        );
    }
    Ok(())
}
