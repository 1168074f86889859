//! egress-router data plane: the BPF programs, grouped by where they run, and the shared
//! libraries they are built from. (The benchmarks' programs are in an object of their own,
//! `egress-lab-ebpf`.)
//!
//! | module | concern |
//! |---|---|
//! | `pod` | the pod interface: `pod_ingress`, `pod_ingress6` (client -> remote) |
//! | `egress` | the egress interface: `egress_ingress`, `egress_egress` and their IPv6 twins |
//! | `node` | node mode: `node_forward*` (host side), `node_reply*` and `node_xdp` (uplink) |
//! | `sweep` | `ct_sweep`, the conntrack GC's sweep, never attached |
//! | `exit` | how the programs end: one exit per program kind, recording the verdict |
//! | `shared` | the shared libraries: parsing, conntrack, NAT, path limits, maps, counters |
#![no_std]
#![no_main]

mod egress;
mod exit;
mod node;
mod pod;
mod shared;
mod sweep;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
