//! What the lab's programs share: their configuration, a [`RouterConfig`] the harness writes
//! as the product's loader writes its own (`LAB_CONFIG`), and bounds-checked access to the
//! few header fields they read (the data plane's `shared::parse`, reduced to them).

use core::mem::size_of;

use aya_ebpf::{btf_maps::Array, macros::btf_map, programs::TcContext};
use egress_common::RouterConfig;

pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const ETH_P_IP: u16 = 0x0800;

/// The lab's configuration: the interfaces to forward to, and the address the sink counts
/// as translated.
#[btf_map]
static LAB_CONFIG: Array<RouterConfig, 1> = Array::new();

/// An Ethernet header: the EtherType is all the programs read.
#[repr(C)]
pub(crate) struct EthHdr {
    _addrs: [u8; 12],
    /// Network order.
    pub(crate) proto: u16,
}

/// An IPv4 header (without options): the sink reads the protocol and the source.
#[repr(C)]
pub(crate) struct Ipv4Hdr {
    _head: [u8; 9],
    pub(crate) proto: u8,
    _check: u16,
    pub(crate) saddr: u32,
    _daddr: u32,
}

/// The first four bytes of TCP and UDP headers.
#[repr(C)]
pub(crate) struct Ports {
    _sport: u16,
    pub(crate) dport: u16,
}

/// A pointer to a `T` at `offset` from the start of the packet, if the linear data holds it.
#[inline(always)]
pub(crate) fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// The egress interface's index as written (the forwarder's target, the generator's).
#[inline(always)]
pub(crate) fn egress_ifindex() -> Option<u32> {
    LAB_CONFIG
        .get(0)
        .map(|cfg| cfg.egress_ifindex)
        .filter(|&i| i != 0)
}

/// EGRESS_SOURCE as written (the sink's translated source).
#[inline(always)]
pub(crate) fn egress_source() -> Option<[u8; 4]> {
    LAB_CONFIG
        .get(0)
        .map(|cfg| cfg.egress_source)
        .filter(|&a| a != [0; 4])
}

/// The pod interface's index as written (the forwarder's way back).
#[inline(always)]
pub(crate) fn pod_ifindex() -> Option<u32> {
    LAB_CONFIG
        .get(0)
        .map(|cfg| cfg.pod_ifindex)
        .filter(|&i| i != 0)
}
