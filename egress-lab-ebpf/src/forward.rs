//! The ceiling of the benchmarks and the harness's own cost, on TC:
//!
//! - `lab_forward`: the lab's ceiling. It sends every IPv4 frame arriving on the pod
//!   interface out of the egress interface with the same helper the data plane uses, and
//!   nothing else: no parsing beyond the EtherType, no NAT, no conntrack, no counters.
//! - `lab_return`: the same the other way, from the egress interface to the pod interface,
//!   for the ceiling's connections in the per-core mode.
//! - `lab_noop`: returns at once; its BPF_PROG_TEST_RUN time is the harness's own cost,
//!   subtracted from the data plane's.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::bpf_redirect_neigh,
    macros::classifier,
    programs::TcContext,
};

use crate::packet;

/// The stateless forwarder: IPv4 goes out of the configured egress interface, the rest
/// (ARP) to the stack; unconfigured, IPv4 is dropped.
#[classifier]
pub(crate) fn lab_forward(ctx: TcContext) -> i32 {
    forward_ipv4(&ctx, packet::egress_ifindex())
}

/// The stateless forwarder's way back, on the egress interface's ingress: IPv4 goes out of
/// the pod interface, the rest to the stack. With it the ceiling's connections cost the
/// router the same kind of work both ways, and no kernel forwarding.
#[classifier]
pub(crate) fn lab_return(ctx: TcContext) -> i32 {
    forward_ipv4(&ctx, packet::pod_ifindex())
}

#[inline(always)]
fn forward_ipv4(ctx: &TcContext, to: Option<u32>) -> i32 {
    let Some(eth) = packet::ptr_at::<packet::EthHdr>(ctx, 0) else {
        return TC_ACT_OK;
    };
    // SAFETY: bounds checked by ptr_at.
    if unsafe { (*eth).proto } != packet::ETH_P_IP.to_be() {
        return TC_ACT_OK;
    }
    match to {
        Some(ifindex) => redirect_neigh(ifindex),
        None => TC_ACT_SHOT,
    }
}

/// Does nothing.
#[classifier]
pub(crate) fn lab_noop(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

/// Redirects to `ifindex` as the data plane does (`shared::fib::redirect_neigh`): the
/// kernel looks the next hop up; TC_ACT_REDIRECT, or TC_ACT_SHOT when it refuses.
#[inline(always)]
fn redirect_neigh(ifindex: u32) -> i32 {
    // SAFETY: a null `params` asks the kernel to look the next hop up itself.
    unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}
