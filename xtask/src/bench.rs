//! `cargo xtask bench`: what sentinel's probes cost the workloads they
//! watch, next to bpftrace doing comparable work, then what `sentinel
//! daemon` itself costs to run: idle, on a host with many processes, and
//! during a page-fault storm; then what `sentinel top` costs to keep open
//! on a host with thousands of processes, next to procps top ([`top`]);
//! then what the flight recorder costs the daemon in CPU, memory and disk
//! ([`recorder`]).
//!
//! The machines are noisy, so configurations are interleaved round by round
//! (their order rotating) and medians are reported, never a single run.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bootstrap::{Need, bootstrap};
use crate::build::{Profile, build};
use crate::cmd::{self, describe, is_root};

mod cgroup;
mod recorder;
mod top;
mod usage;

/// Attaching can take a while on a loaded 2-core machine (BTF parsing,
/// verifier); beyond this something is wrong.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// bpftrace prints "Attaching N probes..." before it attaches.
const BPFTRACE_SETTLE: Duration = Duration::from_secs(1);
/// sentinel prints its marker once attached; the pause lets its start-up
/// work (reading /proc, first map scan) finish before we measure.
const SENTINEL_SETTLE: Duration = Duration::from_millis(500);

/// Syscall-tracepoint cost comes from enabling `syscalls:` tracepoints at
/// all, so the futex script doubles as the peer for the `syscall` bench.
/// Builtins only (pid, tid, nsecs): under kernel lockdown bpftrace cannot
/// read tracepoint `args` (bpf_probe_read_kernel is denied).
const BPFTRACE_FUTEX: &str = "tracepoint:syscalls:sys_enter_futex { @s[tid] = nsecs; } \
     tracepoint:syscalls:sys_exit_futex /@s[tid]/ { @w[pid] = hist(nsecs - @s[tid]); delete(@s[tid]); }";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Bench {
    Faults,
    Futex,
    Syscall,
    Dio,
}

const BENCHES: [Bench; 4] = [Bench::Faults, Bench::Futex, Bench::Syscall, Bench::Dio];

impl Bench {
    /// Also loadgen's subcommand name.
    fn name(self) -> &'static str {
        match self {
            Bench::Faults => "faults",
            Bench::Futex => "futex",
            Bench::Syscall => "syscall",
            Bench::Dio => "dio",
        }
    }

    fn bpftrace(self) -> &'static str {
        match self {
            Bench::Faults => "tracepoint:exceptions:page_fault_user { @[pid] = count(); }",
            Bench::Futex | Bench::Syscall => BPFTRACE_FUTEX,
            Bench::Dio => "tracepoint:block:block_rq_issue { @[pid] = count(); }",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Setup {
    Baseline,
    Sentinel,
    Bpftrace,
}

const SETUPS: [Setup; 3] = [Setup::Baseline, Setup::Sentinel, Setup::Bpftrace];

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Baseline => "baseline",
            Setup::Sentinel => "sentinel",
            Setup::Bpftrace => "bpftrace",
        }
    }
}

/// The two halves of the benchmark, for `--only`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Probe overhead on the loadgen microbenchmarks.
    Micro,
    /// `sentinel daemon`'s own CPU and memory: idle, on a busy host and
    /// during a page-fault storm.
    Daemon,
    /// `sentinel top`'s own CPU and memory with thousands of processes,
    /// standalone and attached, next to procps top.
    Top,
    /// The flight recorder: the daemon's CPU and memory with and without
    /// it, and its store's size per day, with 500 processes in 100
    /// containers.
    Recorder,
}

pub struct Options {
    pub rounds: usize,
    pub seconds: f64,
    pub verbose: bool,
    /// Both parts when None.
    pub only: Option<Part>,
    /// Processes the busy-host scenario keeps alive.
    pub procs: usize,
    /// Idle processes the top scenario keeps alive.
    pub top_procs: usize,
    /// How long each daemon of the recorder bench is measured.
    pub recorder_seconds: f64,
}

struct Env {
    sentinel: PathBuf,
    loadgen: PathBuf,
    scratch: PathBuf,
    seconds: f64,
    verbose: bool,
    shown_sentinel_log: Cell<bool>,
}

type Samples = BTreeMap<(Bench, Setup), Vec<f64>>;

pub fn bench(opts: Options) -> Result<()> {
    if !is_root() {
        bail!(
            "the benchmark attaches eBPF programs (sentinel's and bpftrace's) and needs root; \
             run it as root, e.g. `sudo -E env PATH=\"$PATH\" cargo xtask bench`"
        );
    }
    if opts.rounds == 0 || !(opts.seconds > 0.0 && opts.seconds.is_finite()) {
        bail!("--rounds must be at least 1 and --seconds a positive number");
    }
    if opts.procs == 0 || opts.top_procs == 0 {
        bail!("--procs and --top-procs must be at least 1");
    }
    if !(opts.recorder_seconds >= 10.0 && opts.recorder_seconds.is_finite()) {
        bail!("--recorder-seconds must be at least 10 (two frames)");
    }
    let tc = bootstrap(Need::Everything)?;
    let art = build(&tc, Profile::Release)?;

    let mut loadgen = cmd::cargo();
    loadgen
        .current_dir(&art.root)
        .env("SENTINEL_EBPF_OBJ", &art.ebpf_obj)
        .args([
            "build",
            "--release",
            "--package",
            "sentinel-tests",
            "--bin",
            "loadgen",
            "--bin",
            "workload",
        ]);
    cmd::run(&mut loadgen)?;
    ensure_tracefs()?;

    // Under target/ (a disk filesystem), not /tmp, which may be tmpfs where
    // O_DIRECT writes never reach the block layer.
    let scratch = ScratchDir::create(art.target_dir.join("bench-scratch"))?;
    let env = Env {
        sentinel: art.sentinel,
        loadgen: art.target_dir.join("release/loadgen"),
        scratch: scratch.0.clone(),
        seconds: opts.seconds,
        verbose: opts.verbose,
        shown_sentinel_log: Cell::new(false),
    };

    let runs = |part: Part| opts.only.is_none_or(|only| only == part);
    if runs(Part::Micro) {
        micro(&env, &opts)?;
    }
    if runs(Part::Daemon) {
        daemon_cost(&env, &opts)?;
    }
    if runs(Part::Top) {
        top::top_cost(&env, &opts)?;
    }
    if runs(Part::Recorder) {
        recorder::recorder_cost(&env, &opts)?;
    }
    Ok(())
}

fn micro(env: &Env, opts: &Options) -> Result<()> {
    warn_other_tracers();
    let load_secs = opts.rounds as f64 * (BENCHES.len() * SETUPS.len()) as f64 * opts.seconds;
    eprintln!(
        "bench: {} rounds x {} benchmarks x {} setups x {}s: about {:.0}s of load plus attach time",
        opts.rounds,
        BENCHES.len(),
        SETUPS.len(),
        opts.seconds,
        load_secs
    );
    let mut samples = Samples::new();
    for round in 0..opts.rounds {
        // Rotating the order spreads slow drifts (thermal, page cache,
        // neighbours) evenly over the setups.
        let order: Vec<Setup> = (0..SETUPS.len())
            .map(|k| SETUPS[(round + k) % SETUPS.len()])
            .collect();
        let names: Vec<&str> = order.iter().map(|s| s.name()).collect();
        eprintln!(
            "bench: round {}/{}: {}",
            round + 1,
            opts.rounds,
            names.join(", ")
        );
        for setup in order {
            measure_setup(env, setup, &mut samples)?;
        }
    }
    print_table(&samples, opts.rounds, opts.seconds);
    if opts.verbose {
        print_raw(&samples);
    }
    Ok(())
}

fn measure_setup(env: &Env, setup: Setup, samples: &mut Samples) -> Result<()> {
    let mut record = |bench: Bench, tracer: Option<&mut Tracer>| -> Result<()> {
        let ops = run_load(env, bench)?;
        // A tracer that died mid-run would make this a baseline sample.
        if let Some(tracer) = tracer {
            tracer.ensure_alive()?;
        }
        if env.verbose {
            eprintln!(
                "  {:<9} {:<8} {ops:>14.0} ops/s",
                setup.name(),
                bench.name()
            );
        }
        samples.entry((bench, setup)).or_default().push(ops);
        Ok(())
    };
    match setup {
        Setup::Baseline => {
            for bench in BENCHES {
                record(bench, None)?;
            }
        }
        Setup::Sentinel => {
            // All probes attach at once, as in production; one start serves
            // every benchmark.
            let mut c = Command::new(&env.sentinel);
            c.args(["snapshot", "--duration", "3600s"]);
            let mut tracer = Tracer::start("sentinel", c, "observing for", SENTINEL_SETTLE)?;
            // Its start-up warnings say which probes did not attach, without
            // which its numbers cannot be read. Once is enough.
            if !env.shown_sentinel_log.replace(true) {
                let log = tracer.output();
                if !log.is_empty() {
                    eprintln!("bench: sentinel's start-up output:\n  {}", log.join("\n  "));
                }
            }
            for bench in BENCHES {
                record(bench, Some(&mut tracer))?;
            }
            tracer.stop()?;
        }
        Setup::Bpftrace => {
            for bench in BENCHES {
                let mut c = Command::new("bpftrace");
                c.args(["-e", bench.bpftrace()]);
                let mut tracer = Tracer::start("bpftrace", c, "Attaching", BPFTRACE_SETTLE)?;
                record(bench, Some(&mut tracer))?;
                tracer.stop()?;
            }
        }
    }
    Ok(())
}

fn run_load(env: &Env, bench: Bench) -> Result<f64> {
    let mut c = Command::new(&env.loadgen);
    c.arg(bench.name())
        .arg("--seconds")
        .arg(env.seconds.to_string())
        .arg("--dir")
        .arg(&env.scratch)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut c);
    let line = describe(&c);
    let mut child = c
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    // loadgen stops itself after --seconds; the margin covers start-up and
    // a slow last chunk, and a hang (say a lost futex wake) still ends.
    let limit = Duration::from_secs_f64(env.seconds * 3.0 + 30.0);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for `{line}`"))?
        {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{line}` did not finish within {}s", limit.as_secs());
        }
        thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out)
            .with_context(|| format!("reading the output of `{line}`"))?;
    }
    if let Some(mut s) = child.stderr.take() {
        // Only used to explain a failure; unreadable stderr is not one.
        let _ = s.read_to_string(&mut err);
    }
    if !status.success() {
        bail!("`{line}` failed ({status}): {}", err.trim());
    }
    let ops: f64 = out
        .trim()
        .parse()
        .with_context(|| format!("`{line}` printed {out:?}, expected ops/s as one number"))?;
    if !(ops.is_finite() && ops > 0.0) {
        bail!("`{line}` reported {ops} ops/s");
    }
    Ok(ops)
}

/// Children get SIGTERM if xtask dies (killed by a CI timeout, say), so no
/// tracer stays attached and skews the machine afterwards. Ctrl-C already
/// reaches them: they share our process group.
fn die_with_parent(c: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn ensure_tracefs() -> Result<()> {
    // bpftrace needs tracefs for tracepoints and a fresh machine does not
    // mount it (sentinel mounts it itself).
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    cmd::run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
}

/// A background tracer (sentinel or bpftrace) that is stopped however the
/// benchmark ends.
struct Tracer {
    what: &'static str,
    line: String,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Lines it printed on stdout so far (the daemon's events).
    stdout_lines: Arc<AtomicU64>,
    readers: Vec<JoinHandle<()>>,
    reaped: bool,
}

impl Tracer {
    fn start(
        what: &'static str,
        mut c: Command,
        marker: &'static str,
        settle: Duration,
    ) -> Result<Tracer> {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut c);
        let line = describe(&c);
        eprintln!("$ {line} &");
        let mut child = c
            .spawn()
            .with_context(|| format!("could not start `{line}`"))?;
        let (tx, ready) = mpsc::channel();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let stdout_lines = Arc::new(AtomicU64::new(0));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(spawn_reader(
                out,
                marker,
                tx.clone(),
                tail.clone(),
                Some(stdout_lines.clone()),
            ));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(spawn_reader(err, marker, tx.clone(), tail.clone(), None));
        }
        drop(tx);
        // From here on Drop stops the child whatever goes wrong.
        let mut tracer = Tracer {
            what,
            line,
            child,
            tail,
            stdout_lines,
            readers,
            reaped: false,
        };
        match ready.recv_timeout(READY_TIMEOUT) {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => bail!(
                "`{}` did not print {marker:?} within {}s{}",
                tracer.line,
                READY_TIMEOUT.as_secs(),
                tracer.tail_text()
            ),
            // Both pipes closed without the marker: the process is gone.
            Err(RecvTimeoutError::Disconnected) => {
                let status = tracer.reap()?;
                bail!(
                    "`{}` exited ({status}) before printing {marker:?}{}",
                    tracer.line,
                    tracer.tail_text()
                );
            }
        }
        thread::sleep(settle);
        tracer.ensure_alive()?;
        Ok(tracer)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout_lines(&self) -> u64 {
        self.stdout_lines.load(Ordering::Relaxed)
    }

    fn ensure_alive(&mut self) -> Result<()> {
        let exited = self
            .child
            .try_wait()
            .with_context(|| format!("checking on `{}`", self.line))?;
        if let Some(status) = exited {
            self.reaped = true;
            bail!(
                "{} exited during the benchmark ({status}); its samples would be wrong{}",
                self.what,
                self.tail_text()
            );
        }
        Ok(())
    }

    fn stop(mut self) -> Result<()> {
        self.reap()?;
        for reader in std::mem::take(&mut self.readers) {
            // A reader only ends at EOF; a panic there lost log lines only.
            let _ = reader.join();
        }
        Ok(())
    }

    /// SIGTERM first so bpftrace and sentinel detach and exit cleanly;
    /// SIGKILL if they do not. Their exit status is of no interest.
    fn reap(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            self.reaped = true;
            return Ok(status);
        }
        // The pid cannot be reused before we wait() on it.
        let pid = libc::pid_t::try_from(self.child.id())
            .with_context(|| format!("pid of `{}` out of range", self.line))?;
        // SAFETY: plain syscall on a child we have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let asked = Instant::now();
        while asked.elapsed() < STOP_TIMEOUT {
            if let Some(status) = self.child.try_wait()? {
                self.reaped = true;
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "bench: {} ignored SIGTERM for {}s, killing it",
            self.what,
            STOP_TIMEOUT.as_secs()
        );
        self.child
            .kill()
            .with_context(|| format!("killing `{}`", self.line))?;
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for `{}`", self.line))?;
        self.reaped = true;
        Ok(status)
    }

    /// The last lines it printed (stdout and stderr, interleaved).
    fn output(&self) -> Vec<String> {
        let tail = match self.tail.lock() {
            Ok(tail) => tail,
            Err(poisoned) => poisoned.into_inner(),
        };
        tail.iter().cloned().collect()
    }

    fn tail_text(&self) -> String {
        let lines = self.output();
        if lines.is_empty() {
            return String::new();
        }
        format!("; its last output:\n  {}", lines.join("\n  "))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if !self.reaped {
            // Already failing (or unwinding): a cleanup error would only
            // hide the original one.
            let _ = self.reap();
        }
    }
}

/// Drains one pipe for the child's whole life (a full pipe would stall it),
/// signals the first line containing `marker`, keeps the last lines for
/// error messages and counts lines in `lines`.
fn spawn_reader(
    stream: impl Read + Send + 'static,
    marker: &'static str,
    ready: Sender<()>,
    tail: Arc<Mutex<VecDeque<String>>>,
    lines: Option<Arc<AtomicU64>>,
) -> JoinHandle<()> {
    const KEEP: usize = 20;
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        let mut signalled = false;
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
            buf.clear();
            if let Some(lines) = &lines {
                lines.fetch_add(1, Ordering::Relaxed);
            }
            if !signalled && line.contains(marker) {
                signalled = true;
                // The receiver may have given up already; nothing to do then.
                let _ = ready.send(());
            }
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == KEEP {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    })
}

/// Removed on every exit path; loadgen unlinks its file as soon as it has
/// opened it, so only the directory can be left.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create(path: PathBuf) -> Result<ScratchDir> {
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating scratch directory {}", path.display()))?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("bench: could not remove {}: {e}", self.0.display());
        }
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// Extra time per operation relative to the baseline, in percent.
fn overhead(baseline: f64, ops: f64) -> f64 {
    (baseline / ops - 1.0) * 100.0
}

fn print_table(samples: &Samples, rounds: usize, seconds: f64) {
    let get = |b: Bench, s: Setup| samples.get(&(b, s)).map(Vec::as_slice).unwrap_or(&[]);
    println!();
    println!(
        "{:<9} {:>15} {:>8} {:>15} {:>9} {:>15} {:>9}",
        "benchmark",
        "baseline ops/s",
        "spread",
        "sentinel ops/s",
        "overhead",
        "bpftrace ops/s",
        "overhead"
    );
    for bench in BENCHES {
        let base = get(bench, Setup::Baseline);
        let (sen, bpf) = (get(bench, Setup::Sentinel), get(bench, Setup::Bpftrace));
        if base.is_empty() || sen.is_empty() || bpf.is_empty() {
            continue;
        }
        let b = median(base);
        let (lo, hi) = base
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        let (s, t) = (median(sen), median(bpf));
        println!(
            "{:<9} {b:>15.0} {:>7.1}% {s:>15.0} {:>+8.1}% {t:>15.0} {:>+8.1}%",
            bench.name(),
            (hi - lo) / b * 100.0,
            overhead(b, s),
            overhead(b, t),
        );
    }
    println!(
        "\nmedians of {rounds} rounds of {seconds}s each; overhead = extra time per operation \
         (baseline ops/s / ops/s - 1);\nspread = (max - min) / median of the baseline rounds, \
         a gauge of the noise; overheads below it are not significant."
    );
}

fn print_raw(samples: &Samples) {
    println!("\nraw ops/s per round:");
    for ((bench, setup), values) in samples {
        let row: Vec<String> = values.iter().map(|v| format!("{v:.0}")).collect();
        println!("{:<9} {:<9} {}", bench.name(), setup.name(), row.join(" "));
    }
}

// ---------------------------------------------------------------------------
// Daemon cost: `sentinel daemon`'s own CPU and memory.
//
// Scenario A runs the daemon on the host as it is. Scenario B adds `loadgen
// procs`: N processes that each fault a few pages a second, so the kernel
// has an entry for every one and each tick the daemon reads all their maps
// and /proc entries. Scenario C adds `loadgen storm` instead: one process
// faulting fresh pages as fast as it can (the `faults` microbenchmark run
// as a load), the worst case for the fault probes and for RSS tracking. In
// B and C the load's own CPU and fault rate, measured in the same run
// without the daemon (half before it starts, half after it stops, so a
// drift shows in neither), are the baseline the daemon is set against.

/// The interval the bench configures, written to a config file so a change
/// of the default does not silently change what a tick is.
const DAEMON_INTERVAL: Duration = Duration::from_secs(1);
/// After the ready line: probes attached, first samples taken and
/// /proc caches warm before measuring.
const DAEMON_WARMUP: Duration = Duration::from_secs(5);
/// Shortest measurement, whatever --rounds x --seconds says: with a 1 s
/// tick, anything shorter is a handful of ticks and 10 ms clock ticks of
/// CPU time.
const DAEMON_MIN_WINDOW: f64 = 30.0;
/// After loadgen's ready line: every child has faulted once; let the
/// fork storm's aftermath (page reclaim, scheduler) settle.
const LOAD_SETTLE: Duration = Duration::from_secs(2);
/// What each `loadgen procs` child does a second (loadgen's PROCS_PAGES).
const LOAD_FAULTS_PER_SEC: u32 = 4;
/// The region `loadgen storm` maps, faults in and unmaps (loadgen's
/// FAULT_REGION): the most it holds at once.
const STORM_REGION_MIB: u32 = 64;
/// RSS is sampled this often during a window.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// `sun_path` holds 108 bytes, the terminating NUL included.
const MAX_SOCKET_PATH: usize = 107;

/// The daemon's config: the bench's tick, and everything a production
/// daemon (or another run) could hold kept under the scratch directory.
/// Metrics listen on an ephemeral loopback port, so the endpoint runs and
/// the page is rendered every tick as in production, without colliding.
fn write_daemon_config(scratch: &Path) -> Result<PathBuf> {
    let config = scratch.join("daemon.toml");
    let socket = scratch.join("api/sentinel.sock");
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        bail!(
            "the daemon's API socket {} would be longer than a Unix socket path can be \
             ({MAX_SOCKET_PATH} bytes); use a shorter target directory",
            socket.display()
        );
    }
    let text = format!(
        "[daemon]\ninterval = \"{}ms\"\nstate_dir = {}\n\n[api]\nsocket = {}\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        DAEMON_INTERVAL.as_millis(),
        toml_string(&scratch.join("state"))?,
        toml_string(&socket)?,
    );
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    Ok(config)
}

/// `path` as a TOML basic string.
fn toml_string(path: &Path) -> Result<String> {
    let s = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    if s.chars().any(char::is_control) {
        bail!("{s:?} contains control characters");
    }
    Ok(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// One scenario's results: the daemon's window and, with a load, the load's
/// windows without the daemon.
struct Scenario {
    name: String,
    daemon: Window,
    load: Option<(LoadKind, Vec<Window>)>,
}

fn daemon_cost(env: &Env, opts: &Options) -> Result<()> {
    warn_other_tracers();
    let window = (opts.rounds as f64 * opts.seconds).max(DAEMON_MIN_WINDOW);
    let slices = opts.rounds;
    let config = write_daemon_config(&env.scratch)?;
    let tck = clock_ticks()?;
    let page_kib = page_kib()?;
    eprintln!(
        "bench: daemon cost: {window:.0}s per measurement ({slices} slices) after {}s warm-up; \
         idle host, then {} processes, then a page-fault storm, each without, with and again \
         without the daemon: about {:.0}s plus attach time",
        DAEMON_WARMUP.as_secs(),
        opts.procs,
        5.0 * window + 3.0 * DAEMON_WARMUP.as_secs_f64() + 2.0 * LOAD_SETTLE.as_secs_f64()
    );
    let mut check = Command::new(&env.sentinel);
    check
        .args(["daemon", "--config"])
        .arg(&config)
        .arg("--check-config")
        .stdout(Stdio::null());
    cmd::run(&mut check)?;

    let mut shown_log = false;
    let mut start_daemon = || -> Result<Tracer> {
        let mut c = Command::new(&env.sentinel);
        c.arg("daemon")
            .arg("--config")
            .arg(&config)
            .args(["--log-format", "json"]);
        let tracer = Tracer::start(
            "sentinel daemon",
            c,
            "sentinel daemon: watching",
            DAEMON_WARMUP,
        )?;
        if !std::mem::replace(&mut shown_log, true) {
            let log = tracer.output();
            if !log.is_empty() {
                eprintln!(
                    "bench: the daemon's start-up output:\n  {}",
                    log.join("\n  ")
                );
            }
        }
        Ok(tracer)
    };

    // A: the host as it is.
    eprintln!("bench: daemon cost, idle host");
    let mut daemon = start_daemon()?;
    let idle = measure_window(Some(&mut daemon), None, window, slices, tck, env.verbose)?;
    daemon.stop()?;
    let mut scenarios = vec![Scenario {
        name: "idle host".into(),
        daemon: idle,
        load: None,
    }];

    // B and C: a load, without, with, and again without the daemon.
    for kind in [LoadKind::Procs(opts.procs), LoadKind::Storm] {
        eprintln!("bench: daemon cost, {}", kind.name());
        let mut load = Load::start(env, kind, 3.0 * window)?;
        let half = (slices / 2).max(1);
        let before = measure_window(None, Some(&mut load), window / 2.0, half, tck, env.verbose)?;
        let mut daemon = start_daemon()?;
        let with = measure_window(
            Some(&mut daemon),
            Some(&mut load),
            window,
            slices,
            tck,
            env.verbose,
        )?;
        daemon.stop()?;
        let after = measure_window(None, Some(&mut load), window / 2.0, half, tck, env.verbose)?;
        if kind == LoadKind::Storm {
            let hwm = status_kib(load.tracer.pid(), "VmHWM")?;
            eprintln!("bench: the storm's peak RSS (VmHWM): {:.1} MiB", mib(hwm));
        }
        load.stop()?;
        scenarios.push(Scenario {
            name: kind.name(),
            daemon: with,
            load: Some((kind, vec![before, after])),
        });
    }

    print_daemon_table(opts, window, page_kib, &scenarios);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LoadKind {
    /// `loadgen procs`: this many processes, each faulting a few pages a
    /// second.
    Procs(usize),
    /// `loadgen storm`: one process faulting fresh pages as fast as it can.
    Storm,
}

impl LoadKind {
    fn name(self) -> String {
        match self {
            LoadKind::Procs(n) => format!("busy host (+{n} procs)"),
            LoadKind::Storm => "page-fault storm".into(),
        }
    }
}

/// A `loadgen` load and the pids of its processes (its children, then
/// itself).
struct Load {
    tracer: Tracer,
    pids: Vec<u32>,
    /// Children that must stay alive throughout.
    children: usize,
}

impl Load {
    fn start(env: &Env, kind: LoadKind, run_for: f64) -> Result<Load> {
        let mut c = Command::new(&env.loadgen);
        // --seconds is only a backstop: we stop it with SIGTERM.
        let backstop = run_for + 2.0 * (READY_TIMEOUT.as_secs_f64() + DAEMON_WARMUP.as_secs_f64());
        let (marker, children) = match kind {
            LoadKind::Procs(n) => {
                c.args(["procs", "--procs"]).arg(n.to_string());
                ("procs ready", n)
            }
            LoadKind::Storm => {
                c.arg("storm");
                ("storm ready", 0)
            }
        };
        c.arg("--seconds").arg(format!("{backstop:.0}"));
        let tracer = Tracer::start("loadgen", c, marker, LOAD_SETTLE)?;
        let mut load = Load {
            tracer,
            pids: Vec::new(),
            children,
        };
        load.pids = load.check_children()?;
        load.pids.push(load.tracer.pid());
        Ok(load)
    }

    /// The children's pids, failing unless all of them are alive.
    fn check_children(&mut self) -> Result<Vec<u32>> {
        self.tracer.ensure_alive()?;
        if self.children == 0 {
            return Ok(Vec::new());
        }
        let parent = self.tracer.pid();
        let children = children_of(parent)?;
        let live: Vec<u32> = children
            .iter()
            .filter(|(_, state)| *state != 'Z' && *state != 'X')
            .map(|(pid, _)| *pid)
            .collect();
        if live.len() != self.children {
            bail!(
                "loadgen (pid {parent}) has {} live children, expected {}",
                live.len(),
                self.children
            );
        }
        Ok(live)
    }

    /// Precise CPU time of all its processes, in seconds. From schedstat
    /// (nanoseconds): the sum of 500 utime+stime values, each truncated to
    /// a 10 ms tick, would be mostly rounding.
    fn cpu(&self) -> Result<f64> {
        let mut total = 0.0;
        for &pid in &self.pids {
            total += schedstat_secs(pid)
                .with_context(|| format!("a loadgen process (pid {pid}) is gone"))?;
        }
        Ok(total)
    }

    /// Minor faults of all its processes so far (minflt of /proc/PID/stat).
    fn faults(&self) -> Result<f64> {
        let mut total = 0.0;
        for &pid in &self.pids {
            total += stat_u64(pid, 7)
                .with_context(|| format!("a loadgen process (pid {pid}) is gone"))?
                as f64;
        }
        Ok(total)
    }

    fn stop(self) -> Result<()> {
        self.tracer.stop()
    }
}

#[derive(Default)]
struct Window {
    /// Wall-clock length, seconds.
    wall: f64,
    /// Daemon CPU (utime+stime) over the window, seconds.
    daemon_cpu: f64,
    /// Daemon CPU per slice, % of one core.
    daemon_slices: Vec<f64>,
    load_cpu: f64,
    load_slices: Vec<f64>,
    /// The load's minor faults over the window.
    load_faults: f64,
    /// Its fault rate per slice, faults/s.
    load_fault_slices: Vec<f64>,
    /// VmRSS samples, KiB.
    rss: Vec<u64>,
    /// VmHWM at the end, KiB.
    hwm: u64,
    events: u64,
    /// Processes on the host at the end.
    host_procs: usize,
}

impl Window {
    fn daemon_pct(&self) -> f64 {
        self.daemon_cpu / self.wall * 100.0
    }

    fn load_pct(&self) -> f64 {
        self.load_cpu / self.wall * 100.0
    }

    fn load_fault_rate(&self) -> f64 {
        self.load_faults / self.wall
    }

    fn rss_avg(&self) -> f64 {
        if self.rss.is_empty() {
            return 0.0;
        }
        mib(self.rss.iter().sum::<u64>()) / self.rss.len() as f64
    }

    fn rss_max(&self) -> f64 {
        mib(self.rss.iter().copied().max().unwrap_or(0))
    }
}

/// Measures for `window` seconds, split in `slices`, whatever of the daemon
/// and the load is given; both must stay alive throughout.
fn measure_window(
    mut daemon: Option<&mut Tracer>,
    mut load: Option<&mut Load>,
    window: f64,
    slices: usize,
    tck: f64,
    verbose: bool,
) -> Result<Window> {
    let daemon_cpu = |d: &Option<&mut Tracer>| -> Result<f64> {
        match d {
            Some(d) => Ok(stat_cpu_ticks(d.pid())? / tck),
            None => Ok(0.0),
        }
    };
    let load_cpu = |l: &Option<&mut Load>| -> Result<(f64, f64)> {
        match l {
            Some(l) => Ok((l.cpu()?, l.faults()?)),
            None => Ok((0.0, 0.0)),
        }
    };
    let mut w = Window::default();
    let events0 = daemon.as_ref().map_or(0, |d| d.stdout_lines());
    let t0 = Instant::now();
    let (d0, (l0, f0)) = (daemon_cpu(&daemon)?, load_cpu(&load)?);
    let (mut t_prev, mut d_prev, mut l_prev, mut f_prev) = (0.0, d0, l0, f0);
    for slice in 1..=slices {
        let end = window * slice as f64 / slices as f64;
        loop {
            let now = t0.elapsed().as_secs_f64();
            if now >= end {
                break;
            }
            thread::sleep(Duration::from_secs_f64(end - now).min(SAMPLE_EVERY));
            if let Some(d) = daemon.as_mut() {
                d.ensure_alive()?;
                w.rss.push(status_kib(d.pid(), "VmRSS")?);
            }
            if let Some(l) = load.as_mut() {
                l.tracer.ensure_alive()?;
            }
        }
        let (d, (l, f)) = (daemon_cpu(&daemon)?, load_cpu(&load)?);
        let t = t0.elapsed().as_secs_f64();
        let dt = t - t_prev;
        w.daemon_slices.push((d - d_prev) / dt * 100.0);
        w.load_slices.push((l - l_prev) / dt * 100.0);
        w.load_fault_slices.push((f - f_prev) / dt);
        if verbose {
            let mut line = format!("  slice {slice}/{slices}: {dt:.1}s");
            if daemon.is_some() {
                line += &format!(" daemon {:.2}%", (d - d_prev) / dt * 100.0);
            }
            if load.is_some() {
                line += &format!(
                    " load {:.2}% {:.0} faults/s",
                    (l - l_prev) / dt * 100.0,
                    (f - f_prev) / dt
                );
            }
            eprintln!("{line}");
        }
        (t_prev, d_prev, l_prev, f_prev) = (t, d, l, f);
    }
    w.wall = t_prev;
    w.daemon_cpu = d_prev - d0;
    w.load_cpu = l_prev - l0;
    w.load_faults = f_prev - f0;
    if let Some(d) = daemon.as_ref() {
        w.hwm = status_kib(d.pid(), "VmHWM")?;
        w.events = d.stdout_lines() - events0;
    }
    if let Some(l) = load.as_mut() {
        l.check_children()?;
    }
    w.host_procs = host_procs()?;
    Ok(w)
}

fn clock_ticks() -> Result<f64> {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t <= 0 {
        bail!("sysconf(_SC_CLK_TCK) failed");
    }
    Ok(t as f64)
}

fn page_kib() -> Result<f64> {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p <= 0 {
        bail!("sysconf(_SC_PAGESIZE) failed");
    }
    Ok(p as f64 / 1024.0)
}

/// The fields of /proc/PID/stat after the command (which may hold spaces
/// and parentheses): field 3 (state) is [0], utime (14) is [11].
fn stat_fields(pid: u32) -> Result<Vec<String>> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let rest = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("{path}: no ')' in {text:?}"))?;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

/// Field `i` of [`stat_fields`] as a number.
fn stat_field(f: &[String], pid: u32, i: usize) -> Result<u64> {
    f.get(i)
        .and_then(|v| v.parse::<u64>().ok())
        .with_context(|| format!("/proc/{pid}/stat: field {} unreadable", i + 3))
}

/// One numeric field of /proc/PID/stat, indexed as in [`stat_fields`]
/// (minflt, field 10, is [7]).
fn stat_u64(pid: u32, i: usize) -> Result<u64> {
    stat_field(&stat_fields(pid)?, pid, i)
}

/// utime + stime, in clock ticks, all threads included.
fn stat_cpu_ticks(pid: u32) -> Result<f64> {
    let f = stat_fields(pid)?;
    Ok((stat_field(&f, pid, 11)? + stat_field(&f, pid, 12)?) as f64)
}

/// Time on CPU of the (single-threaded) process, seconds.
fn schedstat_secs(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{path}: unexpected {text:?}"))?;
    Ok(ns as f64 / 1e9)
}

/// A `Key:   123 kB` line of /proc/PID/status, in KiB.
fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{path}: no {key} line"))
}

fn proc_pids() -> Result<Vec<u32>> {
    Ok(std::fs::read_dir("/proc")
        .context("listing /proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

fn host_procs() -> Result<usize> {
    Ok(proc_pids()?.len())
}

/// Children of `parent` with their state letter. /proc/PID/task/*/children
/// needs CONFIG_PROC_CHILDREN, so this scans every process's ppid.
fn children_of(parent: u32) -> Result<Vec<(u32, char)>> {
    let mut out = Vec::new();
    for pid in proc_pids()? {
        // Processes come and go while we scan.
        let Ok(f) = stat_fields(pid) else { continue };
        let state = f.first().and_then(|s| s.chars().next());
        let ppid = f.get(1).and_then(|p| p.parse::<u32>().ok());
        if let (Some(state), Some(ppid)) = (state, ppid)
            && ppid == parent
        {
            out.push((pid, state));
        }
    }
    Ok(out)
}

/// Other sentinel or bpftrace processes (parallel test runs, say) add their
/// probes' cost to every workload measured here: the numbers are then an
/// upper bound. Worth a line in the log.
fn warn_other_tracers() {
    let Ok(pids) = proc_pids() else { return };
    let others: Vec<String> = pids
        .into_iter()
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let comm = comm.trim();
            matches!(comm, "sentinel" | "bpftrace").then(|| format!("{comm} ({pid})"))
        })
        .collect();
    if !others.is_empty() {
        eprintln!(
            "bench: warning: other tracers are running and their probes load every workload: {}",
            others.join(", ")
        );
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// min-max of percentages: 0.00-0.17%.
fn range(values: &[f64]) -> String {
    match min_max(values) {
        Some((lo, hi)) => format!("{lo:.2}-{hi:.2}%"),
        None => "-".into(),
    }
}

fn range_with(values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    match min_max(values) {
        Some((lo, hi)) => format!("{}-{}", fmt(lo), fmt(hi)),
        None => "-".into(),
    }
}

fn min_max(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    Some(
        values
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x))),
    )
}

/// `x` rounded, with thousands separators: 612,345.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

/// The daemon's effect on one of the load's measures, judged against the
/// baseline's own slice-to-slice noise. `cost_if_higher`: whether the
/// probes' cost would raise the value (CPU) or lower it (a rate).
fn verdict(base_slices: &[f64], with: f64, cost_if_higher: bool) -> &'static str {
    let Some((lo, hi)) = min_max(base_slices) else {
        return "no baseline";
    };
    if (lo..=hi).contains(&with) {
        "within the baseline's noise"
    } else if (with > hi) == cost_if_higher {
        "the probes' cost on the load"
    } else {
        // Probes cannot make the load cheaper or faster: the machine's
        // noise can.
        "better than the baseline: noise"
    }
}

fn print_daemon_table(opts: &Options, window: f64, page_kib: f64, scenarios: &[Scenario]) {
    let tick = DAEMON_INTERVAL.as_secs_f64();
    println!();
    println!(
        "{:<22} {:>10} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>6} {:>13}",
        "daemon scenario",
        "host procs",
        "daemon CPU",
        "slices",
        "per tick",
        "RSS avg",
        "RSS max",
        "VmHWM",
        "events",
        "load faults/s"
    );
    for s in scenarios {
        let w = &s.daemon;
        let faults = if s.load.is_some() {
            thousands(w.load_fault_rate())
        } else {
            "-".into()
        };
        println!(
            "{:<22} {:>10} {:>9.2}% {:>12} {:>6.2} ms {:>5.1} MiB {:>5.1} MiB {:>5.1} MiB {:>6} {faults:>13}",
            s.name,
            w.host_procs,
            w.daemon_pct(),
            range(&w.daemon_slices),
            w.daemon_cpu / (w.wall / tick) * 1000.0,
            w.rss_avg(),
            w.rss_max(),
            mib(w.hwm),
            w.events,
        );
    }
    for s in scenarios {
        let Some((kind, base)) = &s.load else {
            continue;
        };
        let with = &s.daemon;
        let base_wall: f64 = base.iter().map(|w| w.wall).sum();
        let base_cpu: f64 = base.iter().map(|w| w.load_cpu).sum();
        let base_faults: f64 = base.iter().map(|w| w.load_faults).sum();
        let base_pct = base_cpu / base_wall * 100.0;
        let base_rate = base_faults / base_wall;
        let cpu_slices: Vec<f64> = base.iter().flat_map(|w| w.load_slices.clone()).collect();
        let rate_slices: Vec<f64> = base
            .iter()
            .flat_map(|w| w.load_fault_slices.clone())
            .collect();
        let what = match kind {
            LoadKind::Procs(n) => {
                format!("{n} processes, {LOAD_FAULTS_PER_SEC} page faults/s each")
            }
            LoadKind::Storm => format!(
                "one process mapping {STORM_REGION_MIB} MiB, faulting it in page by page and \
                 unmapping it, as fast as it can: {:.0} MiB/s of fresh anonymous memory without \
                 the daemon, at most {STORM_REGION_MIB} MiB resident",
                base_rate * page_kib / 1024.0
            ),
        };
        let change = |with: f64, base: f64| (with / base - 1.0) * 100.0;
        println!("\n{}: {what}. Without the daemon -> with it:", s.name);
        println!(
            "  load CPU        {base_pct:.2}% of a core (slices {}) -> {:.2}% ({:+.1}%, {})",
            range(&cpu_slices),
            with.load_pct(),
            change(with.load_pct(), base_pct),
            verdict(&cpu_slices, with.load_pct(), true),
        );
        println!(
            "  faults/s        {} (slices {}) -> {} ({:+.1}%, {})",
            thousands(base_rate),
            range_with(&rate_slices, thousands),
            thousands(with.load_fault_rate()),
            change(with.load_fault_rate(), base_rate),
            verdict(&rate_slices, with.load_fault_rate(), false),
        );
        if base_faults > 0.0 && with.load_faults > 0.0 {
            let per_fault = |cpu: f64, faults: f64| cpu / faults * 1e9;
            let (b, w) = (
                per_fault(base_cpu, base_faults),
                per_fault(with.load_cpu, with.load_faults),
            );
            println!(
                "  CPU per fault   {} ns -> {} ns ({:+.1}%)",
                thousands(b),
                thousands(w),
                change(w, b)
            );
        }
        println!(
            "  daemon CPU / load CPU without the daemon = {:.3}x; daemon share of the CPU \
             (daemon + load) = {:.1}%",
            with.daemon_pct() / base_pct,
            with.daemon_cpu / (with.daemon_cpu + with.load_cpu) * 100.0,
        );
    }
    println!(
        "\n{window:.0}s per measurement after {}s of warm-up, daemon ticking every {tick}s \
         (metrics page rendered every tick, API socket open); daemon CPU = utime+stime (10 ms \
         clock ticks) as % of one core, slices = min-max over {} slices; per tick = CPU time / \
         ticks;\nRSS avg/max = mean and maximum of the daemon's VmRSS sampled every 1 s in the \
         window; VmHWM = its peak RSS since it started: a transient at start-up (load-time BTF \
         parsing, program loading), not reached again while it ticks;\nload CPU from schedstat \
         (ns) and load faults from minflt in /proc/PID/stat, of all the load's processes, \
         measured half before the daemon started and half after it stopped; load faults/s in \
         the table = during the daemon's window.",
        DAEMON_WARMUP.as_secs(),
        opts.rounds
    );
}
