//! `cargo xtask run -- <args>`: build, then become `sentinel <args>`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{Result, bail};

use crate::bootstrap::{Need, bootstrap};
use crate::build::{Profile, build};
use crate::cmd::{self, find_program, is_root};

pub fn run(profile: Profile, args: Vec<OsString>) -> Result<()> {
    let tc = bootstrap(Need::Build)?;
    let art = build(&tc, profile)?;

    // Loading eBPF programs needs root here (no unprivileged BPF, and
    // CAP_BPF alone does not cover tracepoints under lockdown).
    let mut sentinel = if is_root() {
        Command::new(&art.sentinel)
    } else if let Some(sudo) = find_program("sudo") {
        let mut c = Command::new(sudo);
        c.arg("--").arg(&art.sentinel);
        c
    } else {
        let mut c = Command::new(&art.sentinel);
        c.args(&args);
        bail!(
            "sentinel needs root to load its eBPF programs and sudo is not available; \
             run as root: {}",
            cmd::describe(&c)
        );
    };
    sentinel.args(&args);
    let line = cmd::describe(&sentinel);
    eprintln!("$ {line}");
    // exec, not spawn: Ctrl-C, exit status and the terminal go straight to
    // sentinel, with no xtask process left in between.
    let err = sentinel.exec();
    bail!("could not exec `{line}`: {err}")
}
