//! `node_xdp`, node mode's XDP program on the uplink: ARP and neighbour solicitations for
//! the egress addresses answered with the uplink's MAC, and traffic to them that is part of
//! no flow dropped before the node's stack sees it; everything else passes.
//!
//! | module | concern |
//! |---|---|
//! | `arp` | the ARP responder for the IPv4 egress addresses |
//! | `ndp` | the neighbour discovery responder for the IPv6 egress addresses |
//! | `early_drop` | TCP and UDP to an egress address that no flow asked for, dropped |

mod arp;
mod early_drop;
mod ndp;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use egress_common::proto;

use crate::shared::{
    parse::{self, ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, EthHdr},
    parse6::Ipv6Hdr,
};

/// XDP on the uplink: the ARP and neighbour discovery responders for the egress
/// addresses, and the early drop of traffic to them that is part of no flow.
#[xdp]
pub(crate) fn node_xdp(ctx: XdpContext) -> u32 {
    let Some(eth) = parse::xdp_ptr::<EthHdr>(&ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked by xdp_ptr.
    match u16::from_be(unsafe { (*eth).proto }) {
        ETH_P_ARP => arp::respond(&ctx),
        ETH_P_IP => early_drop::ipv4(&ctx),
        ETH_P_IPV6 => ipv6(&ctx),
        _ => xdp_action::XDP_PASS,
    }
}

/// IPv6: a neighbour solicitation (ICMPv6 with the hop limit of the link) may be the
/// responder's to answer; the rest is judged by the early drop.
#[inline(always)]
fn ipv6(ctx: &XdpContext) -> u32 {
    let Some(ip) = parse::xdp_ptr::<Ipv6Hdr>(ctx, ETH_HLEN) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked by xdp_ptr; the packet is this program's to rewrite.
    let ip = unsafe { &mut *ip };
    if ip.nexthdr == proto::ICMPV6
        && ip.hop_limit == 255
        && let Some(action) = ndp::respond(ctx, ip)
    {
        return action;
    }
    early_drop::ipv6(ctx, ip)
}
