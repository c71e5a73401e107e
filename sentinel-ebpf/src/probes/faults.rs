//! User page faults per process (and, derived, per cgroup: each process
//! carries its cgroup id and exits fold into `CGROUPS`).
//!
//! A fault storm is the hottest path sentinel has, so a fault only bumps a
//! per-CPU slot (`FAULT_BATCH`); the shared per-process counter is updated
//! when another process faults on this CPU, every `FAULT_BATCH_MAX` faults
//! and at exit.
use aya_ebpf::{
    macros::{btf_tracepoint, map, tracepoint},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, TracePointContext},
};
use sentinel_common::{Counter, FAULT_BATCH_MAX, FaultBatch};

use crate::{
    maps::PROCS,
    util::{add, count, count_n, current_ids, current_proc},
};

#[map(name = "FAULT_BATCH")]
static FAULT_BATCH: PerCpuArray<FaultBatch> = PerCpuArray::with_max_entries(1, 0);

/// Adds the pending faults to their process. Never creates an entry: a
/// process that exited meanwhile was already folded into its cgroup.
#[inline(always)]
fn flush(b: *mut FaultBatch) {
    let (tgid, pending) = unsafe { ((*b).tgid, (*b).pending) };
    if pending == 0 {
        return;
    }
    count_n(Counter::Faults, pending as u64);
    match PROCS.get_ptr_mut(tgid) {
        Some(p) => add(unsafe { &raw mut (*p).faults }, pending as u64),
        None => count(Counter::FaultsOrphaned),
    }
    unsafe { (*b).pending = 0 };
}

#[inline(always)]
fn on_fault() {
    let Some(b) = FAULT_BATCH.get_ptr_mut(0) else {
        return;
    };
    let (tgid, _) = current_ids();
    unsafe {
        if (*b).tgid == tgid && (*b).pending < FAULT_BATCH_MAX {
            (*b).pending += 1;
            return;
        }
    }
    flush(b);
    // Creates the entry, so a new process is known from its first fault.
    if current_proc(tgid).is_some() {
        unsafe {
            (*b).tgid = tgid;
            (*b).pending = 1;
        }
    }
}

/// Called at process exit, on the exiting CPU.
#[inline(always)]
pub fn flush_exiting(tgid: u32) {
    if let Some(b) = FAULT_BATCH.get_ptr_mut(0) {
        if unsafe { (*b).tgid } == tgid {
            flush(b);
        }
    }
}

/// Preferred: BTF tracepoint, roughly a third of a classic tracepoint's cost.
#[btf_tracepoint(function = "page_fault_user")]
pub fn page_fault_user_btf(_ctx: BtfTracePointContext) -> i32 {
    on_fault();
    0
}

/// Fallback for kernels without BTF tracepoints.
#[tracepoint(category = "exceptions", name = "page_fault_user")]
pub fn page_fault_user_tp(_ctx: TracePointContext) -> u32 {
    on_fault();
    0
}
