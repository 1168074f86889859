//! Forwarding without the kernel's IP stack: `bpf_redirect_neigh` sends the rewritten packet
//! out of the target interface's egress, with the next hop from that interface's routes
//! (the default route via EGRESS_GATEWAY on the egress side) and the MAC from the
//! neighbour table, resolving it when needed.

use aya_ebpf::helpers::generated::bpf_redirect_neigh;

/// Redirects to `ifindex`; returns TC_ACT_REDIRECT, or TC_ACT_SHOT when the kernel refuses.
#[inline(always)]
pub(crate) fn redirect_neigh(ifindex: u32) -> i32 {
    // SAFETY: a null `params` asks the kernel to look the next hop up itself.
    unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}
