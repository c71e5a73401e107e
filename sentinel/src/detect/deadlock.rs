//! deadlock: a cycle in the futex wait-for graph. An edge goes from a
//! waiting thread to the thread that owns the lock word it waits on (glibc
//! mutex `__owner`, or the PI futex owner), as read when the wait began.
//! While the waiter stays in that same wait the owner has not released the
//! lock (a release would wake it), so a cycle whose every wait is older
//! than `deadlock.min_wait` cannot resolve by itself.
use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{
        Arc, Condvar, Mutex,
        mpsc::{SyncSender, sync_channel},
    },
    time::{Duration, Instant},
};

use aya::Ebpf;
use sentinel_common::FutexWait;
use serde_json::{Value, json};

use super::{Ctx, proc_key};
use crate::{
    collect,
    event::{Kind, Severity, human_duration},
    incident::{Finding, round1},
    procfs,
    profile::{ProcProfile, Profiles},
    snapshot::{op_name, owners},
    symbolize::Symbolizer,
};

/// Symbolized user stacks by (pid, process start, stack id): a deadlock
/// stays on screen for many ticks and its stacks do not change.
///
/// Symbolizing reads `/proc/PID/maps`, which takes the target's mmap lock:
/// a process thrashing under memory pressure can hold it for seconds, and
/// the daemon's loop must not wait that long. So a worker thread does it,
/// and the loop waits for answers only up to a budget per tick; a stack not
/// ready by then shows raw addresses this time and its symbols next time.
pub struct Stacks {
    worker: Option<Worker>,
    cache: HashMap<Key, Vec<String>>,
    /// Start of the current budget window.
    budget_from: Instant,
}

type Key = (u32, u64, i64);
/// Finished stacks the worker hands back, and the signal that one is in.
type Done = Arc<(Mutex<HashMap<Key, Vec<String>>>, Condvar)>;

struct Worker {
    tx: SyncSender<(Key, u32, Vec<u64>)>,
    done: Done,
    pending: HashSet<Key>,
}

const MAX_CACHED_STACKS: usize = 4096;
/// How long one tick may wait for symbols, in all.
const SYMBOL_BUDGET: Duration = Duration::from_millis(250);

impl Stacks {
    pub fn new(mut sym: Symbolizer) -> Stacks {
        let (tx, rx) = sync_channel::<(Key, u32, Vec<u64>)>(64);
        let done: Done = Arc::default();
        let out = done.clone();
        let worker = std::thread::Builder::new()
            .name("symbolize".into())
            .stack_size(512 << 10)
            .spawn(move || {
                for (key, pid, ips) in rx {
                    let frames = sym.symbolize(pid, &ips);
                    let (m, cv) = &*out;
                    m.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, frames);
                    cv.notify_all();
                }
            });
        let worker = match worker {
            Ok(_) => Some(Worker {
                tx,
                done,
                pending: HashSet::new(),
            }),
            Err(e) => {
                tracing::warn!("no symbolizer thread ({e}): stacks show raw addresses");
                None
            }
        };
        Stacks {
            worker,
            cache: HashMap::new(),
            budget_from: Instant::now(),
        }
    }

    /// Symbols for `ips`, waiting for the worker within this tick's budget.
    fn symbolize(&mut self, key: Key, pid: u32, ips: Vec<u64>) -> Option<Vec<String>> {
        let w = self.worker.as_mut()?;
        if w.pending.insert(key) && w.tx.try_send((key, pid, ips)).is_err() {
            w.pending.remove(&key);
            return None;
        }
        if self.budget_from.elapsed() > Duration::from_secs(1) {
            self.budget_from = Instant::now();
        }
        let deadline = self.budget_from + SYMBOL_BUDGET;
        let (m, cv) = &*w.done;
        let mut done = m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(frames) = done.remove(&key) {
                w.pending.remove(&key);
                return Some(frames);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            done = cv
                .wait_timeout(done, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// The thread's user stack: the probe's, else (a wait that began
    /// before sentinel attached, or a full stack map) the one frame /proc
    /// shows for a blocked system call.
    pub fn get(&mut self, ebpf: &Ebpf, pid: u32, start: u64, tid: u32, id: i32) -> Vec<String> {
        // Probe stacks are shared by id; a /proc frame belongs to its thread.
        let key = (
            pid,
            start,
            if id >= 0 {
                i64::from(id)
            } else {
                -1 - i64::from(tid)
            },
        );
        if let Some(s) = self.cache.get(&key) {
            return s.clone();
        }
        let mut ips = if id >= 0 {
            collect::stack(ebpf, id)
        } else {
            Vec::new()
        };
        if ips.is_empty() {
            ips.extend(procfs::syscall_pc(Path::new("/proc"), pid, tid));
        }
        let raw: Vec<String> = ips.iter().map(|ip| format!("{ip:#x}")).collect();
        let Some(s) = self.symbolize(key, pid, ips) else {
            return raw;
        };
        if self.cache.len() >= MAX_CACHED_STACKS {
            self.cache.clear();
        }
        self.cache.insert(key, s.clone());
        s
    }

    pub fn forget_exited(&mut self, profiles: &Profiles) {
        let live =
            |(pid, start, _): &Key| profiles.procs.get(pid).is_some_and(|p| p.start == *start);
        self.cache.retain(|k, _| live(k));
        if let Some(w) = &mut self.worker {
            w.pending.retain(live);
            let (m, _) = &*w.done;
            m.lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|k, _| live(k));
        }
    }
}

pub fn waiting_s(ctx: &Ctx, w: &FutexWait) -> f64 {
    ctx.sample.waited_s(w)
}

/// One blocked thread as evidence.
pub fn thread_evidence(
    ctx: &Ctx,
    ebpf: &Ebpf,
    stacks: &mut Stacks,
    p: &ProcProfile,
    tid: u32,
    w: &FutexWait,
    owner: Option<u32>,
) -> Value {
    let (pid, start) = (p.pid, p.start);
    json!({
        "tid": tid,
        "comm": procfs::thread_comm(Path::new("/proc"), pid, tid),
        "state": "futex",
        "uaddr": format!("{:#x}", w.uaddr),
        "op": op_name(w.op),
        "owner_tid": owner,
        "waiting_s": round1(waiting_s(ctx, w)),
        "stack": stacks.get(ebpf, pid, start, tid, w.stack_id),
    })
}

/// Every cycle in a graph where each node has at most one outgoing edge,
/// each reported once, starting from its smallest tid.
pub fn cycles(edges: &HashMap<u32, u32>) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    let mut done: HashSet<u32> = HashSet::new();
    let mut starts: Vec<u32> = edges.keys().copied().collect();
    starts.sort_unstable();
    for s in starts {
        if done.contains(&s) {
            continue;
        }
        let mut path = vec![s];
        let mut cur = s;
        while let Some(&next) = edges.get(&cur) {
            if let Some(i) = path.iter().position(|&x| x == next) {
                let mut c = path[i..].to_vec();
                if !c.iter().any(|x| done.contains(x)) {
                    let m = c
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, t)| **t)
                        .map_or(0, |(i, _)| i);
                    c.rotate_left(m);
                    out.push(c);
                }
                break;
            }
            if done.contains(&next) {
                break;
            }
            path.push(next);
            cur = next;
        }
        done.extend(path);
    }
    out
}

pub fn detect(ctx: &Ctx, ebpf: &Ebpf, stacks: &mut Stacks) -> Vec<Finding> {
    let min_wait = ctx.cfg.deadlock.min_wait.as_secs_f64();
    let mut by_pid: HashMap<u32, Vec<(u32, &FutexWait)>> = HashMap::new();
    for (&tid, w) in &ctx.sample.waits {
        by_pid.entry(w.tgid).or_default().push((tid, w));
    }
    let mut out = Vec::new();
    for (pid, waits) in by_pid {
        let Some(p) = ctx.profiles.procs.get(&pid) else {
            continue;
        };
        // A reported deadlock stays while the cycle stands, even if a
        // debugger attaching restarts the waits.
        let min_wait = if ctx.incidents.is_open(Kind::Deadlock, &proc_key(p)) {
            0.0
        } else {
            min_wait
        };
        // A cycle needs two waits that have lasted min_wait.
        if waits
            .iter()
            .filter(|(_, w)| waiting_s(ctx, w) >= min_wait)
            .count()
            < 2
        {
            continue;
        }
        let e = owners(pid, &waits);
        let by_tid: HashMap<u32, &FutexWait> = waits.iter().copied().collect();
        for cycle in cycles(&e) {
            let ages: Vec<f64> = cycle
                .iter()
                .filter_map(|t| by_tid.get(t).map(|w| waiting_s(ctx, w)))
                .collect();
            if ages.len() != cycle.len() || ages.iter().any(|&a| a < min_wait) {
                continue;
            }
            let threads: Vec<Value> = cycle
                .iter()
                .map(|&tid| {
                    let w = by_tid[&tid];
                    thread_evidence(ctx, ebpf, stacks, p, tid, w, e.get(&tid).copied())
                })
                .collect();
            let locks: Vec<String> = cycle
                .iter()
                .map(|t| format!("{:#x}", by_tid[t].uaddr))
                .collect();
            let stuck = ages.iter().copied().fold(f64::INFINITY, f64::min);
            let tids: Vec<String> = cycle.iter().map(u32::to_string).collect();
            out.push(Finding {
                kind: Kind::Deadlock,
                key: proc_key(p),
                severity: Severity::Critical,
                names: ctx.proc_names(p),
                summary: format!(
                    "Deadlock in {} (pid {}): threads {} each wait for a lock another of them holds ({}), stuck for {}.",
                    p.comm,
                    pid,
                    tids.join(", "),
                    locks.join(", "),
                    human_duration(stuck),
                ),
                evidence: json!({
                    "cycle": cycle,
                    "threads": threads,
                    "stuck_s": round1(stuck),
                    "blocked_threads": waits.len(),
                    "threads_total": p.stat.num_threads,
                }),
            });
            // One finding per process; its first cycle names the problem.
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_cycle_once() {
        // 1 -> 2 -> 1 is a cycle; 3 -> 1 waits on it; 4 -> 5 -> 6 -> 4 another.
        let e = HashMap::from([(1, 2), (2, 1), (3, 1), (4, 5), (5, 6), (6, 4), (7, 8)]);
        let mut c = cycles(&e);
        c.sort();
        assert_eq!(c, vec![vec![1, 2], vec![4, 5, 6]]);
    }

    #[test]
    fn chains_are_not_cycles() {
        let e = HashMap::from([(1, 2), (2, 3), (5, 3)]);
        assert!(cycles(&e).is_empty());
    }
}
