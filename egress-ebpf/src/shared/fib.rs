//! Forwarding without the kernel's IP stack: `bpf_redirect_neigh` sends the rewritten packet
//! out of the target interface's egress, with the next hop from that interface's routes
//! (the default route via EGRESS_GATEWAY on the egress side) and the MAC from the
//! neighbour table, resolving it when needed.

use aya_ebpf::{
    helpers::generated::{bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};
use egress_common::RouterConfig6;

use crate::shared::parse::{self, ETH_HLEN};

/// Redirects to `ifindex`; returns TC_ACT_REDIRECT, or TC_ACT_SHOT when the kernel refuses.
#[inline(always)]
pub(crate) fn redirect_neigh(ifindex: u32) -> i32 {
    // SAFETY: a null `params` asks the kernel to look the next hop up itself.
    unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}

/// Sends the frame as it is out of `ifindex` (no neighbour resolution: a frame this
/// program wrote whole, addressed already); returns TC_ACT_REDIRECT, or TC_ACT_SHOT.
#[inline(always)]
pub(crate) fn send(ifindex: u32) -> i32 {
    // SAFETY: no pointers.
    unsafe { bpf_redirect(ifindex, 0) as i32 }
}

/// Redirects to `ifindex` with `next_hop` (a `struct bpf_redir_neigh` in a map value, so
/// that it takes no stack), the kernel's route lookup skipped.
#[inline(always)]
pub(crate) fn redirect_via(ifindex: u32, next_hop: &[u32; 5]) -> i32 {
    // SAFETY: `next_hop` is 20 readable bytes laid out as `struct bpf_redir_neigh`.
    unsafe {
        bpf_redirect_neigh(
            ifindex,
            next_hop.as_ptr().cast_mut().cast(),
            size_of::<[u32; 5]>() as i32,
            0,
        ) as i32
    }
}

/// Whether the IPv6 packet's destination is on EGRESS_SOURCE's subnet (reached directly,
/// not via the gateway); a packet too short to tell is taken as on it (the kernel then
/// looks the route up, as without a next hop).
#[inline(always)]
pub(crate) fn on_subnet6(ctx: &TcContext, cfg6: &RouterConfig6) -> bool {
    // The destination address, 24 bytes into the IPv6 header.
    let Ok(daddr) = parse::ptr_at::<[u64; 2]>(ctx, ETH_HLEN + 24) else {
        return true;
    };
    // SAFETY: bounds checked by ptr_at.
    let [hi, lo] = unsafe { *daddr };
    let (net, mask) = (&cfg6.subnet, &cfg6.subnet_mask);
    hi & mask[0] == net[0] && lo & mask[1] == net[1]
}
