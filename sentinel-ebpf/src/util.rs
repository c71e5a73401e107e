use core::{ffi::c_void, intrinsics::AtomicOrdering};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_task_btf, bpf_ktime_get_ns,
    },
    maps::HashMap,
};
use sentinel_common::{Counter, NONE, ProcStats};

use crate::maps::{COUNTERS, EXITED, PROCS};

#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // Per-CPU slot: a plain add cannot race.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn count_n(c: Counter, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        unsafe { *p += n };
    }
}

/// Lock-free add on a shared map value (BPF_XADD). core's atomics offer no
/// read-modify-write on this target, so the intrinsic is used directly.
#[inline(always)]
pub fn add(field: *mut u64, v: u64) {
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, v) };
}

#[inline(always)]
pub fn add32(field: *mut u32, v: u32) {
    unsafe { core::intrinsics::atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(field, v) };
}

#[inline(always)]
pub fn current_ids() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

/// Zeroed template in `.rodata`: inserting from it keeps the ~450-byte
/// value off the 512-byte BPF stack.
// SAFETY: plain integers and arrays of them: all-zero is a valid value.
static EMPTY: ProcStats = unsafe { core::mem::zeroed() };

/// The current process's stats, created on first use. The cgroup id is
/// recorded at creation only: the hot probes (faults, RSS) skip the helper
/// call; the others use [`current_proc_refresh`].
#[inline(always)]
pub fn current_proc(tgid: u32) -> Option<*mut ProcStats> {
    if let Some(p) = PROCS.get_ptr_mut(tgid) {
        return Some(p);
    }
    create_proc(tgid)
}

/// As [`current_proc`], and re-reads the cgroup id, so a process moved to
/// another cgroup is charged there from its next I/O, wait or exec on
/// (its history stays with the old cgroup, see `cgroups::migrate`).
#[inline(always)]
pub fn current_proc_refresh(tgid: u32) -> Option<*mut ProcStats> {
    let p = current_proc(tgid)?;
    let cg = unsafe { bpf_get_current_cgroup_id() };
    let old = unsafe { (*p).cgroup_id };
    if old != cg {
        crate::cgroups::migrate(p, old, cg);
        unsafe { (*p).cgroup_id = cg };
    }
    Some(p)
}

#[inline(always)]
fn create_proc(tgid: u32) -> Option<*mut ProcStats> {
    // An exiting task still runs code after the exit probe removed its
    // process (closing files, flushing, releasing its mm): creating the
    // entry again would leak it, since no exit follows.
    if current_is_exiting() {
        count(Counter::LateEvents);
        return None;
    }
    let p = get_or_insert(&PROCS, &tgid, &EMPTY, Counter::ProcsFull)?;
    unsafe {
        (*p).cgroup_id = bpf_get_current_cgroup_id();
        (*p).created_ns = bpf_ktime_get_ns();
        if let Ok(comm) = bpf_get_current_comm() {
            (*p).comm = comm;
        }
    }
    Some(p)
}

/// The entry for `key`, inserted from `init` when absent. Another CPU may
/// insert it between the lookup and the insert (NOEXIST then fails, which is
/// fine); a full map is counted as `full`.
#[inline(always)]
pub fn get_or_insert<K, V>(
    map: &HashMap<K, V>,
    key: &K,
    init: &V,
    full: Counter,
) -> Option<*mut V> {
    if let Some(v) = map.get_ptr_mut(key) {
        return Some(v);
    }
    if map.insert(key, init, BPF_NOEXIST as u64).is_err() && map.get_ptr_mut(key).is_none() {
        count(full);
        return None;
    }
    map.get_ptr_mut(key)
}

/// Whether the current task has `PF_EXITING` set. Where `task_struct`
/// cannot be read (Linux < 5.11, or no BTF), whether it is a thread that
/// already folded its process at exit, which is what matters here.
#[inline(always)]
pub fn current_is_exiting() -> bool {
    let off = crate::config().task_flags;
    if off == NONE {
        let (_, tid) = current_ids();
        let task = unsafe { bpf_get_current_task() };
        return unsafe { EXITED.get(&tid) }.is_some_and(|t| *t == task);
    }
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let flags = unsafe { core::ptr::read_volatile(task.add(off as usize).cast::<u32>()) };
    flags & sentinel_common::PF_EXITING != 0
}

/// Tracepoint fields are read with direct context loads (lockdown forbids
/// `bpf_probe_read_kernel`). The verifier only accepts a context load at an
/// immediate offset, not `ctx + reg` even when the register is a known
/// constant, so each possible offset gets its own load instruction and the
/// frozen `.rodata` offset picks one; the verifier prunes the other arms.
/// Inline asm keeps LLVM from merging the arms back into one variable-offset
/// load.
#[inline(always)]
unsafe fn ld32<const O: i16>(ctx: *const c_void) -> u32 {
    let v: u64;
    unsafe {
        core::arch::asm!("{v} = *(u32 *)({c} + {o})", v = out(reg) v, c = in(reg) ctx, o = const O,
            options(readonly, nostack, preserves_flags));
    }
    v as u32
}

#[inline(always)]
unsafe fn ld64<const O: i16>(ctx: *const c_void) -> u64 {
    let v: u64;
    unsafe {
        core::arch::asm!("{v} = *(u64 *)({c} + {o})", v = out(reg) v, c = in(reg) ctx, o = const O,
            options(readonly, nostack, preserves_flags));
    }
    v
}

macro_rules! dispatch {
    ($f:ident, $ctx:expr, $off:expr, $($o:literal)*) => {
        match $off { $( $o => Some(unsafe { $f::<$o>($ctx) }), )* _ => None }
    };
}

/// The aligned u32 at `off` (a multiple of 4 below `MAX_CTX_OFFSET`).
#[inline(always)]
pub fn ctx_u32(ctx: *const c_void, off: u32) -> Option<u32> {
    dispatch!(ld32, ctx, off, 0 4 8 12 16 20 24 28 32 36 40 44 48 52 56 60 64 68 72 76 80 84 88 92 96 100 104 108 112 116 120 124)
}

/// The aligned u64 at `off` (a multiple of 8 below `MAX_CTX_OFFSET`).
#[inline(always)]
pub fn ctx_u64(ctx: *const c_void, off: u32) -> Option<u64> {
    dispatch!(ld64, ctx, off, 0 8 16 24 32 40 48 56 64 72 80 88 96 104 112 120)
}

#[inline(always)]
unsafe fn ld16<const O: i16>(ctx: *const c_void) -> u32 {
    let v: u64;
    unsafe {
        core::arch::asm!("{v} = *(u16 *)({c} + {o})", v = out(reg) v, c = in(reg) ctx, o = const O,
            options(readonly, nostack, preserves_flags));
    }
    v as u32
}

#[inline(always)]
unsafe fn ld8<const O: i16>(ctx: *const c_void) -> u32 {
    let v: u64;
    unsafe {
        core::arch::asm!("{v} = *(u8 *)({c} + {o})", v = out(reg) v, c = in(reg) ctx, o = const O,
            options(readonly, nostack, preserves_flags));
    }
    v as u32
}

/// A 1- or 2-byte field, loaded at its own width: a wider load could run
/// past the end of the record, and the kernel refuses to attach a program
/// whose context reads exceed the tracepoint's record size.
#[inline(always)]
pub fn ctx_small(ctx: *const c_void, off: u32, size: u32) -> Option<u32> {
    if off == NONE {
        return None;
    }
    if size == 2 {
        dispatch!(ld16, ctx, off, 0 2 4 6 8 10 12 14 16 18 20 22 24 26 28 30 32 34 36 38 40 42 44 46 48 50 52 54 56 58 60 62
            64 66 68 70 72 74 76 78 80 82 84 86 88 90 92 94 96 98 100 102 104 106 108 110 112 114 116 118 120 122 124 126)
    } else {
        dispatch!(ld8, ctx, off, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
            32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63
            64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95
            96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119 120 121 122 123 124 125 126 127)
    }
}

#[inline(always)]
pub fn field_u32(ctx: *const c_void, off: u32) -> Option<u32> {
    if off == NONE { None } else { ctx_u32(ctx, off) }
}

#[inline(always)]
pub fn field_u64(ctx: *const c_void, off: u32) -> Option<u64> {
    if off == NONE { None } else { ctx_u64(ctx, off) }
}
