//! The instance configuration the loader writes at index 0 of [`crate::maps::CONFIG`].

use bytemuck::{Pod, Zeroable};

/// Default range of translated source ports when the client's own port is taken.
pub const DEFAULT_NAT_PORTS: (u16, u16) = (1024, 65535);

/// [`RouterConfig::flags`] bits.
pub mod config_flags {
    /// A fallback IP catches traffic no rule matches.
    pub const HAS_FALLBACK: u32 = 1;
    /// Emit per-packet aya-log events.
    pub const DEBUG: u32 = 2;
    /// The instance has IPv6 (EGRESS_SOURCE has an IPv6 address): the IPv6 programs are
    /// attached after the IPv4 ones at each hook, and the IPv4 programs hand IPv6 frames
    /// on to them (TCX_NEXT) instead of passing or dropping them. Set only once they are
    /// attached.
    pub const IPV6: u32 = 4;
}

/// The instance's addresses and interfaces, at index 0 of [`crate::maps::CONFIG`]. Addresses are
/// in network order as bytes, so bpftool prints them as `[198,51,100,100]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RouterConfig {
    /// The pod's address on the pod interface: what clients connect to.
    pub pod_ip: [u8; 4],
    /// EGRESS_SOURCE: the translated source address.
    pub egress_source: [u8; 4],
    /// The fallback destination, valid when [`config_flags::HAS_FALLBACK`] is set.
    pub fallback_ip: [u8; 4],
    pub pod_ifindex: u32,
    pub egress_ifindex: u32,
    /// [`config_flags`] bits.
    pub flags: u32,
    /// Translated source ports are taken from `nat_port_min..=nat_port_max` when the
    /// client's own port is in use.
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    /// Largest TCP MSS advertised through the router: min(pod MTU, egress MTU) - 40.
    pub mss_clamp: u16,
    pub _pad: u16,
    /// Random key of the translated-port choice (RFC 6056's algorithm 3): a flow's first
    /// port is a keyed hash of its tuple, so it cannot be guessed from outside, and the
    /// same flow gets the same port again when its entries are re-created (two CPUs at
    /// once, an LRU eviction of one half, a GC racing a packet). Kept across restarts.
    pub nat_secret: u32,
}

/// The IPv6 half of a dual-stack (or IPv6-only) instance, at index 0 of
/// [`crate::maps::CONFIG6`]; the interfaces, ports, MSS clamp and secret stay in
/// [`RouterConfig`]. Written only when EGRESS_SOURCE has an IPv6 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RouterConfig6 {
    /// The pod's IPv6 address on the pod interface: what IPv6 clients connect to.
    pub pod_ip: [u8; 16],
    /// EGRESS_SOURCE's IPv6 address.
    pub egress_source: [u8; 16],
    /// The IPv6 fallback destination, valid with [`config_flags::HAS_FALLBACK`].
    pub fallback_ip: [u8; 16],
    /// [`config_flags`] bits (only `HAS_FALLBACK` is read here).
    pub flags: u32,
    /// Largest TCP MSS advertised through the router over IPv6: its MTU - 60.
    pub mss_clamp: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<RouterConfig>() == 36);
const _: () = assert!(core::mem::size_of::<RouterConfig6>() == 56);
