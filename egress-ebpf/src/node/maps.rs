//! Node mode's maps, and the lookups of an instance's configuration by the host-side
//! interface a packet leaves through or the egress address it is for. (The per-instance
//! counters are `crate::shared::metrics`'s, the configurations `crate::shared::config`'s.)

use aya_ebpf::{
    btf_maps::{Array, HashMap, PerCpuArray},
    macros::btf_map,
    programs::TcContext,
};
use egress_common::{NODE_INSTANCES_MAX, NodeHop, NodeUplink, RouterConfig, RouterConfig6};

use crate::shared::{
    config,
    parse::{self, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, EthHdr, Ipv4Hdr},
    parse6::Ipv6Hdr,
};

/// A router pod's host-side interface -> its instance.
#[btf_map]
static NODE_PODS: HashMap<u32, u32, { NODE_INSTANCES_MAX as usize }> = HashMap::new();

/// EGRESS_SOURCE -> its instance.
#[btf_map]
pub(crate) static NODE_SOURCES: HashMap<[u8; 4], u32, { NODE_INSTANCES_MAX as usize }> =
    HashMap::new();

/// EGRESS_SOURCE's IPv6 address -> its instance.
#[btf_map]
pub(crate) static NODE_SOURCES6: HashMap<[u8; 16], u32, { NODE_INSTANCES_MAX as usize }> =
    HashMap::new();

/// This CPU's scratch for the way out: a `struct bpf_fib_lookup`, or in its first 20 bytes
/// a `struct bpf_redir_neigh`. The IPv6 programs have no stack to spare for either, and in
/// `redirect`'s frame the lookup made `node_forward`'s deepest call chain too deep for
/// Linux 6.1, which counts each frame of a chain in 32-byte steps (later kernels, with the
/// JIT, in 16).
#[btf_map]
pub(crate) static NODE_SCRATCH6: PerCpuArray<[u64; 8], 1> = PerCpuArray::new();

/// Each instance's way out of the uplink, at its number.
#[btf_map]
pub(crate) static NODE_HOPS: Array<NodeHop, { NODE_INSTANCES_MAX as usize + 1 }> = Array::new();

/// The uplink's MAC and whether to answer ARP.
#[btf_map]
pub(crate) static NODE_UPLINK: Array<NodeUplink, 1> = Array::new();

/// The configuration of the instance whose router pod is behind host-side interface
/// `ifindex` (the interface this packet leaves through).
#[inline(always)]
pub(crate) fn by_pod(ifindex: u32) -> Option<&'static RouterConfig> {
    // SAFETY: a live value, read once.
    let instance = unsafe { *NODE_PODS.get_ptr(ifindex)? };
    config::get_at(instance)
}

/// The configuration of the instance whose EGRESS_SOURCE this IPv4 packet is addressed to,
/// if it is one.
#[inline(always)]
pub(crate) fn by_destination(ctx: &TcContext) -> Option<&'static RouterConfig> {
    let eth = parse::ptr_at::<EthHdr>(ctx, 0).ok()?;
    // SAFETY: bounds checked by ptr_at.
    if u16::from_be(unsafe { (*eth).proto }) != ETH_P_IP {
        return None;
    }
    let ip = parse::ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN).ok()?;
    // SAFETY: as above.
    let daddr = unsafe { (*ip).daddr }.to_ne_bytes();
    // SAFETY: a live value, read once.
    let instance = unsafe { *NODE_SOURCES.get_ptr(daddr)? };
    config::get_at(instance)
}

/// The configuration of the instance behind host-side interface `ifindex`, with its IPv6
/// half, if it has one.
#[inline(always)]
pub(crate) fn by_pod6(ifindex: u32) -> Option<(&'static RouterConfig, &'static RouterConfig6)> {
    // SAFETY: a live value, read once.
    let instance = unsafe { *NODE_PODS.get_ptr(ifindex)? };
    Some((config::get_at(instance)?, config::get6_at(instance)?))
}

/// The configuration (with its IPv6 half) of the instance whose IPv6 EGRESS_SOURCE this
/// IPv6 packet is addressed to, if it is one.
#[inline(always)]
pub(crate) fn by_destination6(
    ctx: &TcContext,
) -> Option<(&'static RouterConfig, &'static RouterConfig6)> {
    let eth = parse::ptr_at::<EthHdr>(ctx, 0).ok()?;
    // SAFETY: bounds checked by ptr_at.
    if u16::from_be(unsafe { (*eth).proto }) != ETH_P_IPV6 {
        return None;
    }
    let ip = parse::ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN).ok()?;
    // SAFETY: bounds checked by ptr_at; the key is read from the packet (no stack).
    let daddr = unsafe { &*(&raw const (*ip).daddr).cast::<[u8; 16]>() };
    // SAFETY: a live value, read once.
    let instance = unsafe { *NODE_SOURCES6.get_ptr(daddr)? };
    Some((config::get_at(instance)?, config::get6_at(instance)?))
}
