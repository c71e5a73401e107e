//! Who caused writes: page-cache dirtying in the writer's context (buffered
//! writes, later flushed by kworkers) and direct-I/O submissions.
use super::{Configurator, Need, ProbeSpec, ProgSpec, Variant, need_field};
use crate::btf::Btf;

const DIO: ProgSpec = ProgSpec {
    program: "dio_begin_tp",
    category: "iomap",
    name: "iomap_dio_rw_begin",
    btf: false,
    need: Need::Optional,
};
const DIO_DONE: ProgSpec = ProgSpec {
    program: "dio_complete_tp",
    category: "iomap",
    name: "iomap_dio_complete",
    btf: false,
    need: Need::Optional,
};

/// A dirtying tracepoint's program, with the direct-I/O pair every
/// variant shares.
const fn dirtying(program: &'static str, name: &'static str, btf: bool) -> [ProgSpec; 3] {
    [
        ProgSpec {
            program,
            category: "writeback",
            name,
            btf,
            need: Need::Required,
        },
        DIO,
        DIO_DONE,
    ]
}

pub const SPEC: ProbeSpec = ProbeSpec {
    name: "writes",
    variants: &[
        Variant {
            program_type: "tp_btf",
            degraded: None,
            progs: &dirtying("dirty_folio_btf", "writeback_dirty_folio", true),
        },
        Variant {
            program_type: "tracepoint",
            degraded: Some(
                "folio size unknown: each dirtied folio counts as one page, so large folios undercount",
            ),
            progs: &dirtying("dirty_folio_tp", "writeback_dirty_folio", false),
        },
        // Kernels before folios (5.16): one event per base page, which is
        // exact there (see the eBPF `writes.rs`).
        Variant {
            program_type: "tp_btf",
            degraded: None,
            progs: &dirtying("dirty_page_btf", "writeback_dirty_page", true),
        },
        Variant {
            program_type: "tracepoint",
            degraded: None,
            progs: &dirtying("dirty_page_tp", "writeback_dirty_page", false),
        },
    ],
    fallback: None,
};

pub fn configure(cx: &mut Configurator) {
    match cx.btf.map(folio_layout) {
        Some(Ok((flags, flags1, head))) => {
            cx.cfg.folio_flags = flags;
            cx.cfg.folio_flags1 = flags1;
            cx.cfg.pg_head_bit = head;
        }
        Some(Err(why)) => cx.unusable("dirty_folio_btf".into(), why),
        None => cx.unusable("dirty_folio_btf".into(), "no kernel BTF".into()),
    }
    cx.tracepoint("iomap", "iomap_dio_complete", |f, c| {
        // Absent on older kernels: every completion then closes the budget.
        c.dio_done_aio = need_field(f, "aio", &[1]).unwrap_or(sentinel_common::NONE);
        Ok(())
    });
    cx.tracepoint("iomap", "iomap_dio_rw_begin", |f, c| {
        c.dio_count = need_field(f, "count", &[8])?;
        Ok(())
    });
}

/// Where `struct folio` keeps its flags, the second page's flags (whose low
/// byte is the folio order) and which flag bit marks a large folio.
fn folio_layout(btf: &Btf) -> Result<(u32, u32, u32), String> {
    let flags = btf
        .member_offset("folio", "flags")
        .ok_or("struct folio has no `flags`")?;
    let flags1 = btf
        .member_offset("folio", "_flags_1")
        .ok_or("struct folio has no `_flags_1`")?;
    let head = btf
        .enum_value("PG_head")
        .ok_or("enum pageflags has no PG_head")?;
    if !(0..64).contains(&head) {
        return Err(format!("PG_head = {head} is out of range"));
    }
    Ok((flags, flags1, head as u32))
}
