//! Futex deadlocks: who is blocked, on what, and who holds it.

use std::time::Duration;

use anyhow::{Result, anyhow, ensure};
use sentinel_tests::report::{Blocked, Report};
use sentinel_tests::workload::field;
use sentinel_tests::{
    Snapshot, TestCgroup, Workload, brief, require_root, serial, skip_unsupported, workload_bin,
};

const WORK_TIMEOUT: Duration = Duration::from_secs(60);

/// What the workload printed once its two threads were deadlocked.
struct Deadlock {
    pid: i32,
    tid_a: i32,
    tid_b: i32,
    mutex_a: u64,
    mutex_b: u64,
}

impl Deadlock {
    fn parse(pid: i32, done: &str) -> Result<Self> {
        Ok(Self {
            pid,
            tid_a: field(done, "tid_a")? as i32,
            tid_b: field(done, "tid_b")? as i32,
            mutex_a: hex_field(done, "mutex_a")?,
            mutex_b: hex_field(done, "mutex_b")?,
        })
    }

    /// Thread a holds mutex A and waits for B; thread b the reverse.
    fn check(&self, report: &Report, seeded: bool) -> Result<()> {
        let when = if seeded {
            "formed before sentinel attached, so seen via /proc seeding"
        } else {
            "formed after sentinel attached"
        };
        let p = report.process(self.pid)?;
        ensure!(
            p.futex_blocked_threads == 2,
            "expected futex_blocked_threads == 2 for pid {} (threads {} and {} deadlocked, {when}), got {}; process: {}",
            self.pid,
            self.tid_a,
            self.tid_b,
            p.futex_blocked_threads,
            brief(p)
        );
        let entry = |tid: i32| -> Result<&Blocked> {
            p.blocked.iter().find(|b| b.tid == tid).ok_or_else(|| {
                anyhow!(
                    "expected a blocked[] entry for tid {tid} (deadlocked, {when}), got tids {:?}; process: {}",
                    p.blocked.iter().map(|b| b.tid).collect::<Vec<_>>(),
                    brief(p)
                )
            })
        };
        let pairs = [
            (entry(self.tid_a)?, self.tid_b, self.mutex_b, "B"),
            (entry(self.tid_b)?, self.tid_a, self.mutex_a, "A"),
        ];
        for (b, owner, uaddr, mutex) in pairs {
            ensure!(
                b.owner_tid == Some(owner),
                "expected blocked tid {} (waits for mutex {mutex}, held by tid {owner}) to have owner_tid {owner}, got {:?}; entry: {}",
                b.tid,
                b.owner_tid,
                brief(b)
            );
            ensure!(
                parse_hex(&b.uaddr) == Some(uaddr),
                "expected blocked tid {} to wait on uaddr {uaddr:#x} (mutex {mutex}), got {:?}; entry: {}",
                b.tid,
                b.uaddr,
                brief(b)
            );
            ensure!(
                b.seeded == seeded,
                "expected seeded: {seeded} for blocked tid {} (deadlock {when}), got {}; entry: {}",
                b.tid,
                b.seeded,
                brief(b)
            );
        }
        Ok(())
    }
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

fn hex_field(line: &str, key: &str) -> Result<u64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(parse_hex)
        .ok_or_else(|| anyhow!("no hex {key}= in workload line {line:?}"))
}

/// A deadlock that already exists when sentinel starts is found by seeding
/// from /proc: both threads blocked, owners pointing at each other.
#[test]
fn deadlock_formed_before_attach_is_seeded() -> Result<()> {
    let _serial = serial();
    require_root!();
    let cg = TestCgroup::new("futex-seeded")?;
    let mut w = Workload::spawn(workload_bin!(), &["deadlock"], &cg)?;
    w.expect("ready", WORK_TIMEOUT)?;
    w.go()?;
    let done = w.expect("done", WORK_TIMEOUT)?;
    let deadlock = Deadlock::parse(w.pid(), &done)?;

    let snap = Snapshot::for_cgroup(&cg, Duration::from_secs(2))?;
    let report = snap.finish()?;
    skip_unsupported!(report.probes, "futex");
    deadlock.check(&report, true)
}

/// A deadlock that forms while sentinel observes is traced as it happens.
#[test]
fn deadlock_formed_after_attach_is_traced() -> Result<()> {
    deadlock_traced(&[])
}

/// As on Linux 5.10, without `bpf_get_current_task_btf` (so no stack
/// pointer to reuse stacks by): waits, owners and addresses all the same.
#[test]
fn deadlock_formed_after_attach_is_traced_without_task_btf_helper() -> Result<()> {
    deadlock_traced(&[("SENTINEL_TEST_DISABLE_HELPERS", "get_current_task_btf")])
}

fn deadlock_traced(env: &[(&str, &str)]) -> Result<()> {
    let _serial = serial();
    require_root!();
    let cg = TestCgroup::new("futex-live")?;
    let mut w = Workload::spawn(workload_bin!(), &["deadlock"], &cg)?;
    w.expect("ready", WORK_TIMEOUT)?;
    let mut snap = Snapshot::start_env(&["--cgroup", &cg.path()], Duration::from_secs(4), env)?;
    w.go()?;
    let done = w.expect("done", WORK_TIMEOUT)?;
    snap.ensure_observing("the deadlock formed")?;
    let deadlock = Deadlock::parse(w.pid(), &done)?;
    let report = snap.finish()?;
    skip_unsupported!(report.probes, "futex");
    deadlock.check(&report, false)
}
