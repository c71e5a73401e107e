//! OOM kills, one ring-buffer event each (discrete and rare).
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::RingBuf,
    programs::TracePointContext,
};
use sentinel_common::{Counter, OOM_RINGBUF_BYTES, OomEvent};

use crate::{
    config,
    maps::PROCS,
    util::{count, ctx_small, current_ids, field_u32, field_u64},
};

#[map(name = "OOM_EVENTS")]
static OOM_EVENTS: RingBuf = RingBuf::with_byte_size(OOM_RINGBUF_BYTES, 0);

/// Runs in the context of the task whose allocation invoked the OOM killer
/// (the trigger); the victim comes from the record.
#[tracepoint(category = "oom", name = "mark_victim")]
pub fn mark_victim_tp(ctx: TracePointContext) -> u32 {
    count(Counter::OomVictim);
    let c = config();
    let raw = ctx.as_ptr();
    let Some(mut entry) = OOM_EVENTS.reserve::<OomEvent>(0) else {
        count(Counter::RingbufFull);
        return 0;
    };
    let (trigger_tgid, trigger_pid) = current_ids();
    let victim_pid = field_u32(raw, c.oom_pid).unwrap_or(0) as u32;
    let (victim_cgroup_id, victim_comm) = match unsafe { PROCS.get(victim_pid) } {
        Some(p) => (p.cgroup_id, p.comm),
        None => (0, [0u8; 16]),
    };
    let kb = |off| field_u64(raw, off).unwrap_or(0);
    let ev = OomEvent {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        victim_pid,
        victim_uid: field_u32(raw, c.oom_uid).unwrap_or(0),
        victim_cgroup_id,
        trigger_pid,
        trigger_tgid,
        trigger_cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        total_vm_kb: kb(c.oom_total_vm),
        anon_rss_kb: kb(c.oom_anon_rss),
        file_rss_kb: kb(c.oom_file_rss),
        shmem_rss_kb: kb(c.oom_shmem_rss),
        pgtables_kb: kb(c.oom_pgtables),
        oom_score_adj: ctx_small(raw, c.oom_score_adj, 2)
            .map(|v| v as u16 as i16)
            .unwrap_or(0) as i32,
        _pad: 0,
        victim_comm,
        trigger_comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    entry.write(ev);
    entry.submit(0);
    0
}
