//! Exec keeps names current; exit folds a process into its cgroup and
//! removes it from every per-process map.
use super::{Configurator, Need, ProbeSpec, ProgSpec, Variant, helpers};

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
    let none = sentinel_common::NONE;
    cx.tracepoint("sched", "sched_process_exit", |f, c| {
        // Since 6.16; older kernels read `signal->live` through BTF.
        c.exit_group_dead = super::need_field(f, "group_dead", &[1]).unwrap_or(none);
        Ok(())
    });
    // Used by every probe that creates a process entry, and by the exit
    // fallback. Both read the current task through a helper; without it
    // (or without BTF) the offsets stay NONE, so the call is dead code: the
    // exit probe then remembers exiting threads itself, and only the exit
    // fallback is lost.
    if let Some(why) = helpers::task_btf_missing(cx.helpers, cx.btf.is_some()) {
        if cx.cfg.exit_group_dead == none {
            cx.note(
                "process_exit_tp",
                format!(
                    "{why}: a process is folded when its leader thread exits, not its last \
                     thread; threads that outlive the leader leave a stale process entry"
                ),
            );
        }
        return;
    }
    let Some(btf) = cx.btf else { return };
    cx.cfg.task_flags = btf.member_offset("task_struct", "flags").unwrap_or(none);
    cx.cfg.task_signal = btf.member_offset("task_struct", "signal").unwrap_or(none);
    cx.cfg.signal_live = btf.member_offset("signal_struct", "live").unwrap_or(none);
}
