//! `cargo xtask bench --only recorder`: what the flight recorder costs the
//! daemon, and how much disk a day of its history takes, on the host the
//! issue names: 500 processes in 100 containers.
//!
//! The load runs throughout: 100 cgroups named as Docker's systemd driver
//! names them (`docker-<64 hex>.scope`, inside a cgroup of the bench's), five
//! processes in each. One is a `workload` with a server's name: it holds a
//! few MiB, or, in every 20th container, appends to a file at 1 MiB/s. The
//! other four are `loadgen procs` processes that fault a few pages a second
//! (the loadgen parent sits in the first container, and its 399 children
//! are moved four to a container).
//!
//! Two daemons then run one after the other (at once they would share the
//! kernel's probes and maps), with the production defaults but for paths:
//! A with `[recorder] enabled = false`, B recording every 5 s. Each gets the
//! same warm-up and the same window. The recorder's cost is B - A: it
//! includes building and trimming the frames on the main thread, which A
//! never does. The writer thread's own CPU comes from its schedstat. B's
//! store is then walked by record headers: bytes per frame stored and as
//! plain JSON, and a day of it.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use flate2::read::DeflateDecoder;
use serde_json::Value;

use super::cgroup::BenchCgroup;
use super::top::start_load;
use super::usage::{Usage, measure};
use super::{
    Env, Load, Options, READY_TIMEOUT, Tracer, clock_ticks, die_with_parent, host_procs, mib,
    range, range_with, schedstat_secs, thousands, toml_string, warn_other_tracers,
    write_daemon_config,
};
use crate::cmd;

const CONTAINERS: usize = 100;
const PER_CONTAINER: usize = 5;
/// `loadgen procs` children: with their parent and one workload in each
/// container, five processes to a container.
const LOADGEN_CHILDREN: usize = CONTAINERS * (PER_CONTAINER - 1) - 1;
/// Every this many containers, the workload writes instead of holding.
const WRITER_EVERY: usize = 20;
const WRITE_MIB_S: u32 = 1;
/// Names for the workloads, so rows are told apart as on a real host.
const COMMS: [&str; 10] = [
    "nginx",
    "postgres",
    "redis-server",
    "java",
    "python3",
    "node",
    "gunicorn",
    "envoy",
    "mysqld",
    "php-fpm",
];
/// After the daemon's ready line, before the window: probes attached, the
/// first frames recorded, rates known.
const WARMUP: Duration = Duration::from_secs(10);
/// B's `[recorder] interval`, written to its config so a change of the
/// default does not silently change what a frame is.
const INTERVAL_S: u64 = 5;
/// Segments roll every hour (`record/writer.rs`), each opening with a
/// Start record.
const SEGMENTS_PER_DAY: f64 = 24.0;
const DAY_S: f64 = 86_400.0;
/// `record/format.rs`: magic, schema, kind, codec, unix_ms, len, raw_len,
/// CRCs.
const HEADER_LEN: usize = 32;
const MAGIC: &[u8; 4] = b"SNTR";
/// The targets.
const TARGET_DAY_BYTES: f64 = 200e6;
const TARGET_PCT: f64 = 1.0;

pub fn recorder_cost(env: &Env, opts: &Options) -> Result<()> {
    warn_other_tracers();
    let window = opts.recorder_seconds;
    let slices = opts.rounds;
    let tck = clock_ticks()?;
    let interrupts = Interrupts::catch();
    eprintln!(
        "bench: recorder cost: {} processes in {CONTAINERS} containers; a daemon without the \
         recorder, then one recording every {INTERVAL_S}s, each for {window:.0}s ({slices} \
         slices) after {}s of warm-up: about {:.0}s plus attach time",
        CONTAINERS * PER_CONTAINER,
        WARMUP.as_secs(),
        2.0 * (window + WARMUP.as_secs_f64()) + 5.0,
    );

    let base = fs::read_to_string(write_daemon_config(&env.scratch)?)
        .context("reading back the daemon's config")?;
    let config = |name: &str, section: &str| -> Result<PathBuf> {
        let path = env.scratch.join(name);
        fs::write(&path, format!("{base}\n[recorder]\n{section}"))
            .with_context(|| format!("writing {}", path.display()))?;
        let mut check = Command::new(&env.sentinel);
        check
            .args(["daemon", "--config"])
            .arg(&path)
            .arg("--check-config")
            .stdout(Stdio::null());
        cmd::run(&mut check)?;
        Ok(path)
    };
    let off = config("recorder-off.toml", "enabled = false\n")?;
    let on = config(
        "recorder-on.toml",
        &format!(
            "enabled = true\ninterval = \"{INTERVAL_S}s\"\ndir = {}\n",
            toml_string(&recorder_dir(env))?
        ),
    )?;

    // Dropped in reverse: workloads and loadgen first, then the cgroups
    // kill whatever is left and go.
    let backstop = 3.0 * (window + WARMUP.as_secs_f64() + READY_TIMEOUT.as_secs_f64());
    let host = Containers::create()?;
    let mut load = start_load(env, &host.each[0], "procs", LOADGEN_CHILDREN, backstop)?;
    // Children 0..3 stay with their parent in the first container.
    for (i, &pid) in load.pids.iter().enumerate() {
        let k = (i + 1) / (PER_CONTAINER - 1);
        if k > 0 {
            host.each[k].add(pid)?;
        }
    }
    let mut workloads = Workloads::start(env, &host, backstop, &interrupts)?;
    host.check()?;

    let mut runs = Vec::new();
    for (name, config, recording) in [
        ("A: recorder off", &off, false),
        ("B: recorder on", &on, true),
    ] {
        eprintln!("bench: recorder cost, {name}");
        let ctx = RunCtx {
            env,
            config,
            recording,
            window,
            slices,
            tck,
            verbose: opts.verbose,
            interrupts: &interrupts,
        };
        runs.push(run_daemon(&ctx, name, &mut load, &mut workloads, &host)?);
    }
    let store = walk_store(
        &recorder_dir(env),
        runs[1].window_ms,
        &format!("/{}/", host.parent_name),
    )?;
    drop(workloads);
    load.stop()?;
    drop(host);
    print_recorder_table(opts, window, &runs, &store);
    Ok(())
}

/// B's store: where the default puts it, under the bench's state_dir
/// (which is emptied before each daemon).
fn recorder_dir(env: &Env) -> PathBuf {
    env.scratch.join("state/recorder")
}

/// The 100 containers, inside one cgroup of the bench's.
struct Containers {
    /// Declared first: dropped (emptied, removed) before their parent.
    each: Vec<BenchCgroup>,
    parent: BenchCgroup,
    parent_name: String,
}

impl Containers {
    fn create() -> Result<Containers> {
        let parent_name = format!("sentinel-bench-recorder-{}", std::process::id());
        let parent = BenchCgroup::create(&parent_name)?;
        let mut each = Vec::with_capacity(CONTAINERS);
        for k in 0..CONTAINERS {
            each.push(parent.child(&format!("docker-{}.scope", container_id(k)))?);
        }
        Ok(Containers {
            each,
            parent,
            parent_name,
        })
    }

    /// Five live processes in every container.
    fn check(&self) -> Result<()> {
        for (k, cg) in self.each.iter().enumerate() {
            let n = cg.pids().len();
            if n != PER_CONTAINER {
                bail!("container {k} holds {n} processes, expected {PER_CONTAINER}");
            }
        }
        if !self.parent.pids().is_empty() {
            bail!("processes were left in the bench's parent cgroup");
        }
        Ok(())
    }
}

/// A Docker-like id: 64 hex digits, different per container and per run,
/// as random-looking as real ones (they are part of what is compressed).
fn container_id(k: usize) -> String {
    let mut x = (u64::from(std::process::id()) << 32) ^ k as u64;
    (0..4)
        .map(|_| {
            // splitmix64
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            format!("{:016x}", z ^ (z >> 31))
        })
        .collect()
}

/// One `workload` per container, ready (and writing, for the writers).
/// Dropping closes their stdin, which ends them, then kills and reaps
/// them.
struct Workloads {
    procs: Vec<(Child, Option<ChildStdin>)>,
    /// Kept open: a workload that prints into a closed pipe gets EPIPE.
    _stdout: Vec<BufReader<ChildStdout>>,
}

impl Workloads {
    fn start(
        env: &Env,
        host: &Containers,
        backstop: f64,
        interrupts: &Interrupts,
    ) -> Result<Workloads> {
        let workload = env.loadgen.with_file_name("workload");
        let mut w = Workloads {
            procs: Vec::with_capacity(CONTAINERS),
            _stdout: Vec::new(),
        };
        let mut outs = Vec::with_capacity(CONTAINERS);
        let mut files = Vec::new();
        for (k, cg) in host.each.iter().enumerate() {
            let mut c = Command::new(&workload);
            c.args(["named", COMMS[k % COMMS.len()]]);
            if k % WRITER_EVERY == 0 {
                let file = env.scratch.join(format!("writer-{k}"));
                c.arg("write-rate")
                    .arg(&file)
                    .arg(WRITE_MIB_S.to_string())
                    .arg(format!("{backstop:.0}"));
                files.push(file);
            } else {
                // 1 to 16 MiB, spread over the containers.
                c.args(["hold", &(1 + k * 7 % 16).to_string()]);
            }
            c.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            die_with_parent(&mut c);
            cg.attach(&mut c)?;
            let line = cmd::describe(&c);
            let mut child = c
                .spawn()
                .with_context(|| format!("could not start `{line}`"))?;
            let out = child.stdout.take();
            let stdin = child.stdin.take();
            w.procs.push((child, stdin));
            outs.push(out.with_context(|| format!("no stdout from `{line}`"))?);
        }
        w._stdout = ready(outs, interrupts)?;
        // Open already: unlinked, their blocks go when they exit.
        for f in files {
            fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
        }
        for (k, (_, stdin)) in w.procs.iter_mut().enumerate() {
            if k % WRITER_EVERY == 0
                && let Some(stdin) = stdin
            {
                stdin
                    .write_all(b"go\n")
                    .with_context(|| format!("starting the writer in container {k}"))?;
            }
        }
        Ok(w)
    }

    fn check(&mut self) -> Result<()> {
        for (k, (child, _)) in self.procs.iter_mut().enumerate() {
            if let Some(status) = child.try_wait().context("checking on a workload")? {
                bail!("the workload of container {k} exited ({status}) during the benchmark");
            }
        }
        Ok(())
    }
}

impl Drop for Workloads {
    fn drop(&mut self) {
        for (child, stdin) in &mut self.procs {
            drop(stdin.take());
            // Gone already is fine; the cgroups catch anything missed.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for every workload's `ready` line, on a thread so that a hung one
/// fails the bench (and an interrupt stops it) instead of blocking it.
fn ready(outs: Vec<ChildStdout>, interrupts: &Interrupts) -> Result<Vec<BufReader<ChildStdout>>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut readers = Vec::with_capacity(outs.len());
        for (k, out) in outs.into_iter().enumerate() {
            let mut r = BufReader::new(out);
            let mut line = String::new();
            let got = match r.read_line(&mut line) {
                Ok(0) => Err(format!(
                    "the workload of container {k} exited before `ready`"
                )),
                Ok(_) if line.starts_with("ready") => Ok(()),
                Ok(_) => Err(format!(
                    "the workload of container {k} said {:?}",
                    line.trim()
                )),
                Err(e) => Err(format!("reading the workload of container {k}: {e}")),
            };
            if let Err(e) = got {
                // The receiver may be gone (interrupted); nothing to do.
                let _ = tx.send(Err(e));
                return;
            }
            readers.push(r);
        }
        let _ = tx.send(Ok(readers));
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        interrupts.check()?;
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(readers)) => return Ok(readers),
            Ok(Err(e)) => bail!("{e}"),
            Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(RecvTimeoutError::Timeout) => bail!(
                "the workloads were not all ready within {}s",
                READY_TIMEOUT.as_secs()
            ),
            Err(RecvTimeoutError::Disconnected) => bail!("the workloads' reader thread died"),
        }
    }
}

struct RunCtx<'a> {
    env: &'a Env,
    config: &'a Path,
    recording: bool,
    window: f64,
    slices: usize,
    tck: f64,
    verbose: bool,
    interrupts: &'a Interrupts,
}

/// One daemon's window.
struct Run {
    name: &'static str,
    usage: Usage,
    /// The main thread's CPU over the window, seconds: the watch loop, and
    /// with the recorder on, building and trimming the frames.
    main_cpu: f64,
    /// The `recorder` thread's CPU over the window, seconds.
    thread_cpu: Option<f64>,
    events: u64,
    /// The whole machine's busy share over the window, %, all cores.
    host_busy: f64,
    host_procs: usize,
    window_ms: (u64, u64),
}

fn run_daemon(
    ctx: &RunCtx,
    name: &'static str,
    load: &mut Load,
    workloads: &mut Workloads,
    host: &Containers,
) -> Result<Run> {
    // Nothing of a previous daemon's state (incidents, store) carries over.
    let state = ctx.env.scratch.join("state");
    if state.exists() {
        fs::remove_dir_all(&state).with_context(|| format!("removing {}", state.display()))?;
    }
    let mut c = Command::new(&ctx.env.sentinel);
    c.arg("daemon")
        .arg("--config")
        .arg(ctx.config)
        .args(["--log-format", "json"]);
    let mut daemon = Tracer::start("sentinel daemon", c, "sentinel daemon: watching", WARMUP)?;
    let pid = daemon.pid();
    let writer = if ctx.recording {
        Some(thread_named(pid, "recorder")?.with_context(|| {
            format!("the recording daemon (pid {pid}) has no thread named `recorder`")
        })?)
    } else {
        None
    };
    let events0 = daemon.stdout_lines();
    let (busy0, total0) = host_cpu()?;
    let main0 = schedstat_secs(pid)?;
    let writer0 = writer.map(schedstat_secs).transpose()?;
    let from_ms = unix_ms();
    let usage = measure(&[pid], ctx.window, ctx.slices, ctx.tck, ctx.verbose, || {
        ctx.interrupts.check()?;
        daemon.ensure_alive()
    })?;
    let until_ms = unix_ms();
    let main_cpu = schedstat_secs(pid)? - main0;
    let thread_cpu = match (writer, writer0) {
        (Some(tid), Some(t0)) => Some(schedstat_secs(tid)? - t0),
        _ => None,
    };
    let (busy1, total1) = host_cpu()?;
    let events = daemon.stdout_lines() - events0;
    load.check_children()?;
    workloads.check()?;
    host.check()?;
    let host_procs = host_procs()?;
    // Stopping flushes the recorder's queue before the store is read.
    daemon.stop()?;
    let [usage] = <[Usage; 1]>::try_from(usage).map_err(|_| anyhow::anyhow!("one usage"))?;
    Ok(Run {
        name,
        usage,
        main_cpu,
        thread_cpu,
        events,
        host_busy: (busy1 - busy0) / (total1 - total0).max(1.0) * 100.0,
        host_procs,
        window_ms: (from_ms, until_ms),
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The tid of `pid`'s thread with this comm.
fn thread_named(pid: u32, comm: &str) -> Result<Option<u32>> {
    let dir = format!("/proc/{pid}/task");
    for e in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let Ok(e) = e else { continue };
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        // A thread may exit while we look.
        let Ok(name) = fs::read_to_string(e.path().join("comm")) else {
            continue;
        };
        if name.trim_end() == comm {
            return Ok(Some(tid));
        }
    }
    Ok(None)
}

/// Busy and total jiffies of all cores since boot (/proc/stat's `cpu`
/// line: user nice system idle iowait irq softirq steal; guest time is in
/// user already).
fn host_cpu() -> Result<(f64, f64)> {
    let text = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no `cpu` line")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| {
            x.parse()
                .context("/proc/stat: a `cpu` field is not a number")
        })
        .collect::<Result<_>>()?;
    if v.len() < 5 {
        bail!("/proc/stat: short `cpu` line {line:?}");
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Ok(((total - idle) as f64, total as f64))
}

/// Records of one kind: how many, their bytes on disk (header included)
/// and as plain JSON (header included).
#[derive(Default, Clone, Copy)]
struct Tally {
    records: u64,
    stored: u64,
    plain: u64,
}

impl Tally {
    fn add(&mut self, len: u32, raw_len: u32) {
        self.records += 1;
        self.stored += (HEADER_LEN as u64) + u64::from(len);
        self.plain += (HEADER_LEN as u64) + u64::from(raw_len);
    }

    fn per_record(&self, bytes: u64) -> f64 {
        if self.records == 0 {
            return 0.0;
        }
        bytes as f64 / self.records as f64
    }
}

#[derive(Default)]
struct StoreSize {
    segments: u64,
    file_bytes: u64,
    starts: Tally,
    events: Tally,
    frames: Tally,
    /// Frames and events stamped within the measurement window.
    window_frames: Tally,
    window_events: Tally,
    /// The window's frames' times, Unix ms, in store order.
    frame_ms: Vec<u64>,
    /// Bytes that are no whole record of a known kind (a torn tail).
    other: u64,
    /// What the last frame in the window holds.
    last: Option<FrameCheck>,
}

/// Walks the segments by their headers, as the reader does, without
/// checking CRCs: the daemon was stopped cleanly, and sizes are the point.
fn walk_store(dir: &Path, (from, until): (u64, u64), ours: &str) -> Result<StoreSize> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("listing the recorder's store {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    paths.sort();
    let mut s = StoreSize::default();
    let mut last: Option<(u8, Vec<u8>)> = None;
    for path in paths {
        let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        s.segments += 1;
        s.file_bytes += data.len() as u64;
        let mut at = 0;
        while let Some(h) = data.get(at..at + HEADER_LEN) {
            if &h[..4] != MAGIC {
                break;
            }
            let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
            let mut ms = [0u8; 8];
            ms.copy_from_slice(&h[8..16]);
            let ms = u64::from_le_bytes(ms);
            let (len, raw_len) = (u32_at(16), u32_at(20));
            let end = at + HEADER_LEN + len as usize;
            let Some(payload) = data.get(at + HEADER_LEN..end) else {
                break;
            };
            let inside = (from..=until).contains(&ms);
            match h[6] {
                1 => s.starts.add(len, raw_len),
                2 => {
                    s.events.add(len, raw_len);
                    if inside {
                        s.window_events.add(len, raw_len);
                    }
                }
                3 => {
                    s.frames.add(len, raw_len);
                    if inside {
                        s.window_frames.add(len, raw_len);
                        s.frame_ms.push(ms);
                        last = Some((h[7], payload.to_vec()));
                    }
                }
                _ => s.other += (end - at) as u64,
            }
            at = end;
        }
        s.other += (data.len() - at) as u64;
    }
    if let Some((codec, payload)) = last {
        s.last = Some(FrameCheck::of(codec, &payload, ours)?);
    }
    Ok(s)
}

/// What a recorded frame holds of the bench's load: that the containers
/// are recognized and the rows carry real rates.
#[derive(Default)]
struct FrameCheck {
    containers: usize,
    ours: usize,
    /// Of ours: recognized as Docker containers and named `docker:<id>`.
    docker: usize,
    ours_writing: usize,
    procs: usize,
    procs_ours: usize,
    writing: usize,
    faulting: usize,
    plain_bytes: usize,
}

impl FrameCheck {
    fn of(codec: u8, stored: &[u8], ours: &str) -> Result<FrameCheck> {
        let json = match codec {
            0 => stored.to_vec(),
            1 => {
                let mut out = Vec::new();
                DeflateDecoder::new(stored)
                    .read_to_end(&mut out)
                    .context("inflating the last recorded frame")?;
                out
            }
            c => bail!("the last recorded frame has an unknown codec {c}"),
        };
        let v: Value =
            serde_json::from_slice(&json).context("parsing the last recorded frame's JSON")?;
        let positive = |x: &Value, k: &str| x[k].as_f64().is_some_and(|f| f > 0.0);
        let is_ours = |x: &Value, k: &str| x[k].as_str().is_some_and(|p| p.starts_with(ours));
        let none = Vec::new();
        let containers = v["containers"].as_array().unwrap_or(&none);
        let procs = v["procs"].as_array().unwrap_or(&none);
        let ours_rows: Vec<&Value> = containers.iter().filter(|c| is_ours(c, "path")).collect();
        Ok(FrameCheck {
            containers: containers.len(),
            ours: ours_rows.len(),
            docker: ours_rows
                .iter()
                .filter(|c| {
                    c["runtime"].as_str() == Some("docker")
                        && c["name"].as_str().is_some_and(|n| n.starts_with("docker:"))
                })
                .count(),
            ours_writing: ours_rows
                .iter()
                .filter(|c| positive(c, "write_per_s"))
                .count(),
            procs: procs.len(),
            procs_ours: procs.iter().filter(|p| is_ours(p, "cgroup")).count(),
            writing: procs.iter().filter(|p| positive(p, "write_per_s")).count(),
            faulting: procs.iter().filter(|p| positive(p, "faults_per_s")).count(),
            plain_bytes: json.len(),
        })
    }
}

/// Ctrl-C, SIGTERM and SIGHUP end the bench through its error path, so
/// every Drop (daemon, load, workloads, cgroups) runs instead of the
/// process dying with its cgroups left behind. The previous dispositions
/// come back on drop.
struct Interrupts {
    old: Vec<(libc::c_int, libc::sighandler_t)>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

impl Interrupts {
    fn catch() -> Interrupts {
        let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
        let old = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP]
            .into_iter()
            // SAFETY: the handler only stores to an atomic.
            .map(|sig| (sig, unsafe { libc::signal(sig, handler) }))
            .collect();
        Interrupts { old }
    }

    fn check(&self) -> Result<()> {
        if INTERRUPTED.load(Ordering::Relaxed) {
            bail!("interrupted; stopping the daemon and the load");
        }
        Ok(())
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        for &(sig, old) in &self.old {
            if old != libc::SIG_ERR {
                // SAFETY: restores what signal() returned for this signal.
                unsafe { libc::signal(sig, old) };
            }
        }
    }
}

fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

fn print_recorder_table(opts: &Options, window: f64, runs: &[Run], s: &StoreSize) {
    let [a, b] = runs else { return };
    println!();
    println!(
        "{:<18} {:>10} {:>9} {:>12} {:>11} {:>9} {:>9} {:>9} {:>9} {:>6} {:>9}",
        "daemon",
        "host procs",
        "CPU",
        "slices",
        "main thr.",
        "recorder",
        "RSS avg",
        "RSS max",
        "VmHWM",
        "events",
        "host busy"
    );
    let pct = |secs: f64, r: &Run| secs / r.usage.wall * 100.0;
    for r in runs {
        let u = &r.usage;
        let thread = r
            .thread_cpu
            .map_or_else(|| "-".to_string(), |t| format!("{:.3}%", pct(t, r)));
        println!(
            "{:<18} {:>10} {:>8.2}% {:>12} {:>10.2}% {:>9} {:>5.1} MiB {:>5.1} MiB {:>5.1} MiB {:>6} {:>8.0}%",
            r.name,
            thousands(r.host_procs as f64),
            u.pct(),
            range(&u.slices),
            pct(r.main_cpu, r),
            thread,
            u.rss_avg(),
            u.rss_max(),
            mib(u.hwm),
            r.events,
            r.host_busy,
        );
    }
    let cost = b.usage.pct() - a.usage.pct();
    let ratio = if a.usage.pct() > 0.0 {
        format!("{:.2}x", b.usage.pct() / a.usage.pct())
    } else {
        "-".into()
    };
    println!(
        "{:<18} {:>10} {:>+8.2}% {:>12} {:>+10.2}% {:>9} {:>+5.1} MiB {:>+5.1} MiB {:>+5.1} MiB",
        "B - A",
        "",
        cost,
        format!("B/A {ratio}"),
        pct(b.main_cpu, b) - pct(a.main_cpu, a),
        "",
        b.usage.rss_avg() - a.usage.rss_avg(),
        b.usage.rss_max() - a.usage.rss_max(),
        mib(b.usage.hwm) - mib(a.usage.hwm),
    );
    // The slices of one daemon differ by the machine's noise alone; a
    // difference between the daemons smaller than that is not the
    // recorder's.
    let spread = |u: &Usage| {
        let (lo, hi) = u
            .slices
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        hi - lo
    };
    let noise = spread(&a.usage).max(spread(&b.usage));
    let frames = s.window_frames.records;
    let per_frame_cpu = if frames > 0 {
        format!(
            "{:.1} ms of daemon CPU per frame (B - A), {:.2} ms of it on the recorder thread",
            cost / 100.0 * b.usage.wall / frames as f64 * 1000.0,
            b.thread_cpu.unwrap_or(0.0) / frames as f64 * 1000.0,
        )
    } else {
        "no frame in the window".into()
    };
    println!(
        "  the slices of either daemon differ by up to {noise:.2}% of a core: a B - A smaller \
         than that is noise; {per_frame_cpu}"
    );

    // Both run under the same load, but the machine is shared: what else
    // ran during one window and not the other shows in host busy.
    if (a.host_busy - b.host_busy).abs() > 15.0 {
        println!(
            "  note: the machine was {:.0}% busy during A and {:.0}% during B (the load is the \
             same; the rest is other work on the host): run again for a steadier B - A",
            a.host_busy, b.host_busy
        );
    }

    let expected = window / INTERVAL_S as f64;
    let stored = s.window_frames.per_record(s.window_frames.stored);
    let plain = s.window_frames.per_record(s.window_frames.plain);
    let frames_day = DAY_S / INTERVAL_S as f64;
    let starts_day = SEGMENTS_PER_DAY * s.starts.per_record(s.starts.stored);
    let events_day = s.window_events.stored as f64 / window * DAY_S;
    let day = stored * frames_day + starts_day;
    let day_plain = plain * frames_day + starts_day;
    println!(
        "\nB's store: segments {}, {} bytes on disk: {} frames, {} events, {} segment starts{}",
        s.segments,
        thousands(s.file_bytes as f64),
        s.frames.records,
        s.events.records,
        s.starts.records,
        if s.other > 0 {
            format!(", {} bytes of no whole record", thousands(s.other as f64))
        } else {
            String::new()
        },
    );
    println!(
        "{:<28} {:>8} {:>14} {:>14} {:>12}",
        "in the window", "records", "stored/record", "JSON/record", "compression"
    );
    for (name, t) in [("frames", &s.window_frames), ("events", &s.window_events)] {
        let (st, pl) = (t.per_record(t.stored), t.per_record(t.plain));
        println!(
            "{:<28} {:>8} {:>12} B {:>12} B {:>11}",
            name,
            t.records,
            thousands(st),
            thousands(pl),
            if st > 0.0 {
                format!("{:.1}x", pl / st)
            } else {
                "-".into()
            },
        );
    }
    // The day's estimate counts a frame every interval, as configured;
    // the daemon's actual pace is shown beside it.
    let gaps: Vec<f64> = s
        .frame_ms
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]) as f64 / 1000.0)
        .collect();
    let pace = if gaps.is_empty() {
        String::new()
    } else {
        format!(
            "; recorded every {:.2}s on average ({})",
            gaps.iter().sum::<f64>() / gaps.len() as f64,
            range_with(&gaps, |x| format!("{x:.2}s")),
        )
    };
    println!(
        "  {frames} frames in {window:.0}s (one every {INTERVAL_S}s configured: about \
         {expected:.0} expected){pace}"
    );
    println!(
        "a day: {} frames x {} B + {SEGMENTS_PER_DAY:.0} segment starts = {:.1} MB (as plain \
         JSON: {:.1} MB); this run's events at the same rate add {:.1} MB a day",
        thousands(frames_day),
        thousands(stored),
        mb(day),
        mb(day_plain),
        mb(events_day),
    );
    match &s.last {
        Some(f) => println!(
            "the last frame in the window ({} B of JSON): {} containers, {} of them the bench's \
             ({} recognized as docker:<id>, {} with a write rate); {} process rows, {} in the \
             bench's containers, {} with a write rate, {} with faults",
            thousands(f.plain_bytes as f64),
            f.containers,
            f.ours,
            f.docker,
            f.ours_writing,
            f.procs,
            f.procs_ours,
            f.writing,
            f.faulting,
        ),
        None => println!("no frame was recorded in the window"),
    }
    if let Some(f) = &s.last
        && (f.ours != CONTAINERS || f.docker != CONTAINERS)
    {
        println!(
            "warning: the frame should list the bench's {CONTAINERS} containers, all named \
             docker:<id>: the size above is not that of the load described"
        );
    }

    let size_met = if day + events_day < TARGET_DAY_BYTES {
        "met"
    } else {
        "MISSED"
    };
    let cpu_met = if cost < TARGET_PCT { "met" } else { "MISSED" };
    println!(
        "\ntarget: 24 h of history for 500 processes and 100 containers under {:.0} MB: {:.1} MB \
         with this run's events ({size_met}); recording under {TARGET_PCT}% of a core: {cost:+.2}% \
         (B - A; the recorder thread alone {:.3}%) ({cpu_met})",
        mb(TARGET_DAY_BYTES),
        mb(day + events_day),
        b.thread_cpu.map_or(0.0, |t| pct(t, b)),
    );
    println!(
        "\n{} processes in {CONTAINERS} docker-<id>.scope cgroups ({PER_CONTAINER} each: a \
         workload holding 1-16 MiB, or in every {WRITER_EVERY}th writing {WRITE_MIB_S} MiB/s, and \
         4 loadgen processes faulting 4 pages/s); each daemon alone (A, then B) with the \
         production defaults (1 s tick, [recorder] top_processes and bounds) for {window:.0}s \
         ({} slices) after {}s of warm-up; CPU = utime+stime of all its threads (10 ms ticks) as \
         % of one core; main thr. and recorder = schedstat (ns) of those threads; host busy = \
         all cores, /proc/stat; B - A includes building the frames on the main thread; bytes \
         per record include the 32-byte header; a day = 86,400 s / {INTERVAL_S} s frames; MB = \
         10^6 bytes.",
        CONTAINERS * PER_CONTAINER,
        opts.rounds,
        WARMUP.as_secs(),
    );
}
