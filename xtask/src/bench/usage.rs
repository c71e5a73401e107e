//! One process's CPU and memory over a measurement window, sampled the
//! same way for every bench that measures a process it started.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::{SAMPLE_EVERY, mib, stat_cpu_ticks, status_kib};

/// One process over one window.
#[derive(Default)]
pub(super) struct Usage {
    pub(super) wall: f64,
    /// utime + stime over the window, seconds.
    pub(super) cpu: f64,
    /// % of one core per slice.
    pub(super) slices: Vec<f64>,
    /// VmRSS samples, KiB.
    pub(super) rss: Vec<u64>,
    /// VmHWM at the end, KiB.
    pub(super) hwm: u64,
}

impl Usage {
    pub(super) fn pct(&self) -> f64 {
        self.cpu / self.wall * 100.0
    }

    pub(super) fn rss_avg(&self) -> f64 {
        if self.rss.is_empty() {
            return 0.0;
        }
        mib(self.rss.iter().sum::<u64>()) / self.rss.len() as f64
    }

    pub(super) fn rss_max(&self) -> f64 {
        mib(self.rss.iter().copied().max().unwrap_or(0))
    }

    /// Two processes measured together, as one.
    pub(super) fn sum(a: &Usage, b: &Usage) -> Usage {
        Usage {
            wall: a.wall,
            cpu: a.cpu + b.cpu,
            slices: a.slices.iter().zip(&b.slices).map(|(x, y)| x + y).collect(),
            rss: a.rss.iter().zip(&b.rss).map(|(x, y)| x + y).collect(),
            hwm: a.hwm + b.hwm,
        }
    }
}

/// CPU (utime+stime, all threads) and RSS of `pids` over `window` seconds
/// in `slices`; `alive` is checked at every sample.
pub(super) fn measure(
    pids: &[u32],
    window: f64,
    slices: usize,
    tck: f64,
    verbose: bool,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<Vec<Usage>> {
    let cpu = |pid: u32| -> Result<f64> { Ok(stat_cpu_ticks(pid)? / tck) };
    let mut usage: Vec<Usage> = pids.iter().map(|_| Usage::default()).collect();
    let t0 = Instant::now();
    let start: Vec<f64> = pids.iter().map(|&p| cpu(p)).collect::<Result<_>>()?;
    let mut prev = start.clone();
    let mut t_prev = 0.0;
    for slice in 1..=slices {
        let end = window * slice as f64 / slices as f64;
        loop {
            let now = t0.elapsed().as_secs_f64();
            if now >= end {
                break;
            }
            std::thread::sleep(Duration::from_secs_f64(end - now).min(SAMPLE_EVERY));
            alive()?;
            for (u, &pid) in usage.iter_mut().zip(pids) {
                u.rss.push(status_kib(pid, "VmRSS")?);
            }
        }
        let t = t0.elapsed().as_secs_f64();
        let dt = t - t_prev;
        let mut line = format!("  slice {slice}/{slices}: {dt:.1}s");
        for ((u, &pid), p) in usage.iter_mut().zip(pids).zip(prev.iter_mut()) {
            let c = cpu(pid)?;
            u.slices.push((c - *p) / dt * 100.0);
            line += &format!(" pid {pid} {:.2}%", (c - *p) / dt * 100.0);
            *p = c;
        }
        if verbose {
            eprintln!("{line}");
        }
        t_prev = t;
    }
    for ((u, &pid), (s, p)) in usage.iter_mut().zip(pids).zip(start.iter().zip(&prev)) {
        u.wall = t_prev;
        u.cpu = p - s;
        u.hwm = status_kib(pid, "VmHWM")?;
    }
    Ok(usage)
}
