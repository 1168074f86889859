//! The egress interface (`macvlan0`): replies of translated flows in, the pod's own
//! connections out.
//!
//! - `egress_ingress` (TC ingress): replies are translated back and leave through the pod
//!   interface; ICMP errors about tracked flows are translated with the packet they quote;
//!   replies to the pod's own connections pass; anything else addressed to EGRESS_SOURCE is
//!   dropped, and so is unicast to any other address (the pod does not route for the
//!   egress network).
//!   ARP goes to the stack, except ARP about EGRESS_SOURCE from other hosts (probes,
//!   rivals' claims), answered with this router's broadcast claim (`shared::claim`).
//! - `egress_egress` (TC egress): the connections the pod opens itself from EGRESS_SOURCE
//!   are tracked, so that their replies pass ingress.
//!
//! IPv6 goes on to the IPv6 programs (`egress_ingress6`, `egress_egress6`) of an instance
//! with IPv6, and is dropped both ways otherwise. Node mode's `node_reply` translates with
//! the same [`ingress`] and [`ingress6`].

use aya_ebpf::{macros::classifier, programs::TcContext};
use egress_common::{
    DropReason, RouterConfig, RouterConfig6, Stat, config_flags, flow_kind, proto,
};

use crate::{
    exit,
    shared::{
        claim,
        conntrack::{self, Ct},
        flow, icmp, icmp6,
        metrics::Verdict,
        nat, parse,
        parse6::{self, ICMPV6_NDISC_FIRST, ICMPV6_NDISC_LAST, Ipv6},
        path::{self, Hop},
        path6::{self, Hop6},
    },
};

/// TC ingress of the egress interface: remote -> client, and the pod's own flows.
#[classifier]
pub(crate) fn egress_ingress(ctx: TcContext) -> i32 {
    exit::pod(
        &ctx,
        Stat::EgressIngressSeen,
        "egress_ingress",
        Err(DropReason::Unconfigured),
        ingress,
    )
}

/// TC egress of the egress interface: tracks the connections the pod opens itself.
#[classifier]
pub(crate) fn egress_egress(ctx: TcContext) -> i32 {
    exit::pod(
        &ctx,
        Stat::EgressEgressSeen,
        "egress_egress",
        Ok(Verdict::Pass(Stat::EgressEgressPassed)),
        egress,
    )
}

/// TC ingress of the egress interface for IPv6, after [`egress_ingress`].
#[classifier]
pub(crate) fn egress_ingress6(ctx: TcContext) -> i32 {
    exit::pod6(
        &ctx,
        "egress_ingress6",
        Err(DropReason::Unconfigured),
        ingress6,
    )
}

/// TC egress of the egress interface for IPv6, after [`egress_egress`].
#[classifier]
pub(crate) fn egress_egress6(ctx: TcContext) -> i32 {
    exit::pod6(
        &ctx,
        "egress_egress6",
        Ok(Verdict::Pass(Stat::EgressEgressPassed)),
        egress6,
    )
}

/// [`egress_ingress`]'s verdict on a packet, with the instance's configuration.
#[inline(always)]
pub(crate) fn ingress(ctx: &TcContext, cfg: &RouterConfig) -> Result<Verdict, DropReason> {
    let passed = Verdict::Pass(Stat::EgressIngressPassed);
    let Some(ip) = parse::ipv4(ctx)? else {
        // IPv6 goes to the IPv6 program when the instance has one; otherwise none of it
        // reaches the pod from the egress network. ARP is the stack's business, but for
        // the claim of EGRESS_SOURCE (shared/claim.rs).
        if parse::is_ipv6(ctx) {
            if cfg.flags & config_flags::IPV6 != 0 {
                return Ok(Verdict::Next);
            }
            return Err(DropReason::Ipv6Unsupported);
        }
        if claim::is_arp(ctx) {
            return claim::arp(ctx, cfg);
        }
        return Ok(passed);
    };
    let daddr = ip.daddr.to_ne_bytes();
    // (An instance with IPv6 alone has no IPv4 EGRESS_SOURCE: 0.0.0.0, which no packet
    // may claim to be for.)
    if daddr != cfg.egress_source || daddr == [0; 4] {
        // Broadcast and multicast are not a way through the pod; unicast to any other
        // address would be routed by the pod, which it must not do for this network.
        if daddr[0] >= 224 || daddr == [255; 4] {
            return Ok(passed);
        }
        return Err(DropReason::NotEgressSource);
    }

    if icmp::is_error(ctx, &ip)? {
        return match icmp::related(ctx, &ip)? {
            Some((_, entry)) if entry.kind == flow_kind::LOCAL => Ok(passed),
            Some((emb, entry)) if entry.kind == flow_kind::REPLY => {
                icmp::translate_error(ctx, &ip, &emb, &entry)?;
                Ok(Verdict::Redirect(cfg.pod_ifindex, Stat::Replied))
            }
            _ => Err(DropReason::Unsolicited),
        };
    }

    let Some(flow) = flow::of(ctx, &ip)? else {
        return Err(DropReason::Unsolicited);
    };
    match conntrack::lookup(&flow.key, &flow.seg) {
        Ct::Reply(entry) => {
            if let Some(verdict) = path::guard(ctx, &ip, &Hop::toward_client(cfg))? {
                return Ok(verdict);
            }
            nat::translate(ctx, cfg, &ip, &flow, &entry)?;
            Ok(Verdict::Redirect(cfg.pod_ifindex, Stat::Replied))
        }
        Ct::Local => {
            flow.remember_ports(&ip);
            Ok(passed)
        }
        Ct::Expired => Err(DropReason::FlowExpired),
        Ct::New | Ct::Forward(_) | Ct::Stale(_) | Ct::Closed(..) => Err(DropReason::Unsolicited),
    }
}

/// [`egress_egress`]'s verdict on a packet, with the instance's configuration.
#[inline(always)]
fn egress(ctx: &TcContext, cfg: &RouterConfig) -> Result<Verdict, DropReason> {
    let passed = Verdict::Pass(Stat::EgressEgressPassed);
    // Packets this data plane redirected from the pod interface are left alone.
    // SAFETY: reading a field of the context.
    let from = unsafe { (*ctx.skb.skb).ingress_ifindex };
    if from == cfg.pod_ifindex {
        return Ok(passed);
    }
    let Some(ip) = parse::ipv4(ctx)? else {
        // Nor does the pod's own IPv6 (neighbour discovery of a link-local address), unless
        // the instance has IPv6.
        if parse::is_ipv6(ctx) {
            if cfg.flags & config_flags::IPV6 != 0 {
                return Ok(Verdict::Next);
            }
            return Err(DropReason::Ipv6Unsupported);
        }
        return Ok(passed);
    };
    let saddr = ip.saddr.to_ne_bytes();
    if saddr != cfg.egress_source || saddr == [0; 4] || ip.is_later_fragment() {
        return Ok(passed);
    }
    if icmp::is_error(ctx, &ip)? {
        return Ok(passed);
    }
    let Some(flow) = flow::of(ctx, &ip)? else {
        return Ok(passed);
    };
    conntrack::track_local(&flow.key.reversed(), &flow.seg);
    Ok(Verdict::Pass(Stat::EgressEgressLocal))
}

/// [`ingress`] for IPv6 ([`egress_ingress6`]): replies translated back, neighbour
/// discovery and multicast to the stack, the pod's own flows in, the rest dropped.
#[inline(always)]
pub(crate) fn ingress6(
    ctx: &TcContext,
    cfg: &RouterConfig,
    cfg6: &RouterConfig6,
) -> Result<Verdict, DropReason> {
    let passed = Verdict::Pass(Stat::EgressIngressPassed);
    let Some(ip) = parse6::ipv6(ctx)? else {
        return Ok(passed);
    };
    // The stack resolves the gateway and answers for EGRESS_SOURCE (RFC 4861: only with
    // a hop limit of 255, i.e. from this link).
    if is_ndisc(ctx, &ip)? {
        return Ok(passed);
    }
    if ip.daddr != cfg6.egress_source {
        // Multicast is not a way through the pod; unicast to any other address would be
        // routed by the pod, which it must not do for this network.
        if ip.daddr[0] == 0xff {
            return Ok(passed);
        }
        return Err(DropReason::NotEgressSource);
    }
    if icmp6::is_error(ctx, &ip)? {
        return match icmp6::related(ctx, &ip)? {
            Some((_, entry)) if entry.kind == flow_kind::LOCAL => Ok(passed),
            Some((quoted, entry)) if entry.kind == flow_kind::REPLY => {
                icmp6::translate_error(ctx, &ip, &quoted, &entry)?;
                Ok(Verdict::Redirect(cfg.pod_ifindex, Stat::Replied))
            }
            _ => Err(DropReason::Unsolicited),
        };
    }
    let Some(flow) = flow::of6(ctx, &ip)? else {
        return Err(DropReason::Unsolicited);
    };
    match conntrack::lookup(&flow.key, &flow.seg) {
        Ct::Reply(entry) => {
            flow.remember_ports6(&ip);
            if let Some(verdict) = path6::guard(ctx, &ip, &Hop6::toward_client(cfg, cfg6))? {
                return Ok(verdict);
            }
            nat::translate6(ctx, (cfg6.mss_clamp, cfg.instance), &ip, &flow, &entry)?;
            Ok(Verdict::Redirect(cfg.pod_ifindex, Stat::Replied))
        }
        Ct::Local => {
            flow.remember_ports6(&ip);
            Ok(passed)
        }
        Ct::Expired => Err(DropReason::FlowExpired),
        Ct::New | Ct::Forward(_) | Ct::Stale(_) | Ct::Closed(..) => Err(DropReason::Unsolicited),
    }
}

/// [`egress`] for IPv6 ([`egress_egress6`]): the pod's own connections from
/// EGRESS_SOURCE's IPv6 address are tracked; neighbour discovery and the rest pass.
#[inline(always)]
fn egress6(
    ctx: &TcContext,
    cfg: &RouterConfig,
    cfg6: &RouterConfig6,
) -> Result<Verdict, DropReason> {
    let passed = Verdict::Pass(Stat::EgressEgressPassed);
    // SAFETY: reading a field of the context.
    let from = unsafe { (*ctx.skb.skb).ingress_ifindex };
    if from == cfg.pod_ifindex {
        return Ok(passed);
    }
    let Some(ip) = parse6::ipv6(ctx)? else {
        return Ok(passed);
    };
    if ip.saddr != cfg6.egress_source || ip.is_later_fragment() {
        return Ok(passed);
    }
    // ICMPv6 other than echo (neighbour discovery, errors) has no flow.
    let Some(flow) = flow::of6(ctx, &ip)? else {
        return Ok(passed);
    };
    conntrack::track_local(&flow.key.reversed(), &flow.seg);
    Ok(Verdict::Pass(Stat::EgressEgressLocal))
}

/// Neighbour discovery (ICMPv6 133-137) with the hop limit of 255 that proves it comes
/// from the link.
#[inline(always)]
fn is_ndisc(ctx: &TcContext, ip: &Ipv6) -> Result<bool, DropReason> {
    if ip.proto != proto::ICMPV6 || ip.hop_limit != 255 || ip.is_later_fragment() {
        return Ok(false);
    }
    parse::ensure(ctx, ip.l4 + 2)?;
    // Type and code together: a one-byte read at a variable offset gives the verifier no
    // usable range check.
    let head = parse::ptr_at::<[u8; 2]>(ctx, ip.l4)?;
    // SAFETY: bounds checked by ptr_at.
    let [kind, _code] = unsafe { *head };
    Ok((ICMPV6_NDISC_FIRST..=ICMPV6_NDISC_LAST).contains(&kind))
}
