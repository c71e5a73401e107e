//! The `sentinel` command line.
//!
//! Exit codes: 0 success; 1 the host cannot run sentinel as asked (missing
//! privilege, core probes unavailable, a runtime failure); 2 bad arguments.
use std::{io::Write, path::Path, process::ExitCode, sync::atomic::Ordering, time::Duration};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use sentinel::{
    api,
    cgroup::{Mounts, Resolver},
    check, config, daemon,
    loader::{LoadError, Sentinel},
    privileges::Privileges,
    procfs, render,
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
    /// Watch the host: run probes, profiles and detectors, and write an
    /// event to stdout whenever a condition fires or resolves.
    Daemon {
        /// TOML configuration [default: /etc/sentinel/sentinel.toml if it
        /// exists, else built-in defaults].
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// json: one event object per line and nothing else on stdout;
        /// text: one readable line per event. Diagnostics go to stderr.
        /// Overrides [log] format.
        #[arg(long, value_enum)]
        log_format: Option<config::LogFormat>,
        /// Validate the configuration (secrets included) and exit: 0 when
        /// it is good, 2 with file, line and key when not.
        #[arg(long)]
        check_config: bool,
    },
    /// Print the running daemon's recent events, and with --follow the new
    /// ones as they happen.
    Events {
        /// Only events at or after this: a duration ago (10m, 2h) or a time
        /// (2026-11-23T03:12:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Keep printing new events until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per line, as the daemon's json log.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: Socket,
    },
    /// The live view: who is growing, stuck or writing, and what sentinel
    /// flagged. Reads the running daemon through its socket; with no daemon
    /// there, runs the probes itself (as root).
    Top {
        /// Time between refreshes, e.g. 1s, 500ms, 5s.
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        interval: Duration,
        #[command(flatten)]
        socket: Socket,
        /// Print one plain-text screen and exit.
        #[arg(long)]
        once: bool,
        /// With --once: print the screen's data as one JSON object.
        #[arg(long, requires = "once")]
        json: bool,
        /// Replay the flight recorder's history from this time instead of
        /// the live view: a time (2026-11-23T03:12:00Z) or a duration ago
        /// (2h). Left/Right step a frame, { and } a minute, ( and ) an
        /// hour, g and G go to the first and last.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<u64>,
        /// With --at: the recorder's store [default: [recorder] dir of
        /// the configuration].
        #[arg(long, value_name = "DIR", requires = "at")]
        store: Option<std::path::PathBuf>,
    },
    /// Pack what the flight recorder holds about an incident into one
    /// .tar.gz: events, timelines (CSV), blocked-thread stacks, a host
    /// snapshot and report.html. Reads the store directly: works with the
    /// daemon stopped.
    Export {
        /// Start of the range: a time (2026-11-23T03:12:00Z) or a duration
        /// ago (2h) [default: 1h ago, or 15m before --around's event].
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<u64>,
        /// End of the range [default: now, or 5m after --around's event].
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        until: Option<u64>,
        /// Center the range on this event (its id or incident id).
        #[arg(long, value_name = "EVENT_ID")]
        around: Option<String>,
        /// Only these processes (repeatable).
        #[arg(long = "pid", value_name = "PID")]
        pids: Vec<u32>,
        /// Only these containers, by name or cgroup path (repeatable).
        #[arg(long = "container", value_name = "NAME")]
        containers: Vec<String>,
        /// The archive [default: sentinel-<host>-<time>.tar.gz here].
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        /// The daemon's configuration, for the store's place and the
        /// manifest [default: /etc/sentinel/sentinel.toml if it exists].
        #[arg(long, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
        /// The recorder's store [default: [recorder] dir of the configuration].
        #[arg(long, value_name = "DIR")]
        store: Option<std::path::PathBuf>,
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

/// The running daemon's API socket, for the commands that talk to it.
#[derive(clap::Args)]
struct Socket {
    /// The daemon's API socket.
    #[arg(
        long = "socket",
        value_name = "PATH",
        default_value = config::DEFAULT_SOCKET,
        env = "SENTINEL_SOCKET"
    )]
    path: std::path::PathBuf,
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
    let filter = match log_filter(&cli.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sentinel: error: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(sentinel::top::logs::Writer::default)
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sentinel: error: {e:#}");
            ExitCode::from(if e.is::<BadArgs>() { 2 } else { 1 })
        }
    }
}

/// An argument the user can fix: exit code 2, not 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadArgs(String);

const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// `--log`/`SENTINEL_LOG`. The filter syntax takes a bare word as a target
/// name, so a misspelt level (`degub`) would parse and silently show
/// nothing: bare words must be levels; `target=level` directives are left
/// to the parser.
fn log_filter(spec: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    let bad = || {
        format!(
            "--log {spec:?}: expected a level ({}) or target=level directives",
            LEVELS.join(", ")
        )
    };
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !d.contains(['=', '[']) && !LEVELS.contains(&d.to_ascii_lowercase().as_str()) {
            return Err(bad());
        }
    }
    // The HTTP client's own trace logs include request paths, where webhook
    // tokens live: they never show, whatever the level asked for.
    let spec = format!("{spec},ureq=warn,ureq_proto=warn,rustls=warn");
    tracing_subscriber::EnvFilter::try_new(&spec).map_err(|e| format!("{}: {e}", bad()))
}

/// `--pid` must name a live process by its tgid. `/proc/TID` exists for
/// every thread, so a thread's tid would pass a plain existence check and
/// then match nothing, since everything is keyed by process.
fn check_pid(proc_root: &Path, pid: u32) -> Result<(), BadArgs> {
    match procfs::tgid(proc_root, pid) {
        None => Err(BadArgs(format!(
            "--pid {pid}: no such process (nothing at {})",
            proc_root.join(pid.to_string()).display()
        ))),
        Some(tgid) if tgid != pid => Err(BadArgs(format!(
            "--pid {pid} is a thread of process {tgid}: use --pid {tgid}"
        ))),
        Some(_) => Ok(()),
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
            if let (Some(e), true) = (&r.error, json) {
                eprintln!("sentinel: {e}");
            }
            Ok(if r.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Daemon {
            config,
            log_format,
            check_config,
        } => {
            // The config is checked before anything is loaded: a typo should
            // fail at once, not after the probes attach.
            let source = daemon::Source::resolve(config, log_format);
            let cfg = source.load().map_err(|e| BadArgs(e.to_string()))?;
            if check_config {
                println!("sentinel: configuration ok: {}", source.describe());
                return Ok(ExitCode::SUCCESS);
            }
            let privs = Privileges::current();
            if !privs.ok {
                eprintln!("sentinel: {}", privs.explain());
                return Ok(ExitCode::from(1));
            }
            // Ports, sockets and spool directories before the probes: a
            // port in use should not cost a probe load.
            let services = daemon::Services::start(&cfg)?;
            let Some(mut s) = load()? else {
                return Ok(ExitCode::from(1));
            };
            install_stop_handler();
            daemon::run(&mut s, &source, cfg, services)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Top {
            interval,
            socket,
            once,
            json,
            at,
            store,
        } => {
            sentinel::top::run(&sentinel::top::Options {
                interval,
                socket: socket.path,
                once,
                json,
                at,
                store,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Export {
            since,
            until,
            around,
            pids,
            containers,
            output,
            config,
            store,
        } => {
            let source = daemon::Source::resolve(config, None);
            let cfg = match source.load() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sentinel: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            // A signal ends the export through its error path, which
            // removes the staged files.
            install_stop_handler();
            let path = sentinel::export::run(&sentinel::export::Options {
                since,
                until,
                around,
                pids,
                containers,
                output,
                store: store.unwrap_or_else(|| cfg.recorder_dir()),
                config: serde_json::to_value(&cfg).unwrap_or_default(),
                config_source: source.describe(),
            })?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Events {
            since,
            follow,
            json,
            socket,
        } => {
            let since_ms = match since.as_deref() {
                None => 0,
                Some(s) => parse_since(s).map_err(BadArgs)?,
            };
            install_stop_handler();
            let req = serde_json::json!({"cmd": "events", "since_ms": since_ms, "follow": follow});
            let mut out = std::io::stdout().lock();
            let written = api::client::request(&socket.path, &req, |line| {
                let text = if json {
                    line.to_string()
                } else {
                    match serde_json::from_str::<sentinel::event::Event>(line) {
                        Ok(e) => e.to_string(),
                        // A note such as {"lost":N} from a follower that fell behind.
                        Err(_) => line.to_string(),
                    }
                };
                match writeln!(out, "{text}").and_then(|_| out.flush()) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
                    r => r
                        .map(|_| !snapshot::STOP.load(Ordering::Relaxed))
                        .context("writing to stdout"),
                }
            });
            written?;
            Ok(ExitCode::SUCCESS)
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
                Some(c) => {
                    let mounts = Mounts::discover();
                    if mounts.v2.is_none() {
                        // The host's fault, not the argument's.
                        bail!("no cgroup v2 hierarchy is mounted, so --cgroup cannot be resolved");
                    }
                    let rel = Resolver::new(&mounts)
                        .normalize(&c)
                        .map_err(|e| BadArgs(format!("--cgroup: {e:#}")))?;
                    Some(rel)
                }
                None => None,
            };
            if let Some(pid) = pid {
                check_pid(Path::new("/proc"), pid)?;
            }
            let filter = Filter { pid, cgroup };
            let Some(mut s) = load()? else {
                return Ok(ExitCode::from(1));
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

/// A time argument: RFC 3339, or a duration ago.
fn parse_time(s: &str) -> Result<u64, String> {
    sentinel::event::parse_when(s).ok_or_else(|| {
        format!("{s:?}: expected a time (2026-11-23T03:12:00Z) or a duration ago (10m, 2h)")
    })
}

/// `--since`: a duration ago, or an RFC 3339 time.
fn parse_since(s: &str) -> Result<u64, String> {
    sentinel::event::parse_when(s).ok_or_else(|| {
        format!("--since {s:?}: expected a duration ago (10m, 2h) or a time (2026-11-23T03:12:00Z)")
    })
}

/// Loads and attaches the probes. `None` when a privilege is missing, after
/// saying which: exit 1, not an error with a backtrace of causes.
fn load() -> Result<Option<Sentinel>> {
    match Sentinel::load() {
        Ok(s) => Ok(Some(s)),
        Err(LoadError::Privilege(p)) => {
            eprintln!("sentinel: {}", p.explain());
            Ok(None)
        }
        Err(LoadError::Other(e)) => Err(e),
    }
}

/// A refresh interval: at least 100 ms (faster only burns CPU), at most
/// a minute.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = units::parse_duration(s)?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(60) {
        return Err(format!("{s}: the interval must be between 100ms and 60s"));
    }
    Ok(d)
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        daemon::RELOAD.store(true, Ordering::Relaxed);
    } else {
        snapshot::STOP.store(true, Ordering::Relaxed);
    }
}

/// SIGINT/SIGTERM end the window (or the daemon) early, and the report
/// still prints; SIGHUP has the daemon read its config again.
fn install_stop_handler() {
    // SAFETY: the handler only stores to an atomic, which is signal-safe.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_and_directives() {
        assert!(log_filter("debug").is_ok());
        assert!(log_filter("DEBUG").is_ok());
        assert!(log_filter("warn,sentinel=trace").is_ok());
        assert!(log_filter("off").is_ok());
        assert!(
            log_filter("degub")
                .unwrap_err()
                .contains("expected a level")
        );
        assert!(log_filter("info,verbose").is_err());
        assert!(log_filter("sentinel=loud").is_err());
        assert!(log_filter("foo[").is_err());
    }

    #[test]
    fn pid_must_be_a_process_not_a_thread() {
        let dir = tempfile::tempdir().unwrap();
        for (pid, tgid) in [(42, 42), (43, 42)] {
            let d = dir.path().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("status"), format!("Tgid:\t{tgid}\nPid:\t{pid}\n")).unwrap();
        }
        assert!(check_pid(dir.path(), 42).is_ok());
        let e = check_pid(dir.path(), 43).unwrap_err().to_string();
        assert!(e.contains("thread of process 42: use --pid 42"), "{e}");
        let e = check_pid(dir.path(), 44).unwrap_err().to_string();
        assert!(e.contains("no such process"), "{e}");
    }
}
