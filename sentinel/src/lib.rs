//! sentinel: an eBPF resource sentinel for Linux hosts.
//!
//! Where things are: `probes/` describes and attaches the kernel programs
//! (whose code is in `sentinel-ebpf/src/probes/`), `collect.rs` reads their
//! maps, `snapshot.rs` turns two samples into a `report::Report`, and the
//! CLI lives in `main.rs`.
pub mod btf;
pub mod cgroup;
pub mod check;
pub mod collect;
pub mod loader;
pub mod privileges;
pub mod probes;
pub mod procfs;
pub mod render;
pub mod report;
pub mod snapshot;
pub mod tracefs;
pub mod units;
