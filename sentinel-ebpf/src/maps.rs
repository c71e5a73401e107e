//! Maps shared by several probe families. A map used by one family lives in
//! that family's file.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use sentinel_common::{
    CgroupStats, MAX_CGROUPS, MAX_DIO_THREADS, MAX_EXITED, MAX_PROCS, NUM_COUNTERS, ProcStats,
};

#[map(name = "PROCS")]
pub static PROCS: HashMap<u32, ProcStats> = HashMap::with_max_entries(MAX_PROCS, 0);

#[map(name = "CGROUPS")]
pub static CGROUPS: HashMap<u64, CgroupStats> = HashMap::with_max_entries(MAX_CGROUPS, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// tid -> bytes of the direct-I/O call it is in. Block writes the thread
/// submits draw on it: that is how a direct write is told apart from the
/// writeback of pages the thread dirtied earlier (fsync), which was already
/// charged when the pages were dirtied.
#[map(name = "DIO_BUDGET")]
pub static DIO_BUDGET: HashMap<u32, u64> = HashMap::with_max_entries(MAX_DIO_THREADS, 0);

/// tid -> task address of a thread whose exit folded its process, where
/// `PF_EXITING` cannot be read (no `bpf_get_current_task_btf` or no BTF).
/// The address only identifies the task, it is never dereferenced; it
/// tells the exiting thread from a later one that reuses its tid.
#[map(name = "EXITED")]
pub static EXITED: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_EXITED, 0);
