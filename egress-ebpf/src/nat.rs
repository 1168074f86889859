//! DNAT/SNAT: rule lookup, source-port allocation, and rewriting packets in place.
//!
//! The IPv4 header (addresses, TTL, checksum) and ports are written directly; the TCP/UDP
//! checksum goes through `bpf_l4_csum_replace`, which alone knows whether the field holds a
//! full checksum or only the pseudo-header sum (CHECKSUM_PARTIAL, the usual case for
//! packets from a local sender on veth): address changes are folded in with
//! `BPF_F_PSEUDO_HDR`, port and MSS changes without it.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    btf_maps::HashMap,
    helpers::generated::bpf_get_prandom_u32,
    macros::btf_map,
    programs::TcContext,
};
use egress_common::{
    DropReason, FlowEntry, FlowKey, MAX_RULE_ADDRS, MAX_RULES, RouterConfig, RuleAddrs, RuleKey,
    RuleTarget, Stat, flow_kind, proto,
};

use crate::{
    conntrack::{self, Claim},
    csum::Delta,
    metrics,
    parse::{ETH_HLEN, IcmpHdr, Ipv4, Ipv4Hdr, Ports, TCP_CSUM_OFF, UDP_CSUM_OFF, ptr_at},
};

/// Redirect rules: local port and protocol on the pod IP -> remote address and port.
#[btf_map]
static RULES: HashMap<RuleKey, RuleTarget, { MAX_RULES as usize }> = HashMap::new();

/// The current addresses of rules that send to a name (DNS proxy mode).
#[btf_map]
static RULE_ADDRS: HashMap<RuleKey, RuleAddrs, { MAX_RULES as usize }> = HashMap::new();

/// How many translated ports are tried before a new flow is dropped.
const NAT_TRIES: u32 = 32;

/// Where a new flow from the pod interface goes: its rule, the fallback, or nowhere. A rule
/// that sends to a name takes one of the name's current addresses at random, so new
/// connections spread over all of them; established ones keep theirs in conntrack.
#[inline(always)]
pub fn rule_for(
    cfg: &RouterConfig,
    proto: u8,
    dport: u16,
) -> Result<Option<RuleTarget>, DropReason> {
    if proto == proto::TCP || proto == proto::UDP {
        let key = RuleKey {
            port: dport,
            proto,
            _pad: 0,
        };
        // SAFETY: read-only copy of a live value.
        if let Some(mut target) = RULES.get_ptr(key).map(|p| unsafe { *p }) {
            if target.by_name() {
                target.remote_ip = pick_addr(&key)?;
            }
            return Ok(Some(target));
        }
    }
    if cfg.flags & egress_common::config_flags::HAS_FALLBACK != 0 {
        return Ok(Some(RuleTarget {
            remote_ip: cfg.fallback_ip,
            remote_port: dport,
            rule_id: 0,
            flags: 0,
        }));
    }
    Ok(None)
}

/// One of the current addresses of a name rule, at random.
#[inline(always)]
fn pick_addr(key: &RuleKey) -> Result<[u8; 4], DropReason> {
    let addrs = RULE_ADDRS.get_ptr(key).ok_or(DropReason::Unresolved)?;
    // SAFETY: a live map value; `len` is read once and bounded below.
    let len = unsafe { (*addrs).len };
    if len == 0 || len > MAX_RULE_ADDRS as u32 {
        return Err(DropReason::Unresolved);
    }
    // Multiply-shift maps 32 random bits onto 0..len without a division, and the verifier
    // follows its bounds (it knows nothing of a modulo's result, and LLVM drops a mask it
    // can prove redundant).
    // SAFETY: no arguments, no side effects.
    let index = ((u64::from(unsafe { bpf_get_prandom_u32() }) * u64::from(len)) >> 32) as usize;
    // SAFETY: `index` < MAX_RULE_ADDRS, inside the live value.
    Ok(unsafe { (*addrs).addrs[index] })
}

/// Creates both conntrack entries of a new flow from the pod interface and returns its
/// forward entry, which records `tcp_flags` of the packet that opened it. The client's source port (or ICMP id) is kept when the translated tuple
/// is free, else ports from the configured range are probed from a random start.
#[inline(always)]
pub fn create_flow(
    key: &FlowKey,
    target: &RuleTarget,
    cfg: &RouterConfig,
    tcp_flags: u8,
    now: u64,
) -> Result<*mut FlowEntry, DropReason> {
    let icmp = key.proto == proto::ICMP;
    let reply = FlowEntry {
        saddr: key.daddr,
        daddr: key.saddr,
        sport: key.dport,
        dport: key.sport,
        rule_id: target.rule_id,
        kind: flow_kind::REPLY,
        tcp_flags: 0,
        last_seen_ns: now,
        created_ns: now,
    };
    let min = u32::from(cfg.nat_port_min);
    let span = u32::from(cfg.nat_port_max).saturating_sub(min) + 1;
    // SAFETY: no arguments, no side effects.
    let start = unsafe { bpf_get_prandom_u32() } % span;
    let mut port = key.sport;
    let mut tries = 0;
    let claimed = loop {
        let reply_key = FlowKey {
            saddr: target.remote_ip,
            daddr: cfg.egress_source,
            sport: if icmp { port } else { target.remote_port },
            dport: port,
            proto: key.proto,
            _pad: [0; 3],
        };
        match conntrack::claim(&reply_key, &reply, key)? {
            Claim::Claimed => break true,
            Claim::Ours => break false,
            Claim::Taken => {}
        }
        if tries >= NAT_TRIES {
            return Err(DropReason::NatExhausted);
        }
        metrics::count(Stat::NatRetries, 0);
        port = (min + (start + tries) % span) as u16;
        tries += 1;
    };
    let forward = FlowEntry {
        saddr: cfg.egress_source,
        daddr: target.remote_ip,
        sport: port,
        dport: if icmp { port } else { target.remote_port },
        rule_id: target.rule_id,
        kind: flow_kind::FORWARD,
        tcp_flags,
        last_seen_ns: now,
        created_ns: now,
    };
    let reply_key = conntrack::peer_key(key, &forward);
    let entry = conntrack::commit(key, &forward, &reply_key, claimed)?;
    metrics::count(Stat::FlowsCreated, 0);
    Ok(entry)
}

/// What follows the IPv4 header of a packet being rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP or UDP with its header (unfragmented or first fragment).
    Ports,
    /// ICMP echo request or reply: the identifier plays the port.
    Echo,
    /// A later fragment: addresses only.
    None,
}

/// Rewrites addresses and ports to those of `entry`, decrements the TTL, and fixes the
/// checksums. `mss_delta` is a change already written into the TCP options (MSS clamp) that
/// the TCP checksum must account for.
#[inline(always)]
pub fn rewrite(
    ctx: &TcContext,
    ip: &Ipv4,
    l4: L4,
    entry: &FlowEntry,
    mut l4_delta: Delta,
) -> Result<(), DropReason> {
    let new_saddr = u32::from_ne_bytes(entry.saddr);
    let new_daddr = u32::from_ne_bytes(entry.daddr);

    let hdr = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN)?;
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

    match l4 {
        L4::None => Ok(()),
        L4::Echo => {
            let icmp = ptr_at::<IcmpHdr>(ctx, ip.l4)?;
            // SAFETY: bounds checked by ptr_at.
            let icmp = unsafe { &mut *icmp };
            let id = entry.sport.to_be();
            l4_delta.u16(icmp.id, id);
            icmp.id = id;
            // ICMP has no pseudo header and is never CHECKSUM_PARTIAL.
            icmp.check = l4_delta.apply(icmp.check);
            Ok(())
        }
        L4::Ports => {
            let ports = ptr_at::<Ports>(ctx, ip.l4)?;
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
            let (off, mangled0) = if ip.proto == proto::TCP {
                (ip.l4 + TCP_CSUM_OFF, 0)
            } else {
                (ip.l4 + UDP_CSUM_OFF, u64::from(BPF_F_MARK_MANGLED_0))
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
