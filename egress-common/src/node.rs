//! Node mode (`egress-router node`): one set of programs and maps in the node's network
//! namespace serves every egress router instance whose router pod runs on the node,
//! instances told apart by a number, [`crate::RouterConfig::instance`] (1..=
//! [`NODE_INSTANCES_MAX`]; 0 is a pod-mode instance's). Its configuration is at that
//! index of [`crate::maps::CONFIG`], its rules carry it in [`crate::RuleKey::instance`],
//! and the maps below find it from a packet: by the router pod's host-side interface (a
//! client's packet on its way into the pod) or by EGRESS_SOURCE (a reply on the uplink).
//! Conntrack needs no instance: a forward key holds the router pod's IP and a reply key
//! EGRESS_SOURCE, each an instance's own.

use bytemuck::{Pod, Zeroable};

/// Most instances one node agent serves (kubelet's default is 110 pods per node).
pub const NODE_INSTANCES_MAX: u32 = 255;

/// Per-instance counters in [`crate::maps::NODE_STATS`]: at `instance *
/// NODE_STATS_PER_INSTANCE + slot`, one [`crate::PacketCount`] per CPU.
pub mod node_stat {
    use crate::DropReason;

    /// Clients' packets translated and sent out of the uplink.
    pub const FORWARDED: u32 = 0;
    /// Replies translated and sent toward their client.
    pub const REPLIED: u32 = 1;
    /// Packets to the router pod that no rule took, let into the pod.
    pub const PASSED: u32 = 2;
    /// Packets of the instance's fallback flows, both ways (pod mode counts them under
    /// rule 0, which in node mode every instance's fallback would share).
    pub const FALLBACK: u32 = 3;
    /// [`FALLBACK`] for the IPv6 fallback.
    pub const FALLBACK6: u32 = 4;
    /// ICMP errors the instance sent to its clients in place of their packets (time
    /// exceeded, fragmentation needed).
    pub const ICMP_ERRORS: u32 = 5;
    /// The first of the instance's drop counters, one per [`DropReason`] (the early drops
    /// of the uplink's XDP program included): see [`drop`].
    pub const DROPS: u32 = 6;

    /// The slot of the instance's drops for `reason`.
    #[inline(always)]
    #[must_use]
    pub const fn drop(reason: DropReason) -> u32 {
        DROPS + reason as u32
    }
}

/// Counters per instance in [`crate::maps::NODE_STATS`].
pub const NODE_STATS_PER_INSTANCE: u32 = node_stat::DROPS + crate::DropReason::Count as u32;
/// Entries of [`crate::maps::NODE_STATS`].
pub const NODE_STATS_LEN: u32 = (NODE_INSTANCES_MAX + 1) * NODE_STATS_PER_INSTANCE;

/// `struct bpf_redir_neigh`'s `nh_family` for IPv4 (AF_INET).
pub const NEXT_HOP_IPV4: u32 = 2;

/// How an instance's translated packets leave the uplink, at its index of
/// [`crate::maps::NODE_HOPS`]: toward EGRESS_GATEWAY, or straight to a remote on
/// EGRESS_SOURCE's own subnet. The node's own routes are not asked: they lead to the
/// node's gateway, not the instance's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NodeHop {
    /// `struct bpf_redir_neigh` for EGRESS_GATEWAY: [`NEXT_HOP_IPV4`], then the address in
    /// the first 4 of its 16 bytes.
    pub next_hop: [u32; 5],
    /// EGRESS_SOURCE's subnet and its mask, in network order.
    pub subnet: [u8; 4],
    pub mask: [u8; 4],
    pub _pad: u32,
}

impl NodeHop {
    /// The hop for EGRESS_SOURCE `source`/`prefix` via `gateway`.
    #[must_use]
    pub fn new(gateway: [u8; 4], source: [u8; 4], prefix: u8) -> Self {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0)
            .to_be_bytes();
        let subnet = core::array::from_fn(|i| source[i] & mask[i]);
        Self {
            next_hop: [NEXT_HOP_IPV4, u32::from_ne_bytes(gateway), 0, 0, 0],
            subnet,
            mask,
            _pad: 0,
        }
    }

    /// Whether `addr` is on EGRESS_SOURCE's subnet (reached directly, not via the
    /// gateway).
    #[inline(always)]
    #[must_use]
    pub fn on_subnet(&self, addr: [u8; 4]) -> bool {
        u32::from_ne_bytes(addr) & u32::from_ne_bytes(self.mask) == u32::from_ne_bytes(self.subnet)
    }
}

/// The uplink, at index 0 of [`crate::maps::NODE_UPLINK`]: what the ARP responder answers
/// with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NodeUplink {
    /// The uplink's MAC address: every egress address of the node answers with it.
    pub mac: [u8; 6],
    /// Nonzero: answer ARP for the egress addresses (layer 2); zero in cloud mode, where
    /// the cloud routes the addresses to the node's NIC and nobody asks.
    pub arp: u8,
    /// [`crate::config_flags::CLSACT_EGRESS_SIDE`] when the agent made the uplink's clsact
    /// qdisc for its tc filters (it goes at teardown once no filter is left on it).
    pub flags: u8,
    pub ifindex: u32,
}

const _: () = assert!(core::mem::size_of::<NodeHop>() == 32);
const _: () = assert!(core::mem::size_of::<NodeUplink>() == 12);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hop_knows_its_subnet() {
        let hop = NodeHop::new([198, 51, 100, 1], [198, 51, 100, 99], 24);
        assert_eq!(hop.subnet, [198, 51, 100, 0]);
        assert_eq!(hop.mask, [255, 255, 255, 0]);
        assert!(hop.on_subnet([198, 51, 100, 7]));
        assert!(!hop.on_subnet([203, 0, 113, 10]));
        assert_eq!(hop.next_hop[1].to_ne_bytes(), [198, 51, 100, 1]);
        let everything = NodeHop::new([198, 51, 100, 1], [198, 51, 100, 99], 0);
        assert!(everything.on_subnet([203, 0, 113, 10]));
        let one = NodeHop::new([198, 51, 100, 1], [198, 51, 100, 99], 32);
        assert!(one.on_subnet([198, 51, 100, 99]) && !one.on_subnet([198, 51, 100, 98]));
    }
}
