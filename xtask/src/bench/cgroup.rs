//! The benches' own cgroups (v2): loads run inside them, so everything a
//! bench started can be found and killed at the end, whatever it forked.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A v2 cgroup of a bench's. Dropping it kills what is left in it
/// (`cgroup.kill`, else each pid) and removes it; a parent must be dropped
/// after its children, which rmdir needs gone first.
pub(super) struct BenchCgroup {
    dir: PathBuf,
    procs: CString,
}

impl BenchCgroup {
    /// `name` at the root of the cgroup2 mount (`/sys/fs/cgroup`, or
    /// `/sys/fs/cgroup/unified` on a hybrid host).
    pub(super) fn create(name: &str) -> Result<Self> {
        let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
        let Some(mount) = mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        }) else {
            bail!("no cgroup2 filesystem in /proc/mounts");
        };
        Self::make(mount.join(name))
    }

    /// A cgroup inside this one.
    pub(super) fn child(&self, name: &str) -> Result<Self> {
        Self::make(self.dir.join(name))
    }

    fn make(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
        let procs = CString::new(dir.join("cgroup.procs").to_string_lossy().into_owned())
            .context("cgroup path with a NUL byte")?;
        Ok(Self { dir, procs })
    }

    /// `cmd`'s child joins the cgroup between fork and exec.
    pub(super) fn attach(&self, cmd: &mut Command) -> Result<()> {
        let file = self.procs.clone();
        // SAFETY: runs in the forked child before exec; open, write and
        // close are async-signal-safe and use memory allocated before.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0\n".as_ptr().cast(), 2);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n != 2 {
                    return Err(err);
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// Moves a running process in.
    pub(super) fn add(&self, pid: u32) -> Result<()> {
        let path = self.dir.join("cgroup.procs");
        std::fs::write(&path, format!("{pid}\n"))
            .with_context(|| format!("moving pid {pid} into {}", path.display()))
    }

    /// The processes in it (not in its children).
    pub(super) fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            // cgroup.kill (5.14+) takes them all at once, forks included.
            if std::fs::write(self.dir.join("cgroup.kill"), "1").is_err() {
                for pid in pids {
                    // SAFETY: plain syscall; only the loads' processes are
                    // in here, and a stale pid yields ESRCH.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "bench: {} still holds {} processes after 30 s",
                    self.dir.display(),
                    self.pids().len()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Empty, but the kernel may need a moment to let it go.
        for _ in 0..100 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        eprintln!("bench: could not remove cgroup {}", self.dir.display());
    }
}
