//! Every process in /proc, for `top`'s process list. The profiles hold only
//! processes the kernel has reported on since the probes attached; a
//! screen listing processes must show the quiet ones too. Their /proc
//! readings are refreshed every 10 s, not every frame: a quiet
//! process is one whose kernel counters do not move.
use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    cgroup::Resolver,
    procfs::{self, Stat},
    profile::Profiles,
};

/// How long a quiet process's reading is kept. Quiet means it faulted no
/// page and changed no RSS, so only its CPU time and state can move; as
/// in the profiles (`profile.rs`), 10 s.
const REFRESH: Duration = Duration::from_secs(10);
/// How often /proc is listed. Listing costs the kernel a lookup per pid
/// (a third of `top`'s CPU with 5,000 processes when done every second);
/// between listings the kernel's reports bring the new processes, and a
/// quiet process that exits stays listed until the next one.
const LIST_EVERY: Duration = Duration::from_secs(3);
/// How often /etc/passwd is read again when a uid has no name.
const PASSWD_REFRESH: Duration = Duration::from_secs(60);

pub struct Entry {
    pub stat: Stat,
    pub uid: u32,
    /// The cgroup v2 path and its id, read once: a quiet process rarely
    /// moves.
    pub cgroup: Option<String>,
    pub cgroup_id: u64,
    read_at: Instant,
    /// The listing that last found it.
    seen: u64,
    /// CPU ticks and when, at the reading before `stat`.
    prev: Option<(u64, Instant)>,
}

impl Entry {
    /// Percent of one core between the last two readings.
    pub fn cpu_pct(&self, hz: f64) -> Option<f64> {
        let (ticks, at) = self.prev?;
        let dt = self.read_at.duration_since(at).as_secs_f64();
        let now = self.stat.utime + self.stat.stime;
        (dt > 0.0).then(|| now.saturating_sub(ticks) as f64 / hz / dt * 100.0)
    }
}

#[derive(Default)]
pub struct ProcTable {
    pub entries: HashMap<u32, Entry>,
    users: Users,
    generation: u64,
    listed: Option<Instant>,
}

impl ProcTable {
    /// Brings the table up to date. The profiles say which processes the
    /// kernel reported on (new ones among them: exec and fork fault pages)
    /// and give their fresh /proc readings; /proc itself is listed every
    /// `LIST_EVERY` to find the quiet ones and see them go.
    pub fn refresh(&mut self, profiles: &Profiles, resolver: &Resolver) {
        let root = Path::new("/proc");
        let now = Instant::now();
        let list = self.listed.is_none_or(|t| now - t >= LIST_EVERY);
        let pids: Vec<u32> = if list {
            let Ok(dir) = fs::read_dir(root) else {
                return;
            };
            self.listed = Some(now);
            dir.flatten()
                .filter_map(|d| d.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        } else {
            let mut p: Vec<u32> = self.entries.keys().copied().collect();
            p.extend(
                profiles
                    .procs
                    .keys()
                    .filter(|k| !self.entries.contains_key(k)),
            );
            p
        };
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        for pid in pids {
            let given = profiles.procs.get(&pid).map(|p| p.stat);
            if let Some(e) = self.entries.get_mut(&pid) {
                let gone = profiles
                    .exited
                    .get(&pid)
                    .is_some_and(|(_, p)| p.start == e.stat.starttime);
                if gone && given.is_none_or(|g| g.starttime == e.stat.starttime) {
                    continue;
                }
                let due = now - e.read_at >= REFRESH;
                let stat = match (given, due) {
                    (Some(s), _) => s,
                    (None, true) => match procfs::stat(root, pid) {
                        Some(s) => s,
                        None => continue,
                    },
                    (None, false) => {
                        e.seen = generation;
                        continue;
                    }
                };
                // The same process: pid reuse changes the start time.
                if e.stat.starttime == stat.starttime {
                    e.seen = generation;
                    if e.stat != stat || due {
                        e.prev = Some((e.stat.utime + e.stat.stime, e.read_at));
                        e.stat = stat;
                        e.read_at = now;
                    }
                    continue;
                }
                self.entries.remove(&pid);
            }
            let Some(stat) = given.or_else(|| procfs::stat(root, pid)) else {
                continue;
            };
            // uid and cgroup are read once: setuid and cgroup moves are rare
            // for a process, and each is a system call per process.
            let cgroup = procfs::cgroup_v2_path(root, pid);
            self.entries.insert(
                pid,
                Entry {
                    stat,
                    uid: uid_of(root, pid).unwrap_or(u32::MAX),
                    cgroup_id: cgroup
                        .as_deref()
                        .and_then(|c| resolver.id_of(c))
                        .unwrap_or(0),
                    cgroup,
                    read_at: now,
                    prev: None,
                    seen: generation,
                },
            );
        }
        self.entries.retain(|_, e| e.seen == generation);
    }

    pub fn user(&mut self, uid: u32) -> String {
        self.users.name(uid)
    }
}

fn uid_of(root: &Path, pid: u32) -> Option<u32> {
    fs::metadata(root.join(pid.to_string()))
        .ok()
        .map(|m| m.uid())
}

/// uid to name from /etc/passwd. Not NSS: a lookup through LDAP or sssd
/// can block for seconds, and a screen refreshed every second cannot.
#[derive(Default)]
struct Users {
    names: HashMap<u32, String>,
    read_at: Option<Instant>,
}

impl Users {
    fn name(&mut self, uid: u32) -> String {
        if uid == u32::MAX {
            return "?".into();
        }
        if !self.names.contains_key(&uid)
            && self.read_at.is_none_or(|t| t.elapsed() >= PASSWD_REFRESH)
        {
            self.read_at = Some(Instant::now());
            if let Ok(text) = fs::read_to_string("/etc/passwd") {
                self.names = parse_passwd(&text);
            }
        }
        self.names
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }
}

fn parse_passwd(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_names() {
        let m = parse_passwd("root:x:0:0:root:/root:/bin/bash\nbad line\nwww-data:x:33:33::/:/x\n");
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&33).map(String::as_str), Some("www-data"));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn lists_this_process_with_its_parent_and_user() {
        let mut t = ProcTable::default();
        t.refresh(&Profiles::new(), &Resolver::with_root(None));
        let me = std::process::id();
        let e = t
            .entries
            .get(&me)
            .expect("this test's own process is listed");
        assert_eq!(e.stat.ppid, std::os::unix::process::parent_id());
        // SAFETY: no arguments.
        assert_eq!(e.uid, unsafe { libc::getuid() });
    }
}
