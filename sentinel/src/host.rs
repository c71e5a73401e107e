//! Host context: memory, pressure, paging counters and the filesystems
//! writes can fill. Readers take the proc root so tests can use a fake tree.
use std::{
    collections::HashMap,
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use serde::Serialize;

/// Bytes, from `/proc/meminfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub total: u64,
    pub available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// One `/proc/pressure/*` file. Averages are percentages; totals are
/// microseconds stalled since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Pressure {
    pub some_avg10: f64,
    pub some_avg60: f64,
    pub some_total_us: u64,
    pub full_avg10: f64,
    pub full_avg60: f64,
    pub full_total_us: u64,
}

/// `None` when the kernel has no PSI (not built in, or booted with `psi=0`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Psi {
    pub memory: Option<Pressure>,
    pub io: Option<Pressure>,
}

/// Cumulative counters from `/proc/vmstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VmStat {
    pub pgmajfault: u64,
    pub pswpin: u64,
    pub pswpout: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Filesystem {
    pub mount_point: String,
    /// The device or source mountinfo names.
    pub source: String,
    pub fstype: String,
    /// The kernel's MKDEV encoding, `major << 20 | minor`, as the probes see it.
    pub dev: u32,
    pub size: u64,
    /// Bytes available to unprivileged users (`f_bavail`): root's reserve
    /// does not help a service that runs as someone else.
    pub free: u64,
}

pub fn memory(proc_root: &Path) -> Option<Memory> {
    parse_meminfo(&fs::read_to_string(proc_root.join("meminfo")).ok()?)
}

pub fn psi(proc_root: &Path) -> Psi {
    let read = |name: &str| {
        let text = fs::read_to_string(proc_root.join("pressure").join(name)).ok()?;
        parse_pressure(&text)
    };
    Psi {
        memory: read("memory"),
        io: read("io"),
    }
}

pub fn vmstat(proc_root: &Path) -> VmStat {
    fs::read_to_string(proc_root.join("vmstat"))
        .map(|t| parse_vmstat(&t))
        .unwrap_or_default()
}

/// `None` without a `MemTotal` line: that is not meminfo.
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let mut total = None;
    let (mut available, mut free) = (None, 0);
    let mut m = Memory::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(kb) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        let bytes = kb * 1024;
        match key {
            "MemTotal" => total = Some(bytes),
            "MemAvailable" => available = Some(bytes),
            "MemFree" => free = bytes,
            "SwapTotal" => m.swap_total = bytes,
            "SwapFree" => m.swap_free = bytes,
            _ => {}
        }
    }
    m.total = total?;
    // MemAvailable appeared in 3.14; MemFree undercounts, but is all an
    // older kernel offers without guessing at reclaimable cache.
    m.available = available.unwrap_or(free);
    Some(m)
}

/// `some avg10=.. avg60=.. avg300=.. total=..` and, except in the cpu file
/// before 5.13, a `full` line. A missing `full` line reads as zeros.
pub fn parse_pressure(text: &str) -> Option<Pressure> {
    let mut p = Pressure::default();
    let mut saw_some = false;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next();
        let (mut avg10, mut avg60, mut total) = (0.0, 0.0, 0);
        for w in words {
            match w.split_once('=') {
                Some(("avg10", v)) => avg10 = v.parse().ok()?,
                Some(("avg60", v)) => avg60 = v.parse().ok()?,
                Some(("total", v)) => total = v.parse().ok()?,
                _ => {}
            }
        }
        match kind {
            Some("some") => {
                saw_some = true;
                (p.some_avg10, p.some_avg60, p.some_total_us) = (avg10, avg60, total);
            }
            Some("full") => (p.full_avg10, p.full_avg60, p.full_total_us) = (avg10, avg60, total),
            _ => {}
        }
    }
    saw_some.then_some(p)
}

pub fn parse_vmstat(text: &str) -> VmStat {
    let mut v = VmStat::default();
    for line in text.lines() {
        let Some((key, val)) = line.split_once(' ') else {
            continue;
        };
        let Ok(val) = val.trim().parse::<u64>() else {
            continue;
        };
        match key {
            "pgmajfault" => v.pgmajfault = val,
            "pswpin" => v.pswpin = val,
            "pswpout" => v.pswpout = val,
            _ => {}
        }
    }
    v
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// mountinfo's first field: what fdinfo's `mnt_id:` refers to.
    pub id: u32,
    pub mount_point: PathBuf,
    pub source: String,
    pub fstype: String,
    /// MKDEV encoding (`major << 20 | minor`).
    pub dev: u32,
}

/// Kernel interfaces and read-only images: nothing a runaway writer can
/// fill. Everything else is kept, so a filesystem this list has not heard
/// of shows up rather than hides.
const NOT_STORAGE: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "tracefs",
    "debugfs",
    "securityfs",
    "devpts",
    "devtmpfs",
    "mqueue",
    "bpf",
    "pstore",
    "configfs",
    "fusectl",
    "autofs",
    "hugetlbfs",
    "nsfs",
    "binfmt_misc",
    "rpc_pipefs",
    "efivarfs",
    "selinuxfs",
    "ramfs",
    "rootfs",
    "nfsd",
    "squashfs",
    "iso9660",
    "erofs",
    "fuse.lxcfs",
];

/// Mounted filesystems backed by storage (including tmpfs and overlay:
/// writes fill them too), one entry per device.
#[derive(Debug, Clone, Default)]
pub struct Filesystems {
    /// One per device: its shortest mount point, since a device
    /// bind-mounted several times is still one thing that fills up.
    unique: Vec<Mount>,
    /// dev → index in `unique`: a Kubernetes node can have thousands of
    /// mounts (a tmpfs per secret, an overlay per container).
    by_dev: HashMap<u32, usize>,
    /// Every mount, in mount order, for path lookups: a bind mount inside
    /// another device's tree, or a /proc, decides where its paths live.
    all: Vec<Mount>,
}

impl Filesystems {
    /// Reads `<proc_root>/self/mountinfo`; an unreadable one gives none.
    pub fn discover(proc_root: &Path) -> Filesystems {
        let text = fs::read_to_string(proc_root.join("self").join("mountinfo")).unwrap_or_default();
        Self::parse(&text)
    }

    /// mountinfo lines: `id parent major:minor root mountpoint opts
    /// [optional...] - fstype source superopts`.
    pub fn parse(mountinfo: &str) -> Filesystems {
        let mut fs = Filesystems::default();
        for line in mountinfo.lines() {
            let Some(m) = parse_mount_line(line) else {
                continue;
            };
            let storage = !NOT_STORAGE.contains(&m.fstype.as_str());
            fs.all.push(m.clone());
            if !storage {
                continue;
            }
            match fs.by_dev.get(&m.dev) {
                Some(&i) => {
                    let u = &mut fs.unique[i];
                    if m.mount_point.as_os_str().len() < u.mount_point.as_os_str().len() {
                        *u = m;
                    }
                }
                None => {
                    fs.by_dev.insert(m.dev, fs.unique.len());
                    fs.unique.push(m);
                }
            }
        }
        fs
    }

    /// The device of a mount id (fdinfo's `mnt_id:`).
    pub fn dev_of_mount(&self, id: u32) -> Option<u32> {
        self.all.iter().find(|m| m.id == id).map(|m| m.dev)
    }

    pub fn by_dev(&self, dev: u32) -> Option<&Mount> {
        self.by_dev.get(&dev).map(|&i| &self.unique[i])
    }

    /// The filesystem holding `path`: the longest mount point that is a
    /// prefix of it, the later mount winning when one hides another. The
    /// answer is that device's entry in `mounts()`; `None` when the path is
    /// on something that is not storage, such as /proc.
    pub fn for_path(&self, path: &Path) -> Option<&Mount> {
        let mut best: Option<&Mount> = None;
        for m in &self.all {
            let depth = m.mount_point.components().count();
            if path.starts_with(&m.mount_point)
                && best.is_none_or(|b| depth >= b.mount_point.components().count())
            {
                best = Some(m);
            }
        }
        self.by_dev(best?.dev)
    }

    pub fn mounts(&self) -> impl Iterator<Item = &Mount> {
        self.unique.iter()
    }
}

fn parse_mount_line(line: &str) -> Option<Mount> {
    let (pre, post) = line.split_once(" - ")?;
    let mut pre = pre.split(' ');
    let id = pre.next()?.parse().ok()?;
    let dev = pre.nth(1)?;
    let mount_point = pre.nth(1)?;
    let mut post = post.split(' ');
    let fstype = post.next()?;
    let source = post.next()?;
    let (major, minor) = dev.split_once(':')?;
    Some(Mount {
        id,
        mount_point: PathBuf::from(unescape(mount_point)),
        source: unescape(source),
        fstype: fstype.to_string(),
        dev: mkdev(major.parse().ok()?, minor.parse().ok()?)?,
    })
}

/// The kernel's internal dev_t, which is what BPF programs read from
/// `sb->s_dev`. `None` when the numbers do not fit it.
fn mkdev(major: u32, minor: u32) -> Option<u32> {
    (major < 1 << 12 && minor < 1 << 20).then_some(major << 20 | minor)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0')));
        match octal.and_then(|v| u8::try_from(v).ok()) {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Size and free space of a mount, via statvfs(2). Can block on a hung
/// network filesystem, like anything that touches one.
pub fn statfs(m: &Mount) -> Option<Filesystem> {
    let path = CString::new(m.mount_point.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; zeroed is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some(Filesystem {
        mount_point: m.mount_point.to_string_lossy().into_owned(),
        source: m.source.clone(),
        fstype: m.fstype.clone(),
        dev: m.dev,
        size: st.f_blocks as u64 * frsize,
        free: st.f_bavail as u64 * frsize,
    })
}

/// Devices (MKDEV encoding) a process has regular files open on for
/// writing, with how many such fds, in dev order. A gone or forbidden
/// process gives none.
///
/// Goes by the file's `st_dev`, not its path: a containerised process's
/// paths are in its own mount namespace and mean nothing in ours.
pub fn written_filesystems(proc_root: &Path, pid: u32, mounts: &Filesystems) -> Vec<(u32, usize)> {
    let proc = proc_root.join(pid.to_string());
    let Ok(fds) = fs::read_dir(proc.join("fd")) else {
        return Vec::new();
    };
    let mut counts: HashMap<u32, usize> = HashMap::new();
    // Mount ids are per mount object, and each mount namespace has its own
    // copies: under systemd's sandboxing (ProtectSystem=, a private mount
    // namespace) or in a container, the writer's ids are not in our
    // mountinfo. Its own mountinfo names them, read once if needed.
    let mut theirs: Option<Vec<Mount>> = None;
    for fd in fds.flatten() {
        // readlink, never stat: stat follows the link into the file's
        // filesystem, and on a hung NFS or FUSE mount it never returns.
        // Sockets, pipes and anonymous inodes, usually most fds, are not
        // paths and skip the fdinfo read.
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        if !target.is_absolute() {
            continue;
        }
        let Ok(info) = fs::read_to_string(proc.join("fdinfo").join(fd.file_name())) else {
            continue;
        };
        if !opened_for_writing(&info) {
            continue;
        }
        let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("mnt_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let dev = mounts.dev_of_mount(id).or_else(|| {
            theirs
                .get_or_insert_with(|| {
                    fs::read_to_string(proc.join("mountinfo"))
                        .map(|t| t.lines().filter_map(parse_mount_line).collect())
                        .unwrap_or_default()
                })
                .iter()
                .find(|m| m.id == id)
                .map(|m| m.dev)
        });
        if let Some(dev) = dev {
            *counts.entry(dev).or_default() += 1;
        }
    }
    let mut out: Vec<_> = counts.into_iter().collect();
    out.sort_unstable();
    out
}

/// The `flags:` line of fdinfo, in octal.
fn opened_for_writing(fdinfo: &str) -> bool {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| i32::from_str_radix(v.trim(), 8).ok())
        .is_some_and(|f| matches!(f & libc::O_ACCMODE, libc::O_WRONLY | libc::O_RDWR))
}

/// `SENTINEL_HOST` (a DaemonSet passes the node's name, which a pod's
/// own hostname is not), else gethostname(2), then
/// /proc/sys/kernel/hostname, then "localhost".
pub fn hostname() -> String {
    if let Ok(h) = std::env::var("SENTINEL_HOST")
        && !h.trim().is_empty()
    {
        return h.trim().to_string();
    }
    let mut buf = [0u8; 256];
    // SAFETY: the length passed is the buffer's; the kernel NUL-terminates
    // names shorter than it, and a longer one is cut at the first NUL below.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
        let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
        if !name.is_empty() {
            return name;
        }
    }
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "\
MemTotal:       24684092 kB
MemFree:        23880096 kB
MemAvailable:   24284424 kB
Buffers:            1768 kB
Cached:           569272 kB
SwapCached:            0 kB
SwapTotal:       2097148 kB
SwapFree:        1048572 kB
Dirty:               168 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
";

    #[test]
    fn meminfo() {
        let m = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(m.total, 24684092 * 1024);
        assert_eq!(m.available, 24284424 * 1024);
        assert_eq!(m.swap_total, 2097148 * 1024);
        assert_eq!(m.swap_free, 1048572 * 1024);
        assert!(parse_meminfo("").is_none());
        // Before 3.14.
        let old = parse_meminfo("MemTotal: 1000 kB\nMemFree: 200 kB\n").unwrap();
        assert_eq!(old.available, 200 * 1024);
    }

    #[test]
    fn pressure() {
        let p = parse_pressure(
            "some avg10=1.53 avg60=0.87 avg300=0.22 total=4610218\n\
             full avg10=0.42 avg60=0.11 avg300=0.03 total=1278830\n",
        )
        .unwrap();
        assert_eq!(
            (p.some_avg10, p.some_avg60, p.some_total_us),
            (1.53, 0.87, 4610218)
        );
        assert_eq!(
            (p.full_avg10, p.full_avg60, p.full_total_us),
            (0.42, 0.11, 1278830)
        );
        // The cpu file before 5.13.
        let cpu =
            parse_pressure("some avg10=2.45 avg60=1.07 avg300=1.07 total=467129740\n").unwrap();
        assert_eq!(cpu.some_total_us, 467129740);
        assert_eq!((cpu.full_avg10, cpu.full_total_us), (0.0, 0));
        assert!(parse_pressure("").is_none());
        assert!(parse_pressure("some avg10=x avg60=0 avg300=0 total=0\n").is_none());
    }

    #[test]
    fn vmstat_counters() {
        let v = parse_vmstat(
            "nr_free_pages 5970024\npswpin 12\npswpout 345\npgfault 9\npgmajfault 25435\n",
        );
        assert_eq!((v.pgmajfault, v.pswpin, v.pswpout), (25435, 12, 345));
    }

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
27 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
28 27 259:1 / /boot/efi rw,relatime shared:2 - vfat /dev/nvme0n1p1 rw,fmask=0077
29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
30 27 0:27 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=1632404k,mode=755
31 27 0:28 / /tmp rw,nosuid,nodev shared:6 - tmpfs tmpfs rw,size=8162020k
32 27 259:2 /srv/data /mnt/data rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
33 31 259:3 / /tmp/scratch rw,relatime shared:7 - xfs /dev/nvme1n1 rw
34 31 259:2 /home/me/work /tmp/bound rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
40 27 0:52 / /var/lib/docker/overlay2/abc123/merged rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X:/var/lib/docker/overlay2/l/Y,upperdir=/var/lib/docker/overlay2/abc123/diff,workdir=/var/lib/docker/overlay2/abc123/work
41 27 0:53 / /media/My\\040Disk rw,relatime - fuse.sshfs me@host:/path\\040with\\040space rw,user_id=1000
42 27 7:0 / /snap/core/1 ro,nodev,relatime - squashfs /dev/loop0 ro
";

    const NVME: u32 = 259 << 20 | 2;

    #[test]
    fn mountinfo_keeps_storage_once_per_device() {
        let fs = Filesystems::parse(MOUNTINFO);
        let points: Vec<_> = fs
            .mounts()
            .map(|m| m.mount_point.to_str().unwrap())
            .collect();
        assert_eq!(
            points,
            [
                "/",
                "/boot/efi",
                "/run",
                "/tmp",
                "/tmp/scratch",
                "/var/lib/docker/overlay2/abc123/merged",
                "/media/My Disk"
            ]
        );
        let root = fs.by_dev(NVME).unwrap();
        assert_eq!(
            (root.fstype.as_str(), root.source.as_str()),
            ("ext4", "/dev/nvme0n1p2")
        );
        // Overlay's anonymous device, as st_dev reports it.
        let overlay = fs.by_dev(52).unwrap();
        assert_eq!(overlay.fstype, "overlay");
        let sshfs = fs.by_dev(53).unwrap();
        assert_eq!(sshfs.source, "me@host:/path with space");
        assert!(fs.by_dev(21).is_none(), "proc is not storage");
        assert!(fs.by_dev(26).is_none(), "cgroup2 is not storage");
    }

    #[test]
    fn paths_find_their_filesystem() {
        let fs = Filesystems::parse(MOUNTINFO);
        let on = |p: &str| {
            fs.for_path(Path::new(p))
                .map(|m| m.mount_point.to_str().unwrap())
        };
        assert_eq!(on("/var/log/syslog"), Some("/"));
        assert_eq!(on("/tmp/x"), Some("/tmp"));
        assert_eq!(on("/tmpfoo"), Some("/"), "prefixes are whole components");
        assert_eq!(on("/tmp/scratch/big.bin"), Some("/tmp/scratch"));
        // A bind of the root device inside tmpfs /tmp is the root device.
        assert_eq!(on("/tmp/bound/notes.txt"), Some("/"));
        assert_eq!(on("/media/My Disk/a"), Some("/media/My Disk"));
        assert_eq!(on("/proc/1/status"), None, "proc is not storage");
    }

    #[test]
    fn later_mount_hides_earlier_at_same_point() {
        let fs = Filesystems::parse(
            "25 24 0:23 / /dev/shm rw - tmpfs tmpfs rw\n30 25 0:27 / /dev/shm rw - tmpfs tmpfs rw\n",
        );
        assert_eq!(
            fs.for_path(Path::new("/dev/shm/x")).map(|m| m.dev),
            Some(27)
        );
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
        assert_eq!(unescape(r"/not\999"), r"/not\999");
    }

    #[test]
    fn fdinfo_flags() {
        assert!(opened_for_writing(
            "pos:\t686\nflags:\t0100001\nmnt_id:\t27\n"
        ));
        assert!(opened_for_writing("pos:\t0\nflags:\t02100002\n"));
        assert!(!opened_for_writing("pos:\t0\nflags:\t0100000\n"));
        assert!(!opened_for_writing("pos:\t0\n"));
    }

    #[test]
    fn live_host() {
        let proc = Path::new("/proc");
        let mem = memory(proc).unwrap();
        assert!(mem.total > 0 && mem.available <= mem.total);
        let fs = Filesystems::discover(proc);
        let root = fs.for_path(Path::new("/")).unwrap();
        let st = statfs(root).unwrap();
        assert!(st.size > 0);
        assert!(!hostname().is_empty());
    }

    /// A writer in another mount namespace: its fdinfo's mount id is not
    /// in our mountinfo but in its own, which names the device.
    #[test]
    fn written_filesystems_of_another_mount_namespace() {
        let root = tempfile::tempdir().unwrap();
        let proc = root.path().join("42");
        std::fs::create_dir_all(proc.join("fd")).unwrap();
        std::fs::create_dir_all(proc.join("fdinfo")).unwrap();
        std::os::unix::fs::symlink("/data/out.bin", proc.join("fd/3")).unwrap();
        std::fs::write(
            proc.join("fdinfo/3"),
            "pos:\t0\nflags:\t0100001\nmnt_id:\t977\n",
        )
        .unwrap();
        std::fs::write(
            proc.join("mountinfo"),
            "970 960 254:0 / / rw - ext4 /dev/vda rw\n977 970 254:16 / /data rw - ext4 /dev/vdb rw\n",
        )
        .unwrap();
        let ours = Filesystems::parse(
            "27 1 254:0 / / rw - ext4 /dev/vda rw\n28 27 254:16 / /data rw - ext4 /dev/vdb rw\n",
        );
        let vdb = mkdev(254, 16).unwrap();
        assert_eq!(written_filesystems(root.path(), 42, &ours), [(vdb, 1)]);
    }

    #[test]
    fn live_written_filesystems() {
        let dir = std::env::temp_dir().join(format!("sentinel-host-test-{}", std::process::id()));
        let file = fs::File::create(&dir).unwrap();
        let dev = {
            use std::os::unix::fs::MetadataExt;
            let d = file.metadata().unwrap().dev();
            mkdev(libc::major(d), libc::minor(d)).unwrap()
        };
        let mounts = Filesystems::discover(Path::new("/proc"));
        let written = written_filesystems(Path::new("/proc"), std::process::id(), &mounts);
        drop(file);
        let _ = fs::remove_file(&dir);
        assert!(
            written.iter().any(|&(d, n)| d == dev && n >= 1),
            "{written:?}"
        );
        assert!(written_filesystems(Path::new("/proc"), u32::MAX, &mounts).is_empty());
    }
}
