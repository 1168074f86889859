//! Node mode's TC programs: `node_forward` (TC egress of a router pod's host-side
//! interface) and `node_reply` (TC ingress of the uplink), each with its IPv6 twin after it
//! at the hook. They translate with pod mode's code ([`crate::pod`], [`crate::egress`]) and
//! the configuration of the instance the packet belongs to, then send it the node's way:
//! out of the uplink via the instance's EGRESS_GATEWAY, or toward the client along the
//! node's routes.

use core::ptr::copy_nonoverlapping;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        TC_ACT_UNSPEC, bpf_fib_lookup,
    },
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh},
    macros::classifier,
    programs::TcContext,
};
use egress_common::{DropReason, NEXT_HOP_IPV4, NEXT_HOP_IPV6, RouterConfig, RouterConfig6, Stat};

use crate::{
    egress, exit,
    node::maps,
    pod,
    shared::{
        fib, metrics,
        parse::{self, ETH_HLEN, EthHdr, Ipv4Hdr},
        parse6::Ipv6Hdr,
    },
};

const _: () = assert!(size_of::<bpf_fib_lookup>() == size_of::<[u64; 8]>());

/// AF_INET and AF_INET6, for `bpf_fib_lookup`.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// TC egress of a router pod's host-side interface: a client's packet to the pod,
/// translated as `pod_ingress` translates it, with the configuration of the instance
/// behind this interface, and sent out of the uplink; what no rule takes goes on into the
/// pod.
#[classifier]
pub(crate) fn node_forward(ctx: TcContext) -> i32 {
    // SAFETY: reading a field of the context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(cfg) = maps::by_pod(ifindex) else {
        // An interface whose instance is gone (the agent detaches it next).
        return TC_ACT_UNSPEC;
    };
    let len = ctx.len();
    metrics::count(Stat::PodIngressSeen, len);
    let result = pod::ingress(&ctx, cfg);
    exit::trace(&ctx, cfg, "node_forward", &result);
    exit::node(cfg, result, len, |ifindex| redirect(&ctx, cfg, ifindex))
}

/// [`node_forward`] for IPv6, after it at the hook: the IPv6 packets it hands on (of
/// instances with an IPv6 EGRESS_SOURCE), translated as `pod_ingress6` translates them;
/// already counted as seen there.
#[classifier]
pub(crate) fn node_forward6(ctx: TcContext) -> i32 {
    if !parse::is_ipv6(&ctx) {
        return TC_ACT_UNSPEC;
    }
    // SAFETY: reading a field of the context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some((cfg, cfg6)) = maps::by_pod6(ifindex) else {
        return TC_ACT_UNSPEC;
    };
    let len = ctx.len();
    let result = pod::ingress6(&ctx, cfg, cfg6);
    exit::node(cfg, result, len, |ifindex| {
        redirect6(&ctx, cfg, cfg6, ifindex)
    })
}

/// TC ingress of the uplink: a packet to an egress address is the reply of a flow,
/// translated back as `egress_ingress` translates it and sent toward the client, or
/// dropped; the node's own traffic goes on untouched and uncounted.
#[classifier]
pub(crate) fn node_reply(ctx: TcContext) -> i32 {
    let Some(cfg) = maps::by_destination(&ctx) else {
        return TC_ACT_UNSPEC;
    };
    let len = ctx.len();
    metrics::count(Stat::EgressIngressSeen, len);
    let result = egress::ingress(&ctx, cfg);
    exit::trace(&ctx, cfg, "node_reply", &result);
    exit::node(cfg, result, len, |ifindex| redirect(&ctx, cfg, ifindex))
}

/// [`node_reply`] for IPv6, after it at the hook: a packet to an IPv6 egress address,
/// translated back as `egress_ingress6` does; the node's own IPv6 goes on.
#[classifier]
pub(crate) fn node_reply6(ctx: TcContext) -> i32 {
    let Some((cfg, cfg6)) = maps::by_destination6(&ctx) else {
        return TC_ACT_UNSPEC;
    };
    let len = ctx.len();
    metrics::count(Stat::EgressIngressSeen, len);
    let result = egress::ingress6(&ctx, cfg, cfg6);
    exit::node(cfg, result, len, |ifindex| {
        redirect6(&ctx, cfg, cfg6, ifindex)
    })
}

/// [`redirect`] for IPv6, with this CPU's scratch in place of a stack frame: out of the
/// uplink via EGRESS_GATEWAY (or straight to a remote on EGRESS_SOURCE's subnet), or
/// toward the client along the node's routes.
#[inline(never)]
fn redirect6(
    ctx: &TcContext,
    cfg: &RouterConfig,
    cfg6: &RouterConfig6,
    ifindex: u32,
) -> Result<i32, DropReason> {
    let ip = parse::ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)?;
    if ifindex == cfg.egress_ifindex {
        let scratch = maps::NODE_SCRATCH6
            .get_ptr_mut(0)
            .ok_or(DropReason::RedirectFailed)?;
        if cfg6.next_hop[0] == NEXT_HOP_IPV6 && !fib::on_subnet6(ctx, cfg6) {
            return Ok(fib::redirect_via(ifindex, &cfg6.next_hop));
        }
        // SAFETY: this CPU's scratch (a program does not preempt itself on one CPU), 64
        // bytes, of which `struct bpf_redir_neigh` takes 20; bounds checked by ptr_at.
        let hop = unsafe {
            let hop = &mut *scratch.cast::<[u32; 5]>();
            let d = (*ip).daddr;
            *hop = [NEXT_HOP_IPV6, d[0], d[1], d[2], d[3]];
            &*hop
        };
        return Ok(fib::redirect_via(ifindex, hop));
    }
    let params = fib_params()?;
    params.family = AF_INET6;
    // No length (see `redirect`): the kernel checks the skb itself, GSO-aware.
    // SAFETY: bounds checked by ptr_at; copied, not assigned: the compiler makes a
    // `memmove` of an assignment, a call (see `fib_params`).
    unsafe {
        copy_nonoverlapping(
            &raw const (*ip).saddr,
            &raw mut params.__bindgen_anon_3.ipv6_src,
            1,
        );
        copy_nonoverlapping(
            &raw const (*ip).daddr,
            &raw mut params.__bindgen_anon_4.ipv6_dst,
            1,
        );
        params.ifindex = (*ctx.skb.skb).ifindex;
    }
    // SAFETY: a valid context and parameters in a map value.
    let rc = unsafe {
        fib_lookup(
            ctx.skb.skb.cast(),
            &raw mut *params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    deliver(ctx, rc, params)
}

/// This CPU's scratch, zeroed, as a `struct bpf_fib_lookup`.
#[inline(always)]
fn fib_params() -> Result<&'static mut bpf_fib_lookup, DropReason> {
    let scratch = maps::NODE_SCRATCH6
        .get_ptr_mut(0)
        .ok_or(DropReason::RedirectFailed)?;
    // SAFETY: this CPU's scratch (a program does not preempt itself on one CPU), 64 bytes
    // as `bpf_fib_lookup` is; all-zero is a valid one. Word by word and volatile: the
    // compiler makes a `memset` of plain stores, which it emits as a call, one more frame
    // in the chain (see NODE_SCRATCH6).
    unsafe {
        let words = scratch.cast::<u64>();
        for i in 0..8 {
            core::ptr::write_volatile(words.add(i), 0);
        }
        Ok(&mut *scratch.cast::<bpf_fib_lookup>())
    }
}

/// Sends a packet toward the client as `bpf_fib_lookup` found the way (`rc`, `params`).
#[inline(always)]
fn deliver(ctx: &TcContext, rc: i64, params: &bpf_fib_lookup) -> Result<i32, DropReason> {
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let eth = parse::ptr_at::<EthHdr>(ctx, 0)?;
            // SAFETY: bounds checked by ptr_at; copied, not assigned (see `redirect6`).
            unsafe {
                copy_nonoverlapping(&raw const params.dmac, &raw mut (*eth).dst, 1);
                copy_nonoverlapping(&raw const params.smac, &raw mut (*eth).src, 1);
            }
            // SAFETY: plain helper call.
            Ok(unsafe { bpf_redirect(params.ifindex, 0) } as i32)
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            // SAFETY: a null `params` asks the kernel to resolve the next hop itself.
            let action = unsafe { bpf_redirect_neigh(params.ifindex, core::ptr::null_mut(), 0, 0) };
            Ok(action as i32)
        }
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Err(DropReason::TooBig),
        _ => Err(DropReason::NoRouteToClient),
    }
}

/// Sends a translated packet on: out of the uplink toward the remote (`ifindex` is the
/// instance's egress interface), or toward the client along the node's routes (the
/// verdict named the pod's interface, which in pod mode leads to the client). A
/// BPF-to-BPF call, so that its frame is not added to the translation's.
#[inline(never)]
fn redirect(ctx: &TcContext, cfg: &RouterConfig, ifindex: u32) -> Result<i32, DropReason> {
    let ip = parse::ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN)?;
    // SAFETY: bounds checked by ptr_at.
    let (saddr, daddr) = unsafe { ((*ip).saddr, (*ip).daddr) };
    if ifindex == cfg.egress_ifindex {
        let hop = maps::NODE_HOPS
            .get(u32::from(cfg.instance))
            .ok_or(DropReason::Unconfigured)?;
        if hop.on_subnet(daddr.to_ne_bytes()) {
            let direct = [NEXT_HOP_IPV4, daddr, 0, 0, 0];
            return Ok(fib::redirect_via(ifindex, &direct));
        }
        return Ok(fib::redirect_via(ifindex, &hop.next_hop));
    }
    let params = fib_params()?;
    params.family = AF_INET;
    // No length: with one the helper checks it against the MTU, which a GRO aggregate of
    // a download exceeds (every reply dropped, found by the bench's download); without,
    // the kernel checks the skb itself, per segment when it is GSO.
    params.__bindgen_anon_3.ipv4_src = saddr;
    params.__bindgen_anon_4.ipv4_dst = daddr;
    // SAFETY: reading a field of the context.
    params.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: a valid context and parameters in a map value.
    let rc = unsafe {
        fib_lookup(
            ctx.skb.skb.cast(),
            &raw mut *params,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    deliver(ctx, rc, params)
}
