//! Detectors: each reads the profiles (and, for futex waits, the latest
//! sample) and says which conditions hold on this tick. They decide
//! nothing about events; `incident.rs` turns findings into events.
//!
//! - `bloat.rs`: sustained RSS growth with a projected time to exhaustion.
//! - `deadlock.rs`: a cycle in the futex wait-for graph.
//! - `hang.rs`: every thread blocked, no CPU progress.
//! - `writes.rs`: write rate over a daily budget; a filesystem filling.
//! - `oom.rs`: OOM kills, with the victim's last minute.
//! - `threads.rs`: a process with too many threads.
//! - `thrashing.rs`: memory pressure with major faults.
pub mod bloat;
pub mod deadlock;
pub mod hang;
pub mod oom;
pub mod thrashing;
pub mod threads;
pub mod writes;

use std::path::PathBuf;

use aya::Ebpf;

use crate::{
    collect::Sample,
    config::Config,
    event::{Names, SubjectKey},
    incident::{Finding, Incidents},
    profile::{ContainerProfile, Point, ProcProfile, Profiles, Timed},
    symbolize::Symbolizer,
};

/// What every detector may look at on one tick.
pub struct Ctx<'a> {
    /// Daemon seconds (monotonic).
    pub t: f64,
    pub cfg: &'a Config,
    pub profiles: &'a Profiles,
    pub sample: &'a Sample,
    pub incidents: &'a Incidents,
    /// Where memory limits live: (root, is_v1).
    pub mem_root: Option<&'a (PathBuf, bool)>,
}

impl Ctx<'_> {
    pub fn proc_names(&self, p: &ProcProfile) -> Names {
        let c = self.profiles.containers.get(&p.cgroup_id);
        Names {
            pid: Some(p.pid),
            comm: Some(p.comm.clone()),
            cgroup: c.map(|c| c.path.clone()),
            container: c.map(ContainerProfile::name),
        }
    }

    pub fn container_names(&self, c: &ContainerProfile) -> Names {
        Names {
            pid: None,
            comm: None,
            cgroup: Some(c.path.clone()),
            container: Some(c.name()),
        }
    }
}

pub fn proc_key(p: &ProcProfile) -> SubjectKey {
    SubjectKey::Process {
        pid: p.pid,
        start: p.start,
    }
}

/// The stateful part of detection: timers that need several ticks and the
/// symbol cache.
pub struct Detectors {
    hang: hang::Tracker,
    thrashing: thrashing::Tracker,
    stacks: deadlock::Stacks,
}

impl Default for Detectors {
    fn default() -> Self {
        Detectors::new()
    }
}

impl Detectors {
    pub fn new() -> Detectors {
        Detectors {
            hang: hang::Tracker::default(),
            thrashing: thrashing::Tracker::default(),
            stacks: deadlock::Stacks::new(Symbolizer::new()),
        }
    }

    /// The symbolized stacks the deadlock detector keeps, for `top`.
    pub fn stacks(&mut self) -> &mut deadlock::Stacks {
        &mut self.stacks
    }

    pub fn run(&mut self, ctx: &Ctx, ebpf: &Ebpf) -> Vec<Finding> {
        let mut out = bloat::detect(ctx);
        let deadlocks = deadlock::detect(ctx, ebpf, &mut self.stacks);
        out.extend(hang::detect(
            ctx,
            ebpf,
            &mut self.stacks,
            &mut self.hang,
            &deadlocks,
        ));
        out.extend(deadlocks);
        out.extend(writes::detect(ctx));
        out.extend(threads::detect(ctx));
        out.extend(self.thrashing.detect(ctx));
        self.stacks.forget_exited(ctx.profiles);
        let host = host_context(ctx);
        for f in &mut out {
            add_host(f, &host);
        }
        out
    }
}

pub fn add_host(f: &mut Finding, host: &serde_json::Value) {
    if let Some(o) = f.evidence.as_object_mut() {
        o.insert("host".into(), host.clone());
    }
}

/// The host's state when something fired: every event carries it, so an
/// alert read hours later still says how much memory and disk was left.
pub fn host_context(ctx: &Ctx) -> serde_json::Value {
    let Some(h) = ctx.profiles.host.last() else {
        return serde_json::Value::Null;
    };
    let pressure = |p: Option<crate::host::Pressure>| {
        p.map(|p| serde_json::json!({"some_avg10": p.some_avg10, "full_avg10": p.full_avg10}))
    };
    serde_json::json!({
        "mem_total_bytes": h.mem_total,
        "mem_available_bytes": h.mem_available,
        "swap_total_bytes": h.swap_total,
        "swap_free_bytes": h.swap_free,
        "psi_memory": pressure(h.psi_memory),
        "psi_io": pressure(h.psi_io),
    })
}

/// A process is judged before its container: the container's finding of a
/// kind is left out when a member has one this tick, or an open incident,
/// so one runaway process is one event, not two.
pub fn explained_by_member(
    ctx: &Ctx,
    found: &[Finding],
    c: &ContainerProfile,
    kind: crate::event::Kind,
) -> bool {
    found.iter().any(|f| {
        f.kind == kind
            && matches!(f.key, SubjectKey::Process { pid, .. } if c.members.contains(&pid))
    }) || c.members.iter().any(|pid| {
        ctx.profiles
            .procs
            .get(pid)
            .is_some_and(|p| ctx.incidents.is_open(kind, &proc_key(p)))
    })
}

/// Is the series rising through each third of the window? A burst that
/// ended, or one that only just began, is not sustained growth.
pub fn rises_in_thirds<P: Timed>(pts: &[P], f: impl Fn(&P) -> f64) -> bool {
    let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
        return false;
    };
    let span = last.t() - first.t();
    if span <= 0.0 || pts.len() < 4 {
        return false;
    }
    let at = |t: f64| {
        pts.iter()
            .take_while(|p| p.t() <= t + 1e-9)
            .last()
            .map(&f)
            .unwrap_or(f(first))
    };
    let a = f(first);
    let b = at(first.t() + span / 3.0);
    let c = at(first.t() + 2.0 * span / 3.0);
    let d = f(last);
    a < b && b < c && c < d
}

/// The growth of a gauge over the first of `windows` (seconds) where it is
/// sustained: enough history, rising in each third, at least `min_rise`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growth {
    /// Per second, least squares over the window.
    pub rate: f64,
    pub window_s: f64,
    pub rise: f64,
}

pub fn sustained_growth(
    series: &crate::profile::Series<Point>,
    windows: &[f64],
    min_rise: f64,
    f: impl Fn(&Point) -> f64 + Copy,
) -> Option<Growth> {
    let mut best: Option<Growth> = None;
    for &w in windows {
        let pts = series.window(w);
        let span = crate::profile::covered(&pts);
        if span < 0.9 * w {
            continue;
        }
        let (Some(first), Some(last)) = (pts.first(), pts.last()) else {
            continue;
        };
        let rise = f(last) - f(first);
        if rise < min_rise || !rises_in_thirds(&pts, f) {
            continue;
        }
        let Some(rate) = crate::profile::slope(&pts, f).filter(|r| *r > 0.0) else {
            continue;
        };
        // The fastest sustained rate: each window already had to show growth
        // throughout, so the fastest is the most current, not a blip.
        if best.is_none_or(|b| rate > b.rate) {
            best = Some(Growth {
                rate,
                window_s: span,
                rise,
            });
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Series;

    fn series(f: impl Fn(f64) -> u64, secs: u32) -> Series<Point> {
        let mut s = Series::default();
        for i in 0..=secs {
            let t = i as f64;
            s.push(Point {
                t,
                rss: f(t),
                ..Default::default()
            });
        }
        s
    }

    const MB: f64 = 1e6;

    #[test]
    fn steady_growth_is_sustained() {
        let s = series(|t| (1e9 + t * 30.0 * MB) as u64, 30);
        let g = sustained_growth(&s, &[20.0, 60.0], 64.0 * MB, |p| p.rss as f64).unwrap();
        assert!((g.rate - 30.0 * MB).abs() < 1.0, "{g:?}");
        assert_eq!(g.window_s, 20.0);
    }

    #[test]
    fn flat_and_finished_bursts_are_not() {
        let flat = series(|_| 8_000_000_000, 120);
        assert!(sustained_growth(&flat, &[20.0, 60.0], 0.0, |p| p.rss as f64).is_none());
        // 5 GB loaded between t=100 and t=110, flat since.
        let burst = series(|t| (1e9 + 5e8 * (t - 100.0).clamp(0.0, 10.0)) as u64, 120);
        assert!(sustained_growth(&burst, &[20.0, 60.0], 64.0 * MB, |p| p.rss as f64).is_none());
        // Only just began: the first third of the window is flat.
        let start = series(|t| (1e9 + 5e8 * (t - 112.0).max(0.0)) as u64, 120);
        assert!(sustained_growth(&start, &[20.0], 64.0 * MB, |p| p.rss as f64).is_none());
    }

    #[test]
    fn small_rises_do_not_count() {
        let s = series(|t| (1e9 + t * 1000.0) as u64, 60);
        assert!(sustained_growth(&s, &[20.0, 60.0], 64.0 * MB, |p| p.rss as f64).is_none());
    }

    #[test]
    fn not_enough_history_is_not_growth() {
        let s = series(|t| (t * 100.0 * MB) as u64, 10);
        assert!(sustained_growth(&s, &[20.0], 64.0 * MB, |p| p.rss as f64).is_none());
    }
}
