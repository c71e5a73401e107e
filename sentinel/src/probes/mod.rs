//! The probe table: which eBPF programs make up each probe, which program
//! type is preferred, and what is left when the kernel says no. A missing
//! tracepoint disables that probe only; the rest run.
//!
//! Where a page fault enters: `faults.rs` (kernel side:
//! `sentinel-ebpf/src/probes/faults.rs`).
pub mod block;
pub mod faults;
pub mod futex;
pub mod helpers;
pub mod lifecycle;
pub mod oom;
pub mod rss;
pub mod writes;

use std::collections::{HashMap, HashSet};

use aya::{
    Btf as AyaBtf, Ebpf,
    programs::{
        BtfTracePoint, TracePoint, tp_btf::BtfTracePointLinkId, trace_point::TracePointLinkId,
    },
};
use sentinel_common::Config;
use serde::{Deserialize, Serialize};

use crate::{btf::Btf, tracefs::Tracefs};
pub use helpers::Helpers;

/// Whether a program is needed for its variant to count as working.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The variant fails without it.
    Required,
    /// Works without it, but less: the probe is reported degraded.
    Optional,
    /// Only exists on some kernels (e.g. futex2 syscalls); its absence
    /// loses nothing because nothing can call what is not there.
    IfPresent,
}

#[derive(Clone, Copy, Debug)]
pub struct ProgSpec {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
    /// A `tp_btf` program on the same kernel tracepoint as `category:name`.
    pub btf: bool,
    pub need: Need,
}

#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub program_type: &'static str,
    /// Set when this variant works but measures less than the first one.
    pub degraded: Option<&'static str>,
    pub progs: &'static [ProgSpec],
}

#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    pub name: &'static str,
    pub variants: &'static [Variant],
    /// What userspace does when no variant attaches, if anything.
    pub fallback: Option<&'static str>,
}

pub const ALL: [&ProbeSpec; 7] = [
    &faults::SPEC,
    &rss::SPEC,
    &futex::SPEC,
    &block::SPEC,
    &writes::SPEC,
    &oom::SPEC,
    &lifecycle::SPEC,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Attached,
    /// Working, through a fallback or without an optional part.
    Degraded,
    /// The kernel lacks what the probe needs.
    Unsupported,
    /// The kernel has it, but loading or attaching failed.
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub name: String,
    pub status: Status,
    pub program_type: Option<String>,
    pub detail: String,
    /// Every program type tried, in order of preference, up to the one that
    /// attached: tests skip on a kernel that lacks a type (`unsupported`)
    /// but fail on one that has it and refused the program (`failed`).
    #[serde(default)]
    pub variants: Vec<VariantResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VariantResult {
    pub program_type: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Attached,
    /// A tracepoint it needs is absent, or lacks a field it reads.
    Unsupported,
    /// The kernel has what it needs, but refused to load or attach it.
    Failed,
    /// Skipped by the test switch `SENTINEL_TEST_DISABLE_PROGRAM_TYPES`.
    Disabled,
}

impl ProbeStatus {
    pub fn working(&self) -> bool {
        matches!(self.status, Status::Attached | Status::Degraded)
    }
}

/// What the configuration found: which tracepoints or programs cannot be
/// used and why (absent, a field missing or resized, a helper missing), and
/// what a program measures less on this kernel, both keyed by
/// `category:name` or program name.
#[derive(Debug, Default)]
pub struct Findings {
    pub unusable: HashMap<String, String>,
    pub notes: HashMap<String, Vec<String>>,
}

/// Collects the load-time constants and the [`Findings`].
pub struct Configurator<'a> {
    pub cfg: Config,
    pub tracefs: &'a Tracefs,
    pub btf: Option<&'a Btf>,
    pub helpers: Helpers,
    found: Findings,
}

impl<'a> Configurator<'a> {
    pub fn new(tracefs: &'a Tracefs, btf: Option<&'a Btf>, helpers: Helpers) -> Self {
        let mut cfg = Config::unset();
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            cfg.page_shift = (page as u64).trailing_zeros();
        }
        cfg.rss_granule_pages =
            (sentinel_common::RSS_GRANULE_BYTES >> cfg.page_shift).max(1) as u32;
        Configurator {
            cfg,
            tracefs,
            btf,
            helpers,
            found: Findings::default(),
        }
    }

    /// Runs `f` on the tracepoint's format; an `Err` from it (a missing
    /// field) marks the tracepoint unusable with that reason.
    pub fn tracepoint(
        &mut self,
        category: &str,
        name: &str,
        f: impl FnOnce(&crate::tracefs::Format, &mut Config) -> Result<(), String>,
    ) {
        let key = format!("{category}:{name}");
        match self.tracefs.format(category, name) {
            Ok(Some(fmt)) => {
                if let Err(why) = f(&fmt, &mut self.cfg) {
                    self.found.unusable.insert(key, why);
                }
            }
            Ok(None) => {
                self.found
                    .unusable
                    .insert(key, "tracepoint not present on this kernel".into());
            }
            Err(e) => {
                self.found.unusable.insert(key, format!("{e:#}"));
            }
        }
    }

    /// Marks a program's prerequisite (e.g. BTF offsets) as unavailable.
    pub fn unusable(&mut self, key: String, why: String) {
        self.found.unusable.insert(key, why);
    }

    /// What `program` loses on this kernel; a probe running it is reported
    /// degraded with this in its detail.
    pub fn note(&mut self, program: &str, what: String) {
        self.found
            .notes
            .entry(program.to_string())
            .or_default()
            .push(what);
    }

    pub fn build(self) -> (Config, Findings) {
        (self.cfg, self.found)
    }

    pub fn configure_all(&mut self) {
        faults::configure(self);
        rss::configure(self);
        futex::configure(self);
        block::configure(self);
        writes::configure(self);
        oom::configure(self);
        lifecycle::configure(self);
    }
}

/// `Ok` offset of `field` with one of `sizes`, else the reason as `Err`.
/// Also checks the program can read it: it loads fields at their natural
/// alignment, within the first `MAX_CTX_OFFSET` bytes of the record (one
/// load instruction per possible offset, see the eBPF `util.rs`).
pub fn need_field(fmt: &crate::tracefs::Format, field: &str, sizes: &[u32]) -> Result<u32, String> {
    let f = fmt
        .fields
        .get(field)
        .ok_or_else(|| format!("field `{field}` missing"))?;
    if !sizes.contains(&f.size) {
        return Err(format!(
            "field `{field}` has size {} (expected {sizes:?})",
            f.size
        ));
    }
    // Arrays (e.g. `char rwbs[8]`, as on 5.10 and 6.12) are read by their
    // first byte: an 8-byte array need not be 8-byte aligned.
    let width = if f.array || f.size > 8 { 1 } else { f.size };
    if f.offset % width != 0 || f.offset + width > sentinel_common::MAX_CTX_OFFSET {
        return Err(format!(
            "field `{field}` at offset {} is beyond what the program can read",
            f.offset
        ));
    }
    Ok(f.offset)
}

/// Why a variant could not be used.
struct Refusal {
    /// Whether the kernel has the tracepoint at all (a probe whose every
    /// variant's tracepoints are absent is unsupported, not failed).
    present: bool,
    outcome: Outcome,
    why: String,
}

enum Link {
    Tp(&'static str, TracePointLinkId),
    Btf(&'static str, BtfTracePointLinkId),
}

/// Loads and attaches every probe, preferring the cheapest program type the
/// kernel accepts. Never fails as a whole: each probe reports its status.
pub struct Attacher<'a> {
    ebpf: &'a mut Ebpf,
    tracefs: &'a Tracefs,
    unusable: &'a HashMap<String, String>,
    notes: &'a HashMap<String, Vec<String>>,
    kernel_btf: Option<AyaBtf>,
    kernel_btf_err: Option<String>,
    loaded: HashSet<&'static str>,
    failed_load: HashMap<&'static str, String>,
    disabled_types: Vec<String>,
}

/// Test-only switch: program types listed here (e.g. `tp_btf`) are skipped,
/// so the fallbacks a kernel without them would use can be tested on one
/// that has them.
pub const DISABLE_TYPES_ENV: &str = "SENTINEL_TEST_DISABLE_PROGRAM_TYPES";

impl<'a> Attacher<'a> {
    pub fn new(ebpf: &'a mut Ebpf, tracefs: &'a Tracefs, found: &'a Findings) -> Self {
        let (kernel_btf, kernel_btf_err) = match AyaBtf::from_sys_fs() {
            Ok(b) => (Some(b), None),
            Err(e) => (None, Some(format!("kernel BTF unavailable: {e}"))),
        };
        Attacher {
            ebpf,
            tracefs,
            unusable: &found.unusable,
            notes: &found.notes,
            kernel_btf,
            kernel_btf_err,
            loaded: HashSet::new(),
            failed_load: HashMap::new(),
            disabled_types: std::env::var(DISABLE_TYPES_ENV)
                .map(|v| v.split(',').map(|t| t.trim().to_string()).collect())
                .unwrap_or_default(),
        }
    }

    pub fn attach_all(&mut self) -> Vec<ProbeStatus> {
        ALL.iter().map(|spec| self.attach(spec)).collect()
    }

    fn attach(&mut self, spec: &ProbeSpec) -> ProbeStatus {
        let mut reasons = Vec::new();
        let mut any_present = false;
        let mut variants = Vec::new();
        let mut tried = |ty: &str, outcome, reason: &str| {
            variants.push(VariantResult {
                program_type: ty.into(),
                outcome,
                reason: reason.into(),
            })
        };
        for variant in spec.variants {
            if self
                .disabled_types
                .iter()
                .any(|t| t == variant.program_type)
            {
                let why = format!("disabled by {DISABLE_TYPES_ENV}");
                tried(variant.program_type, Outcome::Disabled, &why);
                reasons.push(format!("{}: {why}", variant.program_type));
                continue;
            }
            match self.try_variant(variant) {
                Ok(notes) => {
                    tried(variant.program_type, Outcome::Attached, "");
                    let mut detail: Vec<String> =
                        variant.degraded.map(str::to_string).into_iter().collect();
                    detail.extend(notes.iter().cloned());
                    let status = if detail.is_empty() {
                        Status::Attached
                    } else {
                        Status::Degraded
                    };
                    if !reasons.is_empty() {
                        tracing::info!(
                            probe = spec.name,
                            "preferred program type unavailable: {}",
                            reasons.join("; ")
                        );
                    }
                    return ProbeStatus {
                        name: spec.name.into(),
                        status,
                        program_type: Some(variant.program_type.into()),
                        detail: detail.join("; "),
                        variants,
                    };
                }
                Err(Refusal {
                    present,
                    outcome,
                    why,
                }) => {
                    tried(variant.program_type, outcome, &why);
                    any_present |= present;
                    reasons.push(format!("{}: {why}", variant.program_type));
                }
            }
        }
        let why = reasons.join("; ");
        match spec.fallback {
            Some(fb) => {
                tracing::warn!(
                    probe = spec.name,
                    "no kernel probe ({why}); falling back to {fb}"
                );
                ProbeStatus {
                    name: spec.name.into(),
                    status: Status::Degraded,
                    program_type: None,
                    detail: format!("{fb} ({why})"),
                    variants,
                }
            }
            None => {
                tracing::warn!(probe = spec.name, "probe disabled: {why}");
                ProbeStatus {
                    name: spec.name.into(),
                    status: if any_present {
                        Status::Failed
                    } else {
                        Status::Unsupported
                    },
                    program_type: None,
                    detail: why,
                    variants,
                }
            }
        }
    }

    /// Attaches every program of `variant`; on a required failure, detaches
    /// what it attached and says why.
    fn try_variant(&mut self, variant: &Variant) -> Result<Vec<String>, Refusal> {
        let mut links = Vec::new();
        let mut notes = Vec::new();
        for p in variant.progs {
            let key = format!("{}:{}", p.category, p.name);
            let exists = self.tracefs.exists(p.category, p.name);
            let problem = if !exists {
                Some(Refusal {
                    present: false,
                    outcome: Outcome::Unsupported,
                    why: format!("tracepoint {key} not present on this kernel"),
                })
            } else if let Some(why) = self
                .unusable
                .get(&key)
                .or_else(|| self.unusable.get(p.program))
            {
                Some(Refusal {
                    present: true,
                    outcome: Outcome::Unsupported,
                    why: format!("{key}: {why}"),
                })
            } else {
                match self.attach_one(p) {
                    Ok(link) => {
                        links.push(link);
                        for n in self.notes.get(p.program).into_iter().flatten() {
                            if !notes.contains(n) {
                                notes.push(n.clone());
                            }
                        }
                        None
                    }
                    Err(e) => Some(Refusal {
                        present: true,
                        outcome: Outcome::Failed,
                        why: format!("{}: {e}", p.program),
                    }),
                }
            };
            let Some(refusal) = problem else {
                continue;
            };
            match p.need {
                Need::Required => {
                    self.detach(links);
                    return Err(refusal);
                }
                Need::Optional => notes.push(refusal.why),
                Need::IfPresent if refusal.present => notes.push(refusal.why),
                Need::IfPresent => {}
            }
        }
        Ok(notes)
    }

    fn attach_one(&mut self, p: &ProgSpec) -> Result<Link, String> {
        if let Some(why) = self.failed_load.get(p.program) {
            return Err(why.clone());
        }
        if !self.loaded.contains(p.program) {
            // Recorded before anything can return: a program attached to
            // several tracepoints is verified once, failing or not.
            if let Err(why) = self.load(p) {
                self.failed_load.insert(p.program, why.clone());
                return Err(why);
            }
            self.loaded.insert(p.program);
        }
        let prog = self
            .ebpf
            .program_mut(p.program)
            .ok_or_else(|| format!("program {} missing from the object", p.program))?;
        if p.btf {
            let tp: &mut BtfTracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            tp.attach()
                .map(|id| Link::Btf(p.program, id))
                .map_err(|e| format!("attach: {}", chain(&e)))
        } else {
            let tp: &mut TracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            tp.attach(p.category, p.name)
                .map(|id| Link::Tp(p.program, id))
                .map_err(|e| format!("attach: {}", chain(&e)))
        }
    }

    /// Loads (verifies) a program; any error is why it cannot be used on
    /// this kernel.
    fn load(&mut self, p: &ProgSpec) -> Result<(), String> {
        let prog = self
            .ebpf
            .program_mut(p.program)
            .ok_or_else(|| format!("program {} missing from the object", p.program))?;
        if p.btf {
            let btf = self
                .kernel_btf
                .as_ref()
                .ok_or_else(|| self.kernel_btf_err.clone().unwrap_or_default())?;
            let tp: &mut BtfTracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            tp.load(p.name, btf).map_err(|e| load_error(&e))
        } else {
            let tp: &mut TracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            tp.load().map_err(|e| load_error(&e))
        }
    }

    fn detach(&mut self, links: Vec<Link>) {
        for link in links {
            let res = match link {
                Link::Tp(name, id) => self
                    .ebpf
                    .program_mut(name)
                    .and_then(|p| <&mut TracePoint>::try_from(p).ok())
                    .map(|tp| tp.detach(id).map_err(|e| e.to_string())),
                Link::Btf(name, id) => self
                    .ebpf
                    .program_mut(name)
                    .and_then(|p| <&mut BtfTracePoint>::try_from(p).ok())
                    .map(|tp| tp.detach(id).map_err(|e| e.to_string())),
            };
            if let Some(Err(e)) = res {
                tracing::warn!("detaching after a partial attach failed: {e}");
            }
        }
    }
}

/// An error with its sources, which is where aya keeps the errno.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}

/// The verifier's verdict, shortened: its last lines say why.
fn load_error(e: &aya::programs::ProgramError) -> String {
    let full = format!("{e}");
    let lines: Vec<&str> = full.lines().collect();
    tracing::debug!("program load failed: {full}");
    if lines.len() <= 4 {
        format!("load: {}", lines.join(" | "))
    } else {
        format!(
            "load: {} | … | {}",
            lines[0],
            lines[lines.len() - 3..].join(" | ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracefs::parse_format;

    #[test]
    fn need_field_checks_size_and_reach() {
        let f = parse_format(
            "\tfield:int member;\toffset:16;\tsize:4;\tsigned:1;\n\
             \tfield:char rwbs[10];\toffset:34;\tsize:10;\tsigned:0;\n\
             \tfield:u64 far;\toffset:128;\tsize:8;\tsigned:0;\n\
             \tfield:u32 odd;\toffset:18;\tsize:4;\tsigned:0;\n\
             \tfield:char rwbs8[8];\toffset:28;\tsize:8;\tsigned:0;\n",
        );
        assert_eq!(need_field(&f, "rwbs8", &[8, 10]), Ok(28));
        assert_eq!(need_field(&f, "member", &[4]), Ok(16));
        assert!(
            need_field(&f, "member", &[8])
                .unwrap_err()
                .contains("has size 4"),
            "a size change counts as missing"
        );
        assert!(
            need_field(&f, "nope", &[4])
                .unwrap_err()
                .contains("missing")
        );
        assert_eq!(need_field(&f, "rwbs", &[8, 10]), Ok(34));
        assert!(need_field(&f, "far", &[8]).unwrap_err().contains("beyond"));
        assert!(need_field(&f, "odd", &[4]).unwrap_err().contains("beyond"));
    }
}
