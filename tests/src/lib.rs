//! Harness for sentinel's end-to-end tests.
//!
//! Every test runs the real `sentinel` binary (which loads the real eBPF
//! programs) while a real workload runs in a cgroup of its own, then asserts
//! on what sentinel reported for that cgroup or pid. Nothing is mocked.
//!
//! Pieces:
//! - [`cgroup::TestCgroup`]: a v2 cgroup (plus, when asked, a memory limit on
//!   either a hybrid v1 memory hierarchy or pure v2), removed on drop.
//! - [`workload::Workload`]: the `workload` binary, spawned inside a cgroup,
//!   driven over stdin/stdout ("ready" → "go" → "done"), killed on drop.
//! - [`sentinel::Snapshot`] / [`sentinel::run_check`]: run `sentinel snapshot`
//!   and `sentinel check` and parse their JSON into [`report`] types.
//! - [`daemon::Daemon`]: run `sentinel daemon --log-format json`, check every
//!   stdout line against the [`event`] schema and wait for events;
//!   [`daemon::run_daemon_expect_exit`] for argument and config errors.
//! - [`programs`]: C (`tests/c/`, compiled once per test process) and Python
//!   (`tests/py/`) workloads that speak the same protocol.
//! - [`LoopFs`]: a small loop-mounted ext4 filesystem a test can fill,
//!   unmounted and removed on drop.
//! - [`measured`]: `MEASURED <test> key=value ...` lines, printed past
//!   libtest's capture so a run's numbers can be collected with grep.
//! - [`tmux::Tmux`]: a private tmux server whose pane runs a terminal UI
//!   (`sentinel top`), driven with keys and read with `capture-pane`.
//! - [`archive::Archive`]: a `sentinel export` archive, unpacked and checked,
//!   with its CSV timelines parsed.
//!
//! Tests return `anyhow::Result<()>`; a test that cannot run calls [`skip!`],
//! which prints a `SKIP` line past libtest's output capture and returns.

pub mod alertmanager;
pub mod archive;
pub mod cgroup;
pub mod daemon;
pub mod event;
pub mod programs;
pub mod prometheus;
pub mod receiver;
pub mod report;
pub mod sentinel;
pub mod tmux;
pub mod workload;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use cgroup::{CgroupLayout, MemoryController, TestCgroup};
pub use daemon::{Daemon, run_daemon_expect_exit};
pub use event::{Event, Kind, Severity, State, Subject};
pub use report::{CheckReport, Report};
pub use sentinel::{CheckOutput, Snapshot, run_check, sentinel_bin};
pub use workload::Workload;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

/// Path of the `workload` binary. Cargo only tells integration tests where a
/// package binary is (`CARGO_BIN_EXE_<name>`), so this is a macro expanded in
/// the test crate rather than a function of the library.
#[macro_export]
macro_rules! workload_bin {
    () => {
        env!("CARGO_BIN_EXE_workload")
    };
}

/// Prints a loud `SKIP` line and returns `Ok(())` from the calling test.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        $crate::print_skip(module_path!(), &format!($($arg)*));
        return Ok(());
    }};
}

/// Skips the calling test unless it runs as root (loading eBPF programs and
/// creating cgroups both need it).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            $crate::skip!(
                "needs root (euid is {}): sentinel must load eBPF programs and the test must create cgroups",
                $crate::euid()
            );
        }
    };
}

pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

pub fn is_root() -> bool {
    euid() == 0
}

/// Writes the SKIP line straight to stderr: libtest captures `eprintln!` of
/// passing tests, and a skip must never be silent.
/// libtest runs each test on a thread named after it; `module` is the
/// fallback.
pub fn print_skip(module: &str, reason: &str) {
    let thread = std::thread::current();
    let test = match thread.name() {
        Some(name) if name != "main" => format!("{module}::{name}"),
        _ => module.to_string(),
    };
    let _ = writeln!(
        std::io::stderr(),
        "\n********** SKIP {test}: {reason} **********"
    );
}

/// Prints `MEASURED <test> key=value ...` straight to stderr (past libtest's
/// capture, like [`print_skip`]), so `cargo xtask test 2>&1 | grep MEASURED`
/// collects every number a run measured. Use [`secs`] for durations.
pub fn measured(test: &str, values: &[(&str, &dyn std::fmt::Display)]) {
    let pairs: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(std::io::stderr(), "MEASURED {test} {}", pairs.join(" "));
}

/// A duration in seconds with one decimal, for [`measured`] and messages.
pub fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

/// Serialises tests within one test binary. They share kernel state (probes,
/// tracefs, the root cgroup); `cargo xtask test` already passes
/// `--test-threads=1`, this keeps a plain `cargo test` honest too.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The workspace root (parent of this crate's manifest directory).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The cargo target directory (`CARGO_TARGET_DIR` when set at run time).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_dir().join(dir)
            }
        }
        None => workspace_dir().join("target"),
    }
}

/// A unique name for a test's cgroup, file or directory:
/// `sentinel-test-<topic>-<pid>-<n>`.
pub fn unique_name(topic: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "sentinel-test-{topic}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory removed (recursively) on drop.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `<parent>/<unique name>`, with `parent` created if missing.
    pub fn new_in(parent: &Path, topic: &str) -> Result<Self> {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let path = parent.join(unique_name(topic));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// A scratch directory on a real disk, for the I/O tests: under the
    /// cargo target directory, else /var/tmp. Returns `Ok(None)` when both
    /// are on tmpfs/ramfs (writes there never reach a block device).
    pub fn on_disk(topic: &str) -> Result<Option<Self>> {
        for parent in [
            target_dir().join("sentinel-tests"),
            PathBuf::from("/var/tmp"),
        ] {
            std::fs::create_dir_all(&parent)
                .with_context(|| format!("creating {}", parent.display()))?;
            if !is_memory_fs(&parent)? {
                return Self::new_in(&parent, topic).map(Some);
            }
        }
        Ok(None)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: could not remove {}: {e}", self.path.display());
        }
    }
}

/// True when `path` lives on tmpfs or ramfs.
pub fn is_memory_fs(path: &Path) -> Result<bool> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let c = cstring(path)?;
    // SAFETY: statfs fills the zeroed struct we pass; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    let magic = st.f_type as i64;
    Ok(magic == TMPFS_MAGIC || magic == RAMFS_MAGIC)
}

/// A small ext4 filesystem in a sparse image file, loop-mounted on a
/// scratch directory (`mount -o loop`, so the loop device goes with the
/// mount). On drop it is unmounted, lazily (`umount -l`) when still busy,
/// and the image is removed with its directory; the directory is left alone
/// if the unmount failed, so nothing inside a live mount is deleted.
pub struct LoopFs {
    mount_point: PathBuf,
    mounted: bool,
    /// Holds the image and the mount point.
    dir: Option<ScratchDir>,
}

/// Size and free space of a filesystem as sentinel reads them: statvfs
/// `f_blocks` and `f_bavail` (free to unprivileged users), in bytes.
#[derive(Clone, Copy, Debug)]
pub struct FsSpace {
    pub size: u64,
    pub free: u64,
}

impl LoopFs {
    /// Makes and mounts a `size`-byte ext4 filesystem. `Ok(Err(reason))`
    /// when this machine cannot (no `mkfs.ext4` or `losetup`, no free loop
    /// device, a mount that fails for want of loop or ext4 support): the
    /// test should skip.
    pub fn ext4(topic: &str, size: u64) -> Result<std::result::Result<Self, String>> {
        use std::process::Command;
        let Some(mkfs) = find_tool("mkfs.ext4") else {
            return Ok(Err(
                "no mkfs.ext4 (e2fsprogs) in PATH, /usr/sbin or /sbin".into()
            ));
        };
        let Some(losetup) = find_tool("losetup") else {
            return Ok(Err(
                "no losetup (util-linux) in PATH, /usr/sbin or /sbin".into()
            ));
        };
        match Command::new(&losetup).arg("-f").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Ok(Err(format!(
                    "no free loop device: `losetup -f` {}: {}",
                    workload::describe_status(out.status),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Err(e) => return Ok(Err(format!("running {}: {e}", losetup.display()))),
        }

        let dir = match ScratchDir::on_disk(topic)? {
            Some(dir) => dir,
            // A loop device works on tmpfs too; it only costs memory.
            None => ScratchDir::new_in(&std::env::temp_dir(), topic)?,
        };
        // The path as mountinfo will name it (sentinel reports that one).
        let root = dir
            .path()
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.path().display()))?;
        let image = root.join("fs.img");
        let mount_point = root.join("mnt");
        std::fs::create_dir(&mount_point)
            .with_context(|| format!("creating {}", mount_point.display()))?;
        let file = std::fs::File::create(&image)
            .with_context(|| format!("creating {}", image.display()))?;
        file.set_len(size)
            .with_context(|| format!("sizing {} to {size} bytes", image.display()))?;
        drop(file);
        // From here on, drop cleans up.
        let mut fs = Self {
            mount_point,
            mounted: false,
            dir: Some(dir),
        };
        run_tool(
            Command::new(&mkfs)
                .args(["-q", "-F", "-E", "nodiscard"])
                .arg(&image),
        )?;
        let out = Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(&image)
            .arg(&fs.mount_point)
            .output()
            .context("running mount")?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let why = format!(
                "`mount -t ext4 -o loop {} {}` {}: {err}",
                image.display(),
                fs.mount_point.display(),
                workload::describe_status(out.status)
            );
            if err.contains("loop") || err.contains("unknown filesystem type") {
                return Ok(Err(why));
            }
            bail!("{why}");
        }
        fs.mounted = true;
        Ok(Ok(fs))
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// statvfs of the mounted filesystem.
    pub fn space(&self) -> Result<FsSpace> {
        let c = cstring(&self.mount_point)?;
        // SAFETY: statvfs fills the zeroed struct we pass; `c` is
        // NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("statvfs {}", self.mount_point.display()));
        }
        let frsize = st.f_frsize as u64;
        Ok(FsSpace {
            size: st.f_blocks as u64 * frsize,
            free: st.f_bavail as u64 * frsize,
        })
    }

    /// Unmounts now (a detector may be waiting for the filesystem to go).
    /// Falls back to a lazy unmount when the filesystem is still busy.
    pub fn unmount(&mut self) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        let umount = |args: &[&str]| {
            std::process::Command::new("umount")
                .args(args)
                .arg(&self.mount_point)
                .output()
        };
        let mut last = String::new();
        for attempt in 0..5 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
            let out = umount(&[]).context("running umount")?;
            if out.status.success() {
                self.mounted = false;
                return Ok(());
            }
            last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        }
        let out = umount(&["-l"]).context("running umount -l")?;
        if out.status.success() {
            self.mounted = false;
            return Ok(());
        }
        bail!(
            "unmounting {}: {last}; umount -l: {}",
            self.mount_point.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("warning: {e:#}");
            // Removing the directory would delete the files of the live
            // mount: leave it (and the image) behind.
            if let Some(dir) = self.dir.take() {
                eprintln!("warning: leaving {} behind", dir.path().display());
                std::mem::forget(dir);
            }
        }
    }
}

/// `name` in PATH, else in /usr/sbin or /sbin (not always in a test's PATH).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs a setup command; fails with its stderr when it does not succeed.
fn run_tool(cmd: &mut std::process::Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} {}: {}",
            workload::describe_status(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub(crate) fn cstring(path: &Path) -> Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains a NUL byte", path.display()))
}

/// `VmRSS` of a live process, in bytes, from /proc/PID/status.
pub fn vm_rss_bytes(pid: i32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kib: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("parsing VmRSS line {line:?}"))?;
            return Ok(kib * KIB);
        }
    }
    bail!("no VmRSS line in /proc/{pid}/status:\n{status}")
}

/// Polls `f` every 10 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Compact JSON of a report fragment for assertion messages, cut at 4000
/// characters so a failure stays readable.
pub fn brief<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let s = serde_json::to_string(value).unwrap_or_else(|e| format!("<unserialisable: {e}>"));
    truncate(&s, 4000)
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &s[..end], s.len() - end)
}

/// `x` as a fraction of `of`, for messages ("93.1%").
pub fn pct(x: u64, of: u64) -> String {
    if of == 0 {
        return "n/a".into();
    }
    format!("{:.1}%", x as f64 * 100.0 / of as f64)
}
