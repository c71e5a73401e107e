//! OOM kills (`oom:mark_victim`), delivered through a ring buffer.
use super::{Configurator, Need, ProbeSpec, ProgSpec, Variant, need_field};

pub const SPEC: ProbeSpec = ProbeSpec {
    name: "oom",
    variants: &[Variant {
        program_type: "tracepoint",
        degraded: None,
        progs: &[ProgSpec { program: "mark_victim_tp", category: "oom", name: "mark_victim", btf: false, need: Need::Required }],
    }],
    fallback: None,
};

pub fn configure(cx: &mut Configurator) {
    cx.tracepoint("oom", "mark_victim", |f, c| {
        c.oom_pid = need_field(f, "pid", &[4])?;
        // Older kernels record only the pid; the rest is optional detail.
        c.oom_total_vm = f.offset("total_vm", &[8]).unwrap_or(sentinel_common::NONE);
        c.oom_anon_rss = f.offset("anon_rss", &[8]).unwrap_or(sentinel_common::NONE);
        c.oom_file_rss = f.offset("file_rss", &[8]).unwrap_or(sentinel_common::NONE);
        c.oom_shmem_rss = f.offset("shmem_rss", &[8]).unwrap_or(sentinel_common::NONE);
        c.oom_uid = f.offset("uid", &[4]).unwrap_or(sentinel_common::NONE);
        c.oom_pgtables = f.offset("pgtables", &[8]).unwrap_or(sentinel_common::NONE);
        c.oom_score_adj = f.offset("oom_score_adj", &[2]).unwrap_or(sentinel_common::NONE);
        Ok(())
    });
}
