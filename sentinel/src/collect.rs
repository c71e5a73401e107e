//! Reads the kernel maps into one consistent-enough userspace sample.
//! Two samples make a window; see `snapshot.rs`.
use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    os::fd::{AsFd, AsRawFd},
};

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, StackTraceMap},
};
use sentinel_common::{
    BioStart, CgroupStats, Counter, DevStats, FaultBatch, FutexWait, IoKey, NUM_COUNTERS,
    ProcStats, maps,
};

impl Sample {
    /// How long a thread has been waiting, at this sample.
    pub fn waited_s(&self, w: &FutexWait) -> f64 {
        self.mono_ns.saturating_sub(w.start_ns) as f64 / 1e9
    }
}

#[derive(Default)]
pub struct Sample {
    /// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
    pub mono_ns: u64,
    pub procs: HashMap<u32, ProcStats>,
    pub cgroups: HashMap<u64, CgroupStats>,
    pub waits: HashMap<u32, FutexWait>,
    pub devices: HashMap<u32, DevStats>,
    pub counters: [u64; NUM_COUNTERS as usize],
    /// Entry counts of the maps that are only bookkeeping, for the report's
    /// `maps` section.
    pub fill: MapCounts,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct MapCounts {
    pub io_inflight: usize,
    pub bio_inflight: usize,
    pub dio_budget: usize,
    pub stacks: usize,
}

/// How often a sample is retaken when a process exits while it is read.
const MAX_SAMPLE_RETRIES: usize = 5;

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
    if let aya::maps::Map::HashMap(data) | aya::maps::Map::LruHashMap(data) = map
        && let Some(all) = batch::read::<K, V>(data.fd().as_fd().as_raw_fd())
    {
        return Ok(all.into_iter().collect());
    }
    let h: BpfHashMap<&MapData, K, V> =
        BpfHashMap::try_from(map).with_context(|| format!("opening map {name}"))?;
    Ok(h.iter().filter_map(|r| r.ok()).collect())
}

/// `BPF_MAP_LOOKUP_BATCH`: a whole hash map in a few system calls, where
/// walking it costs two per entry (10,000 a tick on a host of 5,000
/// processes, most of a tick's kernel time). Kernels before 5.6 lack it:
/// then the walk it is, and the batch is not tried again.
mod batch {
    use std::{
        os::fd::RawFd,
        sync::atomic::{AtomicBool, Ordering},
    };

    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    /// Entries per call to start with; a bucket holding more than this
    /// (ENOSPC) doubles it.
    const CHUNK: usize = 512;

    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

    /// The `batch` member of `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct Attr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const _: () = assert!(size_of::<Attr>() == 56);

    pub fn read<K: aya::Pod, V: aya::Pod>(fd: RawFd) -> Option<Vec<(K, V)>> {
        if UNSUPPORTED.load(Ordering::Relaxed) {
            return None;
        }
        let mut chunk = CHUNK;
        // SAFETY: Pod types are plain data, valid for any bytes.
        let zero_k: K = unsafe { std::mem::zeroed() };
        let zero_v: V = unsafe { std::mem::zeroed() };
        let mut keys = vec![zero_k; chunk];
        let mut values = vec![zero_v; chunk];
        let mut out = Vec::new();
        // The kernel's resume point for hash maps is a bucket index (u32).
        let (mut token, mut next) = (0u64, 0u64);
        let mut first = true;
        loop {
            let mut attr = Attr {
                in_batch: if first {
                    0
                } else {
                    &token as *const u64 as u64
                },
                out_batch: &mut next as *mut u64 as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: chunk as u32,
                map_fd: fd as u32,
                ..Default::default()
            };
            // SAFETY: every pointer in `attr` is to a live buffer of the
            // size `count` says; the kernel writes at most that many.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_BATCH,
                    &mut attr as *mut Attr,
                    size_of::<Attr>() as libc::c_uint,
                )
            };
            let errno = if rc < 0 {
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
            } else {
                0
            };
            let n = (attr.count as usize).min(chunk);
            match errno {
                0 | libc::ENOENT => {
                    out.extend(keys[..n].iter().copied().zip(values[..n].iter().copied()));
                    if errno == libc::ENOENT {
                        return Some(out);
                    }
                    token = next;
                    first = false;
                }
                libc::ENOSPC if chunk < 1 << 20 => {
                    chunk *= 2;
                    keys.resize(chunk, zero_k);
                    values.resize(chunk, zero_v);
                }
                _ => {
                    tracing::debug!(
                        "BPF_MAP_LOOKUP_BATCH: {}: walking maps instead",
                        std::io::Error::from_raw_os_error(errno)
                    );
                    UNSUPPORTED.store(true, Ordering::Relaxed);
                    return None;
                }
            }
        }
    }
}

/// Entries in a hash map. A key deleted while we walk makes the kernel
/// restart from the first key, so keys are deduplicated rather than
/// counted as they come.
fn count_entries<K: aya::Pod + Eq + Hash, V: aya::Pod>(ebpf: &Ebpf, name: &str) -> Result<usize> {
    let map = ebpf
        .map(name)
        .with_context(|| format!("map {name} missing from the object"))?;
    let h: BpfHashMap<&MapData, K, V> =
        BpfHashMap::try_from(map).with_context(|| format!("opening map {name}"))?;
    let keys = h
        .keys()
        .collect::<Result<HashSet<K>, _>>()
        .with_context(|| format!("listing the keys of map {name}"))?;
    Ok(keys.len())
}

fn count_stacks(ebpf: &Ebpf) -> Result<usize> {
    let map = ebpf
        .map(maps::STACKS)
        .context("map STACKS missing from the object")?;
    let stacks = StackTraceMap::<&MapData>::try_from(map).context("opening map STACKS")?;
    let ids = stacks
        .stack_ids()
        .collect::<Result<HashSet<u32>, _>>()
        .context("listing the ids of map STACKS")?;
    Ok(ids.len())
}

fn exited(cgroups: &HashMap<u64, CgroupStats>) -> u64 {
    cgroups.values().map(|c| c.exited).sum()
}

/// PROCS and CGROUPS, read so that no process is in both or in neither.
/// The exit probe moves a process's counters from PROCS into CGROUPS; one
/// that exits between the two reads would be counted twice (or not at
/// all). Reading CGROUPS around PROCS shows whether an exit happened in
/// between (`exited` moved), and then the read is retaken.
fn procs_and_cgroups(ebpf: &Ebpf) -> Result<(HashMap<u32, ProcStats>, HashMap<u64, CgroupStats>)> {
    let mut tries = 0;
    loop {
        tries += 1;
        let before: HashMap<u64, CgroupStats> = read_hash(ebpf, maps::CGROUPS)?;
        let mut procs: HashMap<u32, ProcStats> = read_hash(ebpf, maps::PROCS)?;
        add_pending_faults(ebpf, &mut procs)?;
        let after: HashMap<u64, CgroupStats> = read_hash(ebpf, maps::CGROUPS)?;
        if exited(&before) == exited(&after) {
            return Ok((procs, after));
        }
        if tries >= MAX_SAMPLE_RETRIES {
            // A host where processes exit faster than we read: accept a
            // small double count rather than never finishing.
            tracing::debug!(
                "processes kept exiting while the maps were read ({tries} tries); \
                 some exited processes may be counted twice in this sample"
            );
            return Ok((procs, after));
        }
    }
}

/// `fill`: also count the entries of the bookkeeping maps (a walk of each;
/// the snapshot reports them, the daemon's ticks skip them).
pub fn sample(ebpf: &Ebpf, fill: bool) -> Result<Sample> {
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
    let (procs, cgroups) = procs_and_cgroups(ebpf)?;
    Ok(Sample {
        mono_ns,
        procs,
        cgroups,
        // Entries outlive their waits (see `FutexWait`): keep the live ones.
        waits: read_hash::<u32, FutexWait>(ebpf, maps::FUTEX_WAITS)?
            .into_iter()
            .filter(|(_, w)| w.start_ns != 0)
            .collect(),
        devices: read_hash(ebpf, maps::DEVICES)?,
        counters,
        fill: if fill {
            MapCounts {
                io_inflight: count_entries::<IoKey, u64>(ebpf, maps::IO_INFLIGHT)?,
                bio_inflight: count_entries::<IoKey, BioStart>(ebpf, maps::BIO_INFLIGHT)?,
                dio_budget: count_entries::<u32, u64>(ebpf, maps::DIO_BUDGET)?,
                stacks: count_stacks(ebpf)?,
            }
        } else {
            MapCounts::default()
        },
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
