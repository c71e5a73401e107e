//! Futex waits: spec, configuration, and seeding the in-flight table with
//! threads that were already blocked before the probes attached (enter/exit
//! tracing cannot see a wait that began earlier, which is exactly the state
//! of a long-running deadlock).
use std::{fs, os::unix::fs::FileExt};

use aya::maps::{HashMap as BpfHashMap, MapData};
use sentinel_common::{FutexWait, WAIT_OWNER_PI, WAIT_OWNER_READ, WAIT_SEEDED, futex_op};

use super::{Configurator, Need, ProbeSpec, ProgSpec, Variant, helpers, need_field};

const ENTER: &str = "futex_enter_tp";
const EXIT: &str = "futex_exit_tp";

pub const SPEC: ProbeSpec = ProbeSpec {
    name: "futex",
    variants: &[Variant {
        program_type: "tracepoint",
        degraded: None,
        progs: &[
            ProgSpec {
                program: ENTER,
                category: "syscalls",
                name: "sys_enter_futex",
                btf: false,
                need: Need::Required,
            },
            ProgSpec {
                program: EXIT,
                category: "syscalls",
                name: "sys_exit_futex",
                btf: false,
                need: Need::Required,
            },
            ProgSpec {
                program: "futex2_wait_enter_tp",
                category: "syscalls",
                name: "sys_enter_futex_wait",
                btf: false,
                need: Need::IfPresent,
            },
            ProgSpec {
                program: EXIT,
                category: "syscalls",
                name: "sys_exit_futex_wait",
                btf: false,
                need: Need::IfPresent,
            },
            ProgSpec {
                program: "futex_waitv_enter_tp",
                category: "syscalls",
                name: "sys_enter_futex_waitv",
                btf: false,
                need: Need::IfPresent,
            },
            ProgSpec {
                program: EXIT,
                category: "syscalls",
                name: "sys_exit_futex_waitv",
                btf: false,
                need: Need::IfPresent,
            },
        ],
    }],
    fallback: None,
};

pub fn configure(cx: &mut Configurator) {
    // Lets the probe reuse a thread's last stack for a wait from the same
    // place; without it every wait walks the user stack. The program reads
    // it through two helpers and calls neither when this stays NONE.
    let missing = helpers::task_btf_missing(cx.helpers, cx.btf.is_some())
        .or((!cx.helpers.task_pt_regs).then_some("no bpf_task_pt_regs (added in Linux 5.15)"));
    match missing {
        Some(why) => cx.note(
            ENTER,
            format!("{why}: every wait walks the user stack, none reuses the thread's last one"),
        ),
        None => {
            cx.cfg.regs_sp = cx
                .btf
                .and_then(|b| b.member_offset("pt_regs", "sp"))
                .unwrap_or(sentinel_common::NONE);
        }
    }
    cx.tracepoint("syscalls", "sys_enter_futex", |f, c| {
        c.futex_uaddr = need_field(f, "uaddr", &[8])?;
        c.futex_op = need_field(f, "op", &[8])?;
        Ok(())
    });
    cx.tracepoint("syscalls", "sys_enter_futex_wait", |f, c| {
        c.futex2_uaddr = need_field(f, "uaddr", &[8])?;
        Ok(())
    });
    cx.tracepoint("syscalls", "sys_enter_futex_waitv", |f, c| {
        c.waitv_waiters = need_field(f, "waiters", &[8])?;
        Ok(())
    });
}

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const FUTEX: u64 = 202;
    pub const FUTEX_WAITV: u64 = 449;
    pub const FUTEX_WAIT: u64 = 455;
}
#[cfg(target_arch = "aarch64")]
mod nr {
    pub const FUTEX: u64 = 98;
    pub const FUTEX_WAITV: u64 = 449;
    pub const FUTEX_WAIT: u64 = 455;
}

/// A thread found blocked in a futex wait via /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcWait {
    pub uaddr: u64,
    pub op: u32,
}

/// Parses `/proc/PID/task/TID/syscall` (`NR arg1 .. arg6 sp pc`, hex args)
/// into a futex wait, or `None` if the thread is elsewhere.
pub fn parse_syscall_line(line: &str) -> Option<ProcWait> {
    let mut it = line.split_whitespace();
    let nr: u64 = it.next()?.parse().ok()?;
    let mut arg = || {
        it.next()
            .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
    };
    let a1 = arg()?;
    let a2 = arg()?;
    match nr {
        nr::FUTEX => {
            let cmd = a2 as u32 & futex_op::CMD_MASK;
            futex_op::is_wait(cmd).then_some(ProcWait { uaddr: a1, op: cmd })
        }
        // futex_waitv(waiters, ...): the first waiter's uaddr is read later.
        nr::FUTEX_WAITV => Some(ProcWait {
            uaddr: a1,
            op: futex_op::WAITV,
        }),
        nr::FUTEX_WAIT => Some(ProcWait {
            uaddr: a1,
            op: futex_op::WAIT2,
        }),
        _ => None,
    }
}

fn read_u64_at(mem: &fs::File, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, addr)
        .ok()
        .map(|_| u64::from_le_bytes(b))
}

fn read_u32_at(mem: &fs::File, addr: u64) -> Option<u32> {
    let mut b = [0u8; 4];
    mem.read_exact_at(&mut b, addr)
        .ok()
        .map(|_| u32::from_le_bytes(b))
}

/// Adds every thread currently blocked in a futex wait to the in-flight
/// table (as `WAIT_SEEDED`, start = now: the true start is unknowable), and
/// reads owners through /proc/PID/mem as the probe would. Returns how many
/// threads were seeded. Entries the probe already has are left alone.
pub fn seed_blocked(waits: &mut BpfHashMap<&mut MapData, u32, FutexWait>, now_ns: u64) -> usize {
    let mut seeded = 0;
    let Ok(procs) = fs::read_dir("/proc") else {
        return 0;
    };
    for p in procs.flatten() {
        let Some(tgid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(tasks) = fs::read_dir(p.path().join("task")) else {
            continue;
        };
        let mut mem: Option<Option<fs::File>> = None;
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(line) = fs::read_to_string(t.path().join("syscall")) else {
                continue;
            };
            let Some(w) = parse_syscall_line(&line) else {
                continue;
            };
            if waits.get(&tid, 0).is_ok_and(|w| w.start_ns != 0) {
                continue;
            }
            let mem = mem.get_or_insert_with(|| fs::File::open(p.path().join("mem")).ok());
            let mut entry = FutexWait {
                start_ns: now_ns,
                uaddr: w.uaddr,
                tgid,
                op: w.op,
                owner_tid: 0,
                stack_id: -1,
                flags: WAIT_SEEDED,
                _pad: 0,
                user_sp: 0,
            };
            if let Some(mem) = mem.as_ref() {
                if w.op == futex_op::WAITV {
                    // struct futex_waitv { u64 val; u64 uaddr; ... }
                    entry.uaddr = read_u64_at(mem, w.uaddr + 8).unwrap_or(0);
                } else {
                    let pi = futex_op::is_pi(w.op);
                    let at = if pi {
                        w.uaddr
                    } else {
                        w.uaddr + futex_op::GLIBC_OWNER_OFFSET
                    };
                    if let Some(v) = read_u32_at(mem, at) {
                        entry.owner_tid = v & futex_op::TID_MASK;
                        entry.flags |= if pi { WAIT_OWNER_PI } else { WAIT_OWNER_READ };
                    }
                }
            }
            if let Err(e) = waits.insert(tid, entry, 0) {
                tracing::debug!("seeding futex wait of tid {tid}: {e}");
                continue;
            }
            // The thread may have woken between the read and the insert; its
            // exit then went unseen, so drop an entry that is no longer true.
            let still = fs::read_to_string(t.path().join("syscall"))
                .ok()
                .and_then(|l| parse_syscall_line(&l));
            if still != Some(w) {
                let _ = waits.remove(&tid);
                continue;
            }
            seeded += 1;
        }
    }
    seeded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn parses_proc_syscall_lines() {
        // FUTEX_WAIT_PRIVATE (0x80) on a glibc mutex.
        assert_eq!(
            parse_syscall_line("202 0x55d0c0a0 0x80 0x2 0x0 0x0 0x0 0x7ffd 0x7f00\n"),
            Some(ProcWait {
                uaddr: 0x55d0c0a0,
                op: futex_op::WAIT
            })
        );
        // FUTEX_WAIT_BITSET | PRIVATE | CLOCK_REALTIME.
        assert_eq!(
            parse_syscall_line("202 0x10 0x189 0x0 0x0 0x0 0xffffffff 0x1 0x2"),
            Some(ProcWait {
                uaddr: 0x10,
                op: futex_op::WAIT_BITSET
            })
        );
        // FUTEX_WAKE is not a wait.
        assert_eq!(
            parse_syscall_line("202 0x10 0x81 0x1 0x0 0x0 0x0 0x1 0x2"),
            None
        );
        assert_eq!(parse_syscall_line("running"), None);
        assert_eq!(parse_syscall_line("0 0x3 0x7f 0x400 0 0 0 0x1 0x2"), None);
        assert_eq!(
            parse_syscall_line("449 0x7000 0x2 0x0 0x0 0x1 0x0 0x1 0x2"),
            Some(ProcWait {
                uaddr: 0x7000,
                op: futex_op::WAITV
            })
        );
    }
}
