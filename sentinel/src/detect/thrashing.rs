//! swap_thrashing: the host stalls on memory (PSI `full`: every runnable
//! task waiting on memory) while major faults pour in (swap-ins or
//! re-reads of evicted page cache), for `thrashing.min_duration`. This is
//! the state in which sshd starves before anything is OOM-killed.
//! Without PSI (a kernel without it, or booted with psi=0) it stays off.
use serde_json::json;

use super::Ctx;
use crate::{
    event::{Kind, Names, Severity, SubjectKey},
    incident::{Finding, round1},
    profile::{HostPoint, ProcProfile, rate},
};

/// `full avg10` at or above this is critical: tasks are stalled half the time.
const CRITICAL_FULL_PCT: f64 = 50.0;

#[derive(Default)]
pub struct Tracker {
    since: Option<f64>,
}

impl Tracker {
    pub fn detect(&mut self, ctx: &Ctx) -> Vec<Finding> {
        let cfg = &ctx.cfg.thrashing;
        let pts: Vec<HostPoint> = ctx.profiles.host.window(10.0);
        let Some(last) = pts.last() else {
            return Vec::new();
        };
        let Some(psi) = last.psi_memory else {
            return Vec::new();
        };
        let majors = rate(&pts, |p| p.vm.pgmajfault).unwrap_or(0.0);
        let on = psi.full_avg10 >= cfg.memory_pressure && majors >= cfg.major_faults as f64;
        if !on {
            self.since = None;
            return Vec::new();
        }
        let since = *self.since.get_or_insert(ctx.t);
        // An open incident does not have to earn min_duration again after
        // one tick below the thresholds: that would resolve and refire it.
        let open = ctx
            .incidents
            .is_open(Kind::SwapThrashing, &SubjectKey::Host);
        if !open && ctx.t - since < cfg.min_duration.as_secs_f64() {
            return Vec::new();
        }
        let page = crate::procfs::page_size() as f64;
        let mut top: Vec<(&ProcProfile, f64)> = ctx
            .profiles
            .procs
            .values()
            .filter_map(|p| Some((p, rate(&p.series.window(10.0), |q| q.majflt)?)))
            .filter(|(_, r)| *r > 0.0)
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        top.truncate(5);
        let swap_used = last.swap_total.saturating_sub(last.swap_free);
        vec![Finding {
            kind: Kind::SwapThrashing,
            key: SubjectKey::Host,
            severity: if psi.full_avg10 >= CRITICAL_FULL_PCT {
                Severity::Critical
            } else {
                Severity::Warning
            },
            names: Names::default(),
            summary: format!(
                "The host is thrashing: all tasks stalled on memory {:.0}% of the last 10 s, {:.0} major faults/s for {:.0} s{}.",
                psi.full_avg10,
                majors,
                ctx.t - since,
                top.first()
                    .map(|(p, r)| format!("; most by {} (pid {}, {r:.0}/s)", p.comm, p.pid))
                    .unwrap_or_default(),
            ),
            evidence: json!({
                "psi_memory": psi,
                "psi_io": last.psi_io,
                "major_faults_per_s": majors.round(),
                "swap_in_bytes_per_s": rate(&pts, |p| p.vm.pswpin).map(|r| (r * page).round()),
                "swap_out_bytes_per_s": rate(&pts, |p| p.vm.pswpout).map(|r| (r * page).round()),
                "swap_used_bytes": swap_used,
                "swap_total_bytes": last.swap_total,
                "mem_available_bytes": last.mem_available,
                "sustained_s": round1(ctx.t - since),
                "top_major_faulters": top.iter().map(|(p, r)| json!({
                    "pid": p.pid, "comm": p.comm, "major_faults_per_s": r.round(),
                })).collect::<Vec<_>>(),
            }),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        collect::Sample, config::Config, host::Pressure, host::VmStat, incident::Incidents,
        profile::Profiles,
    };

    fn sample() -> Sample {
        Sample {
            mono_ns: 0,
            procs: Default::default(),
            cgroups: Default::default(),
            waits: Default::default(),
            devices: Default::default(),
            counters: [0; sentinel_common::NUM_COUNTERS as usize],
            fill: Default::default(),
        }
    }

    /// Host points with PSI memory full at `full` and `majors` major faults/s.
    fn run(full: f64, majors: u64, secs: u32) -> Vec<Vec<Finding>> {
        let cfg = Config::default();
        let (s, inc) = (sample(), Incidents::new("h".into(), 30.0));
        let mut profiles = Profiles::new();
        let mut tr = Tracker::default();
        let mut out = Vec::new();
        for i in 0..=secs {
            profiles.host.push(HostPoint {
                t: i as f64,
                psi_memory: Some(Pressure {
                    full_avg10: full,
                    some_avg10: full,
                    ..Default::default()
                }),
                vm: VmStat {
                    pgmajfault: majors * i as u64,
                    ..Default::default()
                },
                ..Default::default()
            });
            let ctx = Ctx {
                t: i as f64,
                cfg: &cfg,
                profiles: &profiles,
                sample: &s,
                incidents: &inc,
                mem_root: None,
            };
            out.push(tr.detect(&ctx));
        }
        out
    }

    #[test]
    fn sustained_pressure_with_major_faults_is_thrashing() {
        let ticks = run(25.0, 5000, 40);
        let first = ticks.iter().position(|f| !f.is_empty()).expect("fires");
        // min_duration is 30 s by default.
        assert!((30..=31).contains(&first), "fired at {first}");
        assert_eq!(ticks[40][0].severity, Severity::Warning);
        assert_eq!(run(60.0, 5000, 40)[40][0].severity, Severity::Critical);
    }

    #[test]
    fn pressure_without_faults_or_faults_without_pressure_is_not() {
        assert!(run(25.0, 10, 60).iter().all(Vec::is_empty));
        assert!(run(1.0, 5000, 60).iter().all(Vec::is_empty));
    }
}
