//! Builds the eBPF object, then the `sentinel` binary that embeds it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::bootstrap::{DEBIAN_RUSTC, EbpfRust, Toolchain};
use crate::cmd::{self, repo_root, target_dir};

const BPF_TARGET: &str = "bpfel-unknown-none";
/// ELF e_machine for eBPF.
const EM_BPF: u16 = 247;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Release,
    Debug,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }

    fn cargo_flag(self) -> Option<&'static str> {
        (self == Profile::Release).then_some("--release")
    }
}

pub struct Artifacts {
    pub root: PathBuf,
    pub target_dir: PathBuf,
    pub ebpf_obj: PathBuf,
    pub sentinel: PathBuf,
}

pub fn build(tc: &Toolchain, profile: Profile) -> Result<Artifacts> {
    let root = repo_root()?;
    // Always release: the dev-profile object (no LTO) builds but the kernel
    // rejects every program in it ("last insn is not an exit or jmp").
    // --debug is for the userspace side only.
    let ebpf_obj = build_ebpf(tc, &root)?;
    let target_dir = target_dir(&root);

    let mut sentinel = cmd::cargo();
    sentinel
        .current_dir(&root)
        .env("SENTINEL_EBPF_OBJ", &ebpf_obj)
        .args(["build", "--package", "sentinel"])
        .args(profile.cargo_flag());
    cmd::run(&mut sentinel)?;

    let bin = target_dir.join(profile.dir()).join("sentinel");
    if !bin.is_file() {
        bail!(
            "cargo reported success but {} does not exist",
            bin.display()
        );
    }
    Ok(Artifacts {
        root,
        target_dir,
        ebpf_obj,
        sentinel: bin,
    })
}

fn build_ebpf(tc: &Toolchain, root: &Path) -> Result<PathBuf> {
    let crate_dir = root.join("sentinel-ebpf");
    // Explicit, so a CARGO_TARGET_DIR meant for the host workspace cannot
    // mix BPF and host artifacts or move the object we hand to sentinel.
    let ebpf_target = crate_dir.join("target");
    let mut build = match &tc.rust {
        EbpfRust::Debian => {
            let mut c = cmd::cargo();
            // The precompiled rlibs only load into the rustc that built them;
            // RUSTC_BOOTSTRAP because aya-ebpf uses asm_experimental_arch.
            c.env("RUSTC", DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1")
                .arg("build");
            c
        }
        EbpfRust::RustupNightly { rustup } => {
            let mut c = Command::new(rustup);
            c.env_remove("RUSTC").args([
                "run",
                "nightly",
                "cargo",
                "build",
                "-Z",
                "build-std=core",
            ]);
            c
        }
    };
    // Host-side settings from the environment must not reach the BPF target.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
    ] {
        build.env_remove(var);
    }
    build
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &tc.bpf_linker)
        .args(["--target", BPF_TARGET])
        .arg("--release")
        .arg("--target-dir")
        .arg(&ebpf_target);
    cmd::run(&mut build)?;

    let obj = ebpf_target
        .join(BPF_TARGET)
        .join("release")
        .join("sentinel-ebpf");
    check_bpf_elf(&obj)?;
    eprintln!("build: eBPF object {}", obj.display());
    Ok(obj)
}

/// Catches a host binary or a stale path before it gets embedded, where the
/// failure would only show at load time.
fn check_bpf_elf(path: &Path) -> Result<()> {
    let mut header = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .with_context(|| format!("reading the ELF header of {}", path.display()))?;
    let machine = u16::from_le_bytes([header[18], header[19]]);
    if &header[..4] != b"\x7fELF" || machine != EM_BPF {
        bail!(
            "{} is not a little-endian eBPF ELF object (e_machine {machine})",
            path.display()
        );
    }
    Ok(())
}
