//! Loads the embedded eBPF object with this kernel's offsets and attaches
//! every probe it can.
use std::path::Path;

use anyhow::{Context, Result};
use aya::{Ebpf, EbpfLoader};
use sentinel_common::CONFIG_GLOBAL;

use crate::{
    btf::{self, Btf},
    privileges::{self, Privileges},
    probes::{self, Attacher, ProbeStatus},
    tracefs::Tracefs,
};

/// The kernel object, built by `cargo xtask build` and embedded here so the
/// binary is all a host needs. Aligned because the ELF parser reads it in
/// place.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SENTINEL_EBPF_OBJ_PATH"));

/// Errors a caller branches on.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}", .0.explain())]
    Privilege(Privileges),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub struct Sentinel {
    pub ebpf: Ebpf,
    pub tracefs: Tracefs,
    pub probes: Vec<ProbeStatus>,
    pub btf: bool,
}

impl Sentinel {
    /// Checks privileges, mounts tracefs if needed, loads the object with
    /// this kernel's tracepoint and BTF offsets, and attaches all probes.
    /// Individual probes may fail (see `probes`); only a missing privilege
    /// or an unloadable object is an error.
    pub fn load() -> Result<Sentinel, LoadError> {
        let privs = Privileges::current();
        if !privs.ok {
            return Err(LoadError::Privilege(privs));
        }
        privileges::raise_memlock();
        let tracefs = Tracefs::open()?;
        let kernel_btf = match Btf::from_file(Path::new(btf::VMLINUX)) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!("{e:#}: BTF tracepoints and BTF-derived offsets are unavailable");
                None
            }
        };
        let helpers = probes::Helpers::detect();
        let mut cx = probes::Configurator::new(&tracefs, kernel_btf.as_ref(), helpers);
        cx.configure_all();
        let (config, found) = cx.build();
        let mut ebpf = EbpfLoader::new()
            .override_global(CONFIG_GLOBAL, &config, true)
            .load(OBJECT)
            .context("loading the embedded eBPF object (creating its maps)")?;
        let probes = Attacher::new(&mut ebpf, &tracefs, &found).attach_all();
        Ok(Sentinel {
            ebpf,
            tracefs,
            probes,
            btf: kernel_btf.is_some(),
        })
    }

    pub fn probe(&self, name: &str) -> Option<&ProbeStatus> {
        self.probes.iter().find(|p| p.name == name)
    }

    /// True when RSS comes from the kernel; else userspace reads /proc.
    pub fn rss_in_kernel(&self) -> bool {
        self.probe("rss").is_some_and(|p| p.program_type.is_some())
    }
}
