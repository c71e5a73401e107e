//! `cargo xtask bench`: what sentinel's probes cost the workloads they
//! watch, next to bpftrace doing comparable work.
//!
//! The machines are noisy, so configurations are interleaved round by round
//! (their order rotating) and medians are reported, never a single run.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bootstrap::{Need, bootstrap};
use crate::build::{Profile, build};
use crate::cmd::{self, describe, is_root};

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

pub struct Options {
    pub rounds: usize,
    pub seconds: f64,
    pub verbose: bool,
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
            measure_setup(&env, setup, &mut samples)?;
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
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(spawn_reader(out, marker, tx.clone(), tail.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(spawn_reader(err, marker, tx.clone(), tail.clone()));
        }
        drop(tx);
        // From here on Drop stops the child whatever goes wrong.
        let mut tracer = Tracer {
            what,
            line,
            child,
            tail,
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
/// signals the first line containing `marker`, and keeps the last lines for
/// error messages.
fn spawn_reader(
    stream: impl Read + Send + 'static,
    marker: &'static str,
    ready: Sender<()>,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> JoinHandle<()> {
    const KEEP: usize = 20;
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        let mut signalled = false;
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
            buf.clear();
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
