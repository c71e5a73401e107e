//! cgroup layouts: pure v2 (/sys/fs/cgroup, production) and hybrid (v1
//! controllers plus v2 at /sys/fs/cgroup/unified). The probes see v2 ids
//! (`bpf_get_current_cgroup_id` = inode of the v2 directory); memory limits
//! live in whichever hierarchy has the memory controller.
use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow};

#[derive(Debug, Clone)]
pub struct Mounts {
    /// The cgroup2 mount, if any.
    pub v2: Option<PathBuf>,
    /// The v1 hierarchy holding the memory controller, on hybrid hosts.
    pub v1_memory: Option<PathBuf>,
}

impl Mounts {
    pub fn discover() -> Mounts {
        let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::parse(&text)
    }

    /// From mountinfo: `... mountpoint ... - fstype source superopts`.
    pub fn parse(mountinfo: &str) -> Mounts {
        let mut m = Mounts {
            v2: None,
            v1_memory: None,
        };
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let Some(point) = pre.split_whitespace().nth(4) else {
                continue;
            };
            let mut post = post.split_whitespace();
            let fstype = post.next().unwrap_or_default();
            let opts = post.nth(1).unwrap_or_default();
            match fstype {
                "cgroup2" if m.v2.is_none() => m.v2 = Some(PathBuf::from(point)),
                "cgroup" if opts.split(',').any(|o| o == "memory") => {
                    m.v1_memory = Some(PathBuf::from(point))
                }
                _ => {}
            }
        }
        m
    }

    /// Where memory limits are: (root, is_v1).
    pub fn memory_root(&self) -> Option<(PathBuf, bool)> {
        if let Some(v1) = &self.v1_memory {
            return Some((v1.clone(), true));
        }
        let v2 = self.v2.as_ref()?;
        let controllers = fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
        controllers
            .split_whitespace()
            .any(|c| c == "memory")
            .then(|| (v2.clone(), false))
    }
}

/// Maps v2 cgroup ids to paths (relative to the v2 mount, "/" for the
/// root). The tree is walked again when an id shows up that no walk has
/// seen (a new cgroup).
pub struct Resolver {
    root: Option<PathBuf>,
    /// Every id a walk has found. A removed cgroup keeps its last path: its
    /// exited members' counters still carry its id.
    by_id: HashMap<u64, String>,
    /// Ids a walk looked for and did not find: cgroups removed before we
    /// first saw them. Their ids live on in the folded stats, and looking
    /// for them again would walk the whole tree for nothing.
    not_found: HashSet<u64>,
}

impl Resolver {
    pub fn new(mounts: &Mounts) -> Resolver {
        Self::with_root(mounts.v2.clone())
    }

    pub(crate) fn with_root(root: Option<PathBuf>) -> Resolver {
        let mut r = Resolver {
            root,
            by_id: HashMap::new(),
            not_found: HashSet::new(),
        };
        r.rescan();
        r
    }

    fn rescan(&mut self) {
        let Some(root) = self.root.clone() else {
            return;
        };
        let by_id = &mut self.by_id;
        walk(&root, |dir, rel| {
            if let Ok(md) = fs::metadata(dir) {
                by_id.insert(md.ino(), rel.to_string());
            }
        });
    }

    /// The path of a cgroup id. An id no walk has seen triggers one walk;
    /// if that does not find it either, the id is not looked for again.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 || self.not_found.contains(&id) {
            return None;
        }
        if !self.by_id.contains_key(&id) {
            self.rescan();
        }
        let path = self.by_id.get(&id).cloned();
        if path.is_none() {
            self.not_found.insert(id);
        }
        path
    }

    /// Forgets ids the caller no longer needs (removed cgroups whose counts
    /// are gone from the kernel maps), so a host that churns containers
    /// does not grow this without bound.
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.by_id.retain(|&id, _| keep(id));
        self.not_found.retain(|&id| keep(id));
    }

    /// The id (inode) of a v2 path.
    pub fn id_of(&self, rel: &str) -> Option<u64> {
        let root = self.root.as_ref()?;
        fs::metadata(root.join(rel.trim_start_matches('/')))
            .ok()
            .map(|m| m.ino())
    }

    /// Pids in cgroup `rel` and its descendants.
    pub fn procs_in(&self, rel: &str) -> Vec<u32> {
        let Some(root) = &self.root else {
            return Vec::new();
        };
        let mut out = Vec::new();
        walk(&root.join(rel.trim_start_matches('/')), |dir, _| {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        });
        out
    }

    /// Accepts a v2-relative path (`/app.slice/x`) or an absolute path under
    /// the v2 mount, and returns the relative form, checking it exists and
    /// stays inside the v2 hierarchy (`/../memory` does not).
    pub fn normalize(&self, user: &str) -> Result<String> {
        let root = self
            .root
            .as_ref()
            .context("no cgroup v2 hierarchy is mounted, so --cgroup cannot be resolved")?;
        let canon_root = root
            .canonicalize()
            .with_context(|| format!("resolving the cgroup v2 mount {}", root.display()))?;
        let rel = match Path::new(user).strip_prefix(root) {
            Ok(r) => r.to_path_buf(),
            Err(_) => PathBuf::from(user.trim_start_matches('/')),
        };
        let dir = root.join(&rel);
        let canon = dir
            .canonicalize()
            .ok()
            .filter(|c| c.is_dir())
            .ok_or_else(|| anyhow!("cgroup {user} not found: no directory {}", dir.display()))?;
        let inside = canon.strip_prefix(&canon_root).map_err(|_| {
            anyhow!(
                "cgroup {user} is outside the cgroup v2 hierarchy at {} (it resolves to {})",
                root.display(),
                canon.display()
            )
        })?;
        let inside = inside
            .to_str()
            .with_context(|| format!("cgroup {user}: the path is not valid UTF-8"))?;
        Ok(format!("/{inside}"))
    }
}

/// Is `path` the cgroup `filter` or one of its descendants?
pub fn within(path: &str, filter: &str) -> bool {
    filter == "/"
        || path == filter
        || path
            .strip_prefix(filter)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Per memory cgroup: its OOM-kill count and how often it hit its limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemCounters {
    pub oom_kill: u64,
    /// v2 `memory.events` `oom`: the limit was reached and reclaim could
    /// not make room, so the charge was about to fail (`max` would also
    /// count hits that reclaim resolved). v1 has nothing that precise:
    /// `memory.failcnt` counts every charge that ran into the limit.
    pub limit_hits: u64,
    pub limit: Option<u64>,
}

/// Reads every memory cgroup's counters, keyed by path relative to the
/// memory root.
pub fn memory_counters(root: &Path, v1: bool) -> HashMap<String, MemCounters> {
    let mut out = HashMap::new();
    walk(root, |dir, rel| {
        out.insert(rel.to_string(), read_mem_counters(dir, v1));
    });
    out
}

/// Visits every cgroup directory under `root` with its path relative to
/// it ("/" for the root itself).
fn walk(root: &Path, mut visit: impl FnMut(&Path, &str)) {
    let mut stack = vec![(root.to_path_buf(), String::from("/"))];
    while let Some((dir, rel)) = stack.pop() {
        visit(&dir, &rel);
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let name = e.file_name().to_string_lossy().into_owned();
                let child = if rel == "/" {
                    format!("/{name}")
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((e.path(), child));
            }
        }
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn keyed(p: &Path, key: &str) -> Option<u64> {
    flat_key(&fs::read_to_string(p).ok()?, key)
}

/// A value of a flat-keyed cgroup file (`key value` lines), from its text:
/// for reading several keys of one file with one read.
fn flat_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

pub fn read_mem_counters(dir: &Path, v1: bool) -> MemCounters {
    if v1 {
        // An unlimited v1 memcg reports PAGE_COUNTER_MAX pages in bytes.
        let limit = read_u64(&dir.join("memory.limit_in_bytes")).filter(|&l| l < (1u64 << 62));
        MemCounters {
            oom_kill: keyed(&dir.join("memory.oom_control"), "oom_kill").unwrap_or(0),
            limit_hits: read_u64(&dir.join("memory.failcnt")).unwrap_or(0),
            limit,
        }
    } else {
        let limit = fs::read_to_string(dir.join("memory.max"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        MemCounters {
            oom_kill: keyed(&dir.join("memory.events"), "oom_kill").unwrap_or(0),
            limit_hits: keyed(&dir.join("memory.events"), "oom").unwrap_or(0),
            limit,
        }
    }
}

/// The tightest memory limit on a cgroup's path: the one a process in it
/// runs into first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemBound {
    /// Path in the memory hierarchy (v1 memory or v2).
    pub cgroup: String,
    pub limit: u64,
    /// Usage that reclaim cannot give back: usage minus page cache, plus
    /// shmem (tmpfs pages are cache that only swap can free). Cache, active
    /// or not, is dropped before anything is OOM-killed.
    pub used: u64,
    /// How much more the cgroup may swap out, when its own limit says;
    /// `None` when only the host's free swap bounds it.
    pub swap_room: Option<u64>,
}

impl MemBound {
    /// What the cgroup can still take: memory to its limit, plus what it
    /// can push to swap (its swap allowance, at most the host's free swap).
    pub fn headroom(&self, host_swap_free: u64) -> u64 {
        let swap = self
            .swap_room
            .map_or(host_swap_free, |r| r.min(host_swap_free));
        self.limit.saturating_sub(self.used).saturating_add(swap)
    }
}

/// `rel` and each of its ancestors with a limit; the one with the least
/// headroom wins. `None` when nothing on the path is limited.
pub fn memory_bound(root: &Path, v1: bool, rel: &str, host_swap_free: u64) -> Option<MemBound> {
    let mut best: Option<MemBound> = None;
    let mut cur = Some(rel.to_string());
    while let Some(p) = cur {
        if p != "/" {
            let dir = root.join(p.trim_start_matches('/'));
            if let Some(b) = read_bound(&dir, v1, &p) {
                let better = best
                    .as_ref()
                    .is_none_or(|x| b.headroom(host_swap_free) < x.headroom(host_swap_free));
                if better {
                    best = Some(b);
                }
            }
        }
        cur = parent(&p);
    }
    best
}

fn read_bound(dir: &Path, v1: bool, rel: &str) -> Option<MemBound> {
    let limit = read_mem_counters(dir, v1).limit?;
    let stat = fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    let key = |k: &str| flat_key(&stat, k).unwrap_or(0);
    let (usage, cache, shmem, swap_room) = if v1 {
        let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
        // memsw counts memory and swap together; what it leaves beyond the
        // memory limit is the swap allowance.
        let memsw_room = read_u64(&dir.join("memory.memsw.limit_in_bytes"))
            .filter(|&l| l < 1 << 62)
            .zip(read_u64(&dir.join("memory.memsw.usage_in_bytes")))
            .map(|(l, u)| {
                l.saturating_sub(u)
                    .saturating_sub(limit.saturating_sub(usage))
            });
        (usage, key("total_cache"), key("total_shmem"), memsw_room)
    } else {
        let usage = read_u64(&dir.join("memory.current"))?;
        let swap_room = read_u64(&dir.join("memory.swap.max"))
            .map(|m| m.saturating_sub(read_u64(&dir.join("memory.swap.current")).unwrap_or(0)));
        (usage, key("file"), key("shmem"), swap_room)
    };
    Some(MemBound {
        cgroup: rel.to_string(),
        limit,
        used: usage.saturating_sub(cache).saturating_add(shmem).min(usage),
        swap_room,
    })
}

/// A memory cgroup's anonymous memory plus swap, from its own counters
/// (hierarchical: descendants included).
pub fn anon_and_swap(dir: &Path, v1: bool) -> Option<u64> {
    let stat = fs::read_to_string(dir.join("memory.stat")).ok()?;
    let key = |k: &str| flat_key(&stat, k);
    if v1 {
        Some(key("total_rss")? + key("total_swap").unwrap_or(0))
    } else {
        Some(key("anon")? + read_u64(&dir.join("memory.swap.current")).unwrap_or(0))
    }
}

/// Decides which memory cgroup's limit caused an OOM kill, from counters
/// before and after it: the victim's memcg is the deepest whose `oom_kill`
/// grew, preferring one on `victim_path` (the victim's cgroup and its
/// ancestors) when other kills made other counters grow too; the limit is
/// the nearest of it and its ancestors that has a limit and ran into it.
/// `Some((victim, None))`: no limit was involved (a global OOM); `None`:
/// no `oom_kill` counter grew.
pub fn oom_limit_cgroup(
    before: &HashMap<String, MemCounters>,
    after: &HashMap<String, MemCounters>,
    victim_path: Option<&str>,
) -> Option<(String, Option<String>)> {
    let grew = |p: &String, f: fn(&MemCounters) -> u64| {
        let b = before.get(p).map(f).unwrap_or(0);
        after.get(p).map(f).unwrap_or(0) > b
    };
    let depth = |p: &&String| (p.matches('/').count(), p.len());
    let grown: Vec<&String> = after.keys().filter(|p| grew(p, |c| c.oom_kill)).collect();
    let on_path = |p: &&String| victim_path.is_some_and(|v| within(v, p));
    let victim = grown
        .iter()
        .copied()
        .filter(on_path)
        .max_by_key(depth)
        .or_else(|| grown.iter().copied().max_by_key(depth))?
        .clone();
    let mut cur = Some(victim.clone());
    while let Some(p) = cur {
        if p != "/"
            && after.get(&p).is_some_and(|c| c.limit.is_some())
            && grew(&p, |c| c.limit_hits)
        {
            return Some((victim, Some(p)));
        }
        cur = parent(&p);
    }
    Some((victim, None))
}

fn parent(p: &str) -> Option<String> {
    if p == "/" {
        return None;
    }
    match p.rfind('/') {
        Some(0) => Some("/".into()),
        Some(i) => Some(p[..i].to_string()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        fs::create_dir_all(dir).unwrap();
        for (f, v) in files {
            fs::write(dir.join(f), v).unwrap();
        }
    }

    #[test]
    fn the_tightest_limit_counts_cache_as_headroom_and_swap_as_room() {
        let root = tempfile::tempdir().unwrap();
        // v2: a pod limited to 4 GB holding 3 GB, 1 GB of it cache (100 MB
        // of which is tmpfs); its container limited to 8 GB (no bound).
        write(
            &root.path().join("pod"),
            &[
                ("memory.max", "4000000000\n"),
                ("memory.current", "3000000000\n"),
                (
                    "memory.stat",
                    "anon 2000000000\nfile 1000000000\nshmem 100000000\n",
                ),
                ("memory.swap.max", "500000000\n"),
                ("memory.swap.current", "100000000\n"),
            ],
        );
        write(
            &root.path().join("pod/ctr"),
            &[
                ("memory.max", "8000000000\n"),
                ("memory.current", "3000000000\n"),
                ("memory.stat", "file 1000000000\nshmem 100000000\n"),
                ("memory.swap.max", "max\n"),
            ],
        );
        let b = memory_bound(root.path(), false, "/pod/ctr", 10_000_000_000).unwrap();
        assert_eq!(b.cgroup, "/pod");
        assert_eq!(b.used, 2_100_000_000, "cache is reclaimable, tmpfs is not");
        assert_eq!(b.swap_room, Some(400_000_000));
        assert_eq!(b.headroom(10_000_000_000), 1_900_000_000 + 400_000_000);
        assert_eq!(b.headroom(0), 1_900_000_000, "no host swap, no swap room");
        assert!(memory_bound(root.path(), false, "/other", 0).is_none());
    }

    #[test]
    fn a_cgroups_own_anon_and_swap() {
        let root = tempfile::tempdir().unwrap();
        let v2 = root.path().join("v2");
        write(
            &v2,
            &[
                ("memory.stat", "anon 300\nfile 900\nanon_thp 0\n"),
                ("memory.swap.current", "50\n"),
            ],
        );
        assert_eq!(anon_and_swap(&v2, false), Some(350));
        let v1 = root.path().join("v1");
        write(
            &v1,
            &[("memory.stat", "rss 1\ntotal_rss 300\ntotal_swap 20\n")],
        );
        assert_eq!(anon_and_swap(&v1, true), Some(320));
        assert_eq!(anon_and_swap(&root.path().join("gone"), false), None);
    }

    #[test]
    fn v1_swap_room_comes_from_memsw() {
        let root = tempfile::tempdir().unwrap();
        write(
            &root.path().join("job"),
            &[
                ("memory.limit_in_bytes", "1000\n"),
                ("memory.usage_in_bytes", "800\n"),
                ("memory.stat", "total_cache 300\ntotal_shmem 0\n"),
                ("memory.memsw.limit_in_bytes", "1500\n"),
                ("memory.memsw.usage_in_bytes", "900\n"),
            ],
        );
        let b = memory_bound(root.path(), true, "/job", 1 << 30).unwrap();
        assert_eq!(b.used, 500);
        // mem+swap may grow 600 more, of which 200 fit under the memory limit.
        assert_eq!(b.swap_room, Some(400));
    }

    #[test]
    fn parses_hybrid_and_pure_v2_mountinfo() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                      36 25 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      37 25 0:32 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        let m = Mounts::parse(hybrid);
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            m.v1_memory.as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        let pure = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let m = Mounts::parse(pure);
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        assert!(m.v1_memory.is_none());
    }

    #[test]
    fn within_matches_descendants_only() {
        assert!(within("/a/b", "/a"));
        assert!(within("/a", "/a"));
        assert!(!within("/ab", "/a"));
        assert!(within("/anything", "/"));
    }

    fn mc(oom_kill: u64, limit_hits: u64, limit: Option<u64>) -> MemCounters {
        MemCounters {
            oom_kill,
            limit_hits,
            limit,
        }
    }

    #[test]
    fn finds_the_limit_that_was_hit() {
        let before: HashMap<String, MemCounters> = [
            ("/".to_string(), mc(0, 0, None)),
            ("/job".to_string(), mc(0, 5, Some(64 << 20))),
            ("/job/worker".to_string(), mc(0, 0, None)),
        ]
        .into();
        let mut after = before.clone();
        after.insert("/job/worker".into(), mc(1, 0, None));
        after.insert("/job".into(), mc(1, 90, Some(64 << 20)));
        assert_eq!(
            oom_limit_cgroup(&before, &after, Some("/job/worker")),
            Some(("/job/worker".into(), Some("/job".into())))
        );
    }

    #[test]
    fn prefers_the_victims_own_path_when_two_kills_share_a_reading() {
        let before: HashMap<String, MemCounters> = [
            ("/".to_string(), mc(0, 0, None)),
            ("/a".to_string(), mc(0, 0, Some(64 << 20))),
            ("/b".to_string(), mc(0, 0, Some(32 << 20))),
            ("/b/deep".to_string(), mc(0, 0, None)),
        ]
        .into();
        let mut after = before.clone();
        after.insert("/a".into(), mc(1, 1, Some(64 << 20)));
        after.insert("/b".into(), mc(1, 1, Some(32 << 20)));
        after.insert("/b/deep".into(), mc(1, 0, None));
        assert_eq!(
            oom_limit_cgroup(&before, &after, Some("/a")),
            Some(("/a".into(), Some("/a".into()))),
            "the deeper /b/deep grew too, but the victim is in /a"
        );
        assert_eq!(
            oom_limit_cgroup(&before, &after, Some("/b/deep")),
            Some(("/b/deep".into(), Some("/b".into())))
        );
        // Unknown victim cgroup (already removed): the deepest that grew.
        assert_eq!(
            oom_limit_cgroup(&before, &after, None),
            Some(("/b/deep".into(), Some("/b".into())))
        );
    }

    #[test]
    fn v2_limit_hits_are_oom_events_not_max() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("memory.max"), "67108864\n").unwrap();
        fs::write(
            dir.path().join("memory.events"),
            "low 0\nhigh 0\nmax 812\noom 3\noom_kill 2\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(
            read_mem_counters(dir.path(), false),
            mc(2, 3, Some(64 << 20))
        );
        fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        assert_eq!(read_mem_counters(dir.path(), false).limit, None);
    }

    #[test]
    fn resolver_walks_once_per_unknown_id() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("job/worker")).unwrap();
        let mut r = Resolver::with_root(Some(dir.path().to_path_buf()));
        let ino = |p: &str| fs::metadata(dir.path().join(p)).unwrap().ino();
        let worker = ino("job/worker");
        assert_eq!(r.path(worker).as_deref(), Some("/job/worker"));
        // A cgroup created after the first walk is found by a new walk.
        fs::create_dir_all(dir.path().join("late")).unwrap();
        assert_eq!(r.path(ino("late")).as_deref(), Some("/late"));
        // A removed cgroup keeps its last known path. (Created before the
        // removal: a test filesystem may reuse inodes, cgroupfs does not.)
        fs::create_dir_all(dir.path().join("later")).unwrap();
        fs::remove_dir(dir.path().join("job/worker")).unwrap();
        assert_eq!(r.path(ino("later")).as_deref(), Some("/later"));
        assert_eq!(r.path(worker).as_deref(), Some("/job/worker"));
        // An id no walk found is remembered as missing: no further walks.
        assert_eq!(r.path(u64::MAX), None);
        assert!(r.not_found.contains(&u64::MAX));
        let walked = r.by_id.len();
        fs::create_dir_all(dir.path().join("unseen")).unwrap();
        assert_eq!(r.path(u64::MAX), None);
        assert_eq!(r.by_id.len(), walked, "no walk for a known-missing id");
    }

    #[test]
    fn normalize_stays_inside_the_hierarchy() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cgroup");
        fs::create_dir_all(root.join("system.slice/x.service")).unwrap();
        fs::create_dir_all(dir.path().join("memory")).unwrap();
        let r = Resolver::with_root(Some(root.clone()));
        assert_eq!(
            r.normalize("/system.slice/x.service/").unwrap(),
            "/system.slice/x.service"
        );
        assert_eq!(r.normalize("system.slice").unwrap(), "/system.slice");
        let abs = root.join("system.slice/x.service");
        assert_eq!(
            r.normalize(abs.to_str().unwrap()).unwrap(),
            "/system.slice/x.service"
        );
        assert_eq!(r.normalize("/").unwrap(), "/");
        assert_eq!(r.normalize("/system.slice/..").unwrap(), "/");
        let e = r.normalize("/../memory").unwrap_err().to_string();
        assert!(e.contains("outside"), "{e}");
        let e = r.normalize("/nope").unwrap_err().to_string();
        assert!(e.contains("not found"), "{e}");
        let e = Resolver::with_root(None).normalize("/x").unwrap_err();
        assert!(e.to_string().contains("no cgroup v2"));
    }

    #[test]
    fn a_kill_without_a_hit_limit_is_global() {
        let before: HashMap<String, MemCounters> = [
            ("/".to_string(), mc(0, 0, None)),
            ("/svc".to_string(), mc(0, 0, Some(1 << 30))),
        ]
        .into();
        let mut after = before.clone();
        after.insert("/svc".into(), mc(1, 0, Some(1 << 30)));
        assert_eq!(
            oom_limit_cgroup(&before, &after, Some("/svc")),
            Some(("/svc".into(), None))
        );
        assert_eq!(oom_limit_cgroup(&before, &before, Some("/svc")), None);
    }
}
