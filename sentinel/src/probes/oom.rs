//! OOM kills (`oom:mark_victim`), delivered through a ring buffer.
use sentinel_common::NONE;

use super::{Configurator, Need, ProbeSpec, ProgSpec, Variant, need_field};

pub const SPEC: ProbeSpec = ProbeSpec {
    name: "oom",
    variants: &[Variant {
        program_type: "tracepoint",
        degraded: None,
        progs: &[ProgSpec {
            program: "mark_victim_tp",
            category: "oom",
            name: "mark_victim",
            btf: false,
            need: Need::Required,
        }],
    }],
    fallback: None,
};

pub fn configure(cx: &mut Configurator) {
    cx.tracepoint("oom", "mark_victim", |f, c| {
        c.oom_pid = need_field(f, "pid", &[4])?;
        // Older kernels record only the pid; the rest is optional detail.
        c.oom_total_vm = need_field(f, "total_vm", &[8]).unwrap_or(NONE);
        c.oom_anon_rss = need_field(f, "anon_rss", &[8]).unwrap_or(NONE);
        c.oom_file_rss = need_field(f, "file_rss", &[8]).unwrap_or(NONE);
        c.oom_shmem_rss = need_field(f, "shmem_rss", &[8]).unwrap_or(NONE);
        c.oom_uid = need_field(f, "uid", &[4]).unwrap_or(NONE);
        c.oom_pgtables = need_field(f, "pgtables", &[8]).unwrap_or(NONE);
        c.oom_score_adj = need_field(f, "oom_score_adj", &[2]).unwrap_or(NONE);
        Ok(())
    });
}
