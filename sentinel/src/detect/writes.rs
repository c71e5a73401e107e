//! write_anomaly, two ways:
//! - `daily_budget`: a process's (or container's) recent write rate,
//!   projected to a day, exceeds `writes.daily_budget`. The rate is the
//!   lower of the last minute's and the last ten minutes' (where there is
//!   that much history), so one burst does not project to a day.
//! - `disk_fill`: a filesystem's free space has been falling steadily and
//!   would run out within `writes.fill_warn_horizon`. The projection never
//!   reaches further than `reach` allows for the history it rests on: a
//!   minute of writes (a build, a download) says nothing about next week.
use std::path::Path;

use serde_json::{Value, json};

use super::{Ctx, explained_by_member, proc_key, rises_in_thirds};
use crate::{
    event::{Kind, Names, Severity, SubjectKey, human_bytes, human_duration},
    host,
    incident::{Finding, round1},
    profile::{FsPoint, FsProfile, Point, ProcProfile, Series, covered, rate, slope},
};

const DAY: f64 = 86_400.0;
const MAX_EXTRAPOLATION: f64 = 200.0;

/// How far ahead `span` seconds of steady filling may project: span/2
/// times the span, at most `MAX_EXTRAPOLATION` times. 20 s speak about the
/// next 3 minutes, 1 min about the next 30, 10 min about the next 33 hours,
/// an hour about the next 8 days. A compile that writes a gigabyte in a
/// minute is not a disk filling in two hours; ten minutes of it may be.
fn reach(span: f64) -> f64 {
    span * (span / 2.0).min(MAX_EXTRAPOLATION)
}

/// The write rate a budget is judged on, and the window it came from.
fn write_rate(ctx: &Ctx, s: &Series<Point>) -> Option<(f64, f64)> {
    let min = ctx.cfg.writes.min_duration.as_secs_f64();
    let short = s.window(60.0);
    let span = covered(&short);
    if span < min * 0.95 {
        return None;
    }
    let mut r = rate(&short, |p| p.write)?;
    let mut window = span;
    if s.age() >= 540.0 {
        let long = s.window(600.0);
        if let Some(lr) = rate(&long, |p| p.write).filter(|&lr| lr < r) {
            r = lr;
            window = covered(&long);
        }
    }
    Some((r, window))
}

fn severity_for_fill(ctx: &Ctx, secs: f64) -> Option<Severity> {
    if secs < ctx.cfg.writes.fill_crit_horizon.as_secs_f64() {
        Some(Severity::Critical)
    } else if secs < ctx.cfg.writes.fill_warn_horizon.as_secs_f64() {
        Some(Severity::Warning)
    } else {
        None
    }
}

fn fs_json(f: &FsProfile) -> Value {
    json!({
        "mount_point": f.fs.mount_point,
        "source": f.fs.source,
        "fstype": f.fs.fstype,
        "free_bytes": f.fs.free,
        "size_bytes": f.fs.size,
    })
}

/// The filesystem a process writes to: the one where it holds the most
/// files open for writing.
fn target_fs<'a>(ctx: &'a Ctx, pids: &[u32]) -> Option<&'a FsProfile> {
    let mut counts: Vec<(u32, usize)> = Vec::new();
    for &pid in pids.iter().take(16) {
        for (dev, n) in host::written_filesystems(Path::new("/proc"), pid, ctx.profiles.mounts()) {
            match counts.iter_mut().find(|(d, _)| *d == dev) {
                Some(c) => c.1 += n,
                None => counts.push((dev, n)),
            }
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts
        .iter()
        .find_map(|(dev, _)| ctx.profiles.filesystems.get(dev))
}

fn budget_finding(
    ctx: &Ctx,
    key: SubjectKey,
    names: Names,
    who: String,
    pids: &[u32],
    r: f64,
    window: f64,
) -> Finding {
    let budget = ctx.cfg.writes.daily_budget as f64;
    let per_day = r * DAY;
    let fs = target_fs(ctx, pids);
    // Time to full at this subject's rate, if every byte took new space.
    let to_full = fs.map(|f| f.fs.free as f64 / r);
    let severity = match to_full.and_then(|s| severity_for_fill(ctx, s)) {
        Some(Severity::Critical) => Severity::Critical,
        _ => Severity::Warning,
    };
    let fill = match (fs, to_full) {
        (Some(f), Some(s)) => format!(
            "; {} has {} free, full in about {} at this rate",
            f.fs.mount_point,
            human_bytes(f.fs.free as f64),
            human_duration(s)
        ),
        _ => String::new(),
    };
    Finding {
        kind: Kind::WriteAnomaly,
        key,
        severity,
        names,
        summary: format!(
            "{who} writes {}/s, {} a day at this rate, over the daily budget of {}{fill}.",
            human_bytes(r),
            human_bytes(per_day),
            human_bytes(budget),
        ),
        evidence: json!({
            "reason": "daily_budget",
            "write_bytes_per_s": r.round(),
            "window_s": round1(window),
            "projected_bytes_per_day": per_day.round(),
            "daily_budget_bytes": ctx.cfg.writes.daily_budget,
            "filesystem": fs.map(fs_json),
            "time_to_full_s": to_full.map(round1),
        }),
    }
}

fn budgets(ctx: &Ctx) -> Vec<Finding> {
    let budget = ctx.cfg.writes.daily_budget as f64;
    let mut out = Vec::new();
    // Kernel threads (a loop device's worker, nfsd) write on someone's
    // behalf; that someone is the subject.
    for p in ctx.profiles.procs.values().filter(|p| !p.kernel_thread()) {
        let Some((r, window)) = write_rate(ctx, &p.series) else {
            continue;
        };
        if r * DAY <= budget {
            continue;
        }
        out.push(budget_finding(
            ctx,
            proc_key(p),
            ctx.proc_names(p),
            format!("{} (pid {})", p.comm, p.pid),
            &[p.pid],
            r,
            window,
        ));
    }
    for c in ctx.profiles.containers.values() {
        if explained_by_member(ctx, &out, c, Kind::WriteAnomaly) {
            continue;
        }
        let Some((r, window)) = write_rate(ctx, &c.series) else {
            continue;
        };
        if r * DAY <= budget {
            continue;
        }
        out.push(budget_finding(
            ctx,
            SubjectKey::Container {
                cgroup_id: c.cgroup_id,
            },
            ctx.container_names(c),
            format!("Container {}", c.name()),
            &c.members,
            r,
            window,
        ));
    }
    out
}

/// The most urgent steady fill: over `min_duration`, 1 min, 10 min and
/// 1 h, the windows in which used space rose through each third, projected
/// at their rate (least squares) to `free`; the soonest projection within
/// the window's `reach` wins. A recent
/// runaway is not diluted by an hour of slow logging, and the short window
/// speaks only about fills minutes away. Returns (rate, window, seconds).
fn most_urgent_fill(s: &Series<FsPoint>, free: u64, min_duration: f64) -> Option<(f64, f64, f64)> {
    let mut best: Option<(f64, f64, f64)> = None;
    for w in [min_duration.min(60.0), 60.0, 600.0, 3600.0] {
        let pts = s.window(w);
        let span = covered(&pts);
        if span < 0.9 * w {
            continue;
        }
        let used = |p: &FsPoint| p.size.saturating_sub(p.free) as f64;
        if !rises_in_thirds(&pts, used) {
            continue;
        }
        let Some(r) = slope(&pts, used).filter(|r| *r > 0.0) else {
            continue;
        };
        let secs = free as f64 / r;
        if secs > reach(span) {
            continue;
        }
        if best.is_none_or(|b| secs < b.2) {
            best = Some((r, span, secs));
        }
    }
    best
}

/// Who writes the most right now to this filesystem, to name in its event:
/// the fastest writers that hold a file on it open for writing. Kernel
/// threads (a loop device's worker, writeback) are left out; they write on
/// someone's behalf. When no writer has a file open there (it opens and
/// closes per write), the host's fastest writers stand in, and
/// `writers_on_filesystem` says so.
fn top_writers(ctx: &Ctx, dev: u32) -> (Vec<(f64, Names)>, bool) {
    let mut v: Vec<(f64, &ProcProfile)> = ctx
        .profiles
        .procs
        .values()
        .filter(|p| !p.kernel_thread())
        .filter_map(|p| {
            let r = rate(&p.series.window(60.0), |q| q.write)?;
            (r > 0.0).then_some((r, p))
        })
        .collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    // Reading fd tables costs; the fastest few are the candidates.
    v.truncate(16);
    let on_fs: Vec<(f64, &ProcProfile)> = v
        .iter()
        .filter(|(_, p)| {
            host::written_filesystems(Path::new("/proc"), p.pid, ctx.profiles.mounts())
                .iter()
                .any(|(d, _)| *d == dev)
        })
        .copied()
        .collect();
    let found = !on_fs.is_empty();
    let chosen = if found { on_fs } else { v };
    let names = chosen
        .into_iter()
        .take(5)
        .map(|(r, p)| (r, ctx.proc_names(p)))
        .collect();
    (names, found)
}

fn fills(ctx: &Ctx) -> Vec<Finding> {
    let mut out = Vec::new();
    for f in ctx.profiles.filesystems.values() {
        let min = ctx.cfg.writes.min_duration.as_secs_f64();
        let Some((r, span, secs)) = most_urgent_fill(&f.series, f.fs.free, min) else {
            continue;
        };
        let Some(severity) = severity_for_fill(ctx, secs) else {
            continue;
        };
        let (writers, on_fs) = top_writers(ctx, f.fs.dev);
        let names = writers.first().map(|w| w.1.clone()).unwrap_or_default();
        let by = match (&names.comm, names.pid, &names.container) {
            (Some(comm), Some(pid), Some(c)) => {
                format!("; the top writer is {comm} (pid {pid}) in {c}")
            }
            (Some(comm), Some(pid), None) => format!("; the top writer is {comm} (pid {pid})"),
            _ => String::new(),
        };
        out.push(Finding {
            kind: Kind::WriteAnomaly,
            key: SubjectKey::Filesystem { dev: f.fs.dev },
            severity,
            names,
            summary: format!(
                "{} fills at {}/s ({} a day) with {} free: full in about {}{by}.",
                f.fs.mount_point,
                human_bytes(r),
                human_bytes(r * DAY),
                human_bytes(f.fs.free as f64),
                human_duration(secs),
            ),
            evidence: json!({
                "reason": "disk_fill",
                "filesystem": fs_json(f),
                "fill_bytes_per_s": r.round(),
                "window_s": round1(span),
                "projected_bytes_per_day": (r * DAY).round(),
                "time_to_full_s": round1(secs),
                "write_bytes_per_s": writers.first().map(|w| w.0.round()),
                "daily_budget_bytes": ctx.cfg.writes.daily_budget,
                "writers_on_filesystem": on_fs,
                "top_writers": writers.iter().map(|(r, n)| json!({
                    "pid": n.pid, "comm": n.comm, "container": n.container,
                    "write_bytes_per_s": r.round(),
                })).collect::<Vec<_>>(),
            }),
        });
    }
    out
}

pub fn detect(ctx: &Ctx) -> Vec<Finding> {
    let mut out = budgets(ctx);
    out.extend(fills(ctx));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_series(points: impl Iterator<Item = (f64, u64)>) -> Series<FsPoint> {
        let mut s = Series::default();
        for (t, free) in points {
            s.push(FsPoint {
                t,
                free,
                size: 1_000_000_000_000,
            });
        }
        s
    }

    #[test]
    fn a_steady_fill_projects_to_days() {
        // 22 GB a day for an hour onto 123 GB free.
        let r = 22e9 / DAY;
        let s = fs_series((0..=3600).map(|i| (i as f64, (123e9 - r * i as f64) as u64)));
        let free = s.last().unwrap().free;
        let (rate, span, secs) = most_urgent_fill(&s, free, 20.0).unwrap();
        assert!((rate - r).abs() / r < 0.01, "{rate} vs {r}");
        assert!(span >= 3500.0, "only the hour may speak of days: {span}");
        assert!((secs / DAY - 5.6).abs() < 0.2, "{}", secs / DAY);
        // The same minute alone may not: 5.6 days is past its 30 minutes.
        let short = fs_series((0..=60).map(|i| (i as f64, (123e9 - r * i as f64) as u64)));
        assert!(most_urgent_fill(&short, free, 20.0).is_none());
    }

    #[test]
    fn a_recent_runaway_is_not_diluted_by_slow_growth() {
        // 1 TB free, 50 kB/s of logs for 50 min, then 100 MB/s for 10 min.
        let mut used = 0.0;
        let s = fs_series((0..=3600).map(|i| {
            used += if i < 3000 { 50e3 } else { 100e6 };
            (i as f64, (0.99e12 - used) as u64)
        }));
        let free = s.last().unwrap().free;
        let (rate, _, secs) = most_urgent_fill(&s, free, 20.0).unwrap();
        assert!((rate - 100e6).abs() / 100e6 < 0.05, "{rate}");
        assert!(secs < 6.0 * 3600.0, "{secs}");
    }

    #[test]
    fn a_minute_long_burst_does_not_speak_about_hours() {
        // A build writing 9.4 MB/s for a minute onto 79 GB free: 2.3 h at
        // that rate, which one minute may not claim; a 4 MB/s fill of a small
        // disk, 90 s from full, 20 s may.
        let s = fs_series((0..=60).map(|i| (i as f64, (79e9 - 9.4e6 * i as f64) as u64)));
        assert!(most_urgent_fill(&s, s.last().unwrap().free, 20.0).is_none());
        let s = fs_series((0..=20).map(|i| (i as f64, (400e6 - 4e6 * i as f64) as u64)));
        let (_, _, secs) = most_urgent_fill(&s, s.last().unwrap().free, 20.0).unwrap();
        assert!((secs - 80.0).abs() < 1.0, "{secs}");
    }

    #[test]
    fn freed_space_is_no_fill() {
        let s = fs_series((0..=120).map(|i| (i as f64, 1_000_000 + i * 1000)));
        assert!(most_urgent_fill(&s, 1_000_000, 20.0).is_none());
    }
}
