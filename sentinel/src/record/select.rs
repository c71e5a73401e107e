//! What of a frame is worth keeping: every container, the host header, and
//! of the processes only those that lead on some signal or carry a flag.
//! A 500-process host records a few dozen rows a frame, not 500.
use std::collections::HashSet;

use crate::top::frame::{Frame, ProcRow};

/// Per process, the signals a top-N list is kept for.
const SIGNALS: &[fn(&ProcRow) -> f64] = &[
    |p| p.rss as f64,
    |p| p.rss_growth_per_min.unwrap_or(0.0),
    |p| p.cpu_pct.unwrap_or(0.0),
    |p| p.faults_per_s.unwrap_or(0.0),
    |p| p.read_per_s.unwrap_or(0.0),
    |p| p.write_per_s.unwrap_or(0.0),
    |p| p.longest_wait_s.unwrap_or(0.0) * f64::from(p.blocked.min(1)),
];

/// The frame as recorded: kernel threads, the processes that lead on no
/// signal, events (recorded on their own) and the details' sparklines
/// (the frames are the series) dropped.
pub fn trim(mut f: Frame, top: usize) -> Frame {
    f.procs.retain(|p| !p.kernel);
    let mut keep: HashSet<u32> = f
        .procs
        .iter()
        .filter(|p| !p.flags.is_empty())
        .map(|p| p.pid)
        .collect();
    let mut order: Vec<usize> = (0..f.procs.len()).collect();
    for signal in SIGNALS {
        order.sort_by(|&a, &b| signal(&f.procs[b]).total_cmp(&signal(&f.procs[a])));
        keep.extend(
            order
                .iter()
                .take(top)
                .filter(|&&i| signal(&f.procs[i]) > 0.0)
                .map(|&i| f.procs[i].pid),
        );
    }
    f.procs.retain(|p| keep.contains(&p.pid));
    f.procs.sort_by_key(|p| p.pid);
    f.events.clear();
    for d in &mut f.details {
        d.rss.clear();
        d.faults_per_s.clear();
        d.write_per_s.clear();
        d.events.clear();
        d.members.clear();
    }
    f.details.retain(|d| !d.blocked.is_empty());
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::frame::Flag;

    fn row(pid: u32, rss: u64) -> ProcRow {
        ProcRow {
            pid,
            rss,
            ..Default::default()
        }
    }

    #[test]
    fn keeps_leaders_and_flagged_and_drops_the_rest() {
        let mut procs: Vec<ProcRow> = (1..=100).map(|p| row(p, u64::from(p) << 20)).collect();
        procs[0].write_per_s = Some(1e6);
        procs[1].flags.push(Flag {
            kind: "hang".into(),
            severity: crate::event::Severity::Warning,
        });
        procs[2].kernel = true;
        procs[2].cpu_pct = Some(99.0);
        let f = trim(
            Frame {
                procs,
                ..Default::default()
            },
            3,
        );
        let pids: Vec<u32> = f.procs.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![1, 2, 98, 99, 100]);
    }
}
