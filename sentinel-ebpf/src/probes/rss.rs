//! Current RSS per process by kind (file, anon, swap, shmem), kept in
//! kernel so growth is seen without polling /proc.
//!
//! Preferred: a BTF tracepoint on `rss_stat` that reads the mm's counter
//! itself (offsets from BTF). Enabling the classic `kmem:rss_stat` event
//! makes the kernel sum the per-CPU counter on every RSS change, fault
//! storms included; the BTF tracepoint avoids that and the record copy.
use aya_ebpf::{
    EbpfContext,
    helpers::bpf_get_current_task_btf,
    macros::{btf_tracepoint, map, tracepoint},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, TracePointContext},
};
use sentinel_common::{Counter, NONE, RSS_MEMBERS};

use crate::{
    config,
    maps::PROCS,
    util::{count, current_ids, current_proc, field_u32, field_u64},
};

/// What this CPU last wrote for one mm, to skip writes that change less
/// than `RSS_GRANULE_PAGES`.
#[repr(C)]
struct RssCache {
    mm: u64,
    pages: [i64; RSS_MEMBERS],
}

#[map(name = "RSS_CACHE")]
static RSS_CACHE: PerCpuArray<RssCache> = PerCpuArray::with_max_entries(1, 0);

/// Stores `bytes` as member `m` of process `tgid`, creating the entry only
/// for the current process (another's may be gone already).
#[inline(always)]
fn store(tgid: u32, curr: bool, m: usize, bytes: i64) {
    let p = if curr {
        current_proc(tgid)
    } else {
        PROCS.get_ptr_mut(tgid)
    };
    let Some(p) = p else { return };
    // The mask must survive into the object: LLVM drops a mask it can
    // prove redundant, and the verifier (which cannot) then rejects the
    // index as unbounded. `black_box` makes it opaque to LLVM.
    let m = core::hint::black_box(m) & (RSS_MEMBERS - 1);
    unsafe {
        (*p).rss[m] = bytes;
        (*p).rss_known |= 1 << m;
    }
}

#[btf_tracepoint(function = "rss_stat")]
pub fn rss_stat_btf(ctx: BtfTracePointContext) -> i32 {
    let c = config();
    if c.mm_rss_stat == NONE || c.task_mm == NONE || c.pcpu_counter_count == NONE {
        return 0;
    }
    let mm: *const u8 = ctx.arg(0);
    let member: i32 = ctx.arg(1);
    if member < 0 || member as usize >= RSS_MEMBERS {
        return 0;
    }
    // Four loads at offsets fixed per program, then a select: the verifier
    // wants constant offsets into kernel structs, not `base + member * size`.
    let base = c.mm_rss_stat + c.pcpu_counter_count;
    let sz = c.pcpu_counter_size;
    let rd = |off: u32| unsafe { core::ptr::read_volatile(mm.add(off as usize).cast::<i64>()) };
    let (v0, v1, v2, v3) = (
        rd(base),
        rd(base + sz),
        rd(base + 2 * sz),
        rd(base + 3 * sz),
    );
    let pages = match member {
        0 => v0,
        1 => v1,
        2 => v2,
        _ => v3,
    }
    .max(0);
    let m = member as usize & (RSS_MEMBERS - 1);
    let Some(cache) = RSS_CACHE.get_ptr_mut(0) else {
        return 0;
    };
    let m = core::hint::black_box(m) & (RSS_MEMBERS - 1);
    let cached = unsafe { &raw mut (*cache).pages[m] };
    unsafe {
        if (*cache).mm == mm as u64 && (*cached - pages).abs() < c.rss_granule_pages as i64 {
            return 0;
        }
    }
    count(Counter::RssStat);
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let cur_mm = unsafe { core::ptr::read_volatile(task.add(c.task_mm as usize).cast::<u64>()) };
    let bytes = pages << (c.page_shift & 31);
    if cur_mm == mm as u64 {
        let (tgid, _) = current_ids();
        store(tgid, true, m, bytes);
    } else if c.mm_owner != NONE && c.task_tgid != NONE {
        // Another context changed this mm (reclaim, swap-out, the OOM
        // reaper): `mm->owner` names the process (CONFIG_MEMCG kernels).
        let owner =
            unsafe { core::ptr::read_volatile(mm.add(c.mm_owner as usize).cast::<*const u8>()) };
        if owner.is_null() {
            count(Counter::RssUnattributed);
            return 0;
        }
        let tgid =
            unsafe { core::ptr::read_volatile(owner.add(c.task_tgid as usize).cast::<i32>()) };
        store(tgid as u32, false, m, bytes);
    } else {
        count(Counter::RssUnattributed);
    }
    unsafe {
        if (*cache).mm != mm as u64 {
            (*cache).mm = mm as u64;
            (*cache).pages = [i64::MIN / 2; RSS_MEMBERS];
        }
        *cached = pages;
    }
    0
}

/// Fallback: the classic event, which carries the exact value. Updates from
/// another context (`curr == 0`) are skipped and counted: the record names
/// the mm only by a hashed id, so whose it is cannot be told; the owner's
/// next own change corrects the value.
#[tracepoint(category = "kmem", name = "rss_stat")]
pub fn rss_stat_tp(ctx: TracePointContext) -> u32 {
    count(Counter::RssStat);
    let c = config();
    let raw = ctx.as_ptr();
    let (Some(curr), Some(member), Some(size)) = (
        field_u32(raw, c.rss_curr),
        field_u32(raw, c.rss_member).map(|v| v as i32),
        field_u64(raw, c.rss_size).map(|v| v as i64),
    ) else {
        return 0;
    };
    if member < 0 || member as usize >= RSS_MEMBERS {
        return 0;
    }
    if curr == 0 {
        count(Counter::RssUnattributed);
        return 0;
    }
    let (tgid, _) = current_ids();
    store(tgid, true, member as usize, size);
    0
}
