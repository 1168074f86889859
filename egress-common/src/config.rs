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

const _: () = assert!(core::mem::size_of::<RouterConfig>() == 36);
