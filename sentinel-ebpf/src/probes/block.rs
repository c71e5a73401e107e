//! Block I/O. Requests (`block_rq_*`): bytes, ops and latency per device;
//! a request may be dispatched later from a kworker, so requests are not
//! charged to processes. Bios (`block_bio_queue`) are submitted in the
//! context of whoever asked for the I/O: that is where processes are charged.
//!
//! Buffered writes reach the disk from the flusher; `writes.rs` charges
//! them to the process that dirtied the pages instead.
use aya_ebpf::{
    EbpfContext,
    bindings::BPF_ANY,
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap},
    programs::TracePointContext,
};
use sentinel_common::{
    BioStart, Counter, DevStats, IO_HIST_BUCKETS, IoKey, MAX_DEVICES, MAX_IO_INFLIGHT, log2_bucket,
};

use crate::{
    config,
    maps::{DIO_BUDGET, PROCS},
    util::{
        add, add32, count, ctx_small, current_ids, current_proc_refresh, field_u32, field_u64,
        get_or_insert,
    },
};

#[map(name = "DEVICES")]
static DEVICES: HashMap<u32, DevStats> = HashMap::with_max_entries(MAX_DEVICES, 0);

/// Bios in flight: (dev, first sector) -> submitter and time. A bio merged
/// into a request that started at another sector never sees its own
/// completion here, so this is an LRU map: such entries age out instead of
/// filling it.
#[map(name = "BIO_INFLIGHT")]
static BIO_INFLIGHT: LruHashMap<IoKey, BioStart> = LruHashMap::with_max_entries(MAX_IO_INFLIGHT, 0);

/// (dev, sector) -> issue time, for latency. LRU like `BIO_INFLIGHT`: a
/// request that completes in parts or is requeued must not pin an entry.
#[map(name = "IO_INFLIGHT")]
static IO_INFLIGHT: LruHashMap<IoKey, u64> = LruHashMap::with_max_entries(MAX_IO_INFLIGHT, 0);

// SAFETY: plain integers and arrays of them: all-zero is a valid value.
static ZERO_DEV: DevStats = unsafe { core::mem::zeroed() };

#[inline(always)]
fn device(dev: u32) -> Option<*mut DevStats> {
    get_or_insert(&DEVICES, &dev, &ZERO_DEV, Counter::DevicesFull)
}

/// `Some(true)` for a data write, `Some(false)` for a read, from the rwbs
/// string: `W`/`R`, after an `F` when the request carries a preflush
/// (`FWS`). Flushes alone, discards and the rest are not data.
#[inline(always)]
fn data_direction(raw: *mut core::ffi::c_void, rwbs: u32) -> Option<bool> {
    let mut op = ctx_small(raw, rwbs, 1)? as u8;
    if op == b'F' {
        op = ctx_small(raw, rwbs + 1, 1)? as u8;
    }
    match op {
        b'W' => Some(true),
        b'R' => Some(false),
        _ => None,
    }
}

#[tracepoint(category = "block", name = "block_rq_issue")]
pub fn block_rq_issue_tp(ctx: TracePointContext) -> u32 {
    count(Counter::BlockIssue);
    let c = config();
    let raw = ctx.as_ptr();
    let (Some(dev), Some(sector), Some(bytes), Some(write)) = (
        field_u32(raw, c.blk_issue_dev),
        field_u64(raw, c.blk_issue_sector),
        field_u32(raw, c.blk_issue_bytes),
        data_direction(raw, c.blk_issue_rwbs),
    ) else {
        return 0;
    };
    let bytes = bytes as u64;
    if let Some(d) = device(dev) {
        unsafe {
            if write {
                add(&raw mut (*d).write_bytes, bytes);
                add(&raw mut (*d).write_ops, 1);
            } else {
                add(&raw mut (*d).read_bytes, bytes);
                add(&raw mut (*d).read_ops, 1);
            }
        }
    }
    let key = IoKey {
        dev,
        _pad: 0,
        sector,
    };
    if IO_INFLIGHT
        .insert(key, unsafe { bpf_ktime_get_ns() }, BPF_ANY as u64)
        .is_err()
    {
        count(Counter::IoInflightFull);
    }
    0
}

#[tracepoint(category = "block", name = "block_bio_queue")]
pub fn block_bio_queue_tp(ctx: TracePointContext) -> u32 {
    count(Counter::BioQueue);
    let c = config();
    let raw = ctx.as_ptr();
    let (Some(sectors), Some(write)) = (
        field_u32(raw, c.bio_nr_sector),
        data_direction(raw, c.bio_rwbs),
    ) else {
        return 0;
    };
    let bytes = (sectors as u64) << 9;
    let (tgid, tid) = current_ids();
    if let (Some(dev), Some(sector)) = (field_u32(raw, c.bio_dev), field_u64(raw, c.bio_sector)) {
        let start = BioStart {
            start_ns: unsafe { bpf_ktime_get_ns() },
            tgid,
            _pad: 0,
        };
        let key = IoKey {
            dev,
            _pad: 0,
            sector,
        };
        if BIO_INFLIGHT.insert(key, start, BPF_ANY as u64).is_err() {
            count(Counter::BioInflightFull);
        }
    }
    let Some(p) = current_proc_refresh(tgid) else {
        return 0;
    };
    unsafe {
        if !write {
            add(&raw mut (*p).read_bytes, bytes);
            add(&raw mut (*p).read_ops, 1);
            return 0;
        }
        add(&raw mut (*p).blk_write_bytes, bytes);
        add(&raw mut (*p).write_ops, 1);
    }
    if let Some(budget) = DIO_BUDGET.get_ptr_mut(tid) {
        let direct = unsafe { (*budget).min(bytes) };
        unsafe { *budget -= direct };
        add(unsafe { &raw mut (*p).direct_write_bytes }, direct);
    }
    0
}

#[tracepoint(category = "block", name = "block_rq_complete")]
pub fn block_rq_complete_tp(ctx: TracePointContext) -> u32 {
    count(Counter::BlockComplete);
    let c = config();
    let raw = ctx.as_ptr();
    let (Some(dev), Some(sector)) = (
        field_u32(raw, c.blk_done_dev),
        field_u64(raw, c.blk_done_sector),
    ) else {
        return 0;
    };
    let key = IoKey {
        dev,
        _pad: 0,
        sector,
    };
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(start) = (unsafe { IO_INFLIGHT.get(&key) }).copied() {
        let _ = IO_INFLIGHT.remove(&key);
        let lat = now.saturating_sub(start);
        if let Some(d) = device(dev) {
            unsafe {
                add(&raw mut (*d).lat_ns_total, lat);
                add(&raw mut (*d).completed, 1);
                let b = log2_bucket(lat, IO_HIST_BUCKETS);
                if b < IO_HIST_BUCKETS {
                    add(&raw mut (*d).lat_hist[b], 1);
                }
            }
        }
    }
    // The submitter's view: from its bio to completion, queueing included.
    if let Some(b) = (unsafe { BIO_INFLIGHT.get(&key) }).copied() {
        let _ = BIO_INFLIGHT.remove(&key);
        if let Some(p) = PROCS.get_ptr_mut(b.tgid) {
            let lat = now.saturating_sub(b.start_ns);
            unsafe {
                add(&raw mut (*p).io_done, 1);
                add(&raw mut (*p).io_lat_ns, lat);
                let i = log2_bucket(lat, IO_HIST_BUCKETS);
                if i < IO_HIST_BUCKETS {
                    add32(&raw mut (*p).io_lat_hist[i], 1);
                }
            }
        }
    }
    0
}
