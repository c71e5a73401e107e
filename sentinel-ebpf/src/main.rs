//! sentinel's kernel side: small, boring programs that aggregate into
//! bounded maps. Every decision is made in userspace.
//!
//! One file per probe family under `probes/`; the maps they share live in
//! `maps.rs`, the few helpers in `util.rs`.
#![no_std]
#![no_main]
#![allow(internal_features)]
#![feature(core_intrinsics)]
#![feature(asm_experimental_arch)]

mod cgroups;
mod maps;
mod probes;
mod util;

use sentinel_common::Config;

/// Patched by the loader before load (tracefs offsets, BTF offsets). Lives
/// in `.rodata`, which aya freezes, so the verifier sees each offset as a
/// constant and accepts direct context loads at it.
#[unsafe(no_mangle)]
static CONFIG: Config = Config::unset();

#[inline(always)]
pub(crate) fn config() -> Config {
    // Volatile: without it the compiler folds in `Config::unset()`.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
