//! sentinel: an eBPF resource sentinel for Linux hosts.
//!
//! Where things are: `probes/` describes and attaches the kernel programs
//! (whose code is in `sentinel-ebpf/src/probes/`), `collect.rs` reads their
//! maps, `snapshot.rs` turns two samples into a `report::Report`.
//! `daemon.rs` runs the loop: samples feed `profile.rs` (sliding windows per
//! process and container), `detect/` judges them, and `event.rs` is what
//! leaves: through `sink/` (log, webhooks with their spools), `metrics/`
//! (Prometheus) and `api.rs` (the local socket). The CLI lives in `main.rs`.
pub mod api;
pub mod btf;
pub mod cgroup;
pub mod check;
pub mod collect;
pub mod config;
pub mod container;
pub mod daemon;
pub mod detect;
pub mod engine;
pub mod event;
pub mod export;
pub mod host;
pub mod incident;
pub mod loader;
pub mod metrics;
pub mod oom;
pub mod privileges;
pub mod probes;
pub mod procfs;
pub mod profile;
pub mod record;
pub mod render;
pub mod report;
pub mod sink;
pub mod snapshot;
pub mod symbolize;
pub mod top;
pub mod tracefs;
pub mod units;
