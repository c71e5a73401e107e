//! Current RSS by kind (anon, file, shmem, swap), kept in kernel from
//! `kmem:rss_stat`; /proc is the fallback where the tracepoint is missing.
use super::{Configurator, Need, ProbeSpec, ProgSpec, Variant, need_field};

pub const SPEC: ProbeSpec = ProbeSpec {
    name: "rss",
    variants: &[Variant {
        program_type: "tracepoint",
        degraded: None,
        progs: &[ProgSpec { program: "rss_stat_tp", category: "kmem", name: "rss_stat", btf: false, need: Need::Required }],
    }],
    fallback: Some("reading RSS from /proc/PID/status at each sample"),
};

pub fn configure(cx: &mut Configurator) {
    cx.tracepoint("kmem", "rss_stat", |f, c| {
        c.rss_mm_id = need_field(f, "mm_id", &[4])?;
        // `curr` is a bool on some kernels: the program reads 4 bytes, so
        // only accept the 4-byte layout.
        c.rss_curr = need_field(f, "curr", &[4])?;
        c.rss_member = need_field(f, "member", &[4])?;
        c.rss_size = need_field(f, "size", &[8])?;
        Ok(())
    });
}
