//! The pod interface (`eth0`): `pod_ingress` and `pod_ingress6` on its TC ingress, client
//! -> remote. A packet to the pod IP that matches a rule or the fallback is translated and
//! leaves through the egress interface; everything else reaches the pod as it was. Node
//! mode's `node_forward` translates with the same [`ingress`] and [`ingress6`].

use aya_ebpf::{macros::classifier, programs::TcContext};
use egress_common::{
    DropReason, RouterConfig, RouterConfig6, Stat, config_flags, flow_kind, proto,
};

use crate::{
    exit,
    shared::{
        conntrack::{self, Ct},
        flow::{self, L4},
        icmp, icmp6,
        metrics::Verdict,
        nat, parse, parse6,
        path::{self, Hop},
        path6::{self, Hop6},
        rules,
    },
};

/// TC ingress of the pod interface: client -> remote.
#[classifier]
pub(crate) fn pod_ingress(ctx: TcContext) -> i32 {
    exit::pod(
        &ctx,
        Stat::PodIngressSeen,
        "pod_ingress",
        Ok(Verdict::Pass(Stat::PodIngressPassed)),
        ingress,
    )
}

/// TC ingress of the pod interface for IPv6, attached after [`pod_ingress`], which hands
/// it the IPv6 frames.
#[classifier]
pub(crate) fn pod_ingress6(ctx: TcContext) -> i32 {
    exit::pod6(
        &ctx,
        "pod_ingress6",
        Ok(Verdict::Pass(Stat::PodIngressPassed)),
        ingress6,
    )
}

/// [`pod_ingress`]'s verdict on a packet, with the instance's configuration.
#[inline(always)]
pub(crate) fn ingress(ctx: &TcContext, cfg: &RouterConfig) -> Result<Verdict, DropReason> {
    let passed = Verdict::Pass(Stat::PodIngressPassed);
    let Some(ip) = parse::ipv4(ctx)? else {
        // IPv6 goes on to the IPv6 program when the instance has one; otherwise it reaches
        // the pod as it was.
        if cfg.flags & config_flags::IPV6 != 0 && parse::is_ipv6(ctx) {
            return Ok(Verdict::Next);
        }
        return Ok(passed);
    };
    if ip.daddr.to_ne_bytes() != cfg.pod_ip {
        return Ok(passed);
    }
    let has_fallback = cfg.flags & config_flags::HAS_FALLBACK != 0;

    if icmp::is_error(ctx, &ip)? {
        // An error the client sends about a reply it got (e.g. port unreachable).
        return match icmp::related(ctx, &ip)? {
            Some((emb, entry)) if entry.kind == flow_kind::FORWARD => {
                icmp::translate_error(ctx, &ip, &emb, &entry)?;
                Ok(Verdict::Redirect(cfg.egress_ifindex, Stat::Forwarded))
            }
            _ => Ok(passed),
        };
    }

    let flow = match flow::of(ctx, &ip) {
        Ok(Some(flow)) => flow,
        Ok(None) if has_fallback && ip.proto != proto::ICMP => {
            return Err(DropReason::UnsupportedProtocol);
        }
        Ok(None) => return Ok(passed),
        // A later fragment of a datagram whose first fragment went to the pod itself.
        Err(DropReason::FragmentUnknown) if !has_fallback => return Ok(passed),
        Err(reason) => return Err(reason),
    };
    let hop = Hop::toward_remote(cfg);
    let entry = match conntrack::lookup(&flow.key, &flow.seg) {
        Ct::Forward(entry) => {
            if let Some(verdict) = path::guard(ctx, &ip, &hop)? {
                return Ok(verdict);
            }
            entry
        }
        state @ (Ct::New | Ct::Stale(_) | Ct::Closed(..)) => {
            conntrack::start_over(&flow.key, &state);
            if flow.l4 == L4::None {
                return Err(DropReason::FragmentUnknown);
            }
            let Some(target) = rules::target(cfg, flow.key.proto, flow.key.dport)? else {
                return Ok(passed);
            };
            if target.is_local() {
                // The agent's own listener on the pod IP (metrics, health).
                return Ok(passed);
            }
            if let Some(verdict) = path::guard(ctx, &ip, &hop)? {
                return Ok(verdict);
            }
            *nat::create_flow(&flow.key, &target, &cfg.egress_source, cfg, &flow.seg)?
        }
        // Reply-side entries are keyed by EGRESS_SOURCE, never by the pod IP: whatever this
        // is, it is not a client's flow.
        Ct::Reply(_) | Ct::Local | Ct::Expired => return Ok(passed),
    };
    nat::translate(ctx, cfg, &ip, &flow, &entry)?;
    Ok(Verdict::Redirect(cfg.egress_ifindex, Stat::Forwarded))
}

/// [`ingress`] for IPv6 ([`pod_ingress6`]): client -> remote over IPv6, out in IPv6 from
/// EGRESS_SOURCE's IPv6 address. Neighbour discovery and everything not to the pod's IPv6
/// address reach the pod.
#[inline(always)]
pub(crate) fn ingress6(
    ctx: &TcContext,
    cfg: &RouterConfig,
    cfg6: &RouterConfig6,
) -> Result<Verdict, DropReason> {
    let passed = Verdict::Pass(Stat::PodIngressPassed);
    let Some(ip) = parse6::ipv6(ctx)? else {
        return Ok(passed);
    };
    if ip.daddr != cfg6.pod_ip {
        return Ok(passed);
    }
    let has_fallback = cfg6.flags & config_flags::HAS_FALLBACK != 0;
    if icmp6::is_error(ctx, &ip)? {
        // An error the client sends about a reply it got (Port Unreachable, or Packet Too
        // Big from a client whose link is smaller): to the remote, translated.
        return match icmp6::related(ctx, &ip)? {
            Some((quoted, entry)) if entry.kind == flow_kind::FORWARD => {
                icmp6::translate_error(ctx, &ip, &quoted, &entry)?;
                Ok(Verdict::Redirect(cfg.egress_ifindex, Stat::Forwarded))
            }
            _ => Ok(passed),
        };
    }
    let flow = match flow::of6(ctx, &ip) {
        Ok(Some(flow)) => flow,
        Ok(None) if has_fallback && ip.proto != proto::ICMPV6 => {
            return Err(DropReason::UnsupportedProtocol);
        }
        // ICMPv6 other than echo (neighbour discovery above all) is the pod's.
        Ok(None) => return Ok(passed),
        Err(DropReason::FragmentUnknown) if !has_fallback => return Ok(passed),
        Err(reason) => return Err(reason),
    };
    // A first fragment's ports, for the fragments that follow, when a rule sends the
    // datagram on (so a client cannot fill the table with the pod's own traffic); here,
    // where the stack has room.
    if ip.is_fragment() && rules::sends_on6((cfg, cfg6), flow.key.proto, flow.key.dport) {
        flow.remember_ports6(&ip);
    }
    // The path's limits first, for a packet the rules send on (of a flow or to be one),
    // while little is on the stack: the IPv6 programs have none to spare further on.
    let hop = Hop6::toward_remote(cfg, cfg6);
    if path6::beyond(&ip, &hop)
        && rules::sends_on6((cfg, cfg6), flow.key.proto, flow.key.dport)
        && let Some(verdict) = path6::guard(ctx, &ip, &hop)?
    {
        return Ok(verdict);
    }
    let entry = match conntrack::lookup(&flow.key, &flow.seg) {
        Ct::Forward(entry) => entry,
        state @ (Ct::New | Ct::Stale(_) | Ct::Closed(..)) => {
            conntrack::start_over(&flow.key, &state);
            let Some(target) = rules::target6((cfg, cfg6), flow.key.proto, flow.key.dport)? else {
                return Ok(passed);
            };
            if target.is_local() {
                return Ok(passed);
            }
            *nat::create_flow(&flow.key, &target, &cfg6.egress_source, cfg, &flow.seg)?
        }
        Ct::Reply(_) | Ct::Local | Ct::Expired => return Ok(passed),
    };
    nat::translate6(ctx, (cfg6.mss_clamp, cfg.instance), &ip, &flow, &entry)?;
    Ok(Verdict::Redirect(cfg.egress_ifindex, Stat::Forwarded))
}
