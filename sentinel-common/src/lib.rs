//! Types shared by the eBPF programs and the `sentinel` daemon.
//!
//! Everything here is `#[repr(C)]` and its size is asserted at compile time:
//! the kernel object and the userspace binary are built by different
//! compilers, so layout drift must fail the build, not corrupt a map read.
#![no_std]

use core::mem::size_of;

/// Bounds of every kernel map. Each insert that fails because a map is full
/// is counted in [`Counter`] and surfaced by `sentinel check` / `snapshot`.
pub const MAX_PROCS: u32 = 16384;
pub const MAX_CGROUPS: u32 = 4096;
pub const MAX_FUTEX_WAITS: u32 = 16384;
pub const MAX_STACKS: u32 = 4096;
pub const MAX_DEVICES: u32 = 256;
pub const MAX_IO_INFLIGHT: u32 = 8192;
pub const MAX_DIO_THREADS: u32 = 4096;
/// Threads that folded their process at exit, remembered for the few
/// milliseconds their late events take (LRU: nothing marks their end).
pub const MAX_EXITED: u32 = 4096;
pub const OOM_RINGBUF_BYTES: u32 = 64 * 1024;
/// Frames kept per user stack.
pub const STACK_DEPTH: usize = 32;

/// Map names, shared so the loader never repeats a string literal.
pub mod maps {
    pub const PROCS: &str = "PROCS";
    pub const CGROUPS: &str = "CGROUPS";
    pub const FUTEX_WAITS: &str = "FUTEX_WAITS";
    pub const STACKS: &str = "STACKS";
    pub const DEVICES: &str = "DEVICES";
    pub const IO_INFLIGHT: &str = "IO_INFLIGHT";
    pub const BIO_INFLIGHT: &str = "BIO_INFLIGHT";
    pub const DIO_BUDGET: &str = "DIO_BUDGET";
    pub const OOM_EVENTS: &str = "OOM_EVENTS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const FAULT_BATCH: &str = "FAULT_BATCH";
}

/// The one global the loader patches before load: where each tracepoint
/// field lives on *this* kernel (from tracefs format files) and the few
/// kernel struct offsets read from BTF.
pub const CONFIG_GLOBAL: &str = "CONFIG";

/// Programs can read tracepoint fields within this many bytes of the record
/// start (one load instruction per offset; the verifier wants immediates).
pub const MAX_CTX_OFFSET: u32 = 128;

/// Offsets are byte offsets into the tracepoint record; `NONE` marks a field
/// this kernel does not have.
pub const NONE: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    // kmem:rss_stat
    pub rss_curr: u32,
    pub rss_member: u32,
    pub rss_size: u32,
    // syscalls:sys_enter_futex
    pub futex_uaddr: u32,
    pub futex_op: u32,
    // syscalls:sys_enter_futex_wait (futex2, 6.7+)
    pub futex2_uaddr: u32,
    // syscalls:sys_enter_futex_waitv
    pub waitv_waiters: u32,
    // block:block_rq_issue
    pub blk_issue_dev: u32,
    pub blk_issue_sector: u32,
    pub blk_issue_bytes: u32,
    pub blk_issue_rwbs: u32,
    // block:block_rq_complete
    pub blk_done_dev: u32,
    pub blk_done_sector: u32,
    pub blk_done_nr_sector: u32,
    pub blk_done_rwbs: u32,
    // block:block_bio_queue
    pub bio_dev: u32,
    pub bio_sector: u32,
    pub bio_nr_sector: u32,
    pub bio_rwbs: u32,
    // iomap:iomap_dio_rw_begin, iomap:iomap_dio_complete
    pub dio_count: u32,
    pub dio_done_aio: u32,
    // oom:mark_victim
    pub oom_pid: u32,
    pub oom_total_vm: u32,
    pub oom_anon_rss: u32,
    pub oom_file_rss: u32,
    pub oom_shmem_rss: u32,
    pub oom_uid: u32,
    pub oom_pgtables: u32,
    pub oom_score_adj: u32,
    // sched:sched_process_exit (group_dead exists since 6.x; else pid == tgid)
    pub exit_group_dead: u32,
    // struct folio, from BTF, for the tp_btf dirty-folio probe
    pub folio_flags: u32,
    pub folio_flags1: u32,
    pub pg_head_bit: u32,
    pub page_shift: u32,
    // BTF offsets for the tp_btf RSS probe (Linux 6.2+ per-CPU RSS counters)
    pub task_mm: u32,
    pub mm_rss_stat: u32,
    pub pcpu_counter_size: u32,
    pub pcpu_counter_count: u32,
    /// `mm_struct.owner` (CONFIG_MEMCG) and `task_struct.tgid`: whose RSS
    /// an update from another context (reclaim, swap-out) changes.
    pub mm_owner: u32,
    pub task_tgid: u32,
    /// RSS writes skip changes smaller than this many pages (1 MiB).
    pub rss_granule_pages: u32,
    /// `task_struct.flags`: events of an exiting task must not re-create
    /// the entry its exit just removed.
    pub task_flags: u32,
    /// `task_struct.signal` and `signal_struct.live`: "last thread out"
    /// on kernels whose exit tracepoint has no `group_dead`.
    pub task_signal: u32,
    pub signal_live: u32,
    /// `pt_regs.sp`: the user stack pointer, read through `bpf_task_pt_regs`.
    pub regs_sp: u32,
}
const _: () = assert!(size_of::<Config>() == 45 * 4);

impl Config {
    pub const fn unset() -> Self {
        Config {
            rss_curr: NONE,
            rss_member: NONE,
            rss_size: NONE,
            futex_uaddr: NONE,
            futex_op: NONE,
            futex2_uaddr: NONE,
            waitv_waiters: NONE,
            blk_issue_dev: NONE,
            blk_issue_sector: NONE,
            blk_issue_bytes: NONE,
            blk_issue_rwbs: NONE,
            blk_done_dev: NONE,
            blk_done_sector: NONE,
            blk_done_nr_sector: NONE,
            blk_done_rwbs: NONE,
            bio_dev: NONE,
            bio_sector: NONE,
            bio_nr_sector: NONE,
            bio_rwbs: NONE,
            dio_count: NONE,
            dio_done_aio: NONE,
            oom_pid: NONE,
            oom_total_vm: NONE,
            oom_anon_rss: NONE,
            oom_file_rss: NONE,
            oom_shmem_rss: NONE,
            oom_uid: NONE,
            oom_pgtables: NONE,
            oom_score_adj: NONE,
            exit_group_dead: NONE,
            folio_flags: NONE,
            folio_flags1: NONE,
            pg_head_bit: NONE,
            page_shift: 12,
            task_mm: NONE,
            mm_rss_stat: NONE,
            pcpu_counter_size: NONE,
            pcpu_counter_count: NONE,
            mm_owner: NONE,
            task_tgid: NONE,
            rss_granule_pages: 256,
            task_flags: NONE,
            task_signal: NONE,
            signal_live: NONE,
            regs_sp: NONE,
        }
    }
}

/// `kmem:rss_stat` members (`enum` `NR_MM_COUNTERS` order in the kernel).
pub const RSS_FILE: usize = 0;
pub const RSS_ANON: usize = 1;
pub const RSS_SWAP: usize = 2;
pub const RSS_SHMEM: usize = 3;
pub const RSS_MEMBERS: usize = 4;

/// log2(nanoseconds) buckets: bucket i holds waits in [2^i, 2^(i+1)) ns;
/// the last one is open-ended (2^39 ns is about 9 minutes).
pub const HIST_BUCKETS: usize = 40;
/// Block I/O latency, log2(ns) buckets (the last holds 2 s and more).
pub const IO_HIST_BUCKETS: usize = 32;

/// Per process (tgid). Created on the first event the process causes,
/// removed by the exit probe after folding its counters into its cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcStats {
    /// cgroup v2 id seen on the latest event; the process's counters are
    /// folded into this cgroup when it exits.
    pub cgroup_id: u64,
    pub faults: u64,
    /// Current RSS by member in bytes; valid where `rss_known` has the bit.
    pub rss: [i64; RSS_MEMBERS],
    pub rss_known: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns` when the entry was created: tells a reused pid
    /// from the process that had it before.
    pub created_ns: u64,
    pub futex_waits: u64,
    pub futex_wait_ns: u64,
    pub futex_wait_max_ns: u64,
    pub read_bytes: u64,
    pub read_ops: u64,
    /// Block writes submitted in this process's context (direct I/O, and
    /// writeback it performs itself, e.g. under fsync).
    pub blk_write_bytes: u64,
    pub write_ops: u64,
    /// Block writes submitted inside a direct-I/O call (iomap), in the
    /// writer's context; writeback this process runs itself (fsync) is not
    /// counted here, since its pages were counted when dirtied.
    pub direct_write_bytes: u64,
    /// Page-cache bytes this process dirtied: buffered writes, charged to
    /// the writer and not to the kworker that later flushes them.
    pub dirtied_bytes: u64,
    /// Block I/O this process submitted and that completed: count, total
    /// and log2(ns) histogram of submission-to-completion latency.
    pub io_done: u64,
    pub io_lat_ns: u64,
    pub comm: [u8; 16],
    pub futex_hist: [u32; HIST_BUCKETS],
    pub io_lat_hist: [u32; IO_HIST_BUCKETS],
}
const _: () = assert!(
    size_of::<ProcStats>()
        == 8 * 2 + 8 * 4 + 8 + 8 + 8 * 11 + 16 + 4 * HIST_BUCKETS + 4 * IO_HIST_BUCKETS
);

/// Faults counted on one CPU but not yet added to `PROCS`: a fault costs a
/// per-CPU slot update instead of a hash lookup and an atomic add. Flushed
/// when another process faults on that CPU, every `FAULT_BATCH_MAX`
/// faults, and at exit; userspace adds what is pending when it samples.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultBatch {
    pub tgid: u32,
    pub pending: u32,
}
const _: () = assert!(size_of::<FaultBatch>() == 8);
pub const FAULT_BATCH_MAX: u32 = 64;

/// The RSS probe writes a process's RSS to `PROCS` only when a member moved
/// by at least this much since this CPU last wrote it: the value read is
/// itself approximate (per-CPU counters), and most faults change it by one
/// page. The loader turns it into pages for this machine's page size.
pub const RSS_GRANULE_BYTES: u64 = 1 << 20;

/// `PF_EXITING` in `task_struct.flags` (stable since 2.6).
pub const PF_EXITING: u32 = 0x0000_0004;

/// Counters folded in from exited processes, per cgroup v2 id. Live
/// processes are added by userspace, so a cgroup's total never drops when
/// a member exits and no per-event second map update is needed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupStats {
    pub faults: u64,
    pub futex_waits: u64,
    pub futex_wait_ns: u64,
    pub read_bytes: u64,
    pub read_ops: u64,
    pub blk_write_bytes: u64,
    pub write_ops: u64,
    pub direct_write_bytes: u64,
    pub dirtied_bytes: u64,
    pub exited: u64,
    pub io_done: u64,
    pub io_lat_ns: u64,
    pub io_lat_hist: [u32; IO_HIST_BUCKETS],
}
const _: () = assert!(size_of::<CgroupStats>() == 8 * 12 + 4 * IO_HIST_BUCKETS);

/// Futex ops (after masking `FUTEX_PRIVATE_FLAG` and `FUTEX_CLOCK_REALTIME`)
/// and the two futex2 syscalls, which have no op of their own.
pub mod futex_op {
    pub const CMD_MASK: u32 = !(128 | 256);
    pub const WAIT: u32 = 0;
    pub const LOCK_PI: u32 = 6;
    pub const WAIT_BITSET: u32 = 9;
    pub const WAIT_REQUEUE_PI: u32 = 11;
    pub const LOCK_PI2: u32 = 13;
    /// Synthetic: `futex_waitv(2)`.
    pub const WAITV: u32 = 1000;
    /// Synthetic: `futex_wait(2)` (futex2).
    pub const WAIT2: u32 = 1001;

    pub const fn is_wait(cmd: u32) -> bool {
        matches!(
            cmd,
            WAIT | LOCK_PI | WAIT_BITSET | WAIT_REQUEUE_PI | LOCK_PI2
        )
    }
    pub const fn is_pi(cmd: u32) -> bool {
        matches!(cmd, LOCK_PI | LOCK_PI2)
    }
    /// FUTEX_TID_MASK: the owner tid in a PI futex word.
    pub const TID_MASK: u32 = 0x3fff_ffff;
    /// glibc x86_64: `pthread_mutex_t.__data.__owner` sits 8 bytes after `__lock`.
    pub const GLIBC_OWNER_OFFSET: u64 = 8;
}

pub const WAIT_SEEDED: u32 = 1;
pub const WAIT_OWNER_PI: u32 = 2;
pub const WAIT_OWNER_READ: u32 = 4;

/// A thread's futex wait, keyed by tid. The entry outlives the wait (it is
/// removed when the thread exits): `start_ns == 0` means "not waiting now",
/// and the last stack stays available for reuse by the next wait.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FutexWait {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the wait began.
    pub start_ns: u64,
    pub uaddr: u64,
    pub tgid: u32,
    pub op: u32,
    /// Candidate owner: the PI futex word's tid, or glibc's `__owner`. Only
    /// meaningful if userspace finds that tid in the same process.
    pub owner_tid: u32,
    /// User stack id in `STACKS`, negative when none was captured.
    pub stack_id: i32,
    pub flags: u32,
    pub _pad: u32,
    /// The user stack pointer at the wait: with the same futex address, an
    /// equal stack pointer means the same call path, so its stack is reused
    /// instead of walked again.
    pub user_sp: u64,
}
const _: () = assert!(size_of::<FutexWait>() == 48);

/// Per block device (`dev_t` as the kernel encodes it: major << 20 | minor).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DevStats {
    pub read_bytes: u64,
    pub read_ops: u64,
    pub write_bytes: u64,
    pub write_ops: u64,
    pub lat_ns_total: u64,
    pub completed: u64,
    /// Completion latency, log2(ns) buckets.
    pub lat_hist: [u64; IO_HIST_BUCKETS],
}
const _: () = assert!(size_of::<DevStats>() == 8 * 6 + 8 * IO_HIST_BUCKETS);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoKey {
    pub dev: u32,
    pub _pad: u32,
    pub sector: u64,
}
const _: () = assert!(size_of::<IoKey>() == 16);

/// A bio in flight, keyed by (dev, first sector): who submitted it, when.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BioStart {
    pub start_ns: u64,
    pub tgid: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<BioStart>() == 16);

/// `oom:mark_victim`, sent through the ring buffer. Victim and trigger are
/// kept apart on purpose: the task that ran into the limit is not
/// necessarily the one the kernel kills, nor in the same cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomEvent {
    pub ts_ns: u64,
    pub victim_pid: u32,
    pub victim_uid: u32,
    /// From PROCS; 0 when the victim never touched a probe since attach.
    pub victim_cgroup_id: u64,
    pub trigger_pid: u32,
    pub trigger_tgid: u32,
    pub trigger_cgroup_id: u64,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    pub oom_score_adj: i32,
    pub _pad: u32,
    pub victim_comm: [u8; 16],
    pub trigger_comm: [u8; 16],
}
const _: () = assert!(size_of::<OomEvent>() == 8 + 8 + 8 + 8 + 8 + 8 * 5 + 8 + 32);

/// Slots of the per-CPU `COUNTERS` array. Numbers are stable: never
/// renumber, only append.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    // events seen, per probe
    Faults = 0,
    RssStat = 1,
    FutexEnter = 2,
    FutexExit = 3,
    BlockIssue = 4,
    BlockComplete = 5,
    BioQueue = 11,
    DirtyFolio = 6,
    DioBegin = 7,
    OomVictim = 8,
    Exec = 9,
    Exit = 10,
    /// RSS changes to an mm that is not the current task's and whose
    /// process cannot be told, so not recorded. Mostly exec building a new
    /// mm and exit tearing one down, which lose nothing; reclaim and
    /// swap-out of a live process leave its RSS stale until its next own
    /// change.
    RssUnattributed = 12,
    // losses: a map or buffer was full, or a read failed
    ProcsFull = 16,
    CgroupsFull = 17,
    FutexWaitsFull = 18,
    StackFail = 19,
    IoInflightFull = 20,
    DevicesFull = 21,
    RingbufFull = 22,
    /// Retired (the mm owner table is gone); the slot stays reserved.
    MmFull = 23,
    OwnerReadFail = 24,
    WaitvReadFail = 25,
    DioFull = 26,
    FaultsOrphaned = 27,
    /// Events of a task already exiting, after its process was folded.
    LateEvents = 28,
    BioInflightFull = 29,
}
pub const NUM_COUNTERS: u32 = 32;

impl Counter {
    pub const ALL: [Counter; 26] = [
        Counter::Faults,
        Counter::RssStat,
        Counter::FutexEnter,
        Counter::FutexExit,
        Counter::BlockIssue,
        Counter::BlockComplete,
        Counter::DirtyFolio,
        Counter::DioBegin,
        Counter::OomVictim,
        Counter::Exec,
        Counter::Exit,
        Counter::BioQueue,
        Counter::RssUnattributed,
        Counter::ProcsFull,
        Counter::CgroupsFull,
        Counter::FutexWaitsFull,
        Counter::StackFail,
        Counter::IoInflightFull,
        Counter::DevicesFull,
        Counter::RingbufFull,
        Counter::OwnerReadFail,
        Counter::WaitvReadFail,
        Counter::DioFull,
        Counter::FaultsOrphaned,
        Counter::LateEvents,
        Counter::BioInflightFull,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Counter::Faults => "faults",
            Counter::RssStat => "rss_stat",
            Counter::FutexEnter => "futex_enter",
            Counter::FutexExit => "futex_exit",
            Counter::BlockIssue => "block_issue",
            Counter::BlockComplete => "block_complete",
            Counter::DirtyFolio => "dirty_folio",
            Counter::DioBegin => "dio_begin",
            Counter::OomVictim => "oom_victim",
            Counter::Exec => "exec",
            Counter::Exit => "exit",
            Counter::BioQueue => "bio_queue",
            Counter::ProcsFull => "procs_map_full",
            Counter::CgroupsFull => "cgroups_map_full",
            Counter::FutexWaitsFull => "futex_waits_map_full",
            Counter::StackFail => "stack_capture_failed",
            Counter::IoInflightFull => "io_inflight_map_full",
            Counter::DevicesFull => "devices_map_full",
            Counter::RingbufFull => "ringbuf_full",
            Counter::MmFull => "mm_map_full",
            Counter::OwnerReadFail => "owner_read_failed",
            Counter::WaitvReadFail => "waitv_read_failed",
            Counter::DioFull => "dio_map_full",
            Counter::FaultsOrphaned => "faults_after_exit",
            Counter::LateEvents => "events_after_exit",
            Counter::BioInflightFull => "bio_inflight_full",
            Counter::RssUnattributed => "rss_unattributed",
        }
    }

    /// Losses, as opposed to plain event counts.
    pub const fn is_drop(self) -> bool {
        self as u32 >= 16
    }
}

/// log2 bucket for a histogram of `n` buckets, the last one open-ended.
#[inline(always)]
pub fn log2_bucket(v: u64, n: usize) -> usize {
    let b = if v == 0 {
        0
    } else {
        63 - v.leading_zeros() as usize
    };
    if b >= n { n - 1 } else { b }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for ProcStats {}
    unsafe impl aya::Pod for CgroupStats {}
    unsafe impl aya::Pod for FutexWait {}
    unsafe impl aya::Pod for DevStats {}
    unsafe impl aya::Pod for IoKey {}
    unsafe impl aya::Pod for OomEvent {}
    unsafe impl aya::Pod for FaultBatch {}
    unsafe impl aya::Pod for BioStart {}
}
