//! Node mode (`egress_common::node`): the programs of one node agent serve every instance
//! on the node. A client's packet to a router pod is caught at the TC egress of the pod's
//! host-side interface (`node_forward`), before it enters the pod, translated by the same
//! code as in pod mode ([`crate::pod`]) with that instance's configuration, and sent out of
//! the uplink toward the instance's EGRESS_GATEWAY. A reply on the uplink (`node_reply`)
//! is translated back ([`crate::egress`]) and sent toward the client along the node's own
//! routes. XDP on the uplink (`node_xdp`) answers ARP for the egress addresses and drops
//! traffic to them that is part of no flow; the addresses are never the node stack's.

use core::ptr::copy_nonoverlapping;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        bpf_fib_lookup, xdp_action,
    },
    btf_maps::{Array, HashMap, PerCpuArray},
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh},
    macros::btf_map,
    programs::{TcContext, XdpContext},
};
use egress_common::{
    DropReason, FlowKey, NEXT_HOP_IPV4, NEXT_HOP_IPV6, NODE_INSTANCES_MAX, NODE_STATS_LEN,
    NODE_STATS_PER_INSTANCE, NodeHop, NodeUplink, PacketCount, RouterConfig, RouterConfig6, Stat,
    node_stat, proto,
};

use crate::{
    config,
    ctmaps::Family,
    fib, metrics,
    parse::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, EthHdr, Ipv4Hdr, Ports, ptr_at},
    parse6::Ipv6Hdr,
};

/// A router pod's host-side interface -> its instance.
#[btf_map]
static NODE_PODS: HashMap<u32, u32, { NODE_INSTANCES_MAX as usize }> = HashMap::new();

/// EGRESS_SOURCE -> its instance.
#[btf_map]
static NODE_SOURCES: HashMap<[u8; 4], u32, { NODE_INSTANCES_MAX as usize }> = HashMap::new();

/// EGRESS_SOURCE's IPv6 address -> its instance.
#[btf_map]
pub(crate) static NODE_SOURCES6: HashMap<[u8; 16], u32, { NODE_INSTANCES_MAX as usize }> =
    HashMap::new();

/// This CPU's scratch for the way out: a `struct bpf_fib_lookup`, or in its first 20 bytes
/// a `struct bpf_redir_neigh`. The IPv6 programs have no stack to spare for either, and in
/// [`redirect`]'s frame the lookup made `node_forward`'s deepest call chain too deep for
/// Linux 6.1, which counts each frame of a chain in 32-byte steps (later kernels, with the
/// JIT, in 16).
#[btf_map]
static NODE_SCRATCH6: PerCpuArray<[u64; 8], 1> = PerCpuArray::new();

/// This CPU's scratch, zeroed, as a `struct bpf_fib_lookup`.
#[inline(always)]
fn fib_params() -> Result<&'static mut bpf_fib_lookup, DropReason> {
    let scratch = NODE_SCRATCH6
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

const _: () = assert!(size_of::<bpf_fib_lookup>() == size_of::<[u64; 8]>());

/// Each instance's way out of the uplink, at its number.
#[btf_map]
static NODE_HOPS: Array<NodeHop, { NODE_INSTANCES_MAX as usize + 1 }> = Array::new();

/// The uplink's MAC and whether to answer ARP.
#[btf_map]
pub(crate) static NODE_UPLINK: Array<NodeUplink, 1> = Array::new();

/// Per-instance counters (`egress_common::node_stat`).
#[btf_map]
static NODE_STATS: PerCpuArray<PacketCount, { NODE_STATS_LEN as usize }> = PerCpuArray::new();

/// Counts a packet of length `len` on instance `instance`'s counter `slot`.
#[inline(always)]
pub(crate) fn count(instance: u32, slot: u32, len: u32) {
    if let Some(c) = NODE_STATS.get_ptr_mut(instance * NODE_STATS_PER_INSTANCE + slot) {
        // SAFETY: this CPU's slot of a preallocated array; a program does not preempt
        // itself on one CPU.
        let c = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += u64::from(len);
    }
}

/// AF_INET and AF_INET6, for `bpf_fib_lookup`.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const ETH_P_ARP: u16 = 0x0806;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// The configuration of the instance whose router pod is behind host-side interface
/// `ifindex` (the interface this packet leaves through).
#[inline(always)]
pub(crate) fn by_pod(ifindex: u32) -> Option<&'static RouterConfig> {
    // SAFETY: a live value, read once.
    let instance = unsafe { *NODE_PODS.get_ptr(ifindex)? };
    config::get_at(instance)
}

/// The configuration of the instance whose EGRESS_SOURCE this IPv4 packet is addressed to,
/// if it is one.
#[inline(always)]
pub(crate) fn by_destination(ctx: &TcContext) -> Option<&'static RouterConfig> {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok()?;
    // SAFETY: bounds checked by ptr_at.
    if u16::from_be(unsafe { (*eth).proto }) != ETH_P_IP {
        return None;
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN).ok()?;
    // SAFETY: as above.
    let daddr = unsafe { (*ip).daddr }.to_ne_bytes();
    // SAFETY: a live value, read once.
    let instance = unsafe { *NODE_SOURCES.get_ptr(daddr)? };
    config::get_at(instance)
}

/// The configuration of the instance behind host-side interface `ifindex`, with its IPv6
/// half, if it has one.
#[inline(always)]
pub(crate) fn by_pod6(ifindex: u32) -> Option<(&'static RouterConfig, &'static RouterConfig6)> {
    // SAFETY: a live value, read once.
    let instance = unsafe { *NODE_PODS.get_ptr(ifindex)? };
    Some((config::get_at(instance)?, config::get6_at(instance)?))
}

/// The configuration (with its IPv6 half) of the instance whose IPv6 EGRESS_SOURCE this
/// IPv6 packet is addressed to, if it is one.
#[inline(always)]
pub(crate) fn by_destination6(
    ctx: &TcContext,
) -> Option<(&'static RouterConfig, &'static RouterConfig6)> {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok()?;
    // SAFETY: bounds checked by ptr_at.
    if u16::from_be(unsafe { (*eth).proto }) != ETH_P_IPV6 {
        return None;
    }
    let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN).ok()?;
    // SAFETY: bounds checked by ptr_at; the key is read from the packet (no stack).
    let daddr = unsafe { &*(&raw const (*ip).daddr).cast::<[u8; 16]>() };
    // SAFETY: a live value, read once.
    let instance = unsafe { *NODE_SOURCES6.get_ptr(daddr)? };
    Some((config::get_at(instance)?, config::get6_at(instance)?))
}

/// [`redirect`] for IPv6, with this CPU's scratch in place of a stack frame: out of the
/// uplink via EGRESS_GATEWAY (or straight to a remote on EGRESS_SOURCE's subnet), or
/// toward the client along the node's routes.
#[inline(never)]
pub(crate) fn redirect6(
    ctx: &TcContext,
    cfg: &RouterConfig,
    cfg6: &RouterConfig6,
    ifindex: u32,
) -> Result<i32, DropReason> {
    let ip = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)?;
    if ifindex == cfg.egress_ifindex {
        let scratch = NODE_SCRATCH6
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

/// Sends a packet toward the client as `bpf_fib_lookup` found the way (`rc`, `params`).
#[inline(always)]
fn deliver(ctx: &TcContext, rc: i64, params: &bpf_fib_lookup) -> Result<i32, DropReason> {
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            let eth = ptr_at::<EthHdr>(ctx, 0)?;
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
pub(crate) fn redirect(
    ctx: &TcContext,
    cfg: &RouterConfig,
    ifindex: u32,
) -> Result<i32, DropReason> {
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN)?;
    // SAFETY: bounds checked by ptr_at.
    let (saddr, daddr) = unsafe { ((*ip).saddr, (*ip).daddr) };
    if ifindex == cfg.egress_ifindex {
        let hop = NODE_HOPS
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

/// The uplink's XDP program: ARP for the egress addresses answered, traffic to them that
/// is part of no flow dropped; everything else passes.
#[inline(always)]
pub(crate) fn xdp(ctx: &XdpContext) -> u32 {
    let Some(eth) = xdp_ptr::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked by xdp_ptr.
    match u16::from_be(unsafe { (*eth).proto }) {
        ETH_P_ARP => arp(ctx),
        ETH_P_IP => ipv4(ctx),
        ETH_P_IPV6 => crate::node6::xdp(ctx),
        _ => xdp_action::XDP_PASS,
    }
}

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
fn arp(ctx: &XdpContext) -> u32 {
    let (Some(eth), Some(arp)) = (xdp_ptr::<EthHdr>(ctx, 0), xdp_ptr::<Arp>(ctx, ETH_HLEN)) else {
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
        || NODE_SOURCES.get_ptr(arp.tpa).is_none()
    {
        return xdp_action::XDP_PASS;
    }
    let Some(uplink) = NODE_UPLINK.get(0) else {
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

/// TCP and UDP to an egress address must be the reply of a flow: an entry keyed by its
/// tuple in either conntrack table. Anything else to an egress address (ICMP, fragments)
/// goes on to `node_reply`, which judges it fully.
#[inline(always)]
fn ipv4(ctx: &XdpContext) -> u32 {
    let Some(ip) = xdp_ptr::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked by xdp_ptr.
    let ip = unsafe { &*ip };
    let daddr = ip.daddr.to_ne_bytes();
    // SAFETY: a live value, read once.
    let Some(instance) = NODE_SOURCES.get_ptr(daddr).map(|i| unsafe { *i }) else {
        return xdp_action::XDP_PASS;
    };
    let len = (ctx.data_end() - ctx.data()) as u32;
    let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
    let fragment = u16::from_be(ip.frag_off) & 0x3fff != 0;
    if (ip.proto != proto::TCP && ip.proto != proto::UDP) || fragment || ihl < 20 {
        metrics::count(Stat::XdpPassed, len);
        return xdp_action::XDP_PASS;
    }
    let Some(ports) = xdp_ptr::<Ports>(ctx, ETH_HLEN + ihl) else {
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

/// TCP or UDP to instance `instance`'s egress address (`key`, as the reply's conntrack key):
/// on to the TC program if it belongs to a flow in either table, else dropped here.
#[inline(always)]
pub(crate) fn judge<A: Family>(key: &FlowKey<A>, instance: u32, len: u32) -> u32 {
    if A::answered().get_ptr(key).is_some() || A::unanswered().get_ptr(key).is_some() {
        metrics::count(Stat::XdpPassed, len);
        xdp_action::XDP_PASS
    } else {
        metrics::count_drop(DropReason::UnsolicitedEarly, len);
        count(instance, node_stat::drop(DropReason::UnsolicitedEarly), len);
        xdp_action::XDP_DROP
    }
}

/// A pointer to a `T` at `offset` of the frame, if the frame holds it.
#[inline(always)]
pub(crate) fn xdp_ptr<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut T)
}
