//! The lab's BPF programs: the benchmarks' reference programs (`cargo xtask bench`) and the
//! per-core mode's harness, in an object of their own that the tests crate embeds
//! (`egress_tests::labbpf`); the product's object (`egress-ebpf`) holds none of them. Built
//! with the same toolchain, flags and helpers as the data plane, so that the ceiling they
//! measure is the data plane's own.
//!
//! | module | concern |
//! |---|---|
//! | `forward` | `lab_forward`, `lab_return`, `lab_noop`: the ceiling and the harness's cost |
//! | `percore` | `lab_xdp_gen`, `lab_xdp_pass`, `lab_sink`: the per-core mode's generator, NAPI switch and sink |
//! | `packet` | the lab's configuration map and bounds-checked header access |
#![no_std]
#![no_main]

mod forward;
mod packet;
mod percore;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
