//! egress-router data plane. This file holds only the entry programs and the verdict they
//! record; each concern lives in its own module (see ../shared/design.md).
//!
//! - `pod_ingress` (TC ingress of the pod interface): client packets to the pod IP that match
//!   a rule or the fallback are DNATed and SNATed and redirected to the egress interface.
//! - `uplink_ingress` (TC ingress of the egress interface): replies are translated back and
//!   redirected to the pod interface; the pod's own flows pass; anything else addressed to
//!   EGRESS_SOURCE is dropped.
//! - `uplink_egress` (TC egress of the egress interface): tracks connections the pod opens.
#![no_std]
#![no_main]

mod conntrack;
mod csum;
mod fib;
mod icmp;
mod lab;
mod metrics;
mod nat;
mod parse;
mod tcp;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    btf_maps::Array,
    macros::{btf_map, classifier},
    programs::TcContext,
};
use egress_common::{
    DropReason, FlowKey, FragKey, FragPorts, RouterConfig, Stat, config_flags, flow_kind, proto,
};

use aya_log_ebpf::debug;

use crate::{
    conntrack::Touch,
    csum::Delta,
    nat::L4,
    parse::{ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, IcmpHdr, Ipv4, Ports, ptr_at},
};

/// The instance's addresses and interfaces, written by the loader before attaching.
#[btf_map]
static CONFIG: Array<RouterConfig, 1> = Array::new();

/// What happens to a packet; recorded once, at the program's single exit.
enum Verdict {
    /// Hand to the stack, counted on a path counter.
    Pass(Stat),
    /// Send out of `ifindex` with neighbour resolution, counted on a path counter.
    Redirect(u32, Stat),
}

/// Records the verdict (or the drop and its reason) and returns the TC action.
#[inline(always)]
fn finish(result: Result<Verdict, DropReason>, len: u32) -> i32 {
    match result {
        Ok(Verdict::Pass(stat)) => {
            metrics::count(stat, len);
            TC_ACT_OK
        }
        Ok(Verdict::Redirect(ifindex, stat)) => {
            let action = fib::redirect_neigh(ifindex);
            if action == TC_ACT_REDIRECT {
                metrics::count(stat, len);
            } else {
                metrics::count_drop(DropReason::RedirectFailed, len);
            }
            action
        }
        Err(reason) => {
            metrics::count_drop(reason, len);
            TC_ACT_SHOT
        }
    }
}

/// With EGRESS_ROUTER_DEBUG, one aya-log event per packet: program, verdict, and the
/// addresses the packet carries when it leaves the program.
#[inline(always)]
fn trace(ctx: &TcContext, cfg: &RouterConfig, prog: &str, result: &Result<Verdict, DropReason>) {
    if cfg.flags & config_flags::DEBUG == 0 {
        return;
    }
    let (saddr, daddr) = match ptr_at::<parse::Ipv4Hdr>(ctx, parse::ETH_HLEN) {
        // SAFETY: bounds checked by ptr_at.
        Ok(ip) => unsafe { (u32::from_be((*ip).saddr), u32::from_be((*ip).daddr)) },
        Err(_) => (0, 0),
    };
    match result {
        Ok(Verdict::Pass(_)) => debug!(ctx, "{}: pass {:i} -> {:i}", prog, saddr, daddr),
        Ok(Verdict::Redirect(ifindex, _)) => debug!(
            ctx,
            "{}: translated {:i} -> {:i}, out of ifindex {}", prog, saddr, daddr, *ifindex
        ),
        Err(reason) => debug!(
            ctx,
            "{}: drop {:i} -> {:i}, reason {}", prog, saddr, daddr, *reason as u32
        ),
    }
}

/// The shared body of the entry programs: one CONFIG lookup per packet, the program's
/// verdict (or `unconfigured` before the loader has written the configuration), the debug
/// event, and the single exit that records it.
#[inline(always)]
fn run(
    ctx: &TcContext,
    seen: Stat,
    prog: &str,
    unconfigured: Result<Verdict, DropReason>,
    program: impl FnOnce(&TcContext, &RouterConfig) -> Result<Verdict, DropReason>,
) -> i32 {
    let len = ctx.len();
    metrics::count(seen, len);
    let result = match CONFIG
        .get(0)
        .filter(|cfg| cfg.egress_source != [0; 4] && cfg.pod_ifindex != 0)
    {
        Some(cfg) => {
            let result = program(ctx, cfg);
            trace(ctx, cfg, prog, &result);
            result
        }
        None => unconfigured,
    };
    finish(result, len)
}

/// The L4 part of a packet, as conntrack keys it.
struct Flow {
    key: FlowKey,
    l4: L4,
    tcp_flags: u8,
}

/// Reads the ports (or echo id) of a packet into a conntrack key. `Ok(None)` for ICMP that
/// is neither echo nor error, and protocols without ports.
#[inline(always)]
fn flow_of(ctx: &TcContext, ip: &Ipv4) -> Result<Option<Flow>, DropReason> {
    let mut key = FlowKey {
        saddr: ip.saddr.to_ne_bytes(),
        daddr: ip.daddr.to_ne_bytes(),
        sport: 0,
        dport: 0,
        proto: ip.proto,
        _pad: [0; 3],
    };
    if ip.is_later_fragment() {
        if ip.proto != proto::TCP && ip.proto != proto::UDP {
            return Ok(None);
        }
        let fkey = frag_key(ip);
        let Some(ports) = conntrack::fragment_ports(&fkey) else {
            return Err(DropReason::FragmentUnknown);
        };
        key.sport = ports.sport;
        key.dport = ports.dport;
        return Ok(Some(Flow {
            key,
            l4: L4::None,
            tcp_flags: 0,
        }));
    }
    match ip.proto {
        proto::TCP | proto::UDP => {
            let min = if ip.proto == proto::TCP { 20 } else { 8 };
            parse::ensure(ctx, ip.l4 + min)?;
            let ports = ptr_at::<Ports>(ctx, ip.l4)?;
            // SAFETY: bounds checked by ptr_at.
            let ports = unsafe { &*ports };
            key.sport = u16::from_be(ports.sport);
            key.dport = u16::from_be(ports.dport);
            let tcp_flags = if ip.proto == proto::TCP {
                tcp::flags(ctx, ip.l4)?
            } else {
                0
            };
            Ok(Some(Flow {
                key,
                l4: L4::Ports,
                tcp_flags,
            }))
        }
        proto::ICMP => {
            parse::ensure(ctx, ip.l4 + 8)?;
            let icmp = ptr_at::<IcmpHdr>(ctx, ip.l4)?;
            // SAFETY: bounds checked by ptr_at.
            let icmp = unsafe { &*icmp };
            if icmp.kind != ICMP_ECHO_REQUEST && icmp.kind != ICMP_ECHO_REPLY {
                return Ok(None);
            }
            let id = u16::from_be(icmp.id);
            key.sport = id;
            key.dport = id;
            Ok(Some(Flow {
                key,
                l4: L4::Echo,
                tcp_flags: 0,
            }))
        }
        _ => Ok(None),
    }
}

#[inline(always)]
fn frag_key(ip: &Ipv4) -> FragKey {
    FragKey {
        saddr: ip.saddr.to_ne_bytes(),
        daddr: ip.daddr.to_ne_bytes(),
        id: ip.id,
        proto: ip.proto,
        _pad: 0,
    }
}

/// A first fragment's ports are remembered for the fragments that follow.
#[inline(always)]
fn note_first_fragment(ip: &Ipv4, flow: &Flow) {
    if ip.is_fragment() && !ip.is_later_fragment() && flow.l4 == L4::Ports {
        conntrack::remember_fragment(
            &frag_key(ip),
            &FragPorts {
                sport: flow.key.sport,
                dport: flow.key.dport,
            },
        );
    }
}

#[inline(always)]
fn is_icmp_error(ctx: &TcContext, ip: &Ipv4) -> Result<bool, DropReason> {
    if ip.proto != proto::ICMP || ip.is_later_fragment() {
        return Ok(false);
    }
    parse::ensure(ctx, ip.l4 + 8)?;
    let icmp = ptr_at::<IcmpHdr>(ctx, ip.l4)?;
    // SAFETY: bounds checked by ptr_at.
    Ok(icmp::is_error(unsafe { (*icmp).kind }))
}

/// TC ingress of the pod interface: client -> remote.
#[classifier]
pub fn pod_ingress(ctx: TcContext) -> i32 {
    run(
        &ctx,
        Stat::PodIngressSeen,
        "pod_ingress",
        Ok(Verdict::Pass(Stat::PodIngressPassed)),
        try_pod_ingress,
    )
}

#[inline(always)]
fn try_pod_ingress(ctx: &TcContext, cfg: &RouterConfig) -> Result<Verdict, DropReason> {
    let passed = Verdict::Pass(Stat::PodIngressPassed);
    let Some(ip) = parse::ipv4(ctx)? else {
        return Ok(passed);
    };
    if ip.daddr.to_ne_bytes() != cfg.pod_ip {
        return Ok(passed);
    }
    let has_fallback = cfg.flags & config_flags::HAS_FALLBACK != 0;

    if is_icmp_error(ctx, &ip)? {
        // An error the client sends about a reply it got (e.g. port unreachable).
        let Some(emb) = icmp::embedded(ctx, &ip)? else {
            return Ok(passed);
        };
        let Some(entry) = conntrack::lookup(&emb.key) else {
            return Ok(passed);
        };
        // SAFETY: a live map value, copied.
        let entry = unsafe { *entry };
        if entry.kind != flow_kind::FORWARD {
            return Ok(passed);
        }
        if ip.ttl <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        icmp::translate_error(ctx, &ip, &emb, &entry)?;
        metrics::count(Stat::IcmpErrorsTranslated, 0);
        return Ok(Verdict::Redirect(cfg.egress_ifindex, Stat::Forwarded));
    }

    let flow = match flow_of(ctx, &ip) {
        Ok(Some(flow)) => flow,
        Ok(None) if has_fallback && ip.proto != proto::ICMP => {
            return Err(DropReason::UnsupportedProtocol);
        }
        Ok(None) => return Ok(passed),
        // A later fragment of a datagram whose first fragment went to the pod itself.
        Err(DropReason::FragmentUnknown) if !has_fallback => return Ok(passed),
        Err(reason) => return Err(reason),
    };
    let now = conntrack::now();
    let entry = match conntrack::lookup(&flow.key) {
        Some(entry) if conntrack::touch(&flow.key, entry, flow.tcp_flags, now) == Touch::Ok => {
            entry
        }
        found => {
            if found.is_some() {
                // Its reply tuple went to another flow after an eviction: start afresh.
                conntrack::forget(&flow.key);
            }
            if flow.l4 == L4::None {
                return Err(DropReason::FragmentUnknown);
            }
            let Some(target) = nat::rule_for(cfg, flow.key.proto, flow.key.dport)? else {
                return Ok(passed);
            };
            if target.is_local() {
                // The agent's own listener on the pod IP (metrics, health).
                return Ok(passed);
            }
            if ip.ttl <= 1 {
                return Err(DropReason::TtlExceeded);
            }
            nat::create_flow(&flow.key, &target, cfg, flow.tcp_flags, now)?
        }
    };
    // SAFETY: a live map value, copied.
    let entry = unsafe { *entry };
    translate(ctx, cfg, &ip, &flow, &entry)?;
    Ok(Verdict::Redirect(cfg.egress_ifindex, Stat::Forwarded))
}

/// The common tail of both directions: TTL, MSS clamp, fragment bookkeeping, the rewrite,
/// and the rule's counter.
#[inline(always)]
fn translate(
    ctx: &TcContext,
    cfg: &RouterConfig,
    ip: &Ipv4,
    flow: &Flow,
    entry: &egress_common::FlowEntry,
) -> Result<(), DropReason> {
    if ip.ttl <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let mss = if ip.proto == proto::TCP && flow.l4 == L4::Ports {
        tcp::clamp_mss(ctx, ip.l4, cfg.mss_clamp)?
    } else {
        Delta::default()
    };
    if !mss.is_zero() {
        metrics::count(Stat::MssClamped, 0);
    }
    note_first_fragment(ip, flow);
    if flow.l4 == L4::None {
        metrics::count(Stat::FragmentsTranslated, 0);
    }
    nat::rewrite(ctx, ip, flow.l4, entry, mss)?;
    metrics::count_rule(entry.rule_id, ctx.len());
    Ok(())
}

/// TC ingress of the egress interface: remote -> client, and the pod's own flows.
#[classifier]
pub fn uplink_ingress(ctx: TcContext) -> i32 {
    run(
        &ctx,
        Stat::UplinkIngressSeen,
        "uplink_ingress",
        Err(DropReason::Unconfigured),
        try_uplink_ingress,
    )
}

#[inline(always)]
fn try_uplink_ingress(ctx: &TcContext, cfg: &RouterConfig) -> Result<Verdict, DropReason> {
    let passed = Verdict::Pass(Stat::UplinkIngressPassed);
    // ARP and everything else that is not IPv4 is the stack's business.
    let Some(ip) = parse::ipv4(ctx)? else {
        return Ok(passed);
    };
    let daddr = ip.daddr.to_ne_bytes();
    if daddr != cfg.egress_source {
        // Broadcast and multicast are not a way through the pod; unicast to any other
        // address would be routed by the pod, which it must not do for this network.
        if daddr[0] >= 224 || daddr == [255; 4] {
            return Ok(passed);
        }
        return Err(DropReason::NotEgressSource);
    }

    if is_icmp_error(ctx, &ip)? {
        let Some(emb) = icmp::embedded(ctx, &ip)? else {
            return Err(DropReason::Unsolicited);
        };
        let Some(entry) = conntrack::lookup(&emb.key) else {
            return Err(DropReason::Unsolicited);
        };
        // SAFETY: a live map value, copied.
        let entry = unsafe { *entry };
        if entry.kind == flow_kind::LOCAL {
            return Ok(passed);
        }
        if entry.kind != flow_kind::REPLY {
            return Err(DropReason::Unsolicited);
        }
        if ip.ttl <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        icmp::translate_error(ctx, &ip, &emb, &entry)?;
        metrics::count(Stat::IcmpErrorsTranslated, 0);
        return Ok(Verdict::Redirect(cfg.pod_ifindex, Stat::Replied));
    }

    let Some(flow) = flow_of(ctx, &ip)? else {
        return Err(DropReason::Unsolicited);
    };
    let Some(entry) = conntrack::lookup(&flow.key) else {
        return Err(DropReason::Unsolicited);
    };
    let now = conntrack::now();
    // SAFETY: a live map value, read.
    let snapshot = unsafe { *entry };
    if conntrack::expired(&flow.key, &snapshot, now) {
        return Err(DropReason::FlowExpired);
    }
    if snapshot.kind == flow_kind::LOCAL {
        conntrack::touch(&flow.key, entry, flow.tcp_flags, now);
        note_first_fragment(&ip, &flow);
        return Ok(passed);
    }
    if snapshot.kind != flow_kind::REPLY {
        return Err(DropReason::Unsolicited);
    }
    if conntrack::touch(&flow.key, entry, flow.tcp_flags, now) == Touch::Stale {
        return Err(DropReason::Unsolicited);
    }
    translate(ctx, cfg, &ip, &flow, &snapshot)?;
    Ok(Verdict::Redirect(cfg.pod_ifindex, Stat::Replied))
}

/// TC egress of the egress interface: tracks the connections the pod opens itself, so their
/// replies pass `uplink_ingress`. Packets this data plane redirected are left alone.
#[classifier]
pub fn uplink_egress(ctx: TcContext) -> i32 {
    run(
        &ctx,
        Stat::UplinkEgressSeen,
        "uplink_egress",
        Ok(Verdict::Pass(Stat::UplinkEgressPassed)),
        try_uplink_egress,
    )
}

#[inline(always)]
fn try_uplink_egress(ctx: &TcContext, cfg: &RouterConfig) -> Result<Verdict, DropReason> {
    let passed = Verdict::Pass(Stat::UplinkEgressPassed);
    // SAFETY: reading a field of the context.
    let from = unsafe { (*ctx.skb.skb).ingress_ifindex };
    if from == cfg.pod_ifindex {
        return Ok(passed);
    }
    let Some(ip) = parse::ipv4(ctx)? else {
        return Ok(passed);
    };
    if ip.saddr.to_ne_bytes() != cfg.egress_source || ip.is_later_fragment() {
        return Ok(passed);
    }
    if is_icmp_error(ctx, &ip)? {
        return Ok(passed);
    }
    let Some(flow) = flow_of(ctx, &ip)? else {
        return Ok(passed);
    };
    let key = flow.key;
    let reply_key = FlowKey {
        saddr: key.daddr,
        daddr: key.saddr,
        sport: key.dport,
        dport: key.sport,
        proto: key.proto,
        _pad: [0; 3],
    };
    conntrack::track_local(&reply_key, flow.tcp_flags, conntrack::now());
    Ok(Verdict::Pass(Stat::UplinkEgressLocal))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
