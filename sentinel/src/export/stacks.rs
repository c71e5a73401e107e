//! `stacks.txt`: where blocked threads were stuck. Two sources: the frames'
//! details (the recorder keeps the symbolized stacks of processes with a
//! deadlock or hang open), of which each thread's latest sighting is kept,
//! and the threads in deadlock and hang events' evidence, as the detector
//! saw them when it fired.
use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::Value;

use crate::{
    event::{Event, Kind, rfc3339},
    top::frame::{BlockedThread, Frame},
};

#[derive(Debug, Clone)]
struct Seen {
    unix_ms: u64,
    /// "Process 1234 (python3)".
    title: String,
    thread: BlockedThread,
}

#[derive(Debug, Default)]
pub struct Stacks {
    /// By (pid, tid); the latest sighting wins.
    latest: BTreeMap<(u32, u32), Seen>,
}

impl Stacks {
    pub fn frame(&mut self, t: u64, f: &Frame) {
        for d in &f.details {
            for b in &d.blocked {
                self.latest.insert(
                    (b.pid, b.tid),
                    Seen {
                        unix_ms: t,
                        title: d.title.clone(),
                        thread: b.clone(),
                    },
                );
            }
        }
    }

    pub fn threads(&self) -> usize {
        self.latest.len()
    }

    pub fn render(&self, events: &[(u64, Event)], since: u64, until: u64) -> String {
        let mut s = format!(
            "sentinel export: blocked threads recorded between {} and {}\n\
             Stacks are innermost frame first; 0x… is an address sentinel could not name.\n\n",
            rfc3339(since),
            rfc3339(until)
        );
        s.push_str("== Blocked threads in recorded frames (the latest sighting of each) ==\n\n");
        if self.latest.is_empty() {
            s.push_str(
                "None: no process had a deadlock or hang open while frames were recorded.\n",
            );
        }
        for seen in self.latest.values() {
            let b = &seen.thread;
            let _ = writeln!(
                s,
                "{}, thread {}{}: futex {} on {:#x} for {:.1} s{}; last seen {}",
                seen.title,
                b.tid,
                b.comm
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default(),
                b.op,
                b.uaddr,
                b.wait_s,
                b.owner
                    .map(|o| format!(", the lock held by thread {o}"))
                    .unwrap_or_default(),
                rfc3339(seen.unix_ms)
            );
            stack(&mut s, b.stack.iter().map(String::as_str));
            s.push('\n');
        }
        s.push_str("\n== Threads in deadlock and hang events ==\n\n");
        let mut any = false;
        for (t, e) in events
            .iter()
            .filter(|(_, e)| matches!(e.kind, Kind::Deadlock | Kind::Hang))
        {
            let Some(threads) = e.evidence.get("threads").and_then(Value::as_array) else {
                continue;
            };
            any = true;
            let _ = writeln!(
                s,
                "{} {} {} (event {}):\n  {}",
                rfc3339(*t),
                e.kind.name(),
                e.state.name(),
                e.id,
                e.summary
            );
            for th in threads {
                let get = |k: &str| th.get(k).filter(|v| !v.is_null());
                let _ = write!(
                    s,
                    "  thread {}",
                    get("tid").map_or("?".into(), Value::to_string)
                );
                if let Some(c) = get("comm").and_then(Value::as_str) {
                    let _ = write!(s, " ({c})");
                }
                let state = get("state").and_then(Value::as_str).unwrap_or("?");
                let _ = write!(s, ": {state}");
                if let Some(op) = get("op").and_then(Value::as_str) {
                    let _ = write!(s, " {op}");
                }
                if let Some(a) = get("uaddr").and_then(Value::as_str) {
                    let _ = write!(s, " on {a}");
                }
                if let Some(w) = get("waiting_s").and_then(Value::as_f64) {
                    let _ = write!(s, " for {w:.1} s");
                }
                if let Some(o) = get("owner_tid") {
                    let _ = write!(s, ", the lock held by thread {o}");
                }
                if let Some(w) = get("wchan").and_then(Value::as_str) {
                    let _ = write!(s, ", in kernel at {}", w.trim());
                }
                s.push('\n');
                let frames = get("stack").and_then(Value::as_array);
                stack(
                    &mut s,
                    frames.into_iter().flatten().filter_map(Value::as_str),
                );
            }
            s.push('\n');
        }
        if !any {
            s.push_str("None in this range.\n");
        }
        s
    }
}

fn stack<'a>(s: &mut String, frames: impl Iterator<Item = &'a str>) {
    let mut n = 0;
    for (i, f) in frames.enumerate() {
        let _ = writeln!(s, "      #{i:<2} {f}");
        n += 1;
    }
    if n == 0 {
        s.push_str("      (no stack recorded)\n");
    }
}
