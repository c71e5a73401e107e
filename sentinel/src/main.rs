//! The `sentinel` command line.
//!
//! Exit codes: 0 success; 1 the host cannot run sentinel as asked (missing
//! privilege, core probes unavailable, a runtime failure); 2 bad arguments.
use std::{io::Write, process::ExitCode, sync::atomic::Ordering, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sentinel::{
    cgroup::{Mounts, Resolver},
    check,
    loader::{LoadError, Sentinel},
    render,
    snapshot::{self, Filter},
    units,
};

#[derive(Parser)]
#[command(
    name = "sentinel",
    version,
    about = "eBPF resource sentinel: memory, futex waits, I/O and OOM kills per process and cgroup"
)]
struct Cli {
    /// Log level for diagnostics on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn", env = "SENTINEL_LOG")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Report the kernel, BTF, tracefs, privileges and each probe's status.
    /// Exits 0 when all core probes work, 1 otherwise.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Attach, observe for a while, and print what the kernel saw.
    Snapshot {
        /// How long to observe, e.g. 2s, 500ms, 1m.
        #[arg(long, default_value = "2s", value_parser = units::parse_duration)]
        duration: Duration,
        /// Only this process.
        #[arg(long)]
        pid: Option<u32>,
        /// Only this cgroup (v2 path like /system.slice/x.service, or its
        /// directory) and its descendants.
        #[arg(long)]
        cgroup: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sentinel: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Check { json } => {
            let r = check::run();
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", check::render(&r));
            }
            if let Some(e) = &r.error {
                if json {
                    eprintln!("sentinel: {e}");
                }
            }
            Ok(if r.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Snapshot {
            duration,
            pid,
            cgroup,
            json,
        } => {
            // Resolve the filter before attaching: a typo should not cost a
            // probe load.
            let cgroup = match cgroup {
                Some(c) => Some(Resolver::new(&Mounts::discover()).normalize(&c)?),
                None => None,
            };
            if let Some(pid) = pid {
                if !sentinel::procfs::alive(std::path::Path::new("/proc"), pid) {
                    anyhow::bail!("--pid {pid}: no such process (nothing at /proc/{pid})");
                }
            }
            let filter = Filter { pid, cgroup };
            let mut s = match Sentinel::load() {
                Ok(s) => s,
                Err(LoadError::Privilege(p)) => {
                    eprintln!("sentinel: {}", p.explain());
                    return Ok(ExitCode::from(1));
                }
                Err(LoadError::Other(e)) => return Err(e),
            };
            install_stop_handler();
            let report = snapshot::observe(&mut s, duration, &filter, || {
                eprintln!(
                    "sentinel: probes attached, observing for {}",
                    humantime(duration)
                );
            })?;
            let text = if json {
                serde_json::to_string_pretty(&report)? + "\n"
            } else {
                render::snapshot(&report)
            };
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                r => r.context("writing the report to stdout")?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

extern "C" fn on_signal(_: libc::c_int) {
    snapshot::STOP.store(true, Ordering::Relaxed);
}

/// SIGINT/SIGTERM end the window early and still print the report.
fn install_stop_handler() {
    // SAFETY: the handler only stores to an atomic, which is signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}
