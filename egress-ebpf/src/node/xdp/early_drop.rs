//! The early drop: TCP and UDP to an egress address must be the reply of a flow, an entry
//! keyed by its tuple in either conntrack table; anything else to an egress address is
//! dropped here, before the node's stack sees it (`unsolicited_early`). The rest to an
//! egress address (ICMP, fragments, IPv6 extension headers) goes on to `node_reply` or
//! `node_reply6`, which judge it fully.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use egress_common::{DropReason, FlowKey, Stat, node_stat, proto};

use crate::{
    node::maps,
    shared::{
        ctmaps::Family,
        metrics,
        parse::{self, ETH_HLEN, Ipv4Hdr, Ports},
        parse6::{self, IPV6_HLEN, Ipv6Hdr},
    },
};

/// TCP and UDP without options beyond the header's to an IPv4 egress address.
#[inline(always)]
pub(crate) fn ipv4(ctx: &XdpContext) -> u32 {
    let Some(ip) = parse::xdp_ptr::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked by xdp_ptr.
    let ip = unsafe { &*ip };
    let daddr = ip.daddr.to_ne_bytes();
    // SAFETY: a live value, read once.
    let Some(instance) = maps::NODE_SOURCES.get_ptr(daddr).map(|i| unsafe { *i }) else {
        return xdp_action::XDP_PASS;
    };
    let len = (ctx.data_end() - ctx.data()) as u32;
    let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
    let fragment = u16::from_be(ip.frag_off) & 0x3fff != 0;
    if (ip.proto != proto::TCP && ip.proto != proto::UDP) || fragment || ihl < 20 {
        metrics::count(Stat::XdpPassed, len);
        return xdp_action::XDP_PASS;
    }
    let Some(ports) = parse::xdp_ptr::<Ports>(ctx, ETH_HLEN + ihl) else {
        metrics::count_drop(DropReason::Truncated, len);
        return xdp_action::XDP_DROP;
    };
    // SAFETY: bounds checked by xdp_ptr.
    let ports = unsafe { &*ports };
    let key = FlowKey {
        saddr: ip.saddr.to_ne_bytes(),
        daddr,
        sport: u16::from_be(ports.sport),
        dport: u16::from_be(ports.dport),
        proto: ip.proto,
        _pad: [0; 3],
    };
    judge(&key, instance, len)
}

/// [`ipv4`] for IPv6 (after the neighbour discovery responder): TCP and UDP without
/// extension headers to an IPv6 egress address.
#[inline(always)]
pub(crate) fn ipv6(ctx: &XdpContext, ip: &Ipv6Hdr) -> u32 {
    // SAFETY: the address's 16 bytes, inside the header the caller checked.
    let daddr = unsafe { &*(&raw const ip.daddr).cast::<[u8; 16]>() };
    // SAFETY: a live value, read once.
    let Some(instance) = maps::NODE_SOURCES6.get_ptr(daddr).map(|i| unsafe { *i }) else {
        return xdp_action::XDP_PASS;
    };
    let len = (ctx.data_end() - ctx.data()) as u32;
    if ip.nexthdr != proto::TCP && ip.nexthdr != proto::UDP {
        metrics::count(Stat::XdpPassed, len);
        return xdp_action::XDP_PASS;
    }
    let Some(ports) = parse::xdp_ptr::<Ports>(ctx, ETH_HLEN + IPV6_HLEN) else {
        metrics::count_drop(DropReason::Truncated, len);
        metrics::count_instance(instance, node_stat::drop(DropReason::Truncated), len);
        return xdp_action::XDP_DROP;
    };
    // SAFETY: bounds checked by xdp_ptr.
    let ports = unsafe { &*ports };
    let key = FlowKey {
        saddr: parse6::addr_bytes(ip.saddr),
        daddr: parse6::addr_bytes(ip.daddr),
        sport: u16::from_be(ports.sport),
        dport: u16::from_be(ports.dport),
        proto: ip.nexthdr,
        _pad: [0; 3],
    };
    judge(&key, instance, len)
}

/// TCP or UDP to instance `instance`'s egress address (`key`, as the reply's conntrack key):
/// on to the TC program if it belongs to a flow in either table, else dropped here.
#[inline(always)]
fn judge<A: Family>(key: &FlowKey<A>, instance: u32, len: u32) -> u32 {
    if A::answered().get_ptr(key).is_some() || A::unanswered().get_ptr(key).is_some() {
        metrics::count(Stat::XdpPassed, len);
        xdp_action::XDP_PASS
    } else {
        metrics::count_drop(DropReason::UnsolicitedEarly, len);
        metrics::count_instance(instance, node_stat::drop(DropReason::UnsolicitedEarly), len);
        xdp_action::XDP_DROP
    }
}
