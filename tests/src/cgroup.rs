//! Test cgroups on either layout sentinel supports.
//!
//! - Pure v2 (production): one cgroup2 mount, usually /sys/fs/cgroup. A
//!   memory limit needs the memory controller enabled in the parent's
//!   `cgroup.subtree_control`, then `memory.max`.
//! - Hybrid (these test machines): v1 controllers under /sys/fs/cgroup/<ctrl>
//!   and the v2 unified hierarchy at /sys/fs/cgroup/unified with no
//!   controllers. The process goes into the v2 cgroup (what sentinel reports
//!   as `cgroup`) and, for a memory limit, into a v1 memory cgroup of the
//!   same name with `memory.limit_in_bytes`.
//!
//! A [`TestCgroup`] is removed on drop: processes still in it are killed and
//! moved to the root first (a cgroup can only be removed once empty).

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cstring, unique_name};

/// Where the memory controller lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryController {
    /// A v1 memory hierarchy mounted at `mount` (hybrid layout).
    V1 { mount: PathBuf },
    /// The memory controller of the v2 hierarchy.
    V2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupLayout {
    /// Mount point of the cgroup2 (unified) hierarchy.
    pub v2_mount: PathBuf,
    /// `None` when no memory controller is available at all.
    pub memory: Option<MemoryController>,
}

impl CgroupLayout {
    /// Reads /proc/mounts: the first `cgroup2` mount is the v2 hierarchy; a
    /// `cgroup` (v1) mount with the `memory` option wins for memory limits,
    /// since the controller can only be bound to one hierarchy at a time.
    pub fn detect() -> Result<Self> {
        let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
        Self::from_mounts(&mounts, |p| {
            std::fs::read_to_string(p.join("cgroup.controllers")).unwrap_or_default()
        })
    }

    fn from_mounts(mounts: &str, controllers: impl Fn(&Path) -> String) -> Result<Self> {
        let mut v2_mount = None;
        let mut v1_memory = None;
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 {
                continue;
            }
            let (mount_point, fstype, options) = (unescape_mount(fields[1]), fields[2], fields[3]);
            match fstype {
                "cgroup2" if v2_mount.is_none() => v2_mount = Some(PathBuf::from(mount_point)),
                "cgroup" if options.split(',').any(|o| o == "memory") && v1_memory.is_none() => {
                    v1_memory = Some(PathBuf::from(mount_point))
                }
                _ => {}
            }
        }
        let Some(v2_mount) = v2_mount else {
            bail!("no cgroup2 filesystem in /proc/mounts; sentinel reports cgroup v2 paths");
        };
        let memory = match v1_memory {
            Some(mount) => Some(MemoryController::V1 { mount }),
            None if controllers(&v2_mount)
                .split_whitespace()
                .any(|c| c == "memory") =>
            {
                Some(MemoryController::V2)
            }
            None => None,
        };
        Ok(Self { v2_mount, memory })
    }

    pub fn is_hybrid(&self) -> bool {
        matches!(self.memory, Some(MemoryController::V1 { .. }))
    }
}

/// /proc/mounts escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cgroup created for one test, removed on drop.
pub struct TestCgroup {
    name: String,
    layout: CgroupLayout,
    v2_dir: PathBuf,
    /// The v1 memory cgroup created next to the v2 one (hybrid + limit).
    v1_memory_dir: Option<PathBuf>,
    memory_limit: Option<u64>,
    /// `cgroup.procs` files a spawned child writes itself into.
    procs_files: Vec<CString>,
}

impl TestCgroup {
    /// A v2 cgroup `/<sentinel-test-topic-pid-n>` without limits.
    pub fn new(topic: &str) -> Result<Self> {
        Self::create(topic, None)
    }

    /// A cgroup whose processes are limited to `limit` bytes of memory (no
    /// swap), on whichever hierarchy holds the memory controller.
    pub fn with_memory_limit(topic: &str, limit: u64) -> Result<Self> {
        Self::create(topic, Some(limit))
    }

    fn create(topic: &str, limit: Option<u64>) -> Result<Self> {
        let layout = CgroupLayout::detect()?;
        let name = unique_name(topic);
        let v2_dir = layout.v2_mount.join(&name);
        if limit.is_some() && layout.memory == Some(MemoryController::V2) {
            enable_v2_memory(&layout.v2_mount)?;
        }
        make_dir(&v2_dir)?;
        // From here on, drop cleans up whatever was created.
        let mut cg = Self {
            name,
            layout,
            v2_dir,
            v1_memory_dir: None,
            memory_limit: limit,
            procs_files: Vec::new(),
        };
        cg.procs_files
            .push(cstring(&cg.v2_dir.join("cgroup.procs"))?);

        if let Some(limit) = limit {
            match cg.layout.memory.clone() {
                None => bail!(
                    "no memory controller: neither a v1 memory hierarchy nor `memory` in {}/cgroup.controllers",
                    cg.layout.v2_mount.display()
                ),
                Some(MemoryController::V1 { mount }) => {
                    let dir = mount.join(&cg.name);
                    make_dir(&dir)?;
                    cg.v1_memory_dir = Some(dir.clone());
                    write_file(&dir.join("memory.limit_in_bytes"), &limit.to_string())?;
                    // v1 memcg reclaim with swappiness 0 never swaps anon
                    // pages, so the limit is a hard one even on a host with
                    // swap. Best effort: the file is absent on some kernels.
                    let _ = write_file(&dir.join("memory.swappiness"), "0");
                    cg.procs_files.push(cstring(&dir.join("cgroup.procs"))?);
                }
                Some(MemoryController::V2) => {
                    write_file(&cg.v2_dir.join("memory.max"), &limit.to_string())?;
                    let swap_max = cg.v2_dir.join("memory.swap.max");
                    if swap_max.exists() {
                        write_file(&swap_max, "0")?;
                    }
                }
            }
        }
        Ok(cg)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// The v2 path as sentinel reports it: `/<name>`.
    pub fn path(&self) -> String {
        format!("/{}", self.name)
    }

    /// The cgroup's directory in the v2 hierarchy.
    pub fn dir(&self) -> &Path {
        &self.v2_dir
    }

    /// The memory cgroup whose limit applies, relative to the memory
    /// controller's mount (what sentinel reports as `limit_cgroup`).
    pub fn memory_path(&self) -> Option<String> {
        self.memory_limit.map(|_| format!("/{}", self.name))
    }

    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    /// Pids currently in the v2 cgroup.
    pub fn pids(&self) -> Result<Vec<i32>> {
        read_pids(&self.v2_dir)
    }

    /// Makes `cmd`'s child join this cgroup (and its memory cgroup) between
    /// fork and exec, so no byte of its work happens outside.
    pub fn attach_command(&self, cmd: &mut Command) {
        let files = self.procs_files.clone();
        // SAFETY: the closure runs in the forked child before exec and only
        // calls async-signal-safe functions (open, write, close) on memory
        // allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for file in &files {
                    // "0" means the writing task itself, on v1 and v2.
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
                }
                Ok(())
            });
        }
    }

    /// Kills everything left in the cgroups, moves stragglers to the root
    /// and removes the directories. Called by drop; errors are reported.
    fn remove(&self) -> Result<()> {
        let mut dirs = vec![(self.v2_dir.clone(), self.layout.v2_mount.clone())];
        if let (Some(dir), Some(MemoryController::V1 { mount })) =
            (&self.v1_memory_dir, &self.layout.memory)
        {
            dirs.push((dir.clone(), mount.clone()));
        }
        for (dir, root) in dirs {
            remove_cgroup_dir(&dir, &root)?;
        }
        Ok(())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("warning: cleaning up cgroup {}: {e:#}", self.name);
        }
    }
}

fn remove_cgroup_dir(dir: &Path, root: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let pids = match read_pids(dir) {
            Ok(pids) => pids,
            Err(_) if !dir.exists() => return Ok(()),
            Err(e) => return Err(e),
        };
        for &pid in &pids {
            // Only our own workloads (and their children) are ever in here.
            // SAFETY: plain syscall; a stale pid yields ESRCH, which is fine.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = write_file(&root.join("cgroup.procs"), &pid.to_string());
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| {
                    format!(
                        "removing {} (still holds pids {:?})",
                        dir.display(),
                        read_pids(dir).unwrap_or_default()
                    )
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Enables the memory controller for the v2 root's children. Left enabled
/// afterwards: it is the normal state of a systemd host and other cgroups
/// may rely on it by then.
fn enable_v2_memory(v2_mount: &Path) -> Result<()> {
    let control = v2_mount.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control)
        .with_context(|| format!("reading {}", control.display()))?;
    if !enabled.split_whitespace().any(|c| c == "memory") {
        write_file(&control, "+memory")?;
    }
    Ok(())
}

fn make_dir(dir: &Path) -> Result<()> {
    // A leftover of a crashed run with a recycled pid: it is empty or holds
    // only dead workloads, so clear it out first.
    if dir.exists() {
        let root = dir.parent().unwrap_or(Path::new("/"));
        remove_cgroup_dir(dir, root)?;
    }
    std::fs::create_dir(dir).with_context(|| format!("creating cgroup {}", dir.display()))
}

fn read_pids(dir: &Path) -> Result<Vec<i32>> {
    let file = dir.join("cgroup.procs");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";
    const PURE_V2: &str = "\
/dev/vda / ext4 rw,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
";

    #[test]
    fn detects_hybrid() {
        let l = CgroupLayout::from_mounts(HYBRID, |_| String::new()).unwrap();
        assert_eq!(l.v2_mount, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(
            l.memory,
            Some(MemoryController::V1 {
                mount: "/sys/fs/cgroup/memory".into()
            })
        );
    }

    #[test]
    fn detects_pure_v2() {
        let l = CgroupLayout::from_mounts(PURE_V2, |_| "cpuset cpu io memory pids".into()).unwrap();
        assert_eq!(l.v2_mount, Path::new("/sys/fs/cgroup"));
        assert_eq!(l.memory, Some(MemoryController::V2));
        let l = CgroupLayout::from_mounts(PURE_V2, |_| "cpu io".into()).unwrap();
        assert_eq!(l.memory, None);
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape_mount(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mount(r"/x\"), r"/x\");
    }
}
