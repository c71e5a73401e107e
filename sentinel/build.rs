//! Embeds the eBPF object so the `sentinel` binary is all a host needs.
//! `cargo xtask build` compiles the object first and passes its path in
//! `SENTINEL_EBPF_OBJ`; a plain `cargo build` looks in the default place.
use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=SENTINEL_EBPF_OBJ");
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let obj = match env::var_os("SENTINEL_EBPF_OBJ") {
        Some(p) => PathBuf::from(p),
        None => manifest.join("../sentinel-ebpf/target/bpfel-unknown-none/release/sentinel-ebpf"),
    };
    if !obj.is_file() {
        panic!(
            "the eBPF object {} does not exist: build with `cargo xtask build` \
             (it compiles sentinel-ebpf first), or point SENTINEL_EBPF_OBJ at a built object",
            obj.display()
        );
    }
    println!("cargo:rerun-if-changed={}", obj.display());
    println!("cargo:rustc-env=SENTINEL_EBPF_OBJ_PATH={}", obj.display());
}
