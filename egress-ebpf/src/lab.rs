//! Reference programs of the benchmarks (`cargo xtask bench`), never attached by the
//! product. They live in the same object so that they are built with the same toolchain and
//! flags and share its CONFIG map (through `config`, not the product's entry file).
//!
//! - `lab_forward`: the lab's ceiling. It sends every IPv4 frame arriving on the pod
//!   interface out of the egress interface with the same helper the data plane uses, and
//!   nothing else: no parsing beyond the EtherType, no NAT, no conntrack, no counters.
//! - `lab_noop`: returns at once; its BPF_PROG_TEST_RUN time is the harness's own cost,
//!   subtracted from the data plane's.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};

use crate::{config, fib, parse};

/// The stateless forwarder: IPv4 goes out of the configured egress interface, the rest
/// (ARP) to the stack; unconfigured, IPv4 is dropped.
#[classifier]
pub(crate) fn lab_forward(ctx: TcContext) -> i32 {
    let Ok(eth) = parse::ptr_at::<parse::EthHdr>(&ctx, 0) else {
        return TC_ACT_OK;
    };
    // SAFETY: bounds checked by ptr_at.
    if unsafe { (*eth).proto } != parse::ETH_P_IP.to_be() {
        return TC_ACT_OK;
    }
    match config::egress_ifindex() {
        Some(ifindex) => fib::redirect_neigh(ifindex),
        None => TC_ACT_SHOT,
    }
}

/// Does nothing.
#[classifier]
pub(crate) fn lab_noop(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}
