//! Block I/O: requests give bytes, ops and latency per device; bios, which
//! are submitted in the requester's context, give per-process bytes.
use super::{Configurator, Need, ProbeSpec, ProgSpec, Variant, need_field};

pub const SPEC: ProbeSpec = ProbeSpec {
    name: "block",
    variants: &[Variant {
        program_type: "tracepoint",
        degraded: None,
        progs: &[
            ProgSpec {
                program: "block_rq_issue_tp",
                category: "block",
                name: "block_rq_issue",
                btf: false,
                need: Need::Required,
            },
            ProgSpec {
                program: "block_bio_queue_tp",
                category: "block",
                name: "block_bio_queue",
                btf: false,
                need: Need::Optional,
            },
            ProgSpec {
                program: "block_rq_complete_tp",
                category: "block",
                name: "block_rq_complete",
                btf: false,
                need: Need::Optional,
            },
        ],
    }],
    fallback: None,
};

pub fn configure(cx: &mut Configurator) {
    cx.tracepoint("block", "block_rq_issue", |f, c| {
        c.blk_issue_dev = need_field(f, "dev", &[4])?;
        c.blk_issue_sector = need_field(f, "sector", &[8])?;
        c.blk_issue_bytes = need_field(f, "bytes", &[4])?;
        c.blk_issue_rwbs = need_field(f, "rwbs", &[8, 10])?;
        Ok(())
    });
    cx.tracepoint("block", "block_bio_queue", |f, c| {
        c.bio_dev = need_field(f, "dev", &[4])?;
        c.bio_sector = need_field(f, "sector", &[8])?;
        c.bio_nr_sector = need_field(f, "nr_sector", &[4])?;
        c.bio_rwbs = need_field(f, "rwbs", &[8, 10])?;
        Ok(())
    });
    cx.tracepoint("block", "block_rq_complete", |f, c| {
        c.blk_done_dev = need_field(f, "dev", &[4])?;
        c.blk_done_sector = need_field(f, "sector", &[8])?;
        Ok(())
    });
}
