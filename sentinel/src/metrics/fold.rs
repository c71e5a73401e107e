//! Keeps the per-container series bounded and their counters monotonic.
//!
//! Series are keyed by the container's name, not its cgroup: a restarted
//! service or container comes back under the same name in a new cgroup,
//! and its series simply continue. Each name has a bucket that accumulates
//! what its cgroups did between ticks, so its counters only ever grow,
//! across restarts and while it is hidden. Names seen for less than
//! `min_age` (a cron job's scope, a build step's container), and the
//! smallest beyond `max_containers`, go to the `other` bucket instead.
//! Buckets of names no longer present are kept (not shown) for an hour, so
//! a service back within that time keeps counting from where it was.
use std::collections::{HashMap, HashSet};

/// The name of the bucket that takes every container not shown on its own.
pub const OTHER: &str = "other";

/// How long the state of a name or cgroup is kept after it was last seen.
const RETAIN_S: f64 = 3600.0;
/// Hard bounds on that state, for hosts that churn through cgroups faster
/// than `RETAIN_S` forgets them.
const MAX_NAMES: usize = 10_000;
const MAX_CGROUPS: usize = 10_000;
/// A name shown at the last tick ranks as if it used this much more
/// memory, so two containers of about the same size near the
/// `max_containers` cut do not swap places (and series) every tick.
const INCUMBENT_BONUS: u64 = 2;

/// A process as the fold sees it.
#[derive(Debug, Clone, Default)]
pub struct ProcIn<'a> {
    pub pid: u32,
    /// Clock ticks after boot: with the pid, the process's identity.
    pub start: u64,
    pub comm: &'a str,
    pub cgroup_id: u64,
    pub rss: u64,
    /// Cumulative major faults over the process's life, from /proc.
    pub majflt: u64,
    pub fault_rate: f64,
    pub read_rate: f64,
    pub write_rate: f64,
    /// Threads in a long futex wait.
    pub blocked: u32,
}

/// A cgroup with live processes, as the fold sees it.
#[derive(Debug, Clone, Default)]
pub struct CgroupIn {
    pub id: u64,
    /// The container's name (its runtime's, else the cgroup path).
    pub name: String,
    /// Seconds since its oldest live member started.
    pub age: f64,
    pub rss: u64,
    /// The kernel's cumulative counters for the cgroup, exited members
    /// included (wrapping sums).
    pub faults: u64,
    pub read: u64,
    pub write: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub faults: u64,
    pub majflt: u64,
    pub read: u64,
    pub write: u64,
    pub oom_kills: u64,
}

impl Totals {
    fn add(&mut self, d: &Totals) {
        self.faults = self.faults.wrapping_add(d.faults);
        self.majflt = self.majflt.wrapping_add(d.majflt);
        self.read = self.read.wrapping_add(d.read);
        self.write = self.write.wrapping_add(d.write);
        self.oom_kills = self.oom_kills.wrapping_add(d.oom_kills);
    }
}

/// One `container` label value on the page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub name: String,
    /// Gauges, summed over the cgroups in the row now.
    pub rss: u64,
    pub blocked: u64,
    pub cgroups: usize,
    pub totals: Totals,
}

#[derive(Debug, Default)]
pub struct Folded {
    /// Sorted by name; `other` is always there.
    pub rows: Vec<Row>,
    /// The label each cgroup id was shown under.
    pub label_of: HashMap<u64, usize>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min_age: f64,
    pub max_containers: usize,
}

struct Bucket {
    first_seen: f64,
    last_seen: f64,
    totals: Totals,
}

struct CgroupState {
    last_seen: f64,
    /// faults, read, write at the last tick.
    raw: [u64; 3],
}

pub struct Fold {
    names: HashMap<String, Bucket>,
    cgroups: HashMap<u64, CgroupState>,
    /// pid -> (start, majflt at the last tick).
    procs: HashMap<u32, (u64, u64)>,
    other: Totals,
    shown: HashSet<String>,
    /// Boot ticks when the fold began: processes started before it carry
    /// major faults from before, which are history, not news.
    since: u64,
}

impl Fold {
    pub fn new(since_ticks: u64) -> Fold {
        Fold {
            names: HashMap::new(),
            cgroups: HashMap::new(),
            procs: HashMap::new(),
            other: Totals::default(),
            shown: HashSet::new(),
            since: since_ticks,
        }
    }

    /// Folds one tick in. `kills` are the OOM kills since the last tick:
    /// the victim's cgroup id, and its container's name when known (its
    /// cgroup may be gone already).
    pub fn step(
        &mut self,
        t: f64,
        procs: &[ProcIn],
        cgroups: &[CgroupIn],
        kills: &[(u64, Option<String>)],
        limits: Limits,
    ) -> Folded {
        // Major faults come per process from /proc: a container's sum would
        // drop whenever a member exits. Only each member's growth counts.
        let mut per_cgroup: HashMap<u64, (u64, u64)> = HashMap::with_capacity(cgroups.len());
        let mut next_procs = HashMap::with_capacity(procs.len());
        for p in procs {
            let grown = match self.procs.get(&p.pid) {
                Some(&(start, last)) if start == p.start => p.majflt.saturating_sub(last),
                _ if p.start >= self.since => p.majflt,
                _ => 0,
            };
            next_procs.insert(p.pid, (p.start, p.majflt));
            let e = per_cgroup.entry(p.cgroup_id).or_default();
            e.0 += grown;
            e.1 += u64::from(p.blocked);
        }
        self.procs = next_procs;

        // Growth of each cgroup's counters since the last tick. A cgroup
        // seen for the first time brings everything the kernel counted for
        // it: that began at attach, and a cgroup shows up here as soon as a
        // member does anything, so it is recent work, not history.
        let mut deltas = Vec::with_capacity(cgroups.len());
        for c in cgroups {
            let raw = [c.faults, c.read, c.write];
            let d = match self.cgroups.get(&c.id) {
                Some(s) => std::array::from_fn(|i| grown(raw[i], s.raw[i])),
                None => raw,
            };
            self.cgroups.insert(c.id, CgroupState { last_seen: t, raw });
            let (majflt, _) = per_cgroup.get(&c.id).copied().unwrap_or_default();
            deltas.push(Totals {
                faults: d[0],
                majflt,
                read: d[1],
                write: d[2],
                oom_kills: 0,
            });
        }

        // Which names are shown: old enough, and among the largest.
        // A name is as old as its oldest process, or as the first time it
        // was seen if that is earlier (a service restarted a moment ago).
        let mut by_name: HashMap<&str, u64> = HashMap::new();
        for c in cgroups {
            let b = self.names.entry(c.name.clone()).or_insert(Bucket {
                first_seen: t,
                last_seen: t,
                totals: Totals::default(),
            });
            b.last_seen = t;
            b.first_seen = b.first_seen.min(t - c.age);
            *by_name.entry(c.name.as_str()).or_default() += c.rss;
        }
        let mut ranked: Vec<(u64, &str)> = by_name
            .iter()
            .filter(|&(&name, _)| {
                let age = self.names.get(name).map_or(0.0, |b| t - b.first_seen);
                name != OTHER && age >= limits.min_age
            })
            .map(|(&name, &rss)| {
                let bonus = if self.shown.contains(name) {
                    INCUMBENT_BONUS
                } else {
                    1
                };
                (rss.saturating_mul(bonus), name)
            })
            .collect();
        ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        ranked.truncate(limits.max_containers);
        let shown: HashSet<String> = ranked.iter().map(|(_, n)| n.to_string()).collect();

        let mut names: Vec<&String> = shown.iter().collect();
        names.sort_unstable();
        let mut rows: Vec<Row> = names
            .iter()
            .map(|n| Row {
                name: n.to_string(),
                ..Row::default()
            })
            .collect();
        // `other` sorts among the names.
        let other_at = rows.partition_point(|r| r.name.as_str() < OTHER);
        rows.insert(
            other_at,
            Row {
                name: OTHER.into(),
                ..Row::default()
            },
        );
        let row_index: HashMap<String, usize> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();

        let mut label_of = HashMap::with_capacity(cgroups.len());
        let mut row_totals = vec![Totals::default(); rows.len()];
        for (c, d) in cgroups.iter().zip(&deltas) {
            let i = match row_index.get(c.name.as_str()) {
                Some(&i) if c.name != OTHER => i,
                _ => other_at,
            };
            label_of.insert(c.id, i);
            let r = &mut rows[i];
            r.rss += c.rss;
            r.blocked += per_cgroup.get(&c.id).map_or(0, |e| e.1);
            r.cgroups += 1;
            row_totals[i].add(d);
        }

        for (id, name) in kills {
            let name = cgroups
                .iter()
                .find(|c| c.id == *id)
                .map(|c| c.name.as_str())
                .or(name.as_deref());
            let one = Totals {
                oom_kills: 1,
                ..Totals::default()
            };
            match name.map(|n| (n, row_index.get(n))) {
                Some((n, Some(&i))) if n != OTHER => row_totals[i].add(&one),
                // Gone already (the kill often ends a container): kept
                // under its name, seen if it comes back.
                Some((n, None)) if by_name.contains_key(n) => row_totals[other_at].add(&one),
                Some((n, None)) => {
                    if let Some(b) = self.names.get_mut(n) {
                        b.totals.add(&one);
                    } else {
                        self.other.add(&one);
                    }
                }
                _ => row_totals[other_at].add(&one),
            }
        }

        for (r, d) in rows.iter_mut().zip(&row_totals) {
            let totals = if r.name == OTHER {
                &mut self.other
            } else {
                match self.names.get_mut(&r.name) {
                    Some(b) => &mut b.totals,
                    None => continue,
                }
            };
            totals.add(d);
            r.totals = *totals;
        }

        self.shown = shown;
        self.prune(t);
        Folded { rows, label_of }
    }

    /// Forgets names and cgroups not seen for `RETAIN_S`, and the longest
    /// unseen beyond the hard bounds.
    fn prune(&mut self, t: f64) {
        self.names.retain(|_, b| t - b.last_seen <= RETAIN_S);
        if self.names.len() > MAX_NAMES {
            let mut seen: Vec<f64> = self.names.values().map(|b| b.last_seen).collect();
            let cut = seen.len() - MAX_NAMES;
            seen.select_nth_unstable_by(cut, f64::total_cmp);
            let keep_from = seen[cut];
            self.names.retain(|_, b| b.last_seen >= keep_from);
        }
        self.cgroups.retain(|_, c| t - c.last_seen <= RETAIN_S);
        if self.cgroups.len() > MAX_CGROUPS {
            let mut seen: Vec<f64> = self.cgroups.values().map(|c| c.last_seen).collect();
            let cut = seen.len() - MAX_CGROUPS;
            seen.select_nth_unstable_by(cut, f64::total_cmp);
            let keep_from = seen[cut];
            self.cgroups.retain(|_, c| c.last_seen >= keep_from);
        }
    }

    #[cfg(test)]
    fn state_len(&self) -> (usize, usize) {
        (self.names.len(), self.cgroups.len())
    }
}

/// Growth of a wrapping counter; a drop (a member moved to another cgroup)
/// is no growth.
fn grown(now: u64, was: u64) -> u64 {
    let d = now.wrapping_sub(was) as i64;
    d.max(0) as u64
}

/// Indices of the `n` processes with the largest positive `key`, largest
/// first (ties by pid, so the page is stable).
pub fn top(procs: &[ProcIn], n: usize, key: impl Fn(&ProcIn) -> f64) -> Vec<usize> {
    let mut v: Vec<(f64, u32, usize)> = procs
        .iter()
        .enumerate()
        .map(|(i, p)| (key(p), p.pid, i))
        .filter(|(k, _, _)| *k > 0.0)
        .collect();
    let order =
        |a: &(f64, u32, usize), b: &(f64, u32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if v.len() > n && n > 0 {
        v.select_nth_unstable_by(n - 1, order);
    }
    v.truncate(n);
    v.sort_unstable_by(order);
    v.into_iter().map(|(_, _, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        min_age: 60.0,
        max_containers: 2,
    };

    fn cg(id: u64, name: &str, age: f64, rss: u64, write: u64) -> CgroupIn {
        CgroupIn {
            id,
            name: name.into(),
            age,
            rss,
            write,
            ..CgroupIn::default()
        }
    }

    fn row<'a>(f: &'a Folded, name: &str) -> Option<&'a Row> {
        f.rows.iter().find(|r| r.name == name)
    }

    #[test]
    fn young_and_small_containers_fold_into_other() {
        let mut fold = Fold::new(0);
        let cgs = [
            cg(1, "db", 600.0, 900, 10),
            cg(2, "web", 600.0, 500, 20),
            cg(3, "cron", 600.0, 100, 40),
            cg(4, "job-1", 5.0, 9999, 80),
        ];
        let f = fold.step(0.0, &[], &cgs, &[], LIMITS);
        let names: Vec<&str> = f.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["db", "other", "web"]);
        let other = row(&f, OTHER).unwrap();
        assert_eq!(
            (other.rss, other.totals.write, other.cgroups),
            (10099, 120, 2)
        );
        assert_eq!(f.label_of[&4], f.label_of[&3]);
    }

    #[test]
    fn other_stays_monotonic_as_containers_come_and_go() {
        let mut fold = Fold::new(0);
        let mut last = 0;
        let mut t = 0.0;
        // Steps one tick; returns the fold and other's write total.
        let mut step = |fold: &mut Fold, cgs: &[CgroupIn]| {
            t += 1.0;
            let f = fold.step(t, &[], cgs, &[], LIMITS);
            let w = row(&f, OTHER).unwrap().totals.write;
            assert!(w >= last, "other went from {last} to {w}");
            last = w;
            (f, w)
        };
        // A young job writes 100, then 300 in all; then it ages past
        // min_age and is shown on its own; then it exits.
        step(&mut fold, &[cg(1, "job", 1.0, 10, 100)]);
        let (_, other) = step(&mut fold, &[cg(1, "job", 2.0, 10, 300)]);
        assert_eq!(other, 300);
        let (f, other) = step(&mut fold, &[cg(1, "job", 61.0, 10, 350)]);
        assert_eq!(row(&f, "job").unwrap().totals.write, 50);
        assert_eq!(other, 300, "what it wrote while shown is not in other");
        let (f, _) = step(&mut fold, &[]);
        assert!(row(&f, "job").is_none(), "a gone container has no series");
        // Another young cgroup, whose counter then drops (a member moved
        // out): no growth, never a decrease.
        step(&mut fold, &[cg(2, "b", 1.0, 1, 1000)]);
        step(&mut fold, &[cg(2, "b", 2.0, 1, 400)]);
        let (_, other) = step(&mut fold, &[cg(2, "b", 3.0, 1, 500)]);
        assert_eq!(other, 1400);
    }

    #[test]
    fn a_restarted_service_continues_its_series() {
        let mut fold = Fold::new(0);
        let f = fold.step(
            0.0,
            &[],
            &[cg(1, "nginx.service", 600.0, 10, 1000)],
            &[],
            LIMITS,
        );
        assert_eq!(row(&f, "nginx.service").unwrap().totals.write, 1000);
        // Restarted: new cgroup, new (young) process, counters from zero.
        let kills = [(1, Some("nginx.service".to_string()))];
        let f = fold.step(1.0, &[], &[], &kills, LIMITS);
        assert!(row(&f, "nginx.service").is_none());
        let f = fold.step(
            2.0,
            &[],
            &[cg(7, "nginx.service", 1.0, 10, 30)],
            &[],
            LIMITS,
        );
        let r = row(&f, "nginx.service").expect("a known name is not young");
        assert_eq!(r.totals.write, 1030);
        assert_eq!(r.totals.oom_kills, 1, "the kill that restarted it counts");
        assert_eq!(row(&f, OTHER).unwrap().totals.write, 0);
    }

    #[test]
    fn a_big_newcomer_displaces_the_smallest_but_near_ties_do_not_swap() {
        let mut fold = Fold::new(0);
        let f = fold.step(
            0.0,
            &[],
            &[
                cg(1, "a", 99.0, 100, 0),
                cg(2, "b", 99.0, 90, 0),
                cg(3, "c", 99.0, 95, 0),
            ],
            &[],
            LIMITS,
        );
        assert!(row(&f, "a").is_some() && row(&f, "c").is_some() && row(&f, "b").is_none());
        // b is now slightly bigger than c: c stays.
        let f = fold.step(
            1.0,
            &[],
            &[
                cg(1, "a", 99.0, 100, 0),
                cg(2, "b", 99.0, 120, 0),
                cg(3, "c", 99.0, 95, 0),
            ],
            &[],
            LIMITS,
        );
        assert!(row(&f, "c").is_some() && row(&f, "b").is_none());
        let f = fold.step(
            2.0,
            &[],
            &[
                cg(1, "a", 99.0, 100, 0),
                cg(2, "b", 99.0, 1000, 0),
                cg(3, "c", 99.0, 95, 0),
            ],
            &[],
            LIMITS,
        );
        assert!(row(&f, "b").is_some() && row(&f, "c").is_none());
    }

    #[test]
    fn major_faults_count_growth_per_process() {
        let mut fold = Fold::new(1000);
        let p = |pid, start, majflt| ProcIn {
            pid,
            start,
            cgroup_id: 1,
            majflt,
            ..ProcIn::default()
        };
        let c = [cg(1, "svc", 600.0, 1, 0)];
        // An old process's history is not news; a new one's faults are.
        let f = fold.step(0.0, &[p(10, 5, 500), p(11, 2000, 7)], &c, &[], LIMITS);
        assert_eq!(row(&f, "svc").unwrap().totals.majflt, 7);
        // Process 11 exits: the total does not drop.
        let f = fold.step(1.0, &[p(10, 5, 503)], &c, &[], LIMITS);
        assert_eq!(row(&f, "svc").unwrap().totals.majflt, 10);
        // Pid 10 reused by a new process.
        let f = fold.step(2.0, &[p(10, 3000, 2)], &c, &[], LIMITS);
        assert_eq!(row(&f, "svc").unwrap().totals.majflt, 12);
    }

    #[test]
    fn state_is_bounded() {
        let mut fold = Fold::new(0);
        for i in 0..3 {
            let cgs: Vec<CgroupIn> = (0..5000u64)
                .map(|j| cg(i * 5000 + j, &format!("job-{i}-{j}"), 0.0, 1, 1))
                .collect();
            let f = fold.step(i as f64 * 2000.0, &[], &cgs, &[], LIMITS);
            assert_eq!(f.rows.len(), 1, "only other: every job is young");
        }
        let (names, cgroups) = fold.state_len();
        assert!(
            names <= MAX_NAMES && cgroups <= MAX_CGROUPS,
            "{names} {cgroups}"
        );
    }

    #[test]
    fn top_keeps_the_n_largest_positive() {
        let procs: Vec<ProcIn> = (0..100u32)
            .map(|i| ProcIn {
                pid: i,
                rss: u64::from(i % 7),
                ..ProcIn::default()
            })
            .collect();
        let t = top(&procs, 3, |p| p.rss as f64);
        let pids: Vec<u32> = t.iter().map(|&i| procs[i].pid).collect();
        assert_eq!(pids, [6, 13, 20]);
        assert!(top(&procs, 3, |p| p.write_rate).is_empty());
        assert!(top(&procs, 0, |p| p.rss as f64).is_empty());
    }
}
