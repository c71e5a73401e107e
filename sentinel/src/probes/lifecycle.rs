//! Exec keeps names current; exit folds a process into its cgroup and
//! removes it from every per-process map.
use super::{Configurator, Need, ProbeSpec, ProgSpec, Variant};

pub const SPEC: ProbeSpec = ProbeSpec {
    name: "lifecycle",
    variants: &[Variant {
        program_type: "tracepoint",
        degraded: None,
        progs: &[
            ProgSpec {
                program: "process_exit_tp",
                category: "sched",
                name: "sched_process_exit",
                btf: false,
                need: Need::Required,
            },
            ProgSpec {
                program: "process_exec_tp",
                category: "sched",
                name: "sched_process_exec",
                btf: false,
                need: Need::Optional,
            },
        ],
    }],
    fallback: None,
};

pub fn configure(cx: &mut Configurator) {
    cx.tracepoint("sched", "sched_process_exit", |f, c| {
        // Absent before 6.x: the program then treats the leader's exit as
        // the process's.
        c.exit_group_dead =
            super::need_field(f, "group_dead", &[1]).unwrap_or(sentinel_common::NONE);
        Ok(())
    });
}
