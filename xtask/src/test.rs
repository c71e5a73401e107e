//! `cargo xtask test`: what CI runs. Unit tests, then the integration tests
//! against the real binary and kernel, then the kernel matrix (`vm-test`).

use anyhow::{Result, bail};

use crate::bootstrap::{Need, bootstrap};
use crate::build::{Profile, build};
use crate::cmd::{self, is_root};
use crate::vm;

pub fn test() -> Result<()> {
    let tc = bootstrap(Need::Test)?;
    let art = build(&tc, Profile::Release)?;
    if !is_root() {
        eprintln!("test: warning: not root; integration tests that load eBPF will fail or skip");
    }

    // Building sentinel (even its tests) embeds the object, hence the env
    // var on every step. cargo test prints results on stdout, inherited.
    let mut unit = cmd::cargo();
    unit.current_dir(&art.root)
        .env("SENTINEL_EBPF_OBJ", &art.ebpf_obj)
        .args([
            "test",
            "--release",
            "--no-fail-fast",
            "--package",
            "sentinel-common",
            "--package",
            "sentinel",
            "--package",
            "xtask",
        ]);

    // Single-threaded: the tests share kernel state (probes see the whole
    // machine, tracefs, cgroups).
    let mut integration = cmd::cargo();
    integration
        .current_dir(&art.root)
        .env("SENTINEL_EBPF_OBJ", &art.ebpf_obj)
        .env("SENTINEL_BIN", &art.sentinel)
        .args([
            "test",
            "--release",
            "--no-fail-fast",
            "--package",
            "sentinel-tests",
            "--lib",
            "--bins",
            "--tests",
            "--",
            "--test-threads=1",
        ]);

    // Every step runs even if one before fails (and --no-fail-fast within
    // each), so one CI log shows every failure.
    let mut failures: Vec<String> = [("unit tests", unit), ("integration tests", integration)]
        .into_iter()
        .filter_map(|(what, mut c)| cmd::run(&mut c).err().map(|e| format!("{what}: {e:#}")))
        .collect();
    // The probe tests again, inside Debian's 5.10, 6.1 and 6.12 kernels.
    if let Err(e) = vm::matrix_run(&art, vm::KERNELS.to_vec(), false) {
        failures.push(format!("kernel matrix: {e:#}"));
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    eprintln!("test: all passed");
    Ok(())
}
