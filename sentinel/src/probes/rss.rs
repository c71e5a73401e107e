//! Current RSS by kind (anon, file, shmem, swap), kept in kernel from
//! `kmem:rss_stat`; /proc is the fallback where the tracepoint is missing.
use super::{Configurator, Need, ProbeSpec, ProgSpec, Variant, need_field};
use crate::btf::Btf;

pub const SPEC: ProbeSpec = ProbeSpec {
    name: "rss",
    variants: &[
        Variant {
            program_type: "tp_btf",
            degraded: None,
            progs: &[ProgSpec {
                program: "rss_stat_btf",
                category: "kmem",
                name: "rss_stat",
                btf: true,
                need: Need::Required,
            }],
        },
        Variant {
            program_type: "tracepoint",
            degraded: None,
            progs: &[ProgSpec {
                program: "rss_stat_tp",
                category: "kmem",
                name: "rss_stat",
                btf: false,
                need: Need::Required,
            }],
        },
    ],
    fallback: Some("reading RSS from /proc/PID/status at each sample"),
};

pub fn configure(cx: &mut Configurator) {
    match cx.btf.map(counter_layout) {
        // It tells the current process's mm from another's by
        // `current->mm`; the classic event says so itself (`curr`).
        Some(Ok(_)) if !cx.helpers.get_current_task_btf => cx.unusable(
            "rss_stat_btf".into(),
            "needs bpf_get_current_task_btf (added in Linux 5.11)".into(),
        ),
        Some(Ok((task_mm, rss_stat, size, count))) => {
            cx.cfg.task_mm = task_mm;
            cx.cfg.mm_rss_stat = rss_stat;
            cx.cfg.pcpu_counter_size = size;
            cx.cfg.pcpu_counter_count = count;
            // Without CONFIG_MEMCG there is no owner: updates from other
            // contexts are then skipped (the owner's next change corrects).
            if let Some(btf) = cx.btf {
                cx.cfg.mm_owner = btf
                    .member_offset("mm_struct", "owner")
                    .unwrap_or(sentinel_common::NONE);
                cx.cfg.task_tgid = btf
                    .member_offset("task_struct", "tgid")
                    .unwrap_or(sentinel_common::NONE);
            }
        }
        Some(Err(why)) => cx.unusable("rss_stat_btf".into(), why),
        None => cx.unusable("rss_stat_btf".into(), "no kernel BTF".into()),
    }
    cx.tracepoint("kmem", "rss_stat", |f, c| {
        // `curr` is a bool on some kernels: the program reads 4 bytes, so
        // only accept the 4-byte layout.
        c.rss_curr = need_field(f, "curr", &[4])?;
        c.rss_member = need_field(f, "member", &[4])?;
        c.rss_size = need_field(f, "size", &[8])?;
        Ok(())
    });
}

/// Where the BTF probe finds a process's RSS counters: `task_struct.mm`,
/// and `mm_struct.rss_stat`, an array of `struct percpu_counter` since
/// Linux 6.2 (older kernels have another layout: the classic event is used).
fn counter_layout(btf: &Btf) -> Result<(u32, u32, u32, u32), String> {
    let task_mm = btf
        .member_offset("task_struct", "mm")
        .ok_or("task_struct has no `mm`")?;
    match btf.array_elem_struct("mm_struct", "rss_stat").as_deref() {
        Some("percpu_counter") => {}
        _ => {
            return Err(
                "mm_struct.rss_stat is not an array of percpu_counter (kernel older than 6.2)"
                    .into(),
            );
        }
    }
    let rss_stat = btf
        .member_offset("mm_struct", "rss_stat")
        .ok_or("mm_struct has no `rss_stat`")?;
    let size = btf
        .struct_size("percpu_counter")
        .ok_or("no struct percpu_counter")?;
    let count = btf
        .member_offset("percpu_counter", "count")
        .ok_or("percpu_counter has no `count`")?;
    Ok((task_mm, rss_stat, size, count))
}
