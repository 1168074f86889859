//! egress-router data plane: the entry programs and the single exit that records each
//! packet's verdict. Every concern lives in its own module:
//!
//! | module | concern |
//! |---|---|
//! | `pod` | the pod interface's ingress: client -> remote |
//! | `egress` | the egress interface's ingress (replies, the pod's own flows) and egress |
//! | `parse` | bounds-checked header access |
//! | `parse6` | the IPv6 header and the bounded walk over its extension headers |
//! | `flow` | one parse of a packet's flow: key, ports or echo id, TCP flags |
//! | `frag` | ports of fragments in flight (both families) |
//! | `conntrack` | the two flow tables (answered, unreplied) and the per-client limit; lookups return a state (New, Forward, Reply, Local, Expired, Stale, Closed) |
//! | `ctmaps` | the conntrack maps of each address family (`Family`), and the tables' operations |
//! | `tuple` | a new flow's translated tuple: the atomic claim, the takeover from a flow that is over, the forward entry |
//! | `sweep` | the conntrack GC's sweep (never attached; the agent runs it) |
//! | `rules` | where a new flow goes: rule, name, fallback |
//! | `nat` | source-port allocation (folded, then hashed probes) and the rewrite |
//! | `icmp` | ICMP errors about tracked flows |
//! | `icmp6` | ICMPv6 errors about tracked flows (Packet Too Big above all) |
//! | `path` | the router as a hop over IPv4: Time Exceeded, Fragmentation Needed |
//! | `path6` | the router as a hop over IPv6: Time Exceeded, Packet Too Big |
//! | `budget` | the limit on the router's own ICMP errors |
//! | `tcp` | TCP sequence tracking, which RST and FIN may close a flow, and the MSS clamp |
//! | `fib` | forwarding with `bpf_redirect_neigh` |
//! | `config` | the instance configuration map |
//! | `metrics` | verdicts and per-CPU counters |
//! | `node` | node mode: an instance found from a packet, the way out of the uplink and back toward the client (both families), the uplink's XDP program (ARP responder, early drop) |
//! | `node6` | node mode's XDP program for IPv6: the neighbour discovery responder, the early drop |
//! | `lab` | the benchmarks' reference programs, never attached by the product |
#![no_std]
#![no_main]

mod budget;
mod config;
mod conntrack;
mod ctmaps;
mod egress;
mod fib;
mod flow;
mod frag;
mod icmp;
mod icmp6;
mod lab;
mod metrics;
mod nat;
mod node;
mod node6;
mod parse;
mod parse6;
mod path;
mod path6;
mod pod;
mod rules;
mod sweep;
mod tcp;
mod tuple;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use egress_common::{DropReason, RouterConfig, RouterConfig6, Stat, config_flags, node_stat};

use crate::metrics::Verdict;

/// TC ingress of the pod interface: client -> remote.
#[classifier]
pub(crate) fn pod_ingress(ctx: TcContext) -> i32 {
    run(
        &ctx,
        Stat::PodIngressSeen,
        "pod_ingress",
        Ok(Verdict::Pass(Stat::PodIngressPassed)),
        pod::ingress,
    )
}

/// TC ingress of the egress interface: remote -> client, and the pod's own flows.
#[classifier]
pub(crate) fn egress_ingress(ctx: TcContext) -> i32 {
    run(
        &ctx,
        Stat::EgressIngressSeen,
        "egress_ingress",
        Err(DropReason::Unconfigured),
        egress::ingress,
    )
}

/// TC egress of the egress interface: tracks the connections the pod opens itself.
#[classifier]
pub(crate) fn egress_egress(ctx: TcContext) -> i32 {
    run(
        &ctx,
        Stat::EgressEgressSeen,
        "egress_egress",
        Ok(Verdict::Pass(Stat::EgressEgressPassed)),
        egress::egress,
    )
}

/// TC ingress of the pod interface for IPv6, attached after [`pod_ingress`], which hands
/// it the IPv6 frames.
#[classifier]
pub(crate) fn pod_ingress6(ctx: TcContext) -> i32 {
    run6(
        &ctx,
        "pod_ingress6",
        Ok(Verdict::Pass(Stat::PodIngressPassed)),
        pod::ingress6,
    )
}

/// TC ingress of the egress interface for IPv6, after [`egress_ingress`].
#[classifier]
pub(crate) fn egress_ingress6(ctx: TcContext) -> i32 {
    run6(
        &ctx,
        "egress_ingress6",
        Err(DropReason::Unconfigured),
        egress::ingress6,
    )
}

/// TC egress of the egress interface for IPv6, after [`egress_egress`].
#[classifier]
pub(crate) fn egress_egress6(ctx: TcContext) -> i32 {
    run6(
        &ctx,
        "egress_egress6",
        Ok(Verdict::Pass(Stat::EgressEgressPassed)),
        egress::egress6,
    )
}

/// Node mode: TC egress of a router pod's host-side interface: a client's packet to the
/// pod, translated as `pod_ingress` translates it, with the configuration of the
/// instance behind this interface, and sent out of the uplink; what no rule takes goes
/// on into the pod.
#[classifier]
pub(crate) fn node_forward(ctx: TcContext) -> i32 {
    // SAFETY: reading a field of the context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(cfg) = node::by_pod(ifindex) else {
        // An interface whose instance is gone (the agent detaches it next).
        return TC_ACT_UNSPEC;
    };
    let len = ctx.len();
    metrics::count(Stat::PodIngressSeen, len);
    let result = pod::ingress(&ctx, cfg);
    trace(&ctx, cfg, "node_forward", &result);
    finish_node(cfg, result, len, |ifindex| {
        node::redirect(&ctx, cfg, ifindex)
    })
}

/// Node mode: [`node_forward`] for IPv6, after it at the hook: the IPv6 packets it hands on
/// (of instances with an IPv6 EGRESS_SOURCE), translated as `pod_ingress6` translates them;
/// already counted as seen there.
#[classifier]
pub(crate) fn node_forward6(ctx: TcContext) -> i32 {
    if !parse::is_ipv6(&ctx) {
        return TC_ACT_UNSPEC;
    }
    // SAFETY: reading a field of the context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some((cfg, cfg6)) = node::by_pod6(ifindex) else {
        return TC_ACT_UNSPEC;
    };
    let len = ctx.len();
    let result = pod::ingress6(&ctx, cfg, cfg6);
    finish_node(cfg, result, len, |ifindex| {
        node::redirect6(&ctx, cfg, cfg6, ifindex)
    })
}

/// Node mode: TC ingress of the uplink: a packet to an egress address is the reply of a
/// flow, translated back as `egress_ingress` translates it and sent toward the client, or
/// dropped; the node's own traffic goes on untouched and uncounted.
#[classifier]
pub(crate) fn node_reply(ctx: TcContext) -> i32 {
    let Some(cfg) = node::by_destination(&ctx) else {
        return TC_ACT_UNSPEC;
    };
    let len = ctx.len();
    metrics::count(Stat::EgressIngressSeen, len);
    let result = egress::ingress(&ctx, cfg);
    trace(&ctx, cfg, "node_reply", &result);
    finish_node(cfg, result, len, |ifindex| {
        node::redirect(&ctx, cfg, ifindex)
    })
}

/// Node mode: [`node_reply`] for IPv6, after it at the hook: a packet to an IPv6 egress
/// address, translated back as `egress_ingress6` does; the node's own IPv6 goes on.
#[classifier]
pub(crate) fn node_reply6(ctx: TcContext) -> i32 {
    let Some((cfg, cfg6)) = node::by_destination6(&ctx) else {
        return TC_ACT_UNSPEC;
    };
    let len = ctx.len();
    metrics::count(Stat::EgressIngressSeen, len);
    let result = egress::ingress6(&ctx, cfg, cfg6);
    finish_node(cfg, result, len, |ifindex| {
        node::redirect6(&ctx, cfg, cfg6, ifindex)
    })
}

/// Node mode: XDP on the uplink: the ARP responder for the egress addresses, and the early
/// drop of traffic to them that is part of no flow.
#[xdp]
pub(crate) fn node_xdp(ctx: XdpContext) -> u32 {
    node::xdp(&ctx)
}

/// [`finish`] for the node programs: a redirect goes the node's way (`redirect`:
/// [`node::redirect`] or [`node::redirect6`]), and the instance counts the verdict, a drop
/// under its reason.
#[inline(always)]
fn finish_node(
    cfg: &RouterConfig,
    result: Result<Verdict, DropReason>,
    len: u32,
    redirect: impl FnOnce(u32) -> Result<i32, DropReason>,
) -> i32 {
    let result = match result {
        // IPv6, handed on to node_forward6, which counts it.
        Ok(Verdict::Next) => return TC_ACT_UNSPEC,
        Ok(Verdict::Redirect(ifindex, stat)) => match redirect(ifindex) {
            Ok(TC_ACT_REDIRECT) => {
                let slot = match stat {
                    Stat::Replied => node_stat::REPLIED,
                    Stat::IcmpErrorsSent => node_stat::ICMP_ERRORS,
                    _ => node_stat::FORWARDED,
                };
                Ok((TC_ACT_REDIRECT, stat, slot))
            }
            Ok(_) => Err(DropReason::RedirectFailed),
            Err(reason) => Err(reason),
        },
        // On into the pod, or to the node's stack.
        Ok(Verdict::Pass(stat)) => Ok((TC_ACT_OK, stat, node_stat::PASSED)),
        Err(reason) => Err(reason),
    };
    let (action, slot) = match result {
        Ok((action, stat, slot)) => {
            metrics::count(stat, len);
            (action, slot)
        }
        Err(reason) => {
            metrics::count_drop(reason, len);
            (TC_ACT_SHOT, node_stat::drop(reason))
        }
    };
    node::count(u32::from(cfg.instance), slot, len);
    action
}

/// [`run`] for the IPv6 programs: anything else goes on to the next program at the hook
/// uncounted, and an IPv6 frame was counted as seen by the IPv4 program before it (the
/// first at the hook), so only its verdict is counted here. The IPv6 half of the
/// configuration is needed too.
#[inline(always)]
fn run6(
    ctx: &TcContext,
    prog: &str,
    unconfigured: Result<Verdict, DropReason>,
    program: impl FnOnce(&TcContext, &RouterConfig, &RouterConfig6) -> Result<Verdict, DropReason>,
) -> i32 {
    if !parse::is_ipv6(ctx) {
        return TC_ACT_UNSPEC;
    }
    let len = ctx.len();
    let result = match (config::get(), config::get6()) {
        (Some(cfg), Some(cfg6)) => {
            let result = program(ctx, cfg, cfg6);
            if cfg.flags & config_flags::DEBUG != 0 {
                debug!(ctx, "{}: IPv6, verdict {}", prog, verdict_code(&result));
            }
            result
        }
        _ => unconfigured,
    };
    finish6(ctx, result, len)
}

/// [`finish`] for the IPv6 programs: a packet to the egress network for a remote off
/// EGRESS_SOURCE's subnet leaves via EGRESS_GATEWAY as the next hop, given to the helper,
/// which spares the kernel an IPv6 route lookup per packet (the bench measured about 15 %
/// more small packets per second with it). A BPF-to-BPF call: pod_ingress6 has no stack
/// left for its registers, and this frame is its own (the verifier adds it to the
/// caller's, which stays under the limit).
#[inline(never)]
fn finish6(ctx: &TcContext, result: Result<Verdict, DropReason>, len: u32) -> i32 {
    if let Ok(Verdict::Redirect(ifindex, stat)) = result
        && let (Some(cfg), Some(cfg6)) = (config::get(), config::get6())
        && ifindex == cfg.egress_ifindex
        && cfg6.next_hop[0] == egress_common::NEXT_HOP_IPV6
        && !fib::on_subnet6(ctx, cfg6)
    {
        return finish_redirect(fib::redirect_via(ifindex, &cfg6.next_hop), stat, len);
    }
    finish(result, len)
}

/// A verdict as one number for the debug event: 0 pass, 1 redirect, 100 + the drop reason.
#[inline(always)]
fn verdict_code(result: &Result<Verdict, DropReason>) -> u32 {
    match result {
        Ok(Verdict::Pass(_)) => 0,
        Ok(Verdict::Redirect(..)) => 1,
        Ok(Verdict::Next) => 2,
        Err(reason) => 100 + *reason as u32,
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
    let result = match config::get() {
        Some(cfg) => {
            let result = program(ctx, cfg);
            trace(ctx, cfg, prog, &result);
            result
        }
        None => unconfigured,
    };
    finish(result, len)
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
            finish_redirect(fib::redirect_neigh(ifindex), stat, len)
        }
        Ok(Verdict::Next) => TC_ACT_UNSPEC,
        Err(reason) => {
            metrics::count_drop(reason, len);
            TC_ACT_SHOT
        }
    }
}

/// Counts a redirect by its outcome, `action` (the helper's).
#[inline(always)]
fn finish_redirect(action: i32, stat: Stat, len: u32) -> i32 {
    if action == TC_ACT_REDIRECT {
        metrics::count(stat, len);
    } else {
        metrics::count_drop(DropReason::RedirectFailed, len);
    }
    action
}

/// With EGRESS_ROUTER_DEBUG, one aya-log event per packet: program, verdict, and the
/// addresses the packet carries when it leaves the program.
#[inline(always)]
fn trace(ctx: &TcContext, cfg: &RouterConfig, prog: &str, result: &Result<Verdict, DropReason>) {
    if cfg.flags & config_flags::DEBUG == 0 {
        return;
    }
    let (saddr, daddr) = match parse::ptr_at::<parse::Ipv4Hdr>(ctx, parse::ETH_HLEN) {
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
        Ok(Verdict::Next) => debug!(ctx, "{}: IPv6, to the IPv6 program", prog),
        Err(reason) => debug!(
            ctx,
            "{}: drop {:i} -> {:i}, reason {}", prog, saddr, daddr, *reason as u32
        ),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
