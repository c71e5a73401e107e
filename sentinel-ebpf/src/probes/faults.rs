//! User page faults, per process. The per-cgroup figure is derived: each
//! process carries its cgroup id, and exits fold into `CGROUPS`, so a fault
//! costs one hash lookup, not two.
use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use sentinel_common::Counter;

use crate::util::{add, count, current_ids, current_proc};

#[inline(always)]
fn on_fault() {
    count(Counter::Faults);
    let (tgid, _) = current_ids();
    if let Some(p) = current_proc(tgid) {
        add(unsafe { &raw mut (*p).faults }, 1);
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
