//! Small /proc readers. Each takes the proc root so tests can use a fake
//! tree.
use std::{collections::HashMap, fs, path::Path};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemStatus {
    pub vm_rss: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
    pub vm_swap: u64,
}

/// RSS figures from `/proc/PID/status`, in bytes.
pub fn mem_status(root: &Path, pid: u32) -> Option<MemStatus> {
    let text = fs::read_to_string(root.join(pid.to_string()).join("status")).ok()?;
    Some(parse_mem_status(&text))
}

pub fn parse_mem_status(text: &str) -> MemStatus {
    let mut m = MemStatus::default();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let kb = || {
            rest.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .map(|v| v * 1024)
        };
        match key {
            "VmRSS" => m.vm_rss = kb().unwrap_or(0),
            "RssAnon" => m.rss_anon = kb().unwrap_or(0),
            "RssFile" => m.rss_file = kb().unwrap_or(0),
            "RssShmem" => m.rss_shmem = kb().unwrap_or(0),
            "VmSwap" => m.vm_swap = kb().unwrap_or(0),
            _ => {}
        }
    }
    m
}

pub fn alive(root: &Path, pid: u32) -> bool {
    root.join(pid.to_string()).exists()
}

pub fn comm(root: &Path, pid: u32) -> Option<String> {
    fs::read_to_string(root.join(pid.to_string()).join("comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// The cgroup v2 path of a process (`0::/path` line).
pub fn cgroup_v2_path(root: &Path, pid: u32) -> Option<String> {
    let text = fs::read_to_string(root.join(pid.to_string()).join("cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

/// A process's path in the hierarchy that holds the memory controller: the
/// v1 `memory` line on hybrid hosts, else the v2 `0::` line.
pub fn memory_cgroup_path(root: &Path, pid: u32, v1: bool) -> Option<String> {
    if !v1 {
        return cgroup_v2_path(root, pid);
    }
    let text = fs::read_to_string(root.join(pid.to_string()).join("cgroup")).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    })
}

/// The thread group (process) a pid belongs to: `/proc/TID` exists for
/// every thread, not only for leaders, so a tid passes `alive`.
pub fn tgid(root: &Path, pid: u32) -> Option<u32> {
    let text = fs::read_to_string(root.join(pid.to_string()).join("status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Is `tid` a live thread of process `pid`?
pub fn has_thread(root: &Path, pid: u32, tid: u32) -> bool {
    root.join(pid.to_string())
        .join("task")
        .join(tid.to_string())
        .exists()
}

/// A thread's ids in each pid namespace, outermost (the host's) first:
/// the `NSpid:` line of its status.
pub fn parse_nspid(status: &str) -> Option<Vec<u32>> {
    let ids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (!ids.is_empty()).then_some(ids)
}

/// The threads of `pid`, keyed by their tid in the process's own (innermost)
/// pid namespace, with their host tid as value. For a process in the host's
/// namespace both are the same. `None` when the kernel has no `NSpid` (before
/// 4.1) or the process is gone.
pub fn thread_ns_tids(root: &Path, pid: u32) -> Option<HashMap<u32, u32>> {
    let entries = fs::read_dir(root.join(pid.to_string()).join("task")).ok()?;
    let mut out = HashMap::new();
    let mut saw_nspid = false;
    for e in entries.flatten() {
        // A thread that exits while we read just drops out.
        let Ok(text) = fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let Some(ids) = parse_nspid(&text) else {
            continue;
        };
        saw_nspid = true;
        if let (Some(&host), Some(&inner)) = (ids.first(), ids.last()) {
            out.insert(inner, host);
        }
    }
    saw_nspid.then_some(out)
}

/// The fields of `/proc/PID/stat` (or `/proc/PID/task/TID/stat`) the
/// profiles need. CPU times are in clock ticks, `rss` in pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    /// The leader's name, NUL-padded (the kernel's 16-byte `comm`).
    pub comm: [u8; 16],
    pub state: u8,
    pub ppid: u32,
    /// The task's `PF_*` flags.
    pub flags: u32,
    pub majflt: u64,
    pub utime: u64,
    pub stime: u64,
    pub num_threads: u32,
    /// Ticks after boot: with the pid, names one process across pid reuse.
    pub starttime: u64,
    pub rss_pages: u64,
}

impl Stat {
    pub fn comm(&self) -> String {
        crate::oom::cstr(&self.comm)
    }
}

pub fn stat(root: &Path, pid: u32) -> Option<Stat> {
    parse_stat(&read_small(&root.join(pid.to_string()).join("stat"))?)
}

/// Reads a small /proc file with one buffer: `read_to_string` would stat it
/// and grow its buffer from a tiny probe read, several system calls per
/// file where the daemon reads one file per process per tick.
pub fn read_small(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len == buf.len() {
                    buf.resize(buf.len() * 2, 0);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    // A comm cut mid-character by the kernel's 15-byte limit is not UTF-8;
    // the numbers around it still are.
    Some(String::from_utf8_lossy(&buf).into_owned())
}

pub fn task_stat(root: &Path, pid: u32, tid: u32) -> Option<Stat> {
    let path = root
        .join(pid.to_string())
        .join("task")
        .join(tid.to_string())
        .join("stat");
    parse_stat(&read_small(&path)?)
}

/// The comm field can hold spaces and parentheses, so fields are counted
/// from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let close = text.rfind(')')?;
    let name = text.get(text.find('(')? + 1..close)?.as_bytes();
    let mut comm = [0u8; 16];
    let n = name.len().min(16);
    comm[..n].copy_from_slice(&name[..n]);
    let rest = &text[close + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state) of proc(5).
    let n = |field: usize| f.get(field - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        comm,
        state: *f.first()?.as_bytes().first()?,
        ppid: n(4)? as u32,
        flags: n(9)? as u32,
        majflt: n(12)?,
        utime: n(14)?,
        stime: n(15)?,
        num_threads: n(20)? as u32,
        starttime: n(22)?,
        rss_pages: n(24)?,
    })
}

/// sentinel's own CPU seconds (every thread) and resident bytes. Neither
/// read can block: getrusage is a system call on ourselves, and statm of
/// our own process reads counters without taking the mm's lock.
pub fn own_usage(page_size: u64) -> (f64, u64) {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // Summed in whole microseconds: a sum of float seconds would print
    // as 0.11826600000000001.
    let cpu = if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
        let us = |t: libc::timeval| t.tv_sec.max(0) as u64 * 1_000_000 + t.tv_usec.max(0) as u64;
        (us(ru.ru_utime) + us(ru.ru_stime)) as f64 / 1e6
    } else {
        0.0
    };
    let rss = read_small(Path::new("/proc/self/statm"))
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page_size);
    (cpu, rss)
}

/// A thread's own name (`pthread_setname_np`), which can differ from its
/// process's.
pub fn thread_comm(root: &Path, pid: u32, tid: u32) -> Option<String> {
    read_small(&root.join(format!("{pid}/task/{tid}/comm"))).map(|s| s.trim_end().to_string())
}

/// Thread ids of a process; empty once it is gone.
pub fn tids(root: &Path, pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(root.join(pid.to_string()).join("task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The user instruction pointer of a thread blocked in a system call: the
/// last field of `/proc/PID/task/TID/syscall` (`NR args.. sp pc`). It is
/// the one frame of a stack /proc can give.
pub fn syscall_pc(root: &Path, pid: u32, tid: u32) -> Option<u64> {
    let path = root
        .join(pid.to_string())
        .join("task")
        .join(tid.to_string())
        .join("syscall");
    let text = fs::read_to_string(path).ok()?;
    let f: Vec<&str> = text.split_whitespace().collect();
    // "running" or "-1 sp pc" (not in a syscall) carry no useful pc.
    if f.len() < 9 {
        return None;
    }
    u64::from_str_radix(f.last()?.trim_start_matches("0x"), 16)
        .ok()
        .filter(|&pc| pc != 0)
}

pub fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as u64,
        _ => 100,
    }
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as u64,
        _ => 4096,
    }
}

pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 1200 0 7 0 350 120 0 0 20 0 9 0 123456 1000000 2500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(line).expect("parses");
        assert_eq!(
            s,
            Stat {
                comm: *b"a) b (c)\0\0\0\0\0\0\0\0",
                state: b'S',
                ppid: 1,
                flags: 4194560,
                majflt: 7,
                utime: 350,
                stime: 120,
                num_threads: 9,
                starttime: 123456,
                rss_pages: 2500
            }
        );
        assert!(parse_stat("12 (x) R 1").is_none());
        let me = stat(Path::new("/proc"), std::process::id()).expect("own stat");
        assert!(me.num_threads >= 1 && me.starttime > 0);
    }

    #[test]
    fn parses_status() {
        let m = parse_mem_status(
            "Name:\tx\nVmRSS:\t  2048 kB\nRssAnon:\t1024 kB\nRssFile:\t 512 kB\nRssShmem:\t 512 kB\nVmSwap:\t 4 kB\n",
        );
        assert_eq!(
            m,
            MemStatus {
                vm_rss: 2 << 20,
                rss_anon: 1 << 20,
                rss_file: 512 << 10,
                rss_shmem: 512 << 10,
                vm_swap: 4096
            }
        );
    }

    #[test]
    fn reads_a_fake_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("42");
        fs::create_dir_all(&p).unwrap();
        fs::write(
            p.join("cgroup"),
            "12:memory:/a\n0::/system.slice/x.service\n",
        )
        .unwrap();
        fs::write(p.join("comm"), "python3\n").unwrap();
        fs::write(p.join("status"), "Name:\tpython3\nTgid:\t42\nPid:\t42\n").unwrap();
        assert_eq!(
            cgroup_v2_path(dir.path(), 42).as_deref(),
            Some("/system.slice/x.service")
        );
        assert_eq!(comm(dir.path(), 42).as_deref(), Some("python3"));
        assert_eq!(tgid(dir.path(), 42), Some(42));
        assert!(alive(dir.path(), 42));
        assert!(!alive(dir.path(), 43));
    }

    #[test]
    fn a_thread_names_its_process() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("43");
        fs::create_dir_all(&t).unwrap();
        fs::write(t.join("status"), "Name:\tworker\nTgid:\t42\nPid:\t43\n").unwrap();
        assert_eq!(tgid(dir.path(), 43), Some(42));
        assert_eq!(tgid(dir.path(), 44), None);
    }

    fn task(root: &Path, pid: u32, tid: u32, status: &str) {
        let d = root
            .join(pid.to_string())
            .join("task")
            .join(tid.to_string());
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("status"), status).unwrap();
    }

    #[test]
    fn maps_namespace_tids_to_host_tids() {
        let dir = tempfile::tempdir().unwrap();
        // A containerized process: host 4200/4201, 7/8 in its namespace.
        task(dir.path(), 4200, 4200, "Tgid:\t4200\nNSpid:\t4200\t7\n");
        task(dir.path(), 4200, 4201, "Tgid:\t4200\nNSpid:\t4201\t8\n");
        let m = thread_ns_tids(dir.path(), 4200).unwrap();
        assert_eq!(m, HashMap::from([(7, 4200), (8, 4201)]));
        // A host process: both numbers are the same.
        task(dir.path(), 99, 100, "Tgid:\t99\nNSpid:\t100\n");
        assert_eq!(
            thread_ns_tids(dir.path(), 99),
            Some(HashMap::from([(100, 100)]))
        );
        // No NSpid line (kernels before 4.1): nothing to translate with.
        task(dir.path(), 5, 5, "Tgid:\t5\n");
        assert_eq!(thread_ns_tids(dir.path(), 5), None);
        assert!(has_thread(dir.path(), 4200, 4201));
        assert!(!has_thread(dir.path(), 4200, 8));
    }

    #[test]
    fn parses_nested_nspid() {
        assert_eq!(
            parse_nspid("Name:\tx\nNSpid:\t900\t40\t1\n"),
            Some(vec![900, 40, 1])
        );
        assert_eq!(parse_nspid("Name:\tx\n"), None);
    }
}
