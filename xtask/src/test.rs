//! `cargo xtask test`: what CI runs. Unit tests, then the integration tests
//! against the real binary and kernel.

use anyhow::{Result, bail};

use crate::bootstrap::{Need, bootstrap};
use crate::build::{Profile, build};
use crate::cmd::{self, is_root};

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

    // Both steps run even if the first fails (and --no-fail-fast within
    // each), so one CI log shows every failure.
    let failures: Vec<String> = [("unit tests", unit), ("integration tests", integration)]
        .into_iter()
        .filter_map(|(what, mut c)| cmd::run(&mut c).err().map(|e| format!("{what}: {e:#}")))
        .collect();
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    eprintln!("test: all passed");
    Ok(())
}
