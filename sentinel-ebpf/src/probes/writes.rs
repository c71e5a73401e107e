//! Who *caused* writes, as opposed to who issued them to the disk:
//! page-cache dirtying in the writer's context (buffered writes are flushed
//! later by kworkers) and direct I/O submissions.
use aya_ebpf::{
    EbpfContext,
    bindings::BPF_ANY,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use sentinel_common::{Counter, NONE};

use crate::{
    config,
    maps::DIO_BUDGET,
    util::{add, count, ctx_small, current_ids, current_proc_refresh, field_u64},
};

#[inline(always)]
fn charge_dirty(bytes: u64) {
    count(Counter::DirtyFolio);
    let (tgid, _) = current_ids();
    if let Some(p) = current_proc_refresh(tgid) {
        add(unsafe { &raw mut (*p).dirtied_bytes }, bytes);
    }
}

/// Preferred: reads the folio's size, since filesystems with large folios
/// (ext4, xfs) dirty up to megabytes per event. Offsets come from BTF.
#[btf_tracepoint(function = "writeback_dirty_folio")]
pub fn dirty_folio_btf(ctx: BtfTracePointContext) -> i32 {
    let c = config();
    let folio: *const u8 = ctx.arg(0);
    let mut pages = 1u64;
    if c.folio_flags != NONE && c.folio_flags1 != NONE && c.pg_head_bit < 64 {
        let flags =
            unsafe { core::ptr::read_volatile(folio.add(c.folio_flags as usize).cast::<u64>()) };
        if flags & (1u64 << c.pg_head_bit) != 0 {
            let f1 = unsafe {
                core::ptr::read_volatile(folio.add(c.folio_flags1 as usize).cast::<u64>())
            };
            // The low byte of the second page's flags holds the order.
            pages = 1u64 << (f1 & 0x1f);
        }
    }
    charge_dirty(pages << (c.page_shift & 31));
    0
}

/// Fallback: one page per event, which undercounts large folios; the
/// loader reports the probe as degraded when it has to use it.
#[tracepoint(category = "writeback", name = "writeback_dirty_folio")]
pub fn dirty_folio_tp(_ctx: TracePointContext) -> u32 {
    charge_one_page();
    0
}

/// Kernels before folios (Linux 5.16) trace `writeback_dirty_page`. Their
/// page cache dirties base pages only (transparent huge pages are for
/// tmpfs, which does not account writeback), so an event is one page.
#[btf_tracepoint(function = "writeback_dirty_page")]
pub fn dirty_page_btf(_ctx: BtfTracePointContext) -> i32 {
    charge_one_page();
    0
}

#[tracepoint(category = "writeback", name = "writeback_dirty_page")]
pub fn dirty_page_tp(_ctx: TracePointContext) -> u32 {
    charge_one_page();
    0
}

#[inline(always)]
fn charge_one_page() {
    charge_dirty(1u64 << (config().page_shift & 31));
}

/// Opens a direct-I/O budget for this thread: the bios it submits until the
/// call completes are direct I/O (see `block.rs`). The tracepoint does not
/// say read or write on synchronous calls; the bios do.
#[tracepoint(category = "iomap", name = "iomap_dio_rw_begin")]
pub fn dio_begin_tp(ctx: TracePointContext) -> u32 {
    count(Counter::DioBegin);
    let Some(bytes) = field_u64(ctx.as_ptr(), config().dio_count) else {
        return 0;
    };
    let (_, tid) = current_ids();
    if DIO_BUDGET.insert(tid, bytes, BPF_ANY as u64).is_err() {
        count(Counter::DioFull);
    }
    0
}

/// Closes the budget. Asynchronous completions run elsewhere; their budget
/// is replaced by the thread's next call or removed when it exits.
#[tracepoint(category = "iomap", name = "iomap_dio_complete")]
pub fn dio_complete_tp(ctx: TracePointContext) -> u32 {
    // An asynchronous completion runs in whatever context the I/O finished
    // in: it must not close the budget of the thread that happens to run.
    if ctx_small(ctx.as_ptr(), config().dio_done_aio, 1).is_some_and(|aio| aio != 0) {
        return 0;
    }
    let (_, tid) = current_ids();
    let _ = DIO_BUDGET.remove(tid);
    0
}
