//! Microbenchmark load for `cargo xtask bench`: runs one workload for a fixed
//! time and prints its rate (operations per second) as one number on stdout.
//!
//! usage: loadgen <faults|futex|syscall|dio> [--seconds S] [--dir DIR]
//!        loadgen procs [--procs N] [--seconds S]
//!        loadgen sleepers [--procs N] [--seconds S]
//!        loadgen storm [--seconds S]
//!
//! Each workload hammers one kernel path that sentinel probes, so the rate
//! under a tracer, against the rate with nothing attached, is the tracer's
//! cost on that path:
//!   faults   first-touch page faults (exceptions:page_fault_user)
//!   futex    FUTEX_WAIT/FUTEX_WAKE ping-pong (syscalls:sys_{enter,exit}_futex)
//!   syscall  getppid in a loop: the tax any enabled syscall tracepoint puts
//!            on every syscall of every process
//!   dio      O_DIRECT 64 KiB overwrites (block:block_rq_issue/complete)
//!
//! `procs` is not a rate benchmark but a busy host for the daemon-cost
//! bench: it keeps N (default 500) cheap processes alive that each fault a
//! few pages every second, so the kernel has an entry for every one of them
//! and the daemon samples them all. It prints `loadgen: procs ready` on
//! stderr once every child has faulted, runs until SIGTERM/SIGINT or
//! `--seconds`, kills and reaps its children, and prints how many were
//! still alive at the end.
//!
//! `sleepers` is `procs` with children that never wake up: each faults its
//! pages once, reports ready and then sleeps in pause(2) until it is killed.
//! It is the host full of idle processes of the `top` bench (5,000 of them
//! by default there): what a monitor pays to list processes that do
//! nothing. Same ready line, same ending.
//!
//! `storm` is the `faults` workload as a background load for the same
//! bench: one process faulting fresh anonymous pages as fast as it can (a
//! 64 MiB region touched page by page, unmapped and mapped again, so it never
//! holds more than 64 MiB). It prints `loadgen: storm ready` on stderr after
//! its first region, runs until SIGTERM/SIGINT or `--seconds`, and prints
//! its fault rate over the whole run.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, String>;

const USAGE: &str = "usage: loadgen <faults|futex|syscall|dio> [--seconds S] [--dir DIR]\n       \
                     loadgen procs [--procs N] [--seconds S]\n       \
                     loadgen sleepers [--procs N] [--seconds S]\n       \
                     loadgen storm [--seconds S]";

fn main() -> ExitCode {
    match run() {
        Ok(rate) => {
            println!("{rate:.0}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<f64> {
    let mut args = std::env::args_os().skip(1);
    let workload = args
        .next()
        .ok_or_else(|| USAGE.to_owned())?
        .to_string_lossy()
        .into_owned();
    let mut seconds = 2.0_f64;
    let mut dir = std::env::temp_dir();
    let mut procs_n = 500usize;
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{} needs a value\n{USAGE}", flag.to_string_lossy()))?;
        match flag.to_str() {
            Some("--seconds") => {
                seconds = value
                    .to_str()
                    .and_then(|v| v.parse().ok())
                    .filter(|s: &f64| *s > 0.0 && s.is_finite())
                    .ok_or_else(|| format!("--seconds {value:?}: not a positive number"))?;
            }
            Some("--dir") => dir = PathBuf::from(value),
            Some("--procs") => {
                procs_n = value
                    .to_str()
                    .and_then(|v| v.parse().ok())
                    .filter(|n: &usize| *n > 0)
                    .ok_or_else(|| format!("--procs {value:?}: not a positive integer"))?;
            }
            _ => return Err(format!("unknown option {flag:?}\n{USAGE}")),
        }
    }
    let duration = Duration::from_secs_f64(seconds);
    match workload.as_str() {
        "faults" => faults(duration),
        "futex" => futex(duration),
        "syscall" => Ok(syscall(duration)),
        "dio" => dio(duration, &dir),
        "procs" => procs(procs_n, duration, true),
        "sleepers" => procs(procs_n, duration, false),
        "storm" => storm(duration),
        other => Err(format!("unknown workload {other:?}\n{USAGE}")),
    }
}

/// Calls `chunk` (which does some work and returns how many operations it
/// did) until `duration` has passed, after an untimed warm-up that takes
/// first-run costs (lazy mappings, thread start, cold caches) out of the
/// number. The rate divides by the time actually spent, so overshooting
/// the deadline by part of a chunk does not bias it.
fn measure(duration: Duration, mut chunk: impl FnMut() -> Result<u64>) -> Result<f64> {
    let warmup = (duration / 10).min(Duration::from_millis(200));
    let start = Instant::now();
    while start.elapsed() < warmup {
        chunk()?;
    }
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < duration {
        ops += chunk()?;
    }
    Ok(ops as f64 / start.elapsed().as_secs_f64())
}

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// The region `faults` and `storm` map, touch page by page and unmap.
const FAULT_REGION: usize = 64 << 20;

fn page_size() -> Result<usize> {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .map_err(|_| os_error("sysconf(_SC_PAGESIZE)"))
}

/// Maps a fresh `FAULT_REGION`, writes one byte per page and unmaps it:
/// `FAULT_REGION / page` first-touch faults. Returns that count.
fn fault_region(page: usize) -> Result<u64> {
    // SAFETY: a fresh private anonymous mapping, touched only inside its
    // bounds and unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            FAULT_REGION,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err(os_error("mmap of 64 MiB"));
        }
        // With THP one fault would map 2 MiB and the storm would be
        // 512 times smaller; the point is many small faults.
        libc::madvise(p, FAULT_REGION, libc::MADV_NOHUGEPAGE);
        let base = p.cast::<u8>();
        for offset in (0..FAULT_REGION).step_by(page) {
            std::ptr::write_volatile(base.add(offset), 1);
        }
        if libc::munmap(p, FAULT_REGION) != 0 {
            return Err(os_error("munmap"));
        }
    }
    Ok((FAULT_REGION / page) as u64)
}

/// One operation = one first-touch page fault.
fn faults(duration: Duration) -> Result<f64> {
    let page = page_size()?;
    measure(duration, || fault_region(page))
}

/// The `faults` loop as a background load: until SIGTERM/SIGINT or
/// `duration`. Returns faults per second over the whole run.
fn storm(duration: Duration) -> Result<f64> {
    catch_stop_signals();
    let page = page_size()?;
    let start = Instant::now();
    let mut faults = fault_region(page)?;
    eprintln!(
        "loadgen: storm ready: faulting {} MiB regions",
        FAULT_REGION >> 20
    );
    while !STOP.load(Ordering::Relaxed) && start.elapsed() < duration {
        faults += fault_region(page)?;
    }
    Ok(faults as f64 / start.elapsed().as_secs_f64())
}

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: the address is a live AtomicU32; a null timeout waits forever.
    // EAGAIN (value already changed) and EINTR just send the caller back to
    // re-checking the word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: the address is a live AtomicU32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// One operation = one hand-off between the two threads. `turn` says whose
/// turn it is (0: main thread, 1: partner). Every hand-off issues a
/// FUTEX_WAKE, even with no sleeper, so the syscall count per hand-off is
/// steady rather than depending on who won a race.
fn futex(duration: Duration) -> Result<f64> {
    const PER_CHUNK: u64 = 256;
    // Both threads on one CPU (the partner inherits the mask). Across CPUs
    // every wake-up is an IPI and, on a VM, a vCPU wake-up: the rate was
    // bimodal (~35k or ~500k hand-offs/s depending on where the scheduler
    // put the threads). On one CPU a hand-off is a futex wait, a wake and a
    // context switch, which is the path that tracing taxes.
    pin_to_current_cpu()?;
    let turn = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let partner = {
        let (turn, stop) = (turn.clone(), stop.clone());
        std::thread::Builder::new()
            .name("futex-partner".into())
            .spawn(move || {
                loop {
                    while turn.load(Ordering::Acquire) != 1 {
                        futex_wait(&turn, 0);
                    }
                    // `stop` is set before the final hand-off, so it is
                    // visible once we own the turn.
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    turn.store(0, Ordering::Release);
                    futex_wake(&turn);
                }
            })
            .map_err(|e| format!("spawning the futex partner thread: {e}"))?
    };
    let pass = |turn: &AtomicU32| {
        while turn.load(Ordering::Acquire) != 0 {
            futex_wait(turn, 1);
        }
        turn.store(1, Ordering::Release);
        futex_wake(turn);
    };
    let rate = measure(duration, || {
        for _ in 0..PER_CHUNK {
            pass(&turn);
        }
        Ok(2 * PER_CHUNK)
    });
    // Hand the turn over one last time with `stop` set, so the partner
    // wakes, sees it and exits.
    while turn.load(Ordering::Acquire) != 0 {
        futex_wait(&turn, 1);
    }
    stop.store(true, Ordering::Release);
    turn.store(1, Ordering::Release);
    futex_wake(&turn);
    partner
        .join()
        .map_err(|_| "the futex partner thread panicked".to_owned())?;
    rate
}

fn pin_to_current_cpu() -> Result<()> {
    // SAFETY: plain syscalls on a zero-initialised cpu_set_t we own.
    unsafe {
        let cpu = libc::sched_getcpu();
        let cpu = usize::try_from(cpu).map_err(|_| os_error("sched_getcpu"))?;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(os_error(&format!("pinning to CPU {cpu}")));
        }
    }
    Ok(())
}

/// One operation = one getppid system call.
fn syscall(duration: Duration) -> f64 {
    const PER_CHUNK: u64 = 4096;
    let rate = measure(duration, || {
        for _ in 0..PER_CHUNK {
            // SAFETY: getppid takes no arguments and cannot fail. Through
            // libc::syscall so no libc wrapper can cache or skip it.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
        Ok(PER_CHUNK)
    });
    // measure() only fails if the chunk does, and this one cannot.
    rate.unwrap_or(0.0)
}

const DIO_FILE: u64 = 64 << 20;
const DIO_BLOCK: usize = 64 << 10;

/// A zeroed, page-aligned buffer, as O_DIRECT requires.
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> Result<AlignedBuf> {
        let layout = Layout::from_size_align(len, 4096).map_err(|e| e.to_string())?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(format!("allocating {len} bytes"));
        }
        Ok(AlignedBuf { ptr, layout })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr points to layout.size() initialised (zeroed) bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with this very layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// One operation = one 64 KiB O_DIRECT write, each a block request.
fn dio(duration: Duration, dir: &Path) -> Result<f64> {
    refuse_memory_fs(dir)?;
    let path = dir.join(format!("loadgen-dio-{}", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .map_err(|e| format!("creating {} with O_DIRECT: {e}", path.display()))?;
    // Unlinked at once: the space is freed when we exit, however we exit.
    std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;

    let buf = AlignedBuf::new(DIO_BLOCK)?;
    let write_at = |file: &File, offset: u64| -> Result<()> {
        let n = file
            .write_at(buf.as_slice(), offset)
            .map_err(|e| format!("O_DIRECT pwrite at {offset} in {}: {e}", path.display()))?;
        if n != DIO_BLOCK {
            return Err(format!("short O_DIRECT write ({n} of {DIO_BLOCK} bytes)"));
        }
        Ok(())
    };
    // Allocate every block before timing, so the timed loop is pure
    // overwrites: no block allocation or unwritten-extent conversion.
    for offset in (0..DIO_FILE).step_by(DIO_BLOCK) {
        write_at(&file, offset)?;
    }
    file.sync_all()
        .map_err(|e| format!("fsync of {}: {e}", path.display()))?;

    const PER_CHUNK: u64 = 16;
    let mut offset = 0u64;
    measure(duration, || {
        for _ in 0..PER_CHUNK {
            write_at(&file, offset)?;
            offset = (offset + DIO_BLOCK as u64) % DIO_FILE;
        }
        Ok(PER_CHUNK)
    })
}

/// On tmpfs or ramfs O_DIRECT writes never become block requests, so the
/// benchmark would measure nothing of interest.
fn refuse_memory_fs(dir: &Path) -> Result<()> {
    let c_dir = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", dir.display()))?;
    // SAFETY: statfs only writes into the zeroed struct we pass.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_dir.as_ptr(), &mut st) } != 0 {
        return Err(os_error(&format!("statfs {}", dir.display())));
    }
    // From linux/magic.h; libc has no RAMFS_MAGIC. Magics are 32-bit
    // whatever the width of f_type.
    const RAMFS_MAGIC: u32 = 0x8584_58f6;
    if st.f_type == libc::TMPFS_MAGIC || st.f_type as u32 == RAMFS_MAGIC {
        return Err(format!(
            "{} is on a memory filesystem; pass --dir on a disk-backed one",
            dir.display()
        ));
    }
    Ok(())
}

/// Set by SIGTERM/SIGINT in `procs` (the parent) and `storm`.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn catch_stop_signals() {
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe {
        let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

/// Pages each `procs` child drops and faults back in every second.
const PROCS_PAGES: usize = 4;

/// Keeps `n` processes alive, each faulting `PROCS_PAGES` pages a second
/// when `active`, else once and then sleeping. Returns how many were still
/// alive at the end (all of them, normally).
fn procs(n: usize, duration: Duration, active: bool) -> Result<f64> {
    catch_stop_signals();
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe writes two fds into the array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(os_error("pipe"));
    }
    let [ready_r, ready_w] = fds;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let page = page_size()?;
    let mut children: Vec<libc::pid_t> = Vec::with_capacity(n);
    let mut failure = None;
    for i in 0..n {
        // SAFETY: we are single-threaded, and the child only makes
        // async-signal-safe calls (procs_child never returns).
        match unsafe { libc::fork() } {
            -1 => {
                failure = Some(os_error(&format!("fork of child {} of {n}", i + 1)));
                break;
            }
            0 => unsafe { procs_child(parent, ready_r, ready_w, page, i, n, active) },
            pid => children.push(pid),
        }
    }
    // SAFETY: our own fds; the children keep their copies of the write end
    // until they have faulted once.
    unsafe { libc::close(ready_w) };
    if failure.is_none() {
        // One byte per child once it faulted its pages; EOF early means a
        // child died before that.
        let mut got = 0usize;
        let mut buf = [0u8; 512];
        while got < children.len() && !STOP.load(Ordering::Relaxed) {
            // SAFETY: reading into a buffer we own, within its length.
            let r = unsafe { libc::read(ready_r, buf.as_mut_ptr().cast(), buf.len()) };
            if r > 0 {
                got += r as usize;
            } else if r == 0 {
                failure = Some(format!("only {got} of {n} children started"));
                break;
            } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                failure = Some(os_error("reading the ready pipe"));
                break;
            }
        }
    }
    // SAFETY: our own fd.
    unsafe { libc::close(ready_r) };
    let mut alive = children.len();
    if failure.is_none() {
        eprintln!("loadgen: procs ready: {n} processes");
        let start = Instant::now();
        while !STOP.load(Ordering::Relaxed) && start.elapsed() < duration {
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: non-blocking wait for any of our children.
        let mut status = 0;
        while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {
            alive -= 1;
        }
    }
    for &pid in &children {
        // SAFETY: our own unreaped (or already reaped: then ESRCH, or a
        // zombie) children.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut status = 0;
    // SAFETY: blocking wait for our children until there are none (ECHILD).
    while unsafe { libc::waitpid(-1, &mut status, 0) } > 0 {}
    match failure {
        Some(e) => Err(e),
        None => Ok(alive as f64),
    }
}

/// One `procs` child: async-signal-safe calls only, never returns.
///
/// # Safety
/// Must be called in a freshly forked child of a single-threaded parent.
unsafe fn procs_child(
    parent: libc::pid_t,
    ready_r: libc::c_int,
    ready_w: libc::c_int,
    page: usize,
    index: usize,
    n: usize,
    active: bool,
) -> ! {
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::close(ready_r);
        // Dies with the parent, whatever kills it; the check catches a
        // parent that died before the prctl.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != parent {
            libc::_exit(1);
        }
        let len = PROCS_PAGES * page;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            libc::_exit(1);
        }
        libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
        let touch = || {
            for k in 0..PROCS_PAGES {
                std::ptr::write_volatile(p.cast::<u8>().add(k * page), 1);
            }
        };
        touch();
        let one = 1u8;
        if libc::write(ready_w, (&raw const one).cast(), 1) != 1 {
            libc::_exit(1);
        }
        libc::close(ready_w);
        if !active {
            loop {
                libc::pause();
            }
        }
        // Spread the wake-ups over the second instead of 500 at once.
        let phase_ns = (index as u64 * 1_000_000_000 / n as u64) as libc::c_long;
        let phase = libc::timespec {
            tv_sec: 0,
            tv_nsec: phase_ns,
        };
        libc::nanosleep(&phase, std::ptr::null_mut());
        let second = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        loop {
            // Drop the pages so touching them faults again.
            libc::madvise(p, len, libc::MADV_DONTNEED);
            touch();
            libc::nanosleep(&second, std::ptr::null_mut());
        }
    }
}
