//! Small /proc readers. Each takes the proc root so tests can use a fake
//! tree.
use std::{fs, path::Path};

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

/// Kernel threads have no memory map; their I/O is the flusher's, not a
/// workload's.
pub fn is_kernel_thread(root: &Path, pid: u32) -> bool {
    fs::read_to_string(root.join(pid.to_string()).join("stat"))
        .ok()
        .and_then(|s| {
            // Field 9 (flags), counted after the `(comm)` which may hold spaces.
            let after = &s[s.rfind(')')? + 1..];
            after.split_whitespace().nth(6)?.parse::<u64>().ok()
        })
        .is_some_and(|flags| flags & 0x0020_0000 != 0) // PF_KTHREAD
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
        fs::write(
            p.join("stat"),
            "42 (my (odd) name) S 1 42 42 0 -1 2097216 0 0",
        )
        .unwrap();
        assert_eq!(
            cgroup_v2_path(dir.path(), 42).as_deref(),
            Some("/system.slice/x.service")
        );
        assert_eq!(comm(dir.path(), 42).as_deref(), Some("python3"));
        assert!(is_kernel_thread(dir.path(), 42));
        assert!(alive(dir.path(), 42));
        assert!(!alive(dir.path(), 43));
    }
}
