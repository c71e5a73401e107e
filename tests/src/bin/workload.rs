//! Real workloads for sentinel's end-to-end tests (std + libc only).
//!
//! Protocol on stdin/stdout (see tests/src/workload.rs): set up, print
//! `ready` (or `unsupported: <why>`), wait for a `go` line, do the measured
//! work, print `done [key=value ...]`, then stay alive until stdin closes or
//! the test kills us, so sentinel still lists the process at the end of its
//! window. Failures print `error: <why>` and exit 2.
//!
//! Subcommands:
//!   faults <MiB>                 touch every page of a fresh anonymous mapping
//!   rss <MiB>                    same, then hold it (for rss_bytes vs VmRSS)
//!   deadlock                     two threads deadlock on two pthread mutexes
//!   direct-write <path> <MiB>    O_DIRECT writes of aligned 1 MiB buffers, then fsync
//!   buffered-write <path> <MiB>  buffered 1 MiB writes, then fsync
//!   oom <MiB>                    allocate+touch 1 MiB at a time up to MiB (expects to be OOM-killed)
//!   forkstorm <forks> <execs>    short-lived children that touch pages and _exit, then fork+exec /bin/true
//!   exit-writers <dir> <n>       n children that each rewrite a file and exit without closing it
//!   write-phases <path> <MiB>    two rounds of buffered writes + fsync, each after a "go" ("phase1" between)
//!   grow <MiB/s> <max MiB>       after go, touch fresh anonymous memory at that pace (100 ms steps) up to
//!                                max, then hold it; prints "progress mib=N" each second (may be OOM-killed)
//!   grow-forked <n> <MiB/s> <max MiB>  n forked children (ready before "ready pids=P1,P2,..."), each growing
//!                                as grow does after go (quietly; "child pid=P done ..." at max), then holding;
//!                                the parent grows nothing, prints "released children=n" and lingers;
//!                                children die with it (PR_SET_PDEATHSIG)
//!   hold <MiB>                   allocate and touch before ready, then hold it flat
//!   pool <workers>               idle thread pool: workers block on a Condvar for jobs that never come
//!                                (all waiting before ready); after go the main thread hashes in short
//!                                bursts with ~10 ms sleeps, prints "running", and runs until stdin closes
//!   write-rate <path> <MiB/s> <s>  after go, buffered appends to path paced in 100 ms steps for s seconds,
//!                                then "done bytes=N" and linger (deletes nothing)
//!   threads <n>                  n extra threads that park forever; "ready threads=T" (T from
//!                                /proc/self/status, main thread included) once all exist
//!   idle                         nothing (harness self-tests)
//!   named <comm> <subcommand...> sets its comm (PR_SET_NAME, at most 15 bytes) to <comm>, then runs
//!                                the subcommand: a name no other process has, for tests that find
//!                                their workload by name (`sentinel top`'s filter)

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::ffi::CString;
use std::io::{BufRead, Write};
use std::sync::{Arc, Barrier, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&args)
}

fn run(args: &[&str]) {
    match args {
        ["named", comm, rest @ ..] => {
            set_comm(comm);
            run(rest)
        }
        ["faults", mib] => faults(parse(mib)),
        ["rss", mib] => faults(parse(mib)),
        ["deadlock"] => deadlock(),
        ["direct-write", path, mib] => write_file(path, parse(mib), true),
        ["buffered-write", path, mib] => write_file(path, parse(mib), false),
        ["oom", mib] => oom(parse(mib)),
        ["forkstorm", forks, execs] => forkstorm(parse(forks), parse(execs)),
        ["exit-writers", dir, n] => exit_writers(dir, parse(n)),
        ["write-phases", path, mib] => write_phases(path, parse(mib)),
        ["grow", rate, max] => grow(parse(rate), parse(max)),
        ["grow-forked", n, rate, max] => grow_forked(parse(n), parse(rate), parse(max)),
        ["hold", mib] => hold(parse(mib)),
        ["pool", workers] => pool(parse(workers)),
        ["write-rate", path, rate, secs] => write_rate(path, parse(rate), parse(secs)),
        ["threads", n] => threads(parse(n)),
        ["idle"] => {
            say("ready");
            wait_go();
            say("done");
            linger()
        }
        _ => die(&format!("unknown arguments {args:?}; see the module docs")),
    }
}

/// The kernel keeps 15 bytes of a comm and silently cuts the rest; a test
/// that looked for the full name would never find it, so refuse instead.
fn set_comm(comm: &str) {
    if comm.is_empty() || comm.len() > 15 {
        die(&format!("comm {comm:?} must be 1 to 15 bytes"));
    }
    let c = CString::new(comm).unwrap_or_else(|_| die("comm contains NUL"));
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    if unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) } != 0 {
        die(&format!("prctl(PR_SET_NAME, {comm:?}): {}", errno()));
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn die(msg: &str) -> ! {
    say(&format!("error: {msg}"));
    std::process::exit(2)
}

fn parse(s: &str) -> usize {
    s.parse()
        .unwrap_or_else(|_| die(&format!("not a number: {s:?}")))
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Blocks until a `go` line; exits quietly when stdin closes first.
fn wait_go() {
    let mut line = String::new();
    loop {
        line.clear();
        match std::io::stdin().lock().read_line(&mut line) {
            Ok(0) | Err(_) => std::process::exit(0),
            Ok(_) if line.trim() == "go" => return,
            Ok(_) => {}
        }
    }
}

/// Stays alive (blocked in read(2), not in a futex) until stdin closes.
fn linger() -> ! {
    let mut line = String::new();
    loop {
        line.clear();
        match std::io::stdin().lock().read_line(&mut line) {
            Ok(0) | Err(_) => std::process::exit(0),
            Ok(_) => {}
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// A fresh private anonymous mapping, with transparent huge pages off so
/// every base page faults on its own (hosts with THP `always` would
/// otherwise fault 2 MiB at a time).
fn map_anon(len: usize) -> *mut u8 {
    // SAFETY: anonymous mapping, no aliasing; checked for MAP_FAILED.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            die(&format!("mmap {len} bytes: {}", errno()));
        }
        libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
        p.cast()
    }
}

/// Writes one byte per page: one page fault each.
fn touch(p: *mut u8, len: usize) {
    let page = page_size();
    for off in (0..len).step_by(page) {
        // SAFETY: `off < len` and `p` maps `len` writable bytes.
        unsafe { std::ptr::write_volatile(p.add(off), 1) };
    }
}

fn faults(mib: usize) {
    let len = mib * MIB;
    let p = map_anon(len);
    say(&format!("ready pages={}", len / page_size()));
    wait_go();
    touch(p, len);
    say(&format!(
        "done pages={} bytes={len} page_size={}",
        len / page_size(),
        page_size()
    ));
    linger()
}

/// A glibc mutex with default attributes (PTHREAD_MUTEX_NORMAL), the kind
/// sentinel must decode owners of, not a Rust std mutex.
struct PthreadMutex(UnsafeCell<libc::pthread_mutex_t>);
// SAFETY: pthread mutexes are made to be shared between threads.
unsafe impl Sync for PthreadMutex {}

static MUTEX_A: PthreadMutex = PthreadMutex(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER));
static MUTEX_B: PthreadMutex = PthreadMutex(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER));

fn deadlock() {
    say("ready");
    wait_go();
    let barrier = Arc::new(Barrier::new(2));
    let (tx, rx) = mpsc::channel();
    for (name, first, second) in [('a', &MUTEX_A, &MUTEX_B), ('b', &MUTEX_B, &MUTEX_A)] {
        let barrier = Arc::clone(&barrier);
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("deadlock-{name}"))
            .spawn(move || {
                // SAFETY: gettid and pthread_mutex_lock on static,
                // initialised mutexes.
                unsafe {
                    let tid = libc::gettid();
                    libc::pthread_mutex_lock(first.0.get());
                    let _ = tx.send((name, tid));
                    barrier.wait();
                    // Never returns: the other thread holds `second` and
                    // waits for `first`.
                    libc::pthread_mutex_lock(second.0.get());
                }
                die("deadlock thread acquired both mutexes")
            })
            .unwrap_or_else(|e| die(&format!("spawning thread: {e}")));
    }
    drop(tx);
    let (mut tid_a, mut tid_b) = (0, 0);
    for _ in 0..2 {
        match rx.recv() {
            Ok(('a', tid)) => tid_a = tid,
            Ok((_, tid)) => tid_b = tid,
            Err(_) => die("a deadlock thread died"),
        }
    }
    // Report only once both threads sleep in futex() on the other mutex's
    // lock word (the first word of pthread_mutex_t), not on the barrier.
    let addr_a = MUTEX_A.0.get() as u64;
    let addr_b = MUTEX_B.0.get() as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(in_futex_on(tid_a, addr_b) && in_futex_on(tid_b, addr_a)) {
        if Instant::now() > deadline {
            die(&format!(
                "threads {tid_a}/{tid_b} not both blocked on the mutexes after 30 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    say(&format!(
        "done tid_a={tid_a} tid_b={tid_b} mutex_a={addr_a:#x} mutex_b={addr_b:#x}"
    ));
    linger()
}

/// True when thread `tid` of this process is inside futex(uaddr, ...).
fn in_futex_on(tid: libc::pid_t, uaddr: u64) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return false;
    };
    let mut fields = text.split_whitespace();
    let nr = fields.next().and_then(|f| f.parse::<i64>().ok());
    let arg0 = fields
        .next()
        .and_then(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16).ok());
    nr == Some(libc::SYS_futex) && arg0 == Some(uaddr)
}

fn write_file(path: &str, mib: usize, direct: bool) {
    let cpath = CString::new(path).unwrap_or_else(|_| die("path contains NUL"));
    let mut flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC;
    if direct {
        flags |= libc::O_DIRECT;
    }
    // SAFETY: plain open(2) with a NUL-terminated path.
    let fd = unsafe { libc::open(cpath.as_ptr(), flags, 0o644) };
    if fd < 0 {
        let e = errno();
        if direct && e.raw_os_error() == Some(libc::EINVAL) {
            say(&format!("unsupported: O_DIRECT open of {path}: {e}"));
            linger();
        }
        die(&format!("open {path}: {e}"));
    }
    // O_DIRECT wants buffers aligned to the logical block size; a page is
    // enough for every block device.
    let layout = std::alloc::Layout::from_size_align(MIB, page_size()).expect("valid layout");
    // SAFETY: non-zero size; checked for null.
    let buf = unsafe { std::alloc::alloc(layout) };
    if buf.is_null() {
        die("allocating the write buffer");
    }
    // SAFETY: `buf` holds MIB bytes.
    let data = unsafe { std::slice::from_raw_parts_mut(buf, MIB) };
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1;
    }
    say("ready");
    wait_go();
    for _ in 0..mib {
        let mut off = 0;
        while off < MIB {
            // SAFETY: writes from our own buffer.
            let n = unsafe { libc::write(fd, data[off..].as_ptr().cast(), MIB - off) };
            if n < 0 {
                let e = errno();
                if direct && off == 0 && e.raw_os_error() == Some(libc::EINVAL) {
                    say(&format!("unsupported: O_DIRECT write to {path}: {e}"));
                    linger();
                }
                die(&format!("write {path}: {e}"));
            }
            off += n as usize;
        }
    }
    // SAFETY: fd is ours.
    if unsafe { libc::fsync(fd) } != 0 {
        die(&format!("fsync {path}: {}", errno()));
    }
    unsafe { libc::close(fd) };
    say(&format!("done bytes={}", mib * MIB));
    linger()
}

fn oom(max_mib: usize) {
    say("ready");
    wait_go();
    for i in 1..=max_mib {
        let p = map_anon(MIB);
        touch(p, MIB);
        say(&format!("allocated mib={i}"));
    }
    // Only reached when no limit stopped us.
    say(&format!("done survived=1 mib={max_mib}"));
    linger()
}

fn forkstorm(forks: usize, execs: usize) {
    const BATCH: usize = 16;
    const PAGES: usize = 4;
    let page = page_size();
    let scratch = vec![0u8; PAGES * page].leak().as_mut_ptr();
    let true_bin = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| die("no /bin/true"));
    let true_c = CString::new(true_bin).expect("no NUL");
    let argv = [true_c.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    say("ready");
    wait_go();

    let mut failures = 0;
    let mut run = |total: usize, exec: bool| {
        let mut pids = Vec::with_capacity(BATCH);
        let mut started = 0;
        while started < total {
            pids.clear();
            for _ in 0..BATCH.min(total - started) {
                // SAFETY: single-threaded process; the child only touches
                // memory that existed before the fork and calls
                // async-signal-safe functions before _exit.
                match unsafe { libc::fork() } {
                    -1 => die(&format!("fork: {}", errno())),
                    0 => unsafe {
                        if exec {
                            libc::execve(true_c.as_ptr(), argv.as_ptr(), envp.as_ptr());
                            libc::_exit(127);
                        }
                        for i in 0..PAGES {
                            std::ptr::write_volatile(scratch.add(i * page), 1);
                        }
                        libc::_exit(0);
                    },
                    pid => pids.push(pid),
                }
            }
            for &pid in &pids {
                let mut status = 0;
                // SAFETY: reaping our own child.
                let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                    failures += 1;
                }
            }
            started += pids.len();
        }
    };
    run(forks, false);
    run(execs, true);
    say(&format!(
        "done forks={forks} execs={execs} failures={failures}"
    ));
    linger()
}

/// Children that rewrite an existing file through O_TRUNC and exit without
/// closing it: ext4 flushes such a file when it is released, which happens
/// during exit, after the process's exit was traced. Those late writes must
/// not re-create the process's map entry.
fn exit_writers(dir: &str, n: usize) {
    let data = vec![b'x'; 64 * 1024];
    let paths: Vec<CString> = (0..n)
        .map(|i| CString::new(format!("{dir}/f{i}")).expect("no NUL in path"))
        .collect();
    for p in &paths {
        let path = p.to_str().unwrap_or_default();
        if let Err(e) = std::fs::write(path, &data) {
            die(&format!("writing {path}: {e}"));
        }
    }
    say("ready");
    wait_go();
    let mut failures = 0;
    for p in &paths {
        // SAFETY: single-threaded; the child calls only async-signal-safe
        // functions on memory that existed before the fork.
        match unsafe { libc::fork() } {
            -1 => die(&format!("fork: {}", errno())),
            0 => unsafe {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_TRUNC);
                if fd < 0 {
                    libc::_exit(1);
                }
                libc::write(fd, data.as_ptr().cast(), data.len());
                libc::_exit(0);
            },
            pid => {
                let mut status = 0;
                // SAFETY: reaping our own child.
                let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                    failures += 1;
                }
            }
        }
    }
    say(&format!("done writers={n} failures={failures}"));
    linger()
}

/// Two rounds of `mib` MiB of buffered writes into `path` (each followed by
/// fsync), the second after another "go": between them the test moves this
/// process to another cgroup. Prints "phase1" after the first round.
fn write_phases(path: &str, mib: usize) {
    let chunk = vec![0x5au8; MIB];
    let mut file =
        std::fs::File::create(path).unwrap_or_else(|e| die(&format!("create {path}: {e}")));
    let mut round = |label: &str| {
        for _ in 0..mib {
            if let Err(e) = file.write_all(&chunk) {
                die(&format!("write {path}: {e}"));
            }
        }
        if let Err(e) = file.sync_all() {
            die(&format!("fsync {path}: {e}"));
        }
        say(label);
    };
    say("ready");
    wait_go();
    round("phase1");
    wait_go();
    round(&format!("done bytes={}", mib * MIB));
    linger()
}

/// The pace of the paced modes.
const STEP: Duration = Duration::from_millis(100);

/// Sleeps until `start + n * STEP` (at once when already late).
fn sleep_until_step(start: Instant, n: u32) {
    let at = start + STEP * n;
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// After go, touches a fresh anonymous mapping at `mib_per_s` in 100 ms
/// steps (each step catches up with the schedule, so the average rate holds
/// even when a step runs late) until `max_mib` are resident, then holds it.
fn grow(mib_per_s: usize, max_mib: usize) {
    if mib_per_s == 0 || max_mib == 0 {
        die("grow needs a non-zero rate and maximum");
    }
    let len = max_mib * MIB;
    // Reserved up front; only touched pages are charged.
    let p = map_anon(len);
    say("ready");
    wait_go();
    let seconds = grow_paced(p, len, mib_per_s, true);
    say(&format!("done mib={max_mib} seconds={seconds:.1}"));
    linger()
}

/// The body of `grow`: touches `len` bytes of the mapping at `p` at
/// `mib_per_s`, starting now; with `progress`, prints "progress mib=N" each
/// second. Returns the seconds it took.
fn grow_paced(p: *mut u8, len: usize, mib_per_s: usize, progress: bool) -> f64 {
    let page = page_size();
    let rate = (mib_per_s * MIB) as f64;
    let start = Instant::now();
    let mut touched = 0usize;
    let mut reported = 0usize;
    let mut step = 0u32;
    while touched < len {
        step += 1;
        sleep_until_step(start, step);
        let due = (start.elapsed().as_secs_f64() * rate) as usize;
        let target = (due / page * page).min(len);
        if target > touched {
            // SAFETY: `touched < target <= len`, inside the mapping.
            touch(unsafe { p.add(touched) }, target - touched);
            touched = target;
        }
        let secs = start.elapsed().as_secs() as usize;
        if progress && secs > reported {
            reported = secs;
            say(&format!("progress mib={}", touched / MIB));
        }
    }
    start.elapsed().as_secs_f64()
}

/// `n` forked children, each doing what `grow` does (same cgroup, own
/// mapping), released together by the parent's go. The parent grows
/// nothing itself: it forks, waits until every child has its mapping and
/// its parent-death signal, prints "ready pids=P1,P2,...", and on go writes
/// one byte per child into the pipe they block on, prints
/// "released children=N" and lingers. Each child prints
/// "child pid=P done mib=M seconds=S" when it has grown to its max, then
/// holds it until killed; children die with the parent (PR_SET_PDEATHSIG),
/// and exited children are reaped by the kernel (SIGCHLD ignored).
fn grow_forked(n: usize, mib_per_s: usize, max_mib: usize) {
    if n == 0 || mib_per_s == 0 || max_mib == 0 {
        die("grow-forked needs non-zero children, rate and maximum");
    }
    let len = max_mib * MIB;
    let pipe = || {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into `fds`.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            die(&format!("pipe: {}", errno()));
        }
        fds
    };
    // Children block reading `go_fds[0]` (one byte each, EOF means the
    // parent is gone) and report being set up by writing to `up_fds[1]`.
    let go_fds = pipe();
    let up_fds = pipe();
    // SAFETY: getpid and signal have no preconditions; ignoring SIGCHLD
    // makes the kernel reap exited (OOM-killed) children.
    let parent = unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        libc::getpid()
    };
    let mut pids = Vec::with_capacity(n);
    for _ in 0..n {
        // SAFETY: single-threaded process; the child continues on its own
        // copy of it and never returns into the parent's code.
        match unsafe { libc::fork() } {
            -1 => die(&format!("fork: {}", errno())),
            0 => grow_child(parent, go_fds, up_fds, len, mib_per_s, max_mib),
            pid => pids.push(pid),
        }
    }
    // SAFETY: closing the ends only the children use.
    unsafe {
        libc::close(go_fds[0]);
        libc::close(up_fds[1]);
    }
    let mut up = [0u8; 1];
    for i in 0..n {
        // SAFETY: reads one byte into `up`.
        let r = unsafe { libc::read(up_fds[0], up.as_mut_ptr().cast(), 1) };
        if r != 1 {
            die(&format!("only {i} of {n} children set up ({})", errno()));
        }
    }
    let list: Vec<String> = pids.iter().map(i32::to_string).collect();
    say(&format!("ready pids={}", list.join(",")));
    wait_go();
    let go = vec![b'g'; n];
    // SAFETY: writes `n` bytes from `go`; n bytes fit in a pipe at once.
    if unsafe { libc::write(go_fds[1], go.as_ptr().cast(), n) } != n as isize {
        die(&format!("releasing the children: {}", errno()));
    }
    say(&format!("released children={n}"));
    linger()
}

/// A child of `grow_forked`: maps its memory, arms the parent-death signal,
/// reports in, waits for its byte, grows and holds. Never returns.
fn grow_child(
    parent: libc::pid_t,
    go_fds: [libc::c_int; 2],
    up_fds: [libc::c_int; 2],
    len: usize,
    mib_per_s: usize,
    max_mib: usize,
) -> ! {
    // SAFETY: prctl/getppid/close/write/read on our own fds and buffers.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            die(&format!("prctl(PR_SET_PDEATHSIG): {}", errno()));
        }
        // The parent may have died before the signal was armed.
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        libc::close(go_fds[1]);
        libc::close(up_fds[0]);
    }
    let p = map_anon(len);
    let mut byte = [b'u'; 1];
    // SAFETY: as above.
    unsafe {
        if libc::write(up_fds[1], byte.as_ptr().cast(), 1) != 1 {
            die(&format!("reporting in: {}", errno()));
        }
        libc::close(up_fds[1]);
        if libc::read(go_fds[0], byte.as_mut_ptr().cast(), 1) != 1 {
            // EOF: the parent is gone without a go.
            libc::_exit(0);
        }
    }
    let seconds = grow_paced(p, len, mib_per_s, false);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    say(&format!(
        "child pid={pid} done mib={max_mib} seconds={seconds:.1}"
    ));
    loop {
        // SAFETY: pause has no preconditions; only a signal ends it.
        unsafe { libc::pause() };
    }
}

/// Allocates and touches `mib` before ready, then holds it flat.
fn hold(mib: usize) {
    let len = mib * MIB;
    let p = map_anon(len);
    touch(p, len);
    say(&format!("ready bytes={len}"));
    wait_go();
    say("done");
    linger()
}

type Job = Box<dyn FnOnce() + Send>;

struct JobQueue {
    jobs: VecDeque<Job>,
    /// Workers that have gone idle at least once.
    idle: usize,
}

/// An idle thread pool: `workers` threads wait on a Condvar for jobs that
/// never come, while the main thread keeps making CPU progress. Nothing
/// here is stuck; a detector that calls it a deadlock or a hang is wrong.
fn pool(workers: usize) {
    let shared = Arc::new((
        Mutex::new(JobQueue {
            jobs: VecDeque::new(),
            idle: 0,
        }),
        Condvar::new(),
    ));
    let (tid_tx, tid_rx) = mpsc::channel();
    for i in 0..workers {
        let shared = Arc::clone(&shared);
        let tid_tx = tid_tx.clone();
        std::thread::Builder::new()
            .name(format!("pool-{i}"))
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let _ = tid_tx.send(unsafe { libc::gettid() });
                // The main thread collects until every sender is gone.
                drop(tid_tx);
                let (queue, available) = &*shared;
                let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                q.idle += 1;
                loop {
                    if let Some(job) = q.jobs.pop_front() {
                        drop(q);
                        job();
                        q = queue.lock().unwrap_or_else(|p| p.into_inner());
                        continue;
                    }
                    q = available.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            })
            .unwrap_or_else(|e| die(&format!("spawning worker {i}: {e}")));
    }
    drop(tid_tx);
    let tids: Vec<libc::pid_t> = tid_rx.iter().collect();
    if tids.len() != workers {
        die("a pool worker died");
    }
    // Every worker went idle under the lock (so it is inside wait, which
    // released it), and each sits in futex(2) as the kernel sees it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let idle = shared.0.lock().unwrap_or_else(|p| p.into_inner()).idle;
        if idle == workers && tids.iter().all(|&t| in_syscall(t, libc::SYS_futex)) {
            break;
        }
        if Instant::now() > deadline {
            die(&format!(
                "pool workers not all waiting after 30 s ({idle}/{workers} idle)"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    say(&format!("ready workers={workers}"));
    wait_go();
    // Stay alive only as long as the test does (stdin), while main computes.
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(|| linger())
        .unwrap_or_else(|e| die(&format!("spawning the stdin thread: {e}")));
    say("running");
    let mut data = vec![0u8; 256 * 1024];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    loop {
        // ~2 ms of hashing, then ~10 ms of sleep: steady, visible progress
        // at a fraction of a core.
        let burst = Instant::now();
        while burst.elapsed() < Duration::from_millis(2) {
            for &b in &data {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            let i = (hash as usize) % data.len();
            data[i] ^= hash as u8;
        }
        std::hint::black_box(hash);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True when thread `tid` of this process is inside syscall `nr`.
fn in_syscall(tid: libc::pid_t, nr: i64) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<i64>().ok())
        == Some(nr)
}

/// After go, appends to `path` with buffered writes at `mib_per_s`, in
/// 100 ms steps that catch up with the schedule, for `seconds`; then
/// prints done and lingers, idle.
fn write_rate(path: &str, mib_per_s: usize, seconds: usize) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| die(&format!("open {path}: {e}")));
    let chunk: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 | 1).collect();
    let total = mib_per_s * seconds * MIB;
    let rate = (mib_per_s * MIB) as f64;
    say("ready");
    wait_go();
    let start = Instant::now();
    let mut written = 0usize;
    let mut step = 0u32;
    while written < total {
        let due = ((start.elapsed().as_secs_f64() * rate) as usize).min(total);
        while written < due {
            let n = (due - written).min(MIB);
            if let Err(e) = file.write_all(&chunk[..n]) {
                die(&format!("write {path}: {e}"));
            }
            written += n;
        }
        if written < total {
            step += 1;
            sleep_until_step(start, step);
        }
    }
    say(&format!(
        "done bytes={written} seconds={:.1}",
        start.elapsed().as_secs_f64()
    ));
    drop(file);
    linger()
}

/// `n` threads that park until the process dies (a parked thread sits in
/// futex(2), using no CPU). Prints ready once every one of them runs.
fn threads(n: usize) {
    let (tx, rx) = mpsc::channel();
    for i in 0..n {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("park-{i}"))
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = tx.send(());
                drop(tx);
                loop {
                    std::thread::park();
                }
            })
            .unwrap_or_else(|e| die(&format!("spawning thread {i}: {e}")));
    }
    drop(tx);
    let started = rx.iter().count();
    if started != n {
        die(&format!("only {started} of {n} threads started"));
    }
    say(&format!("ready threads={}", thread_count()));
    wait_go();
    say(&format!("done threads={}", thread_count()));
    linger()
}

/// `Threads:` of /proc/self/status: every thread of this process.
fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_else(|e| die(&format!("reading /proc/self/status: {e}")));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| die("no Threads: line in /proc/self/status"))
}
