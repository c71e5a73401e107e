//! `sentinel check`: privileges, tracefs, and per-probe load/attach status.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use sentinel_tests::report::{PROBE_NAMES, find_probe};
use sentinel_tests::sentinel::{run_sentinel, sentinel_bin};
use sentinel_tests::{CheckReport, ScratchDir, brief, require_root, run_check, serial, skip};

const HIDE_ENV: &str = "SENTINEL_TEST_HIDE_TRACEPOINTS";
const TRACEFS: &str = "/sys/kernel/tracing";

/// Every probe is reported, with `expected(name)` as its status.
fn check_statuses(
    report: &CheckReport,
    context: &str,
    expected: impl Fn(&str) -> &'static [&'static str],
) -> Result<()> {
    for name in PROBE_NAMES {
        let probe = report.probe(name)?;
        let want = expected(name);
        ensure!(
            want.contains(&probe.status.as_str()),
            "{context}: expected probe {name} to be {}, got {:?}; probe: {}; all probes: {}",
            want.join(" or "),
            probe.status,
            brief(probe),
            brief(&report.probes)
        );
    }
    Ok(())
}

/// As root: exit 0 and every probe attached or degraded.
#[test]
fn check_as_root_passes() -> Result<()> {
    let _serial = serial();
    require_root!();
    let out = run_check(&["--json"], |_| {})?;
    let report = out.json()?;
    // Such a kernel makes check exit 1, rightly; what check says about it
    // is check_without_block_rq_issue_fails's business.
    let lacking: Vec<String> = report
        .probes
        .iter()
        .filter_map(|p| p.unsupported_here(None))
        .collect();
    if !lacking.is_empty() {
        skip!("this kernel cannot run every probe: {}", lacking.join("; "));
    }
    ensure!(
        out.code() == Some(0) && report.ok,
        "expected `check --json` as root to exit 0 with ok: true, got {} with ok: {}; {}",
        out.code().map_or("no exit code".into(), |c| c.to_string()),
        report.ok,
        out.describe()
    );
    ensure!(
        report.privileges.ok && report.privileges.missing.is_empty(),
        "expected no missing privileges as root, got {}",
        brief(&report.privileges)
    );
    check_statuses(&report, "check as root", |_| &["attached", "degraded"])?;
    ensure!(
        report.btf && report.lockdown.as_deref().is_some_and(|l| !l.is_empty()),
        "expected btf: true and lockdown as a string (kernel has BTF; lockdown is readable as root), got btf: {} lockdown: {:?}",
        report.btf,
        report.lockdown
    );

    let plain = run_check(&[], |_| {})?;
    ensure!(
        plain.code() == Some(0),
        "expected plain `check` as root to exit 0, got {}",
        plain.describe()
    );
    let text = format!("{}{}", plain.stdout, plain.stderr);
    for name in PROBE_NAMES {
        ensure!(
            text.contains(name),
            "expected plain `check` output to mention probe {name}; {}",
            plain.describe()
        );
    }
    Ok(())
}

/// As uid/gid 65534 (nobody): exit 1, naming the missing privilege.
#[test]
fn check_without_privilege_fails_and_says_why() -> Result<()> {
    let _serial = serial();
    require_root!();
    // A copy nobody can reach and execute, whatever the repo's permissions.
    let dir = ScratchDir::new_in(&std::env::temp_dir(), "check-nobody")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let bin = dir.path().join("sentinel");
    std::fs::copy(sentinel_bin()?, &bin).context("copying sentinel for uid 65534")?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    let as_nobody = |cmd: &mut std::process::Command| {
        cmd.uid(65534).gid(65534).current_dir(Path::new("/"));
    };

    let out = run_sentinel(&bin, "check", &[], as_nobody)?;
    let text = format!("{}{}", out.stdout, out.stderr);
    ensure!(
        out.code() == Some(1),
        "expected `check` as uid 65534 to exit 1, got {}",
        out.describe()
    );
    ensure!(
        ["CAP_BPF", "CAP_PERFMON", "root"]
            .iter()
            .any(|p| text.contains(p)),
        "expected `check` as uid 65534 to name the missing privilege (CAP_BPF / CAP_PERFMON / root), got {}",
        out.describe()
    );

    let out = run_sentinel(&bin, "check", &["--json"], as_nobody)?;
    ensure!(
        out.code() == Some(1),
        "expected `check --json` as uid 65534 to exit 1, got {}",
        out.describe()
    );
    let report = out.json()?;
    ensure!(
        !report.ok && !report.privileges.ok && !report.privileges.missing.is_empty(),
        "expected ok: false and a non-empty privileges.missing as uid 65534, got ok: {} privileges: {}",
        report.ok,
        brief(&report.privileges)
    );
    Ok(())
}

/// Without kmem:rss_stat the rss probe falls back to /proc: degraded, and
/// check still passes.
#[test]
fn check_without_rss_stat_is_degraded() -> Result<()> {
    let _serial = serial();
    require_root!();
    let out = run_check(&["--json"], |c| {
        c.env(HIDE_ENV, "kmem:rss_stat");
    })?;
    let report = out.json()?;
    ensure!(
        out.code() == Some(0),
        "expected exit 0 with {HIDE_ENV}=kmem:rss_stat (rss degrades to /proc), got {}",
        out.describe()
    );
    check_statuses(&report, "kmem:rss_stat hidden", |name| {
        if name == "rss" {
            &["degraded"]
        } else {
            &["attached"]
        }
    })
}

/// With BTF tracepoints switched off, every probe still works through
/// classic tracepoints (what a kernel without tp_btf gets): all attach with
/// program type "tracepoint", except `writes`, which then cannot see folio
/// sizes and says so (degraded).
#[test]
fn check_without_btf_tracepoints_uses_classic_ones() -> Result<()> {
    let _serial = serial();
    require_root!();
    let out = run_check(&["--json"], |c| {
        c.env("SENTINEL_TEST_DISABLE_PROGRAM_TYPES", "tp_btf");
    })?;
    let report = out.json()?;
    ensure!(
        out.code() == Some(0),
        "expected exit 0 with tp_btf disabled (classic tracepoints remain), got {}",
        out.describe()
    );
    check_statuses(&report, "tp_btf disabled", |name| {
        if name == "writes" {
            &["degraded"]
        } else {
            &["attached"]
        }
    })?;
    for p in &report.probes {
        ensure!(
            p.program_type.as_deref() == Some("tracepoint"),
            "expected probe {} on a classic tracepoint with tp_btf disabled, got program_type {:?}; {}",
            p.name,
            p.program_type,
            out.describe()
        );
    }
    // What tests on other kernels decide to skip by: the disabled type is
    // said to be disabled, not unsupported.
    for p in &report.probes {
        for v in p.variants.iter().filter(|v| v.program_type == "tp_btf") {
            ensure!(
                v.outcome == "disabled",
                "expected probe {}'s tp_btf variant to be \"disabled\" with tp_btf disabled, got {}",
                p.name,
                brief(v)
            );
        }
    }
    Ok(())
}

/// As on Linux 5.10, which has no `bpf_get_current_task_btf`: every probe
/// still works. RSS takes the classic tracepoint (the BTF one needs the
/// helper), futex says it cannot reuse stacks, and lifecycle says what it
/// loses where the exit tracepoint has no `group_dead` (before 6.16).
#[test]
fn check_without_task_btf_helper_degrades_what_needs_it() -> Result<()> {
    let _serial = serial();
    require_root!();
    let out = run_check(&["--json"], |c| {
        c.env("SENTINEL_TEST_DISABLE_HELPERS", "get_current_task_btf");
    })?;
    let report = out.json()?;
    ensure!(
        out.code() == Some(0),
        "expected exit 0 without bpf_get_current_task_btf (every probe has a way without it), got {}",
        out.describe()
    );
    check_statuses(
        &report,
        "bpf_get_current_task_btf disabled",
        |name| match name {
            "futex" => &["degraded"],
            "lifecycle" => &["attached", "degraded"],
            _ => &["attached"],
        },
    )?;
    for name in ["futex", "lifecycle"] {
        let p = find_probe(&report.probes, name)?;
        ensure!(
            p.status == "attached" || p.detail.contains("bpf_get_current_task_btf"),
            "expected probe {name}'s detail to name the missing helper, got {}",
            brief(p)
        );
    }
    let rss = find_probe(&report.probes, "rss")?;
    ensure!(
        rss.program_type.as_deref() == Some("tracepoint"),
        "expected rss on the classic tracepoint without bpf_get_current_task_btf, got {}",
        brief(rss)
    );
    Ok(())
}

/// Without block:block_rq_issue the block probe is unsupported: check
/// fails, the other probes still attach.
#[test]
fn check_without_block_rq_issue_fails() -> Result<()> {
    let _serial = serial();
    require_root!();
    let out = run_check(&["--json"], |c| {
        c.env(HIDE_ENV, "block:block_rq_issue");
    })?;
    let report = out.json()?;
    ensure!(
        out.code() == Some(1) && !report.ok,
        "expected exit 1 and ok: false with {HIDE_ENV}=block:block_rq_issue, got ok: {}; {}",
        report.ok,
        out.describe()
    );
    check_statuses(&report, "block:block_rq_issue hidden", |name| {
        if name == "block" {
            &["unsupported"]
        } else {
            &["attached"]
        }
    })?;
    let block = find_probe(&report.probes, "block")?;
    ensure!(
        !block.detail.is_empty(),
        "expected an explanation in the unsupported block probe's detail, got {}",
        brief(block)
    );
    ensure!(
        block.unsupported_here(None).is_some()
            && !block.variants.is_empty()
            && block.variants.iter().all(|v| v.outcome == "unsupported"),
        "expected every variant of the block probe to be \"unsupported\" without block:block_rq_issue (tests skip on that), got {}",
        brief(block)
    );
    Ok(())
}

fn tracefs_mount_points() -> Result<Vec<String>> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    Ok(mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "tracefs").then(|| f[1].to_string())
        })
        .collect())
}

/// Puts tracefs back at /sys/kernel/tracing if it is missing on drop.
struct RemountTracefs;

impl Drop for RemountTracefs {
    fn drop(&mut self) {
        if tracefs_mount_points().is_ok_and(|m| m.iter().any(|p| p == TRACEFS)) {
            return;
        }
        // SAFETY: mount(2) with static NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"nodev".as_ptr(),
                c"/sys/kernel/tracing".as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            eprintln!(
                "warning: could not remount tracefs at {TRACEFS}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// With tracefs unmounted, check mounts it itself and says so.
#[test]
fn check_mounts_missing_tracefs() -> Result<()> {
    let _serial = serial();
    require_root!();
    let before = tracefs_mount_points()?;
    if before.iter().any(|p| p != TRACEFS) {
        skip!(
            "tracefs is also mounted at {before:?}; sentinel may use that one, so this test cannot remove tracefs"
        );
    }
    let _remount = RemountTracefs;
    if before.iter().any(|p| p == TRACEFS) {
        // SAFETY: umount2 with a static NUL-terminated path.
        if unsafe { libc::umount2(c"/sys/kernel/tracing".as_ptr(), 0) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EBUSY) {
                skip!("cannot unmount {TRACEFS}: {err} (something holds it open)");
            }
            return Err(err).context("unmounting tracefs");
        }
    }
    ensure!(
        !tracefs_mount_points()?.iter().any(|p| p == TRACEFS),
        "test setup: tracefs still mounted at {TRACEFS} after umount"
    );

    let out = run_check(&["--json"], |_| {})?;
    let report = out.json()?;
    ensure!(
        out.code() == Some(0),
        "expected `check --json` to exit 0 with tracefs unmounted (sentinel mounts it), got {}",
        out.describe()
    );
    ensure!(
        report.tracefs.mounted_by_sentinel && report.tracefs.path.as_deref() == Some(TRACEFS),
        "expected tracefs {{path: {TRACEFS:?}, mounted_by_sentinel: true}} with tracefs unmounted before check, got {}",
        brief(&report.tracefs)
    );
    check_statuses(&report, "tracefs mounted by sentinel", |_| {
        &["attached", "degraded"]
    })
}
