//! How the entry programs end: one exit per program kind, which records the packet's
//! verdict once (a path counter, or the drop under its reason) and returns the TC action.
//!
//! - [`pod`]: the pod mode's IPv4 programs (`pod_ingress`, `egress_ingress`,
//!   `egress_egress`), with the configuration lookup and the debug event before it;
//! - [`pod6`]: the pod mode's IPv6 programs, likewise, and the next hop of a redirect out
//!   of the egress interface;
//! - [`node`]: node mode's TC programs, whose redirects go the node's way and whose
//!   instance counts the verdict too.
//!
//! `node_xdp` returns its XDP action where it decides, and `ct_sweep` is never attached.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC},
    programs::TcContext,
};
use aya_log_ebpf::debug;
use egress_common::{DropReason, RouterConfig, RouterConfig6, Stat, config_flags, node_stat};

use crate::shared::{config, fib, metrics, metrics::Verdict, parse};

/// The pod mode's IPv4 programs: one CONFIG lookup per packet, the program's verdict (or
/// `unconfigured` before the loader has written the configuration), the debug event, and
/// the exit that records it.
#[inline(always)]
pub(crate) fn pod(
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
    // The data plane's claim of EGRESS_SOURCE (shared/claim.rs) is a frame it wrote whole,
    // addressed already: sent as it is, with no neighbour to resolve. (Here, not in
    // `record`: the IPv6 programs, which never send one, have no stack for the branch.)
    if let Ok(Verdict::Redirect(ifindex, Stat::ClaimDefended)) = result {
        return redirected(fib::send(ifindex), Stat::ClaimDefended, len);
    }
    record(result, len)
}

/// [`pod`] for the IPv6 programs: anything else goes on to the next program at the hook
/// uncounted, and an IPv6 frame was counted as seen by the IPv4 program before it (the
/// first at the hook), so only its verdict is counted here. The IPv6 half of the
/// configuration is needed too.
#[inline(always)]
pub(crate) fn pod6(
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
                debug!(ctx, "{}: IPv6, verdict {}", prog, code(&result));
            }
            result
        }
        _ => unconfigured,
    };
    record6(ctx, result, len)
}

/// Node mode's TC programs: a redirect goes the node's way (`redirect`:
/// `node::tc::redirect` or `node::tc::redirect6`), and the instance counts the verdict, a
/// drop under its reason.
#[inline(always)]
pub(crate) fn node(
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
    metrics::count_instance(u32::from(cfg.instance), slot, len);
    action
}

/// [`record`] for the IPv6 programs: a packet to the egress network for a remote off
/// EGRESS_SOURCE's subnet leaves via EGRESS_GATEWAY as the next hop, given to the helper,
/// which spares the kernel an IPv6 route lookup per packet (the bench measured about 15 %
/// more small packets per second with it). A BPF-to-BPF call: pod_ingress6 has no stack
/// left for its registers, and this frame is its own (the verifier adds it to the
/// caller's, which stays under the limit).
#[inline(never)]
fn record6(ctx: &TcContext, result: Result<Verdict, DropReason>, len: u32) -> i32 {
    if let Ok(Verdict::Redirect(ifindex, stat)) = result
        && let (Some(cfg), Some(cfg6)) = (config::get(), config::get6())
        && ifindex == cfg.egress_ifindex
        && cfg6.next_hop[0] == egress_common::NEXT_HOP_IPV6
        && !fib::on_subnet6(ctx, cfg6)
    {
        return redirected(fib::redirect_via(ifindex, &cfg6.next_hop), stat, len);
    }
    record(result, len)
}

/// Records the verdict (or the drop and its reason) and returns the TC action.
#[inline(always)]
fn record(result: Result<Verdict, DropReason>, len: u32) -> i32 {
    match result {
        Ok(Verdict::Pass(stat)) => {
            metrics::count(stat, len);
            TC_ACT_OK
        }
        Ok(Verdict::Redirect(ifindex, stat)) => redirected(fib::redirect_neigh(ifindex), stat, len),
        Ok(Verdict::Next) => TC_ACT_UNSPEC,
        Err(reason) => {
            metrics::count_drop(reason, len);
            TC_ACT_SHOT
        }
    }
}

/// Counts a redirect by its outcome, `action` (the helper's).
#[inline(always)]
fn redirected(action: i32, stat: Stat, len: u32) -> i32 {
    if action == TC_ACT_REDIRECT {
        metrics::count(stat, len);
    } else {
        metrics::count_drop(DropReason::RedirectFailed, len);
    }
    action
}

/// A verdict as one number for the debug event: 0 pass, 1 redirect, 2 next, 100 + the drop
/// reason.
#[inline(always)]
fn code(result: &Result<Verdict, DropReason>) -> u32 {
    match result {
        Ok(Verdict::Pass(_)) => 0,
        Ok(Verdict::Redirect(..)) => 1,
        Ok(Verdict::Next) => 2,
        Err(reason) => 100 + *reason as u32,
    }
}

/// With EGRESS_ROUTER_DEBUG, one aya-log event per packet: program, verdict, and the
/// addresses the packet carries when it leaves the program.
#[inline(always)]
pub(crate) fn trace(
    ctx: &TcContext,
    cfg: &RouterConfig,
    prog: &str,
    result: &Result<Verdict, DropReason>,
) {
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
