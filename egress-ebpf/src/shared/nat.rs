//! DNAT/SNAT: source-port allocation for new flows, and rewriting packets in place.
//!
//! The IPv4 header (addresses, TTL, checksum) and ports are written directly; the TCP/UDP
//! checksum goes through `bpf_l4_csum_replace`, which alone knows whether the field holds a
//! full checksum or only the pseudo-header sum (CHECKSUM_PARTIAL, the usual case for
//! packets from a local sender on veth): address changes are folded in with
//! `BPF_F_PSEUDO_HDR`, port and MSS changes without it.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    btf_maps::lpm_trie::Key,
    programs::TcContext,
};
use egress_common::{
    DropReason, FALLBACK6_RULE_ID, FlowEntry, FlowEntry6, FlowKey, RouterConfig, RuleTarget, Stat,
    config_flags, csum::Delta, flow::Addr, flow_kind, node_stat, proto,
};

use crate::shared::{
    conntrack::{self, Family, Table},
    ctmaps::NewFlow,
    flow::{Flow, L4},
    metrics,
    parse::{self, ETH_HLEN, IcmpHdr, Ipv4, Ipv4Hdr, Ports, TCP_CSUM_OFF, UDP_CSUM_OFF},
    parse6::{self, Ipv6, Ipv6Hdr},
    tcp::{self, Receiver, Seg},
    tuple::{self, Claim},
};

/// How many translated ports are tried before a new flow is dropped.
const NAT_TRIES: u32 = 32;

/// Creates both conntrack entries of a new flow from the pod interface and returns its
/// forward entry, which records the TCP segment that opened it. The client's
/// source port (or ICMP id) folded into the configured range is tried first (kept when
/// inside it); when that tuple is taken, ports of the range are probed from a start that
/// is a keyed hash of the flow ([`first_port`]). Both choices are deterministic, so whichever
/// CPU (re)creates a flow picks the same translation.
#[inline(always)]
pub(crate) fn create_flow<A: Family>(
    key: &FlowKey<A>,
    target: &RuleTarget<A>,
    source: &A,
    cfg: &RouterConfig,
    seg: &Seg,
) -> Result<&'static FlowEntry<A>, DropReason> {
    // A one-entry array always has its entry; the verifier wants the check.
    let new = A::new_flow().ok_or(DropReason::Unconfigured)?;
    // Only a client network's addresses open flows (pod mode): the longest prefix that
    // holds the source decides.
    if cfg.flags & config_flags::CHECK_SOURCES != 0 {
        new.client = Key::new(A::BITS, key.saddr);
        if A::clients().get(&new.client).copied() != Some(1) {
            return Err(DropReason::BadSource);
        }
    }
    conntrack::admit(key.saddr)?;
    let now = conntrack::now();
    let icmp = key.proto == A::ICMP;
    new.reply = FlowEntry::back_to(key, target.rule_id, flow_kind::REPLY, 0, now);
    let min = u32::from(cfg.nat_port_min);
    let span = u32::from(cfg.nat_port_max).saturating_sub(min) + 1;
    let start = first_port(key, target, cfg.nat_secret) % span;
    // First the client's port folded into the range: itself when inside it (outside, it may
    // be one of the ports the pod's own sockets take on EGRESS_SOURCE, the ephemeral
    // range), else the port as far into the range. One port per client port, the same
    // every time: a client whose ephemeral range is no wider than the NAT range never has
    // two of its connections share a translated tuple, so the remote's TIME_WAIT never
    // meets one connection's tuple reused by another, whose TCP timestamps (offset per
    // connection) it may reject as old (PAWS) until the client retries.
    let sport = u32::from(key.sport);
    // (sport - min) mod span, without a branch (a branch here doubles what the verifier
    // walks after it): min mod span < span, so the sum stays positive.
    let folded = (sport + span - min % span) % span;
    let mut port = (min + folded) as u16;
    // The reply tuple: remote -> EGRESS_SOURCE, to the translated port (and from it, for
    // an echo's id). Written whole once; each probe changes only the port, so the
    // addresses (32 bytes in IPv6) are not held in registers through the search.
    new.reply_key = FlowKey {
        saddr: target.remote_ip,
        daddr: *source,
        sport: target.remote_port,
        dport: 0,
        proto: key.proto,
        _pad: [0; 3],
    };
    let set_port = |new: &mut NewFlow<A>, port: u16| {
        new.reply_key.dport = port;
        if icmp {
            new.reply_key.sport = port;
        }
    };
    // The client's own port may be taken over from a flow that is over; the probes after
    // it take free ports only. (One claim with the takeover, outside the loop: inside it,
    // the verifier would walk both kinds of claim on every try.)
    set_port(new, port);
    let mut claim = tuple::claim::<true, _>(&new.reply_key, &new.reply, key, now)?;
    // A `while` whose test is the claim's outcome: the compiler makes it a loop whose body
    // is entered at its top, which every kernel's verifier takes. Linux before 6.7 (6.6.3
    // in the stable series) refuses a loop entered in its middle, as the compiler laid out
    // a `loop` that tested the outcome first ("back-edge from insn N to N+1").
    let mut tries = 0;
    while matches!(claim, Claim::Taken) {
        if tries >= NAT_TRIES {
            return Err(DropReason::NatExhausted);
        }
        metrics::count(Stat::NatRetries, 0);
        port = (min + (start + tries) % span) as u16;
        tries += 1;
        set_port(new, port);
        claim = tuple::claim::<false, _>(&new.reply_key, &new.reply, key, now)?;
    }
    let (claimed, table) = match claim {
        Claim::Claimed => (true, Table::Unreplied),
        Claim::Ours(table) => (false, table),
        Claim::Taken => return Err(DropReason::NatExhausted),
    };
    new.forward = FlowEntry::new(
        &new.reply_key.reversed(),
        target.rule_id,
        flow_kind::FORWARD,
        0,
        now,
    );
    if key.proto == proto::TCP {
        new.forward.tcp_flags |= tcp::track(&mut new.forward, seg, true, Receiver::default);
    }
    let (entry, created) = tuple::commit(key, &new.forward, &new.reply_key, claimed, table)?;
    if created {
        metrics::count(Stat::FlowsCreated, 0);
    }
    Ok(entry)
}

/// A keyed hash of a flow's client and remote ends (RFC 6056, algorithm 3): where the
/// search for its translated port starts. The finaliser is murmur3's. A BPF-to-BPF call:
/// inlined, its registers took 40 bytes of pod_ingress6's stack, which Linux 6.1 (each
/// frame of a call chain in 32-byte steps) then found too deep.
#[inline(never)]
fn first_port<A: Addr>(key: &FlowKey<A>, target: &RuleTarget<A>, secret: u32) -> u32 {
    let mut h = key.saddr.mix(secret);
    h = h.wrapping_mul(0x9e37_79b1) ^ ((u32::from(key.sport) << 16) | u32::from(key.proto));
    h = target.remote_ip.mix(h.wrapping_mul(0x85eb_ca6b));
    h = h.wrapping_mul(0xc2b2_ae35) ^ u32::from(target.remote_port);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The rewrite of a tracked packet in either direction: TTL, MSS clamp, fragment
/// bookkeeping, addresses and ports, checksums, and the rule's counter.
#[inline(always)]
pub(crate) fn translate(
    ctx: &TcContext,
    cfg: &RouterConfig,
    ip: &Ipv4,
    flow: &Flow,
    entry: &FlowEntry,
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
    flow.remember_ports(ip);
    if flow.l4 == L4::None {
        metrics::count(Stat::FragmentsTranslated, 0);
    }
    rewrite(ctx, ip, flow.l4, entry, mss)?;
    if entry.rule_id == 0 && cfg.instance != 0 {
        // A node instance's fallback: its own counter, not rule 0 of every instance.
        metrics::count_instance(u32::from(cfg.instance), node_stat::FALLBACK, ctx.len());
    } else {
        metrics::count_rule(entry.rule_id, ctx.len());
    }
    Ok(())
}

/// Rewrites the IPv4 header's addresses to those of `entry`, decrements the TTL, and fixes
/// the header checksum. Returns the change of the addresses, which the L4 checksums that
/// cover them (the pseudo-header) must take in too.
#[inline(always)]
pub(crate) fn rewrite_ipv4(ctx: &TcContext, entry: &FlowEntry) -> Result<Delta, DropReason> {
    let new_saddr = u32::from_ne_bytes(entry.saddr);
    let new_daddr = u32::from_ne_bytes(entry.daddr);
    let hdr = parse::ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN)?;
    // SAFETY: bounds checked by ptr_at; the packet is writable in TC.
    let hdr = unsafe { &mut *hdr };
    let mut addrs = Delta::default();
    addrs.u32(hdr.saddr, new_saddr);
    addrs.u32(hdr.daddr, new_daddr);
    let mut l3 = addrs;
    // TTL and protocol share a 16-bit word of the checksum.
    let ttl_word = u16::from_ne_bytes([hdr.ttl, hdr.proto]);
    let ttl = hdr.ttl.wrapping_sub(1);
    l3.u16(ttl_word, u16::from_ne_bytes([ttl, hdr.proto]));
    hdr.saddr = new_saddr;
    hdr.daddr = new_daddr;
    hdr.ttl = ttl;
    hdr.check = l3.apply(hdr.check);
    Ok(addrs)
}

/// Rewrites addresses and ports to those of `entry`, decrements the TTL, and fixes the
/// checksums. `mss_delta` is a change already written into the TCP options (MSS clamp) that
/// the TCP checksum must account for.
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    ip: &Ipv4,
    l4: L4,
    entry: &FlowEntry,
    l4_delta: Delta,
) -> Result<(), DropReason> {
    let addrs = rewrite_ipv4(ctx, entry)?;
    rewrite_l4(ctx, ip.l4, ip.proto, l4, entry, addrs, l4_delta)
}

/// The transport part of a rewrite at `l4`: ports (or the echo id) to those of `entry`,
/// and the checksum, which takes `addrs` (the addresses' change) through the pseudo-header
/// and `l4_delta` (a change already written, the MSS clamp) too. An echo's checksum covers
/// a pseudo-header in ICMPv6 and none in ICMP.
#[inline(always)]
fn rewrite_l4<A: Family>(
    ctx: &TcContext,
    l4_off: usize,
    protocol: u8,
    l4: L4,
    entry: &FlowEntry<A>,
    addrs: Delta,
    mut l4_delta: Delta,
) -> Result<(), DropReason> {
    match l4 {
        L4::None => Ok(()),
        L4::Echo => {
            let icmp = parse::ptr_at::<IcmpHdr>(ctx, l4_off)?;
            // SAFETY: bounds checked by ptr_at.
            let icmp = unsafe { &mut *icmp };
            let id = entry.sport.to_be();
            l4_delta.u16(icmp.id, id);
            if A::ICMP == proto::ICMPV6 {
                l4_delta.add(addrs);
            }
            icmp.id = id;
            // Echo messages are checksummed by the sender's stack, never CHECKSUM_PARTIAL.
            icmp.check = l4_delta.apply(icmp.check);
            Ok(())
        }
        L4::Ports => {
            let ports = parse::ptr_at::<Ports>(ctx, l4_off)?;
            // SAFETY: bounds checked by ptr_at.
            let ports = unsafe { &mut *ports };
            let sport = entry.sport.to_be();
            let dport = entry.dport.to_be();
            if ports.sport != sport {
                l4_delta.u16(ports.sport, sport);
                ports.sport = sport;
            }
            if ports.dport != dport {
                l4_delta.u16(ports.dport, dport);
                ports.dport = dport;
            }
            // A UDP checksum of 0 is "none" over IPv4 and stays 0; over IPv6 it is
            // mandatory, and a 0 is updated like any other value (the receiver drops it).
            let (off, mangled0) = if protocol == proto::TCP {
                (l4_off + TCP_CSUM_OFF, 0)
            } else if A::ICMP == proto::ICMP {
                (l4_off + UDP_CSUM_OFF, u64::from(BPF_F_MARK_MANGLED_0))
            } else {
                (l4_off + UDP_CSUM_OFF, 0)
            };
            ctx.l4_csum_replace(
                off,
                0,
                u64::from(addrs.wsum()),
                u64::from(BPF_F_PSEUDO_HDR) | mangled0,
            )
            .map_err(|_| DropReason::Truncated)?;
            if !l4_delta.is_zero() {
                ctx.l4_csum_replace(off, 0, u64::from(l4_delta.wsum()), mangled0)
                    .map_err(|_| DropReason::Truncated)?;
            }
            Ok(())
        }
    }
}

/// [`translate`] for IPv6: hop limit, MSS clamp (`mss_clamp`: the IPv6 one), addresses
/// and ports, the transport checksum (IPv6 has no header checksum; every transport
/// checksum, ICMPv6's included, covers the pseudo-header), and the rule's counter.
#[inline(always)]
pub(crate) fn translate6(
    ctx: &TcContext,
    (mss_clamp, instance): (u16, u8),
    ip: &Ipv6,
    flow: &Flow<[u8; 16]>,
    entry: &FlowEntry6,
) -> Result<(), DropReason> {
    if ip.hop_limit <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let mss = if ip.proto == proto::TCP && flow.l4 == L4::Ports {
        tcp::clamp_mss(ctx, ip.l4, mss_clamp)?
    } else {
        Delta::default()
    };
    if !mss.is_zero() {
        metrics::count(Stat::MssClamped, 0);
    }
    // A first fragment's ports are remembered by the caller, where it has the stack.
    if flow.l4 == L4::None {
        metrics::count(Stat::FragmentsTranslated, 0);
    }
    let hdr = parse::ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)?;
    // SAFETY: bounds checked by ptr_at; the packet is writable in TC.
    let hdr = unsafe { &mut *hdr };
    let (saddr, daddr) = (
        parse6::addr_words(entry.saddr),
        parse6::addr_words(entry.daddr),
    );
    let mut addrs = Delta::default();
    for i in 0..4 {
        addrs.u32(hdr.saddr[i], saddr[i]);
        addrs.u32(hdr.daddr[i], daddr[i]);
    }
    hdr.saddr = saddr;
    hdr.daddr = daddr;
    hdr.hop_limit -= 1;
    rewrite_l4(ctx, ip.l4, ip.proto, flow.l4, entry, addrs, mss)?;
    if entry.rule_id == FALLBACK6_RULE_ID && instance != 0 {
        // A node instance's fallback: its own counter (see `translate`).
        metrics::count_instance(u32::from(instance), node_stat::FALLBACK6, ctx.len());
    } else {
        metrics::count_rule(entry.rule_id, ctx.len());
    }
    Ok(())
}
