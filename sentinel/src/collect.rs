//! Reads the kernel maps into one consistent-enough userspace sample.
//! Two samples make a window; see `snapshot.rs`.
use std::collections::HashMap;

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, StackTraceMap},
};
use sentinel_common::{
    CgroupStats, Counter, DevStats, FaultBatch, FutexWait, NUM_COUNTERS, ProcStats, maps,
};

pub struct Sample {
    /// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
    pub mono_ns: u64,
    pub procs: HashMap<u32, ProcStats>,
    pub cgroups: HashMap<u64, CgroupStats>,
    pub waits: HashMap<u32, FutexWait>,
    pub devices: HashMap<u32, DevStats>,
    pub counters: [u64; NUM_COUNTERS as usize],
    pub mm_owners: usize,
    pub io_inflight: usize,
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Entries deleted while we iterate surface as lookup errors; they are
/// simply gone, not a failure.
fn read_hash<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
    ebpf: &Ebpf,
    name: &str,
) -> Result<HashMap<K, V>> {
    let map = ebpf
        .map(name)
        .with_context(|| format!("map {name} missing from the object"))?;
    let h: BpfHashMap<&MapData, K, V> =
        BpfHashMap::try_from(map).with_context(|| format!("opening map {name}"))?;
    Ok(h.iter().filter_map(|r| r.ok()).collect())
}

fn count_keys(ebpf: &Ebpf, name: &str) -> usize {
    ebpf.map(name)
        .and_then(|m| BpfHashMap::<&MapData, u32, u32>::try_from(m).ok())
        .map(|h| h.keys().filter(|k| k.is_ok()).count())
        .unwrap_or(0)
}

pub fn sample(ebpf: &Ebpf) -> Result<Sample> {
    let mono_ns = monotonic_ns();
    let mut counters = [0u64; NUM_COUNTERS as usize];
    let arr: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(ebpf.map(maps::COUNTERS).context("map COUNTERS missing")?)
            .context("opening COUNTERS")?;
    for c in Counter::ALL {
        if let Ok(per_cpu) = arr.get(&(c as u32), 0) {
            counters[c as usize] = per_cpu.iter().sum();
        }
    }
    let mut procs: HashMap<u32, ProcStats> = read_hash(ebpf, maps::PROCS)?;
    add_pending_faults(ebpf, &mut procs)?;
    Ok(Sample {
        mono_ns,
        procs,
        cgroups: read_hash(ebpf, maps::CGROUPS)?,
        waits: read_hash(ebpf, maps::FUTEX_WAITS)?,
        devices: read_hash(ebpf, maps::DEVICES)?,
        counters,
        mm_owners: count_keys(ebpf, maps::MM_OWNERS),
        io_inflight: ebpf
            .map(maps::IO_INFLIGHT)
            .and_then(|m| BpfHashMap::<&MapData, sentinel_common::IoKey, u64>::try_from(m).ok())
            .map(|h| h.keys().filter(|k| k.is_ok()).count())
            .unwrap_or(0),
    })
}

/// Faults still batched per CPU (see `FaultBatch`) belong to the sample too.
fn add_pending_faults(ebpf: &Ebpf, procs: &mut HashMap<u32, ProcStats>) -> Result<()> {
    let arr: PerCpuArray<&MapData, FaultBatch> = PerCpuArray::try_from(
        ebpf.map(maps::FAULT_BATCH)
            .context("map FAULT_BATCH missing")?,
    )
    .context("opening FAULT_BATCH")?;
    if let Ok(per_cpu) = arr.get(&0, 0) {
        for b in per_cpu.iter() {
            if let Some(p) = procs.get_mut(&b.tgid) {
                p.faults += b.pending as u64;
            }
        }
    }
    Ok(())
}

/// User stack frames (instruction pointers) for a stack id.
pub fn stack(ebpf: &Ebpf, id: i32) -> Vec<u64> {
    if id < 0 {
        return Vec::new();
    }
    let Some(map) = ebpf.map(maps::STACKS) else {
        return Vec::new();
    };
    let Ok(stacks) = StackTraceMap::<&MapData>::try_from(map) else {
        return Vec::new();
    };
    stacks
        .get(&(id as u32), 0)
        .map(|s| s.frames().iter().map(|f| f.ip).collect())
        .unwrap_or_default()
}
