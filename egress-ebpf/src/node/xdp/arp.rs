//! The ARP responder: a request for an IPv4 egress address is answered with the uplink's
//! MAC, turned into the reply in place and sent back out of the uplink (XDP_TX). The
//! addresses are never the node stack's, so nothing else answers for them.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use egress_common::Stat;

use crate::{
    node::maps,
    shared::{
        metrics,
        parse::{self, ETH_HLEN, ETH_P_IP, EthHdr},
    },
};

const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// An ARP packet for IPv4 over Ethernet.
#[repr(C)]
struct Arp {
    htype: u16,
    ptype: u16,
    hlen: u8,
    plen: u8,
    oper: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
}

/// A request for an egress address is turned into the reply, with the uplink's MAC, and
/// sent back out of the uplink. A gratuitous one (sender = target) is not a question.
#[inline(always)]
pub(crate) fn respond(ctx: &XdpContext) -> u32 {
    let (Some(eth), Some(arp)) = (
        parse::xdp_ptr::<EthHdr>(ctx, 0),
        parse::xdp_ptr::<Arp>(ctx, ETH_HLEN),
    ) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked by xdp_ptr; the packet is this program's to rewrite.
    let (eth, arp) = unsafe { (&mut *eth, &mut *arp) };
    if u16::from_be(arp.htype) != 1
        || u16::from_be(arp.ptype) != ETH_P_IP
        || arp.hlen != 6
        || arp.plen != 4
        || u16::from_be(arp.oper) != ARP_REQUEST
        || arp.spa == arp.tpa
        || maps::NODE_SOURCES.get_ptr(arp.tpa).is_none()
    {
        return xdp_action::XDP_PASS;
    }
    let Some(uplink) = maps::NODE_UPLINK.get(0) else {
        return xdp_action::XDP_PASS;
    };
    if uplink.arp == 0 {
        return xdp_action::XDP_PASS;
    }
    let asked = arp.tpa;
    arp.oper = ARP_REPLY.to_be();
    arp.tha = arp.sha;
    arp.tpa = arp.spa;
    arp.sha = uplink.mac;
    arp.spa = asked;
    eth.dst = arp.tha;
    eth.src = uplink.mac;
    metrics::count(Stat::ArpAnswered, (ctx.data_end() - ctx.data()) as u32);
    xdp_action::XDP_TX
}
