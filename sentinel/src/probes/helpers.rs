//! Which BPF helpers this kernel has, asked of the kernel itself.
//!
//! The programs call a few helpers only where a `Config` offset is set. The
//! verifier never visits a branch that the frozen `.rodata` rules out, so a
//! kernel without a helper loads every program as long as the loader
//! leaves those offsets `NONE`; otherwise the whole program is refused
//! ("invalid func unknown#158" on Linux 5.10). Kernel versions are not
//! trusted for this: distributions backport helpers.
use std::os::fd::{FromRawFd, OwnedFd};

/// Test-only switch: helpers listed here (comma separated, without the
/// `bpf_` prefix, e.g. `get_current_task_btf`) are taken as missing, so the
/// paths older kernels take can be tested on one that has them.
pub const DISABLE_HELPERS_ENV: &str = "SENTINEL_TEST_DISABLE_HELPERS";

/// Why a program cannot read the current task's `task_struct` here, for
/// the notes of the probes that lose something by it; `None` when it can.
pub fn task_btf_missing(helpers: Helpers, btf: bool) -> Option<&'static str> {
    if !helpers.get_current_task_btf {
        Some("no bpf_get_current_task_btf (added in Linux 5.11)")
    } else if !btf {
        Some("no kernel BTF")
    } else {
        None
    }
}

/// `BPF_FUNC_get_current_task_btf` (Linux 5.11).
const GET_CURRENT_TASK_BTF: i32 = 158;
/// `BPF_FUNC_task_pt_regs` (Linux 5.15).
const TASK_PT_REGS: i32 = 175;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Helpers {
    /// `bpf_get_current_task_btf`: the current task as a BTF pointer, which
    /// the programs need to read `task_struct` under lockdown.
    pub get_current_task_btf: bool,
    /// `bpf_task_pt_regs`: the user registers saved at syscall entry.
    pub task_pt_regs: bool,
}

impl Helpers {
    /// Every helper the programs use: what a kernel from 5.15 on has.
    pub const ALL: Helpers = Helpers {
        get_current_task_btf: true,
        task_pt_regs: true,
    };

    /// Probes the running kernel (needs the privilege to load programs,
    /// which the loader has checked).
    pub fn detect() -> Helpers {
        let disabled: Vec<String> = std::env::var(DISABLE_HELPERS_ENV)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().trim_start_matches("bpf_").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let has = |name: &str, id: i32| {
            if disabled.iter().any(|d| d == name) {
                tracing::info!("bpf_{name} taken as missing ({DISABLE_HELPERS_ENV})");
                return false;
            }
            let found = kernel_has_helper(id);
            if !found {
                tracing::info!("this kernel has no bpf_{name}");
            }
            found
        };
        Helpers {
            get_current_task_btf: has("get_current_task_btf", GET_CURRENT_TASK_BTF),
            task_pt_regs: has("task_pt_regs", TASK_PT_REGS),
        }
    }
}

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`; the kernel
/// takes a shorter attr than its own and zero-fills the rest.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;

/// `struct bpf_insn`; the register nibbles are 0 (r0) in every
/// instruction used here.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, imm: i32) -> Insn {
    Insn {
        code,
        regs: 0,
        off: 0,
        imm,
    }
}

/// Loads `call <id>; r0 = 0; exit` as a tracepoint program (the type most
/// of sentinel's programs have). The verifier names a helper it does not
/// know "invalid func" (or "unknown func" when the helper exists but not
/// for this program type); any other refusal, such as arguments the helper
/// does not accept, means it exists. When nothing can be told (no
/// privilege, no bpf(2)), the helper is assumed present: the programs
/// then fail to load as they would have, and say why.
fn kernel_has_helper(id: i32) -> bool {
    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    let insns = [insn(CALL, id), insn(MOV64_IMM, 0), insn(EXIT, 0)];
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACEPOINT,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `attr` and everything it points to outlive the call; the
    // kernel writes at most `log_size` bytes into `log`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a new descriptor that nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        return true;
    }
    let err = std::io::Error::last_os_error();
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    if verdict_is_missing(&text) {
        return false;
    }
    tracing::debug!(
        "probing BPF helper #{id}: load refused ({err}), taken as present; verifier: {}",
        text.trim()
    );
    true
}

fn verdict_is_missing(log: &str) -> bool {
    log.contains("invalid func ") || log.contains("unknown func ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_verifiers_verdict() {
        // Linux 5.10 on helper 158.
        assert!(verdict_is_missing(
            "0: (85) call unknown#158\ninvalid func unknown#158\n"
        ));
        assert!(verdict_is_missing("unknown func bpf_sys_bpf#166\n"));
        // A known helper refusing its arguments.
        assert!(!verdict_is_missing(
            "0: (85) call bpf_task_pt_regs#175\nR1 type=ctx expected=ptr_\n"
        ));
    }

    #[test]
    fn instructions_have_the_kernels_size() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 48);
    }
}
