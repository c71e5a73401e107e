//! Current RSS per process by kind, from `kmem:rss_stat`, which reports the
//! full counter value (not a delta) whenever it changes.
use aya_ebpf::EbpfContext;
use aya_ebpf::{
    bindings::BPF_ANY,
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use sentinel_common::{Counter, MAX_MM, RSS_MEMBERS};

use crate::{
    config,
    maps::PROCS,
    util::{count, current_ids, current_proc, field_u32, field_u64},
};

/// mm_id (the kernel's hashed mm pointer) -> tgid, learnt when the owner
/// itself changes its RSS. Lets updates made from another context (reclaim,
/// swap-out, the OOM reaper) land on the right process.
#[map(name = "MM_OWNERS")]
static MM_OWNERS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_MM, 0);

#[tracepoint(category = "kmem", name = "rss_stat")]
pub fn rss_stat_tp(ctx: TracePointContext) -> u32 {
    count(Counter::RssStat);
    let c = config();
    let raw = ctx.as_ptr();
    let (Some(mm_id), Some(curr), Some(member), Some(size)) = (
        field_u32(raw, c.rss_mm_id),
        field_u32(raw, c.rss_curr),
        field_u32(raw, c.rss_member).map(|v| v as i32),
        field_u64(raw, c.rss_size).map(|v| v as i64),
    ) else {
        return 0;
    };
    if member < 0 || member as usize >= RSS_MEMBERS {
        return 0;
    }
    let member = member as usize;
    let p = if curr != 0 {
        let (tgid, _) = current_ids();
        let Some(p) = current_proc(tgid) else {
            return 0;
        };
        if unsafe { (*p).mm_id } != mm_id {
            unsafe { (*p).mm_id = mm_id };
            if MM_OWNERS.insert(mm_id, tgid, BPF_ANY as u64).is_err() {
                count(Counter::MmFull);
            }
        }
        p
    } else {
        let Some(tgid) = (unsafe { MM_OWNERS.get(mm_id) }) else {
            return 0;
        };
        match PROCS.get_ptr_mut(*tgid) {
            Some(p) => p,
            None => return 0,
        }
    };
    unsafe {
        // Bounded index for the verifier.
        let m = member & (RSS_MEMBERS - 1);
        (*p).rss[m] = size;
        (*p).rss_known |= 1 << m;
    }
    0
}

/// Called by the exit probe so the table never outlives its processes.
#[inline(always)]
pub fn forget_mm(mm_id: u32) {
    if mm_id != 0 {
        let _ = MM_OWNERS.remove(mm_id);
    }
}
