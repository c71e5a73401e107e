//! User page faults per process (and, derived, per cgroup).
use super::{Configurator, Need, ProbeSpec, ProgSpec, Variant};

pub const SPEC: ProbeSpec = ProbeSpec {
    name: "faults",
    variants: &[
        Variant {
            program_type: "tp_btf",
            degraded: None,
            progs: &[ProgSpec {
                program: "page_fault_user_btf",
                category: "exceptions",
                name: "page_fault_user",
                btf: true,
                need: Need::Required,
            }],
        },
        Variant {
            program_type: "tracepoint",
            degraded: None,
            progs: &[ProgSpec {
                program: "page_fault_user_tp",
                category: "exceptions",
                name: "page_fault_user",
                btf: false,
                need: Need::Required,
            }],
        },
    ],
    fallback: None,
};

/// The fault programs read no record field: only who faulted.
pub fn configure(_cx: &mut Configurator) {}
