//! What the running process may do: loading tracing programs needs root, or
//! CAP_BPF with CAP_PERFMON (CAP_SYS_ADMIN covers both on older kernels),
//! and attaching them needs to read tracefs, which is mode 0700.
use std::fs;

use serde::{Deserialize, Serialize};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
const DAC_READ_SEARCH: &str = "CAP_DAC_READ_SEARCH";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Privileges {
    pub ok: bool,
    pub euid: u32,
    pub missing: Vec<String>,
}

impl Privileges {
    pub fn current() -> Privileges {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        let eff = cap_eff();
        // Asked of the filesystem rather than derived from the caps: a
        // tracefs mounted with a `gid=` or `mode=` may be readable anyway.
        Self::from_caps(euid, eff).with_tracefs_denied(crate::tracefs::access_denied())
    }

    /// Adds tracefs being unreadable (the probes cannot attach without it).
    pub fn with_tracefs_denied(mut self, denied: bool) -> Privileges {
        if denied {
            self.missing.push(DAC_READ_SEARCH.to_string());
            self.ok = false;
        }
        self
    }

    pub fn from_caps(euid: u32, cap_eff: u64) -> Privileges {
        let has = |c: u32| cap_eff & (1u64 << c) != 0;
        let mut missing = Vec::new();
        if !(has(CAP_BPF) || has(CAP_SYS_ADMIN)) {
            missing.push("CAP_BPF".to_string());
        }
        if !(has(CAP_PERFMON) || has(CAP_SYS_ADMIN)) {
            missing.push("CAP_PERFMON".to_string());
        }
        Privileges {
            ok: missing.is_empty(),
            euid,
            missing,
        }
    }

    /// One line for people: what is missing and how to get it.
    pub fn explain(&self) -> String {
        let tracefs = self.missing.iter().any(|m| m == DAC_READ_SEARCH);
        let (why, grant) = if tracefs {
            (
                format!(
                    ": cannot read tracefs at {}: permission denied",
                    crate::tracefs::TRACEFS
                ),
                "CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH",
            )
        } else {
            (String::new(), "CAP_BPF and CAP_PERFMON")
        };
        let how = if self.euid == 0 {
            // Root without them: a systemd CapabilityBoundingSet= or a
            // container's capability list took them away.
            format!(
                "running as root but without {}: add it to the unit's CapabilityBoundingSet=/\
                 AmbientCapabilities= or the container's capabilities",
                self.missing.join(" and ")
            )
        } else {
            format!(
                "run as root, e.g. `sudo sentinel ...`, or grant {grant}; running as uid {}",
                self.euid
            )
        };
        format!(
            "missing privilege: {}{why} ({how})",
            self.missing.join(" and ")
        )
    }
}

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_CHECKPOINT_RESTORE: u32 = 40;

/// The capabilities sentinel runs without but detects less without, each
/// with what is lost: for the daemon to say once at start, since nothing
/// fails loudly later. Empty as root with full capabilities.
pub fn limits() -> Vec<String> {
    limits_of(cap_eff(), memlock_unlimited())
}

fn limits_of(cap_eff: u64, memlock_unlimited: bool) -> Vec<String> {
    let has = |c: u32| cap_eff & (1u64 << c) != 0;
    let mut out = Vec::new();
    if !has(CAP_SYS_PTRACE) {
        out.push(
            "CAP_SYS_PTRACE: other users' /proc/PID/syscall, fdinfo and root are unreadable: \
             waits that began before sentinel are not seen, writers' filesystems are not named"
                .to_string(),
        );
    }
    if !has(CAP_DAC_READ_SEARCH) && !has(CAP_SYS_PTRACE) {
        out.push("CAP_DAC_READ_SEARCH: other users' /proc/PID/fd is unreadable".to_string());
    }
    if !has(CAP_CHECKPOINT_RESTORE) && !has(CAP_SYS_ADMIN) {
        out.push(
            "CAP_CHECKPOINT_RESTORE: /proc/PID/map_files is closed: stacks in libraries \
             replaced since their process started stay addresses"
                .to_string(),
        );
    }
    if !has(CAP_IPC_LOCK) && !memlock_unlimited {
        out.push(
            "CAP_IPC_LOCK (or LimitMEMLOCK=infinity): memory is not locked, so the daemon can \
             be paged out when the host runs out of memory"
                .to_string(),
        );
    }
    out
}

/// Whether RLIMIT_MEMLOCK allows locking everything the daemon maps.
pub fn memlock_unlimited() -> bool {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } == 0;
    ok && rl.rlim_cur == libc::RLIM_INFINITY
}

/// Whether this process may lock all its memory: an unlimited
/// RLIMIT_MEMLOCK or CAP_IPC_LOCK. `mlockall(MCL_FUTURE)` under a finite
/// limit would make later allocations fail instead.
pub fn can_lock_all() -> bool {
    memlock_unlimited() || cap_eff() & (1 << CAP_IPC_LOCK) != 0
}

/// This process's effective capabilities, from /proc/self/status.
fn cap_eff() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string()))
        })
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0)
}

/// The kernel lockdown mode (`none`, `integrity`, `confidentiality`).
/// Under `confidentiality` fentry and kernel memory reads are refused,
/// which decides the program types sentinel can use. securityfs is
/// mounted (read-only use) when it is not, as a fresh machine has it.
pub fn lockdown() -> Option<String> {
    const SECURITYFS: &str = "/sys/kernel/security";
    let file = format!("{SECURITYFS}/lockdown");
    if !std::path::Path::new(&file).exists() {
        let (src, tgt, fs) = (c"none", c"/sys/kernel/security", c"securityfs");
        // SAFETY: NUL-terminated literals, no data argument. Failure (not
        // root, no securityfs) just leaves the mode unknown.
        unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    }
    let text = fs::read_to_string(&file).ok()?;
    // "none integrity [confidentiality]": the bracketed one is active.
    text.split_whitespace().find_map(|w| {
        w.strip_prefix('[')
            .and_then(|w| w.strip_suffix(']'))
            .map(str::to_string)
    })
}

/// Lets maps be created on kernels older than 5.11, which charge them to
/// RLIMIT_MEMLOCK. Newer kernels use memcg accounting, and some hosts
/// forbid raising the limit (no CAP_SYS_RESOURCE), so failure is not fatal.
pub fn raise_memlock() {
    let rl = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_caps_are_enough() {
        assert!(Privileges::from_caps(0, u64::MAX).ok);
        assert!(Privileges::from_caps(1000, (1 << CAP_BPF) | (1 << CAP_PERFMON)).ok);
        assert!(Privileges::from_caps(1000, 1 << CAP_SYS_ADMIN).ok);
    }

    #[test]
    fn names_what_is_missing() {
        let p = Privileges::from_caps(65534, 0);
        assert!(!p.ok);
        assert_eq!(p.missing, vec!["CAP_BPF", "CAP_PERFMON"]);
        assert!(p.explain().contains("root"));
        let p = Privileges::from_caps(1000, 1 << CAP_BPF);
        assert_eq!(p.missing, vec!["CAP_PERFMON"]);
    }

    #[test]
    fn unreadable_tracefs_is_a_missing_privilege() {
        let p = Privileges::from_caps(1000, (1 << CAP_BPF) | (1 << CAP_PERFMON))
            .with_tracefs_denied(true);
        assert!(!p.ok);
        assert_eq!(p.missing, vec!["CAP_DAC_READ_SEARCH"]);
        let e = p.explain();
        assert!(
            e.contains("cannot read tracefs at /sys/kernel/tracing: permission denied"),
            "{e}"
        );
        assert!(
            Privileges::from_caps(0, u64::MAX)
                .with_tracefs_denied(false)
                .ok
        );
    }

    #[test]
    fn limits_name_what_is_lost() {
        assert!(limits_of(u64::MAX, false).is_empty());
        let all_but = |c: u32| !(1u64 << c);
        let named = |v: Vec<String>| {
            v.iter()
                .map(|l| l.split(':').next().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            named(limits_of(all_but(CAP_SYS_PTRACE), true)),
            ["CAP_SYS_PTRACE"]
        );
        assert_eq!(
            named(limits_of(all_but(CAP_IPC_LOCK), false)),
            ["CAP_IPC_LOCK (or LimitMEMLOCK=infinity)"]
        );
        assert!(limits_of(all_but(CAP_IPC_LOCK), true).is_empty());
        // SYS_ADMIN opens map_files too.
        assert!(limits_of(all_but(CAP_CHECKPOINT_RESTORE), true).is_empty());
        let bare = (1u64 << CAP_BPF) | (1u64 << CAP_PERFMON);
        assert_eq!(limits_of(bare, false).len(), 4);
    }
}
