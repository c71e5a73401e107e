//! Finds (and on a Debian root machine installs) the eBPF toolchain and the
//! tools the tests and the benchmark drive.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use crate::cmd::{self, find_program, is_root};

/// Debian's rustc ships a precompiled `core` for the BPF target, which
/// spares us `-Z build-std` and the `rust-src` component rustup cannot fetch
/// on these machines.
pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_BPF_CORE: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";
const RUST_PACKAGES: &[&str] = &["rustc-web", "libstd-rust-web-dev-bpf"];

/// What bpf-linker links against: it is built from source against LLVM 22.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// One file from each of `LLVM_PACKAGES`, to tell whether they are installed.
const LLVM_FILES: &[&str] = &[
    "/usr/lib/llvm-22/bin/llvm-config",
    "/usr/lib/llvm-22/lib/libPolly.a",
    "/usr/include/zstd.h",
    "/usr/include/zlib.h",
];
/// Pinned so a fresh machine gets the release verified with LLVM 22 here.
const BPF_LINKER: &str = "bpf-linker@0.13.0";

/// Which pieces a subcommand needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Build,
    /// Build plus what the integration tests run: gcc and python3 (C and
    /// Python workloads), Prometheus (promtool, a real scraper),
    /// Alertmanager (a real receiver) and tmux (the terminal `sentinel top`
    /// is driven in).
    Test,
    /// Build plus bpftrace (benchmark peer, test oracle), tmux (TUI tests),
    /// gcc and python3 (the tests compile C workloads and run Python ones).
    Everything,
    /// Build plus QEMU, a static busybox, xz and mkfs.ext4, for `vm-test`
    /// (`Test` includes them: the kernel matrix is part of the suite).
    VmTest,
}

/// How to compile the eBPF crate.
pub enum EbpfRust {
    /// `RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 cargo build`.
    Debian,
    /// `rustup run nightly cargo build -Z build-std=core`.
    RustupNightly { rustup: PathBuf },
}

pub struct Toolchain {
    pub rust: EbpfRust,
    /// What to put in CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER.
    pub bpf_linker: PathBuf,
}

pub fn bootstrap(need: Need) -> Result<Toolchain> {
    let mut rust = detect_rust();
    let mut linker = find_program("bpf-linker");
    let tools: &[&str] = match need {
        Need::Build => &[],
        // Command names that are also their Debian package names.
        Need::Test => &[
            "gcc",
            "python3",
            "prometheus",
            "prometheus-alertmanager",
            "tmux",
            // Renders `sentinel export`'s report.html in tests/export.rs.
            "chromium",
        ],
        // Commands whose packages are named otherwise are handled below.
        Need::VmTest => &[],
        Need::Everything => &[
            "bpftrace",
            "tmux",
            "gcc",
            "python3",
            "prometheus",
            "prometheus-alertmanager",
        ],
    };
    let missing_tools: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_program(t).is_none())
        .collect();

    let mut packages: Vec<&str> = Vec::new();
    if rust.is_none() {
        packages.extend(RUST_PACKAGES);
    }
    // Only needed to build bpf-linker, so only asked for when it is missing.
    if linker.is_none() && !LLVM_FILES.iter().all(|f| Path::new(f).exists()) {
        packages.extend(LLVM_PACKAGES);
    }
    packages.extend(&missing_tools);
    // The kernel matrix is part of the test suite.
    if matches!(need, Need::VmTest | Need::Test) {
        if find_program("qemu-system-x86_64").is_none() {
            packages.push("qemu-system-x86");
        }
        if !Path::new("/bin/busybox").exists() {
            packages.push("busybox-static");
        }
        // trixie's kernel modules are xz'd; the I/O tests' disk is ext4.
        if find_program("xz").is_none() {
            packages.push("xz-utils");
        }
        if find_program("mkfs.ext4").is_none() {
            packages.push("e2fsprogs");
        }
    }

    if !packages.is_empty() {
        let can_apt = is_root()
            && Path::new("/etc/debian_version").exists()
            && find_program("apt-get").is_some();
        if !can_apt {
            bail!("{}", missing_message(&packages, linker.is_none()));
        }
        eprintln!("bootstrap: installing {}", packages.join(" "));
        cmd::run(apt().arg("update"))?;
        cmd::run(
            apt()
                .args(["-o", "DPkg::Lock::Timeout=600"])
                .args(["install", "-y", "--no-install-recommends"])
                .args(&packages),
        )?;
        rust = detect_rust();
    }

    if linker.is_none() {
        // Needs no root: it lands in the invoking user's ~/.cargo/bin.
        eprintln!("bootstrap: building bpf-linker against LLVM 22 (about a minute)");
        cmd::run(&mut install_bpf_linker())?;
        linker = find_program("bpf-linker");
    }

    let Some(rust) = rust else {
        bail!(
            "no Rust toolchain with a `core` for bpfel-unknown-none even after installing {}: \
             expected {DEBIAN_BPF_CORE}/libcore-*.rlib and {DEBIAN_RUSTC}",
            RUST_PACKAGES.join(" ")
        );
    };
    let Some(bpf_linker) = linker else {
        bail!("bpf-linker is still not on PATH nor in ~/.cargo/bin after `cargo install`");
    };
    for tool in tools {
        if find_program(tool).is_none() {
            bail!("{tool} is still missing after apt-get install");
        }
    }

    match &rust {
        EbpfRust::Debian => eprintln!(
            "bootstrap: eBPF rustc: {DEBIAN_RUSTC} with Debian's core for bpfel-unknown-none"
        ),
        EbpfRust::RustupNightly { .. } => {
            eprintln!("bootstrap: eBPF rustc: rustup nightly with rust-src (-Z build-std=core)")
        }
    }
    eprintln!("bootstrap: bpf-linker: {}", bpf_linker.display());
    // The linker setting is part of cargo's fingerprint: the bare name, as
    // in the documented manual recipe, keeps both from rebuilding each
    // other's artifacts. The full path only when PATH lacks it.
    let bpf_linker = if on_path("bpf-linker") {
        PathBuf::from("bpf-linker")
    } else {
        bpf_linker
    };
    for tool in tools {
        if let Some(path) = find_program(tool) {
            eprintln!("bootstrap: {tool}: {}", path.display());
        }
    }
    Ok(Toolchain { rust, bpf_linker })
}

/// Debian's toolchain wins when present: it is the one verified here. The
/// standard aya recipe (nightly + rust-src) is the fallback elsewhere.
fn detect_rust() -> Option<EbpfRust> {
    if Path::new(DEBIAN_RUSTC).exists() && has_libcore(Path::new(DEBIAN_BPF_CORE)) {
        return Some(EbpfRust::Debian);
    }
    let rustup = find_program("rustup")?;
    let sysroot =
        cmd::query(Command::new(&rustup).args(["run", "nightly", "rustc", "--print", "sysroot"]))?;
    let core = Path::new(&sysroot).join("lib/rustlib/src/rust/library/core/Cargo.toml");
    core.exists().then_some(EbpfRust::RustupNightly { rustup })
}

fn on_path(name: &str) -> bool {
    find_program(name).is_some_and(|found| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).any(|dir| dir.join(name) == found)
    })
}

fn has_libcore(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libcore-") && name.ends_with(".rlib")
        })
    })
}

fn apt() -> Command {
    let mut apt = Command::new("apt-get");
    apt.env("DEBIAN_FRONTEND", "noninteractive");
    apt
}

fn install_bpf_linker() -> Command {
    let mut install = cmd::cargo();
    // llvm-sys reads LLVM_SYS_221_PREFIX; bpf-linker's own build script
    // reads LLVM_PREFIX to find -lLLVM. Both are needed.
    install
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX)
        .args(["install", "--locked", BPF_LINKER])
        .args(["--no-default-features", "--features", "llvm-22"]);
    // Where find_program looks afterwards, whatever CARGO_INSTALL_ROOT or
    // install.root say.
    if let Some(home) = cmd::cargo_bin_dir().as_deref().and_then(Path::parent) {
        install.arg("--root").arg(home);
    }
    install
}

fn missing_message(packages: &[&str], need_linker: bool) -> String {
    let sudo = if is_root() { "" } else { "sudo " };
    let mut msg = format!(
        "missing build/test prerequisites (Debian packages: {}).\n\
         xtask installs them itself only when run as root on Debian. Run:\n  \
         {sudo}apt-get update\n  \
         {sudo}env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
        packages.join(" "),
        packages.join(" "),
    );
    if need_linker {
        msg.push_str(&format!("\n  {}", cmd::describe(&install_bpf_linker())));
    }
    msg.push_str(
        "\n(On other distributions: a rustup nightly with the rust-src component, LLVM 22 \
         development files for bpf-linker, bpftrace, tmux, gcc, python3, Prometheus and \
         Alertmanager.)",
    );
    msg
}
