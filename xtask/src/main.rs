//! Developer and CI automation for sentinel: `cargo xtask <command>`.
//!
//! The eBPF half needs a toolchain that plain `cargo build` does not
//! provide (a `core` for bpfel-unknown-none, bpf-linker), so every path from
//! a fresh machine to a running binary goes through here.

mod bench;
mod bootstrap;
mod build;
mod cmd;
mod run;
mod test;
mod vm;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::build::Profile;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, run, test and benchmark sentinel"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the eBPF toolchain, bpftrace and tmux; install what is missing
    /// (as root on Debian) or print the commands to do so.
    Bootstrap,
    /// Build the eBPF object and the sentinel binary embedding it; prints
    /// the binary's path.
    Build {
        /// Debug profile for the userspace binary (the eBPF object is
        /// always release).
        #[arg(long)]
        debug: bool,
    },
    /// Build, then run `sentinel <ARGS>` (through sudo when not root).
    Run {
        /// Debug profile for the userspace binary.
        #[arg(long)]
        debug: bool,
        /// Arguments for sentinel, after `--`, e.g. `-- snapshot --duration 5s`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Build, then run the unit and integration tests (what CI runs).
    Test,
    /// Boot Debian's 5.10, 6.1 and 6.12 cloud kernels under QEMU and run
    /// `sentinel check` and the probe tests inside each (root).
    VmTest {
        /// 5.10, 6.1, 6.12 or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Rewrite the README's kernel support table from this run (needs
        /// --kernel all).
        #[arg(long)]
        readme: bool,
    },
    /// Measure the slowdown sentinel's probes cause on microbenchmarks,
    /// next to bpftrace, then the daemon's own CPU and memory, then `sentinel
    /// top`'s next to procps top, then the flight recorder's (root).
    Bench {
        /// Rounds; each measures every benchmark under every setup. For the
        /// daemon: the number of slices of each measurement.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Length of one measurement. The daemon is measured for rounds x
        /// seconds, at least 30 s.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Run only one part: the microbenchmarks, the daemon's cost,
        /// top's cost or the flight recorder's.
        #[arg(long, value_enum)]
        only: Option<bench::Part>,
        /// Processes the daemon's busy-host scenario keeps alive.
        #[arg(long, default_value_t = 500)]
        procs: usize,
        /// Idle processes on the host while `top` is measured.
        #[arg(long, default_value_t = 5000)]
        top_procs: usize,
        /// How long each daemon (recorder off, then on) of the recorder
        /// bench is measured, after 10 s of warm-up.
        #[arg(long, default_value_t = 90.0)]
        recorder_seconds: f64,
        /// Print every measurement and the raw per-round numbers.
        #[arg(long, short)]
        verbose: bool,
    },
}

fn profile(debug: bool) -> Profile {
    if debug {
        Profile::Debug
    } else {
        Profile::Release
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bootstrap => {
            bootstrap::bootstrap(bootstrap::Need::Everything)?;
            eprintln!("bootstrap: everything present");
        }
        Command::Build { debug } => {
            let tc = bootstrap::bootstrap(bootstrap::Need::Build)?;
            let art = build::build(&tc, profile(debug))?;
            // On stdout alone, so scripts can capture it.
            println!("{}", art.sentinel.display());
        }
        Command::Run { debug, args } => run::run(profile(debug), args)?,
        Command::Test => test::test()?,
        Command::VmTest { kernel, readme } => vm::vm_test(&vm::Options { kernel, readme })?,
        Command::Bench {
            rounds,
            seconds,
            only,
            procs,
            top_procs,
            recorder_seconds,
            verbose,
        } => bench::bench(bench::Options {
            rounds,
            seconds,
            verbose,
            only,
            procs,
            top_procs,
            recorder_seconds,
        })?,
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
