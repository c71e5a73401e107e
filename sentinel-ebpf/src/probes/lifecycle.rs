//! Process lifecycle: keep names current at exec, and clean every exited
//! process and thread out of the per-process maps so they never fill on a
//! long-running host.
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_comm, bpf_get_current_task, bpf_get_current_task_btf},
    macros::tracepoint,
    programs::TracePointContext,
};
use sentinel_common::{Counter, NONE};

use crate::{
    cgroups::charge,
    config,
    maps::{DIO_BUDGET, EXITED, PROCS},
    probes::{faults::flush_exiting, futex::forget_thread},
    util::{add, count, ctx_small, current_ids, current_proc_refresh},
};

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn process_exec_tp(_ctx: TracePointContext) -> u32 {
    count(Counter::Exec);
    let (tgid, _) = current_ids();
    if let Some(p) = current_proc_refresh(tgid) {
        if let Ok(comm) = bpf_get_current_comm() {
            unsafe { (*p).comm = comm };
        }
        // A new image has a new mm: until its counters move, userspace
        // reads them from /proc rather than showing the old program's.
        unsafe { (*p).rss_known = 0 };
    }
    0
}

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn process_exit_tp(ctx: TracePointContext) -> u32 {
    count(Counter::Exit);
    let (tgid, tid) = current_ids();
    forget_thread(tid);
    let _ = DIO_BUDGET.remove(tid);
    // `group_dead` (newer kernels) is true for the last thread out; older
    // kernels fall back to the leader's exit.
    let last = match ctx_small(ctx.as_ptr(), config().exit_group_dead, 1) {
        Some(v) => v != 0,
        None => group_dead_from_signal().unwrap_or(tgid == tid),
    };
    if !last {
        return 0;
    }
    flush_exiting(tgid);
    // Without `PF_EXITING` to go by, this is how `create_proc` knows that
    // the thread's late events (closing files) belong to a folded process.
    if config().task_flags == NONE {
        let _ = EXITED.insert(tid, unsafe { bpf_get_current_task() }, 0);
    }
    let Some(p) = PROCS.get_ptr(tgid) else {
        return 0;
    };
    let cg = unsafe { (*p).cgroup_id };
    if let Some(c) = charge(cg, p, false) {
        add(unsafe { &raw mut (*c).exited }, 1);
    }
    let _ = PROCS.remove(tgid);
    0
}

/// Kernels before 6.16 have no `group_dead` field. `do_exit` has already
/// decremented `signal->live` when the tracepoint fires, so zero means this
/// was the last thread: better than "the leader exited", which is wrong
/// when the leader leaves first or another thread execs.
#[inline(always)]
fn group_dead_from_signal() -> Option<bool> {
    let c = config();
    if c.task_signal == NONE || c.signal_live == NONE {
        return None;
    }
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let signal =
        unsafe { core::ptr::read_volatile(task.add(c.task_signal as usize).cast::<*const u8>()) };
    if signal.is_null() {
        return None;
    }
    let live =
        unsafe { core::ptr::read_volatile(signal.add(c.signal_live as usize).cast::<i32>()) };
    Some(live == 0)
}
