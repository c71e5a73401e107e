//! `cargo xtask vm-test`: sentinel on the kernels people run. Debian's cloud
//! kernels (`apt.rs`) boot under QEMU (`qemu.rs`) into an initramfs of
//! sentinel, its probe tests and the modules they need (`initramfs.rs`);
//! what each kernel said becomes the README's support table (`matrix.rs`).

mod apt;
mod initramfs;
mod matrix;
mod qemu;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{bootstrap, build, cmd};
use matrix::{KernelRun, Outcome};

/// Kernel, and the Debian suite whose `linux-image-cloud-amd64` it is.
pub const KERNELS: &[(&str, &str)] = &[
    ("5.10", "bullseye"),
    ("6.1", "bookworm"),
    ("6.12", "trixie"),
];

/// What runs in each kernel: a test binary of `tests/tests`, and which of
/// its tests (all when empty). The probe tests, each on a workload of its
/// own in its own cgroup; the daemon's tests stay on the host, where the
/// kernel matters less than the time they take.
const TESTS: &[(&str, &[&str])] = &[
    (
        "check",
        &[
            "check_as_root_passes",
            "check_without_privilege_fails_and_says_why",
        ],
    ),
    ("probes_faults", &[]),
    ("probes_futex", &[]),
    ("probes_io", &[]),
    ("probes_oom", &[]),
    // Not the fork storm: 3,000 forks under emulation outlast its window.
    (
        "lifecycle",
        &[
            "writes_during_exit_do_not_leak_procs_entries",
            "writes_during_exit_do_not_leak_procs_entries_without_task_btf_helper",
        ],
    ),
];

/// Starts the init's every line on the console.
pub const MARK: &str = "SENTINEL-VM";
/// One kernel's boot and tests; under TCG they take a few minutes.
const RUN_TIMEOUT: Duration = Duration::from_secs(1200);

/// A test binary and the tests of it to run.
pub struct TestBin {
    pub name: String,
    pub exe: PathBuf,
    pub tests: Vec<String>,
}

pub struct Options {
    /// 5.10, 6.1, 6.12 or all.
    pub kernel: String,
    /// Rewrite the README's support table (only with every kernel).
    pub readme: bool,
}

pub fn vm_test(opts: &Options) -> Result<()> {
    let chosen: Vec<(&str, &str)> = KERNELS
        .iter()
        .copied()
        .filter(|(k, _)| opts.kernel == "all" || *k == opts.kernel)
        .collect();
    if chosen.is_empty() {
        bail!(
            "--kernel {}: expected one of {} or all",
            opts.kernel,
            KERNELS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
        );
    }
    if opts.readme && chosen.len() != KERNELS.len() {
        bail!("--readme needs --kernel all: the README's table has a row for every kernel");
    }
    let tc = bootstrap::bootstrap(bootstrap::Need::VmTest)?;
    let art = build::build(&tc, build::Profile::Release)?;
    matrix_run(&art, chosen, opts.readme)
}

/// The matrix on an already built tree (`cargo xtask test` has built it).
pub fn matrix_run(art: &build::Artifacts, chosen: Vec<(&str, &str)>, readme: bool) -> Result<()> {
    if !cmd::is_root() {
        bail!("vm-test needs root: the host's own `sentinel check` row loads eBPF programs");
    }
    let cache = art.target_dir.join("vm");
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let (tests, workload) = build_tests(art)?;
    let apt = apt::Apt::new(&cache)?;
    let common = initramfs::common(
        &cache,
        &initramfs::Payload {
            sentinel: &art.sentinel,
            workload: &workload,
            tests: &tests,
        },
    )?;

    // Fetched and packed one after another, then booted side by side: a
    // run is mostly tests waiting out their windows, not emulation.
    let mut prepared = Vec::new();
    let mut accel = None;
    for (name, suite) in chosen {
        let k = apt.kernel(suite)?;
        let modules = initramfs::modules(&cache, &k)?;
        let initrd = initramfs::initrd(&cache, &common, &modules, &k.release)?;
        let accel =
            *accel.get_or_insert_with(|| qemu::pick_accel(&cache, &k.vmlinuz, &initrd, MARK));
        let disk = qemu::fresh_disk(&cache, name)?;
        prepared.push((name, k, initrd, disk, accel));
    }
    let started = std::time::Instant::now();
    let runs: Vec<KernelRun> = std::thread::scope(|scope| {
        let handles: Vec<_> = prepared
            .iter()
            .map(|(name, k, initrd, disk, accel)| {
                scope.spawn(move || boot_and_read(name, k, initrd, disk, accel))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a VM's thread panicked"))?
            })
            .collect::<Result<_>>()
    })?;

    let host = host_check(&art.sentinel)?;
    let table = matrix::table(&runs, Some(&host), started.elapsed().as_secs_f64());
    println!("\n{table}");
    let json: Vec<Value> = runs.iter().map(KernelRun::to_json).collect();
    let json_path = cache.join("matrix.json");
    fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    fs::write(cache.join("matrix.md"), &table)?;
    eprintln!("vm-test: results in {} and matrix.md", json_path.display());

    let problems: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.problems()
                .into_iter()
                .map(move |p| format!("Linux {}: {p}", r.name))
        })
        .collect();
    if !problems.is_empty() {
        bail!("vm-test failed:\n  {}", problems.join("\n  "));
    }
    if readme {
        let stamp = format!(
            "{} under QEMU {}",
            cmd::query(Command::new("date").args(["-u", "+%F"])).unwrap_or_default(),
            runs.first().map_or("", |r| r.accel.as_str())
        );
        let readme = art.root.join("README.md");
        matrix::write_readme(&readme, &table, &stamp)?;
        eprintln!("vm-test: wrote the support table into {}", readme.display());
    }
    Ok(())
}

/// Boots one kernel with its disk, echoing the init's lines as they come.
fn boot_and_read(
    name: &str,
    k: &apt::Kernel,
    initrd: &Path,
    disk: &Path,
    accel: &str,
) -> Result<KernelRun> {
    eprintln!("vm-test: Linux {name} ({}) under QEMU {accel}", k.package);
    let boot = qemu::Vm {
        vmlinuz: &k.vmlinuz,
        initrd,
        disk: Some(disk),
        accel,
    }
    .run(RUN_TIMEOUT, |line| {
        if let Some(at) = line.find(MARK)
            && !line[at..].starts_with(&format!("{MARK} check-json"))
        {
            println!("{name}: {}", &line[at..]);
        }
    })?;
    let _ = fs::remove_file(disk);
    let mut run = KernelRun {
        name: name.into(),
        package: k.package.clone(),
        release: k.release.clone(),
        accel: accel.into(),
        secs: boot.secs,
        timed_out: boot.timed_out,
        ..Default::default()
    };
    run.read(&boot.lines);
    if !run.done {
        let tail: Vec<&str> = boot
            .lines
            .iter()
            .rev()
            .take(40)
            .rev()
            .map(String::as_str)
            .collect();
        eprintln!(
            "vm-test: Linux {name}: the console's last lines:\n  {}",
            tail.join("\n  ")
        );
    }
    eprintln!(
        "vm-test: Linux {name}: {} passed, {} skipped, {} failed in {:.0} s",
        run.count(Outcome::Pass),
        run.count(Outcome::Skip),
        run.count(Outcome::Fail),
        run.secs
    );
    Ok(run)
}

/// Builds the tests of `TESTS` (and the `workload` binary they drive) and
/// lists each binary's tests, so a renamed test fails here rather than
/// silently dropping out of the matrix.
fn build_tests(art: &build::Artifacts) -> Result<(Vec<TestBin>, PathBuf)> {
    let mut cargo = cmd::cargo();
    cargo
        .current_dir(&art.root)
        .env("SENTINEL_EBPF_OBJ", &art.ebpf_obj)
        .args([
            "test",
            "--release",
            "--package",
            "sentinel-tests",
            "--no-run",
        ])
        .args(["--message-format", "json-render-diagnostics"]);
    for (bin, _) in TESTS {
        cargo.args(["--test", bin]);
    }
    eprintln!("$ {}", cmd::describe(&cargo));
    let out = cargo
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the tests for the VM failed ({})", out.status);
    }
    let mut exes = std::collections::HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && let (Some(name), Some(exe)) =
                (v["target"]["name"].as_str(), v["executable"].as_str())
        {
            exes.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    let mut bins = Vec::new();
    for (name, wanted) in TESTS {
        let exe = exes
            .get(*name)
            .with_context(|| format!("cargo built no executable for test {name}"))?
            .clone();
        let listed = cmd::query(Command::new(&exe).args(["--list", "--format", "terse"]))
            .with_context(|| format!("{} --list failed", exe.display()))?;
        let all: Vec<String> = listed
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(str::to_string)
            .collect();
        let tests = if wanted.is_empty() {
            all
        } else {
            for w in *wanted {
                if !all.iter().any(|t| t == w) {
                    bail!("tests/tests/{name}.rs has no test {w} (vm-test's TESTS names it)");
                }
            }
            wanted.iter().map(|w| w.to_string()).collect()
        };
        bins.push(TestBin {
            name: name.to_string(),
            exe,
            tests,
        });
    }
    let workload = art.target_dir.join("release/workload");
    if !workload.is_file() {
        bail!("cargo built the tests but not {}", workload.display());
    }
    Ok((bins, workload))
}

/// The host's `sentinel check --json`, as a row of the table: the kernel
/// with lockdown, where the fallbacks get exercised.
fn host_check(sentinel: &Path) -> Result<KernelRun> {
    let out = Command::new(sentinel)
        .args(["check", "--json"])
        .output()
        .with_context(|| format!("running {} check --json", sentinel.display()))?;
    let check: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "parsing the host's `sentinel check --json`: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let release = check["kernel"].as_str().unwrap_or("?").to_string();
    Ok(KernelRun {
        name: release.split('.').take(2).collect::<Vec<_>>().join("."),
        release,
        check: Some(check),
        done: true,
        ..Default::default()
    })
}
