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
    /// egress-router made the clsact qdisc of the pod interface (node mode: the router
    /// pod's host-side interface) for its tc filters (`--attach tc`, or `auto` without
    /// TCX): teardown removes it once no filter of any owner is left on it.
    pub const CLSACT_POD_SIDE: u32 = 8;
    /// The same for the egress interface (node mode: the uplink).
    pub const CLSACT_EGRESS_SIDE: u32 = 16;
    /// New flows are admitted only from the client networks in `CLIENT_NETS` (and
    /// `CLIENT_NETS6`); others are dropped (`bad_source`). Pod mode sets it.
    pub const CHECK_SOURCES: u32 = 32;
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
    /// Pod mode: the pod interface. Node mode: the router pod's host-side interface
    /// ([`RouterConfig::host_ifindex`]); zero where nothing is configured.
    pub pod_ifindex: u32,
    /// Pod mode: the egress interface. Node mode: the node's uplink
    /// ([`RouterConfig::uplink_ifindex`]).
    pub egress_ifindex: u32,
    /// [`config_flags`] bits.
    pub flags: u32,
    /// Translated source ports are taken from `nat_port_min..=nat_port_max` when the
    /// client's own port is in use.
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    /// Largest TCP MSS advertised through the router: min(pod MTU, egress MTU) - 40.
    pub mss_clamp: u16,
    /// The instance's number in node mode (its index of [`crate::maps::CONFIG`], and
    /// [`crate::RuleKey::instance`] of its rules); 0 in pod mode.
    pub instance: u8,
    pub _pad: u8,
    /// Random key of the translated-port choice (RFC 6056's algorithm 3): a flow's first
    /// port is a keyed hash of its tuple, so it cannot be guessed from outside, and the
    /// same flow gets the same port again when its entries are re-created (two CPUs at
    /// once, an LRU eviction of one half, a GC racing a packet). Kept across restarts.
    pub nat_secret: u32,
}

impl RouterConfig {
    /// Node mode's name for [`RouterConfig::pod_ifindex`]: the router pod's host-side
    /// interface, where clients' packets to the pod leave the node's stack.
    #[inline(always)]
    #[must_use]
    pub const fn host_ifindex(&self) -> u32 {
        self.pod_ifindex
    }

    /// Node mode's name for [`RouterConfig::egress_ifindex`]: the node's uplink.
    #[inline(always)]
    #[must_use]
    pub const fn uplink_ifindex(&self) -> u32 {
        self.egress_ifindex
    }

    /// Node mode: an instance's interfaces, its router pod's host-side interface and the
    /// node's uplink.
    #[must_use]
    pub const fn with_node_interfaces(self, host_ifindex: u32, uplink_ifindex: u32) -> Self {
        Self {
            pod_ifindex: host_ifindex,
            egress_ifindex: uplink_ifindex,
            ..self
        }
    }
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
    /// EGRESS_SOURCE's IPv6 subnet and its mask, as two native-endian words of the
    /// address's bytes each (so the data plane compares them with two 64-bit loads of the
    /// packet's destination): remotes in it are reached directly.
    pub subnet: [u64; 2],
    pub subnet_mask: [u64; 2],
    /// The next hop toward remotes off EGRESS_SOURCE's subnet, as `bpf_redirect_neigh`
    /// takes it (`struct bpf_redir_neigh`: the family, 10, then EGRESS_GATEWAY's IPv6
    /// address), or zeros to let the kernel look the route up for every packet (which
    /// costs an IPv6 route lookup per packet).
    pub next_hop: [u32; 5],
    pub _pad2: u32,
}

/// `nh_family` of [`RouterConfig6::next_hop`]: AF_INET6.
pub const NEXT_HOP_IPV6: u32 = 10;

impl RouterConfig6 {
    /// [`RouterConfig6::next_hop`] for `gateway`.
    #[must_use]
    pub fn next_hop_via(gateway: [u8; 16]) -> [u32; 5] {
        let word = |i: usize| {
            u32::from_ne_bytes([gateway[i], gateway[i + 1], gateway[i + 2], gateway[i + 3]])
        };
        [NEXT_HOP_IPV6, word(0), word(4), word(8), word(12)]
    }

    /// The address of [`RouterConfig6::next_hop`] (zero without a next hop): the inverse
    /// of [`RouterConfig6::next_hop_via`].
    #[must_use]
    pub fn next_hop_addr(&self) -> [u8; 16] {
        let mut bytes = [0; 16];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(&self.next_hop[1..]) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        bytes
    }

    /// The mask of a prefix length (0-128), as the address's bytes.
    #[must_use]
    pub fn mask(prefix: u8) -> [u8; 16] {
        let bits = u128::MAX
            .checked_shl(128 - u32::from(prefix.min(128)))
            .unwrap_or(0);
        bits.to_be_bytes()
    }

    /// An address's bytes as [`RouterConfig6::subnet`] holds them.
    #[must_use]
    pub fn words(bytes: [u8; 16]) -> [u64; 2] {
        let mut hi = [0; 8];
        let mut lo = [0; 8];
        hi.copy_from_slice(&bytes[..8]);
        lo.copy_from_slice(&bytes[8..]);
        [u64::from_ne_bytes(hi), u64::from_ne_bytes(lo)]
    }
}

const _: () = assert!(core::mem::size_of::<RouterConfig>() == 36);
const _: () = assert!(core::mem::size_of::<RouterConfig6>() == 112);

#[cfg(test)]
mod tests {
    use super::RouterConfig6;

    #[test]
    fn next_hop_and_masks() {
        let gw = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0x0e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        ];
        let nh = RouterConfig6::next_hop_via(gw);
        assert_eq!(nh[0], 10);
        let config = RouterConfig6 {
            next_hop: nh,
            ..RouterConfig6::default()
        };
        assert_eq!(config.next_hop_addr(), gw);
        assert_eq!(RouterConfig6::default().next_hop_addr(), [0; 16]);
        assert_eq!(RouterConfig6::mask(0), [0; 16]);
        assert_eq!(RouterConfig6::mask(128), [0xff; 16]);
        let m64 = RouterConfig6::mask(64);
        assert_eq!((m64[7], m64[8]), (0xff, 0));
        assert_eq!(RouterConfig6::mask(65)[8], 0x80);
        assert_eq!(RouterConfig6::words(m64), [u64::MAX, 0]);
        assert_eq!(RouterConfig6::words(gw)[1].to_ne_bytes(), gw[8..]);
    }
}
