//! Per-cgroup totals. A cgroup's figure is what its live processes hold
//! (summed in userspace) plus what is charged here: processes that exited,
//! and the history of processes that moved away.
use sentinel_common::{CgroupStats, Counter, IO_HIST_BUCKETS, ProcStats};

use crate::{
    maps::CGROUPS,
    util::{add, add32, get_or_insert},
};

// SAFETY: plain integers and arrays of them: all-zero is a valid value.
static ZERO_CGROUP: CgroupStats = unsafe { core::mem::zeroed() };

/// Adds a process's counters to cgroup `cg`, or subtracts them (wrapping)
/// with `negate`. Returns the cgroup's entry.
#[inline(always)]
pub fn charge(cg: u64, p: *const ProcStats, negate: bool) -> Option<*mut CgroupStats> {
    let c = get_or_insert(&CGROUPS, &cg, &ZERO_CGROUP, Counter::CgroupsFull)?;
    let v = |x: u64| if negate { x.wrapping_neg() } else { x };
    unsafe {
        add(&raw mut (*c).faults, v((*p).faults));
        add(&raw mut (*c).futex_waits, v((*p).futex_waits));
        add(&raw mut (*c).futex_wait_ns, v((*p).futex_wait_ns));
        add(&raw mut (*c).read_bytes, v((*p).read_bytes));
        add(&raw mut (*c).read_ops, v((*p).read_ops));
        add(&raw mut (*c).blk_write_bytes, v((*p).blk_write_bytes));
        add(&raw mut (*c).write_ops, v((*p).write_ops));
        add(&raw mut (*c).direct_write_bytes, v((*p).direct_write_bytes));
        add(&raw mut (*c).dirtied_bytes, v((*p).dirtied_bytes));
        add(&raw mut (*c).io_done, v((*p).io_done));
        add(&raw mut (*c).io_lat_ns, v((*p).io_lat_ns));
        let mut i = 0;
        while i < IO_HIST_BUCKETS {
            let n = (*p).io_lat_hist[i];
            add32(
                &raw mut (*c).io_lat_hist[i],
                if negate { n.wrapping_neg() } else { n },
            );
            i += 1;
        }
    }
    Some(c)
}

/// A process seen in another cgroup than before: what it did so far stays
/// charged to the cgroup it did it in, and its new cgroup starts from zero
/// (its entry is debited by the same amount, since userspace adds the live
/// process's full counters to whichever cgroup it is in now).
#[inline(always)]
pub fn migrate(p: *const ProcStats, from: u64, to: u64) {
    let _ = charge(from, p, false);
    let _ = charge(to, p, true);
}
