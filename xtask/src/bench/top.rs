//! `cargo xtask bench --only top`: what `sentinel top` costs to keep open
//! on a host with thousands of processes, next to procps `top` (and htop
//! when it is installed) doing the same job in the same run.
//!
//! The host gets `--top-procs` idle processes (`loadgen sleepers`, 5,000 by
//! default) and a few active ones (`loadgen procs`), all in one cgroup of
//! the bench's, removed afterwards with everything in it. Each viewer then
//! runs alone, at a 1 s refresh, in a 200x50 pane of a private tmux server,
//! and is measured for the same window after a warm-up:
//! - procps `top -d 1` (the baseline), `htop -d 10` if installed;
//! - `sentinel top` standalone: the probes and the sampling run in it;
//! - `sentinel top` attached to a `sentinel daemon`: both are measured, the
//!   daemon doing the sampling.
//!
//! Every viewer runs under `timeout --foreground`, so that none outlives an
//! interrupted bench by more than its window.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::cgroup::BenchCgroup;
use super::usage::{Usage, measure};
use super::{
    DAEMON_MIN_WINDOW, DAEMON_WARMUP, Env, LOAD_SETTLE, Load, Options, Tracer, children_of,
    clock_ticks, host_procs, mib, range, thousands, warn_other_tracers, write_daemon_config,
};
use crate::cmd::find_program;

/// Busy processes next to the idle ones: rows whose numbers change every
/// refresh (each faults a few pages a second).
const ACTIVE_PROCS: usize = 8;
/// The pane every viewer draws into.
const PANE: (u16, u16) = (200, 50);
/// After a viewer's first screen: its start-up (for standalone `sentinel
/// top`, loading the probes) is over and it refreshes at its pace.
const VIEWER_WARMUP: Duration = Duration::from_secs(5);
/// How long a viewer may take to draw its first screen.
const VIEWER_READY: Duration = Duration::from_secs(60);
/// The refresh every viewer is given.
const REFRESH: Duration = Duration::from_secs(1);
/// The target for `sentinel top`'s own CPU.
const TARGET_PCT: f64 = 3.0;

pub fn top_cost(env: &Env, opts: &Options) -> Result<()> {
    warn_other_tracers();
    let Some(tmux) = find_program("tmux") else {
        bail!("the top bench drives every viewer in tmux; install it (`cargo xtask bootstrap`)");
    };
    let window = (opts.rounds as f64 * opts.seconds).max(DAEMON_MIN_WINDOW);
    let slices = opts.rounds;
    let tck = clock_ticks()?;
    let htop = find_program("htop");
    let procps_top = find_program("top");
    eprintln!(
        "bench: top cost: {} idle + {ACTIVE_PROCS} active processes; each viewer alone for \
         {window:.0}s ({slices} slices) after {}s warm-up, refreshing every {}s in a {}x{} \
         tmux pane",
        opts.top_procs,
        VIEWER_WARMUP.as_secs(),
        REFRESH.as_secs(),
        PANE.0,
        PANE.1
    );
    if htop.is_none() {
        eprintln!("bench: htop is not installed: no htop row");
    }

    // Dropped last: kills whatever the loads left behind.
    let cgroup = BenchCgroup::create(&format!("sentinel-bench-top-{}", std::process::id()))?;
    let backstop = 4.0 * (window + VIEWER_WARMUP.as_secs_f64() + VIEWER_READY.as_secs_f64());
    let sleepers = start_load(env, &cgroup, "sleepers", opts.top_procs, backstop)?;
    let active = start_load(env, &cgroup, "procs", ACTIVE_PROCS, backstop)?;
    let mut loads = [sleepers, active];

    let viewer_secs = window + VIEWER_WARMUP.as_secs_f64() + VIEWER_READY.as_secs_f64() + 30.0;
    let mut rows: Vec<Row> = Vec::new();
    let mut measure_viewer = |name: &str, argv: Vec<String>, ready: &dyn Fn(&str) -> bool| {
        eprintln!("bench: top cost, {name}");
        let pane = Pane::start(&tmux, name, &argv, viewer_secs)?;
        let pid = pane.wait_ready(name, ready)?;
        std::thread::sleep(VIEWER_WARMUP);
        let usage = measure(&[pid], window, slices, tck, env.verbose, || {
            pane.ensure_alive(name)
        })?;
        check_loads(&mut loads)?;
        let [u] = <[Usage; 1]>::try_from(usage).map_err(|_| anyhow::anyhow!("one usage"))?;
        Ok::<_, anyhow::Error>(Row {
            name: name.to_string(),
            usage: u,
            host: host_procs()?,
        })
    };

    if let Some(top) = &procps_top {
        rows.push(measure_viewer(
            "procps top -d 1",
            vec![path_arg(top), "-d".into(), "1".into()],
            &|s| s.contains("PID") && s.contains("COMMAND"),
        )?);
    } else {
        eprintln!("bench: procps top is not installed: no baseline row");
    }
    if let Some(htop) = &htop {
        rows.push(measure_viewer(
            "htop -d 10",
            vec![path_arg(htop), "-d".into(), "10".into()],
            &|s| s.contains("PID") && s.contains("Command"),
        )?);
    }
    let no_daemon = env.scratch.join("no-daemon.sock");
    let sentinel = path_arg(&env.sentinel);
    rows.push(measure_viewer(
        "sentinel top, standalone",
        vec![
            sentinel.clone(),
            "top".into(),
            "--interval".into(),
            "1s".into(),
            "--socket".into(),
            path_arg(&no_daemon),
        ],
        &|s| {
            s.lines().next().is_some_and(|l| l.contains("standalone"))
                && s.contains("PID")
                && s.contains("COMMAND")
        },
    )?);

    // Attached: the daemon samples, top only asks and draws.
    eprintln!("bench: top cost, sentinel top attached to a daemon");
    let config = write_daemon_config(&env.scratch)?;
    let socket = env.scratch.join("api/sentinel.sock");
    let mut c = Command::new(&env.sentinel);
    c.arg("daemon")
        .arg("--config")
        .arg(&config)
        .args(["--log-format", "json"]);
    let mut daemon = Tracer::start(
        "sentinel daemon",
        c,
        "sentinel daemon: watching",
        DAEMON_WARMUP,
    )?;
    let argv = vec![
        sentinel,
        "top".into(),
        "--interval".into(),
        "1s".into(),
        "--socket".into(),
        path_arg(&socket),
    ];
    let name = "sentinel top, attached";
    let pane = Pane::start(&tmux, name, &argv, viewer_secs)?;
    let top_pid = pane.wait_ready(name, &|s| {
        s.lines().next().is_some_and(|l| l.contains("attached"))
            && s.contains("PID")
            && s.contains("COMMAND")
    })?;
    std::thread::sleep(VIEWER_WARMUP);
    let daemon_pid = daemon.pid();
    let usage = measure(
        &[top_pid, daemon_pid],
        window,
        slices,
        tck,
        env.verbose,
        || {
            pane.ensure_alive(name)?;
            daemon.ensure_alive()
        },
    )?;
    check_loads(&mut loads)?;
    let host = host_procs()?;
    drop(pane);
    daemon.stop()?;
    let [top_usage, daemon_usage] =
        <[Usage; 2]>::try_from(usage).map_err(|_| anyhow::anyhow!("two usages"))?;
    let together = Usage::sum(&top_usage, &daemon_usage);
    rows.push(Row {
        name: name.into(),
        usage: top_usage,
        host,
    });
    rows.push(Row {
        name: "  + its daemon".into(),
        usage: daemon_usage,
        host,
    });
    rows.push(Row {
        name: "  = top + daemon".into(),
        usage: together,
        host,
    });

    for load in loads {
        load.stop()?;
    }
    drop(cgroup);
    print_top_table(opts, window, procps_top.is_some(), &rows);
    Ok(())
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `loadgen <mode> --procs n` in the bench's cgroup, past its ready line.
pub(super) fn start_load(
    env: &Env,
    cgroup: &BenchCgroup,
    mode: &str,
    n: usize,
    backstop: f64,
) -> Result<Load> {
    let mut c = Command::new(&env.loadgen);
    c.arg(mode)
        .arg("--procs")
        .arg(n.to_string())
        .arg("--seconds")
        .arg(format!("{backstop:.0}"));
    cgroup.attach(&mut c)?;
    let tracer = Tracer::start("loadgen", c, "procs ready", LOAD_SETTLE)?;
    let mut load = Load {
        tracer,
        pids: Vec::new(),
        children: n,
    };
    load.pids = load.check_children()?;
    Ok(load)
}

/// Every load process still alive: a dead one would make a thinner host.
fn check_loads(loads: &mut [Load]) -> Result<()> {
    for load in loads {
        load.check_children()?;
    }
    Ok(())
}

struct Row {
    name: String,
    usage: Usage,
    /// Processes on the host at the end of the window.
    host: usize,
}

fn print_top_table(opts: &Options, window: f64, baseline: bool, rows: &[Row]) {
    let base = rows.first().filter(|_| baseline).map(|r| r.usage.pct());
    println!();
    println!(
        "{:<26} {:>10} {:>9} {:>12} {:>11} {:>11} {:>9} {:>9} {:>9}",
        "viewer (1 s refresh)",
        "host procs",
        "CPU",
        "slices",
        "per refresh",
        "vs procps",
        "RSS avg",
        "RSS max",
        "VmHWM"
    );
    for r in rows {
        let u = &r.usage;
        let ratio = match base {
            Some(b) if b > 0.0 => format!("{:.2}x", u.pct() / b),
            _ => "-".into(),
        };
        println!(
            "{:<26} {:>10} {:>8.2}% {:>12} {:>8.1} ms {:>11} {:>5.1} MiB {:>5.1} MiB {:>5.1} MiB",
            r.name,
            thousands(r.host as f64),
            u.pct(),
            range(&u.slices),
            u.cpu / (u.wall / REFRESH.as_secs_f64()) * 1000.0,
            ratio,
            u.rss_avg(),
            u.rss_max(),
            mib(u.hwm),
        );
    }
    let verdict = |name: &str| {
        rows.iter().find(|r| r.name == name).map(|r| {
            let pct = r.usage.pct();
            let met = if pct < TARGET_PCT { "met" } else { "MISSED" };
            format!(
                "{name} {pct:.2}% with {} processes ({met})",
                thousands(r.host as f64)
            )
        })
    };
    let verdicts: Vec<String> = ["sentinel top, standalone", "sentinel top, attached"]
        .into_iter()
        .filter_map(verdict)
        .collect();
    println!(
        "\ntarget: top under {TARGET_PCT}% of a core with 5,000 processes: {}",
        verdicts.join("; ")
    );
    println!(
        "\n{} idle + {ACTIVE_PROCS} active extra processes; each viewer alone in a {}x{} tmux \
         pane, measured for {window:.0}s ({} slices) after {}s of warm-up; CPU = utime+stime \
         of the process, all threads (10 ms clock ticks), as % of one core; per refresh = CPU \
         time / refreshes; vs procps = CPU / procps top's CPU; RSS from VmRSS every 1 s; \
         VmHWM = peak RSS since start (standalone: loading the probes). Standalone, the \
         probes and the sampling run inside top; attached, in the daemon (its row), with the \
         daemon's probes attached host-wide while it runs.",
        thousands(opts.top_procs as f64),
        PANE.0,
        PANE.1,
        opts.rounds,
        VIEWER_WARMUP.as_secs(),
    );
}

/// A private tmux server (its own socket, no config) whose only pane runs
/// one viewer under `timeout --foreground`; killed on drop.
struct Pane {
    tmux: PathBuf,
    socket: String,
    /// The socket file, which tmux leaves behind when its server exits.
    socket_path: Option<PathBuf>,
}

impl Pane {
    fn start(tmux: &Path, name: &str, argv: &[String], backstop: f64) -> Result<Self> {
        let slug: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let mut pane = Self {
            tmux: tmux.to_path_buf(),
            socket: format!("sentinel-bench-{}-{slug}", std::process::id()),
            socket_path: None,
        };
        let (w, h) = (PANE.0.to_string(), PANE.1.to_string());
        let secs = format!("{backstop:.0}");
        let mut args: Vec<&str> = vec![
            // Keeps a viewer's last screen (its error) when it exits.
            "set-option",
            "-g",
            "remain-on-exit",
            "on",
            ";",
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            &w,
            "-y",
            &h,
            "--",
            // In the foreground so the viewer keeps the terminal (reads
            // keys, gets SIGWINCH); only the viewer is timed out.
            "timeout",
            "--foreground",
            "-k",
            "10",
            &secs,
        ];
        args.extend(argv.iter().map(String::as_str));
        args.extend([";", "set-option", "-g", "status", "off"]);
        pane.run(&args)?;
        pane.socket_path = Some(PathBuf::from(pane.display("#{socket_path}")?));
        Ok(pane)
    }

    fn output(&self, args: &[&str]) -> Result<Output> {
        let mut c = Command::new(&self.tmux);
        c.args(["-L", &self.socket, "-f", "/dev/null"]).args(args);
        c.output()
            .with_context(|| format!("running {}", self.tmux.display()))
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "`tmux -L {} {}` failed ({}): {}",
                self.socket,
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn display(&self, format: &str) -> Result<String> {
        Ok(self
            .run(&["display-message", "-p", "-t", "main", format])?
            .trim()
            .to_string())
    }

    fn capture(&self) -> Result<String> {
        self.run(&["capture-pane", "-p", "-t", "main"])
    }

    /// Fails with the pane's last screen once the viewer has exited.
    fn ensure_alive(&self, name: &str) -> Result<()> {
        if self.display("#{pane_dead}")? == "1" {
            let status = match self.display("#{pane_dead_status}")? {
                s if s.is_empty() => "unknown".to_string(),
                s => s,
            };
            bail!(
                "{name} exited (status {status}) during the benchmark; its last screen:\n{}",
                self.capture()?.trim_end()
            );
        }
        Ok(())
    }

    /// Waits for `ready` on the screen; returns the viewer's pid (the
    /// child of `timeout`, the pane's process).
    fn wait_ready(&self, name: &str, ready: &dyn Fn(&str) -> bool) -> Result<u32> {
        let deadline = Instant::now() + VIEWER_READY;
        loop {
            self.ensure_alive(name)?;
            if ready(&self.capture()?) {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{name} did not draw its first screen within {}s; the pane shows:\n{}",
                    VIEWER_READY.as_secs(),
                    self.capture()?.trim_end()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let timeout: u32 = self
            .display("#{pane_pid}")?
            .parse()
            .context("tmux pane_pid is not a pid")?;
        let children: Vec<u32> = children_of(timeout)?
            .into_iter()
            .filter(|(_, state)| *state != 'Z')
            .map(|(pid, _)| pid)
            .collect();
        match children.as_slice() {
            [pid] => Ok(*pid),
            other => bail!("expected one child of timeout (pid {timeout}), found {other:?}"),
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        // Closing the pane's terminal hangs the viewer up; timeout's -k
        // backstop covers one that ignores it.
        if let Ok(out) = self.output(&["kill-server"])
            && !out.status.success()
        {
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.contains("no server running") {
                eprintln!("bench: tmux -L {} kill-server: {}", self.socket, err.trim());
            }
        }
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}
