//! Maps shared by several probe families. A map used by one family lives in
//! that family's file.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray},
};
use sentinel_common::{CgroupStats, MAX_CGROUPS, MAX_PROCS, NUM_COUNTERS, ProcStats};

#[map(name = "PROCS")]
pub static PROCS: HashMap<u32, ProcStats> = HashMap::with_max_entries(MAX_PROCS, 0);

#[map(name = "CGROUPS")]
pub static CGROUPS: HashMap<u64, CgroupStats> = HashMap::with_max_entries(MAX_CGROUPS, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);
