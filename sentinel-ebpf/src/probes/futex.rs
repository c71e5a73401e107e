//! Futex waits: an in-flight table keyed by thread, so a thread that never
//! wakes up is visible *while* it waits, plus per-process completed-wait
//! statistics.
//!
//! Enabling any `syscalls:` tracepoint puts every syscall of every thread
//! on the slow path, so the enter probe returns at once for non-wait ops and
//! the exit probe does a single lookup.
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_ANY, BPF_F_FAST_STACK_CMP, BPF_F_USER_STACK},
    helpers::{bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_probe_read_user, bpf_task_pt_regs},
    macros::{map, tracepoint},
    maps::{HashMap, StackTrace},
    programs::{TracePointContext, tracing::StackIdContext},
};
use sentinel_common::{
    Counter, FutexWait, HIST_BUCKETS, MAX_FUTEX_WAITS, MAX_STACKS, NONE, WAIT_OWNER_PI,
    WAIT_OWNER_READ, futex_op, log2_bucket,
};

use crate::{
    config,
    util::{add, add32, count, current_ids, current_proc_refresh, field_u64},
};

#[map(name = "FUTEX_WAITS")]
pub static FUTEX_WAITS: HashMap<u32, FutexWait> = HashMap::with_max_entries(MAX_FUTEX_WAITS, 0);

#[map(name = "STACKS")]
static STACKS: StackTrace = StackTrace::with_max_entries(MAX_STACKS, 0);

#[inline(always)]
fn begin_wait(ctx: &TracePointContext, uaddr: u64, op: u32) {
    let (tgid, tid) = current_ids();
    let mut owner = 0u32;
    let mut flags = 0u32;
    if op != futex_op::WAITV && uaddr != 0 {
        // PI futexes hold the owner tid in the word itself; a glibc mutex
        // keeps it in `__owner`, 8 bytes further. For condition variables
        // and semaphores that slot is something else: userspace only
        // believes an owner that is a live thread of the same process.
        let at = if futex_op::is_pi(op) {
            uaddr
        } else {
            uaddr + futex_op::GLIBC_OWNER_OFFSET
        };
        match unsafe { bpf_probe_read_user(at as *const u32) } {
            Ok(v) => {
                owner = v & futex_op::TID_MASK;
                flags |= if futex_op::is_pi(op) {
                    WAIT_OWNER_PI
                } else {
                    WAIT_OWNER_READ
                };
            }
            Err(_) => count(Counter::OwnerReadFail),
        }
    }
    let sp = user_sp();
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(w) = FUTEX_WAITS.get_ptr_mut(tid) {
        // Walking the user stack is most of this probe's cost. A thread
        // waiting again on the same futex from the same stack depth is on
        // the same call path (a lock in a loop): reuse its last stack.
        let reuse =
            unsafe { sp != 0 && (*w).uaddr == uaddr && (*w).user_sp == sp && (*w).stack_id >= 0 };
        unsafe {
            if !reuse {
                (*w).stack_id = capture_stack(ctx);
                (*w).user_sp = sp;
            }
            (*w).uaddr = uaddr;
            (*w).tgid = tgid;
            (*w).op = op;
            (*w).owner_tid = owner;
            (*w).flags = flags;
            (*w).start_ns = now;
        }
        return;
    }
    let w = FutexWait {
        start_ns: now,
        uaddr,
        tgid,
        op,
        owner_tid: owner,
        stack_id: capture_stack(ctx),
        flags,
        _pad: 0,
        user_sp: sp,
    };
    if FUTEX_WAITS.insert(tid, w, BPF_ANY as u64).is_err() {
        count(Counter::FutexWaitsFull);
    }
}

#[inline(always)]
fn capture_stack(ctx: &TracePointContext) -> i32 {
    match ctx.get_stackid(&STACKS, (BPF_F_USER_STACK | BPF_F_FAST_STACK_CMP) as u64) {
        Ok(id) => id as i32,
        Err(_) => {
            count(Counter::StackFail);
            -1
        }
    }
}

/// The thread's user stack pointer (saved at syscall entry), 0 if unknown.
#[inline(always)]
fn user_sp() -> u64 {
    let off = config().regs_sp;
    if off == NONE {
        return 0;
    }
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    if regs.is_null() {
        return 0;
    }
    unsafe { core::ptr::read_volatile(regs.add(off as usize).cast::<u64>()) }
}

#[tracepoint(category = "syscalls", name = "sys_enter_futex")]
pub fn futex_enter_tp(ctx: TracePointContext) -> u32 {
    let c = config();
    let raw = ctx.as_ptr();
    let Some(op) = field_u64(raw, c.futex_op) else {
        return 0;
    };
    let cmd = op as u32 & futex_op::CMD_MASK;
    if !futex_op::is_wait(cmd) {
        return 0;
    }
    count(Counter::FutexEnter);
    let uaddr = field_u64(raw, c.futex_uaddr).unwrap_or(0);
    begin_wait(&ctx, uaddr, cmd);
    0
}

/// futex2 `futex_wait(2)` (6.7+).
#[tracepoint(category = "syscalls", name = "sys_enter_futex_wait")]
pub fn futex2_wait_enter_tp(ctx: TracePointContext) -> u32 {
    count(Counter::FutexEnter);
    let uaddr = field_u64(ctx.as_ptr(), config().futex2_uaddr).unwrap_or(0);
    begin_wait(&ctx, uaddr, futex_op::WAIT2);
    0
}

/// `futex_waitv(2)`: records the first waiter's address.
#[tracepoint(category = "syscalls", name = "sys_enter_futex_waitv")]
pub fn futex_waitv_enter_tp(ctx: TracePointContext) -> u32 {
    count(Counter::FutexEnter);
    let waiters = field_u64(ctx.as_ptr(), config().waitv_waiters).unwrap_or(0);
    // struct futex_waitv { u64 val; u64 uaddr; u32 flags; u32 __reserved; }
    let uaddr = match unsafe { bpf_probe_read_user((waiters + 8) as *const u64) } {
        Ok(v) => v,
        Err(_) => {
            count(Counter::WaitvReadFail);
            0
        }
    };
    begin_wait(&ctx, uaddr, futex_op::WAITV);
    0
}

/// Attached to the exit of every futex syscall we enter-trace.
#[tracepoint(category = "syscalls", name = "sys_exit_futex")]
pub fn futex_exit_tp(_ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    let Some(w) = FUTEX_WAITS.get_ptr_mut(tid) else {
        return 0;
    };
    let start = unsafe { (*w).start_ns };
    if start == 0 {
        return 0; // a wake, or another op that did not wait
    }
    count(Counter::FutexExit);
    unsafe { (*w).start_ns = 0 };
    let d = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    let Some(p) = current_proc_refresh(tgid) else {
        return 0;
    };
    unsafe {
        add(&raw mut (*p).futex_waits, 1);
        add(&raw mut (*p).futex_wait_ns, d);
        // Racy max across threads of one process: a lost update only
        // under-reports a maximum that a sibling set in the same instant.
        if d > (*p).futex_wait_max_ns {
            (*p).futex_wait_max_ns = d;
        }
        let b = log2_bucket(d, HIST_BUCKETS);
        if b < HIST_BUCKETS {
            add32(&raw mut (*p).futex_hist[b], 1);
        }
    }
    0
}

/// Thread exit: a thread killed while waiting never reaches sys_exit.
#[inline(always)]
pub fn forget_thread(tid: u32) {
    let _ = FUTEX_WAITS.remove(tid);
}
