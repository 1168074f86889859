//! ICMPv6 errors about tracked flows (Destination Unreachable, Packet Too Big, Time
//! Exceeded, Parameter Problem): the outer header and the quoted packet are translated
//! together, as for IPv4 ([`crate::shared::icmp`]), so that path-MTU discovery works through the
//! router (IPv6 routers never fragment: a client learns the path's MTU only from Packet
//! Too Big). Unlike ICMP's, ICMPv6's checksum covers a pseudo-header of the outer addresses.

use aya_ebpf::programs::TcContext;
use egress_common::{DropReason, FlowEntry6, FlowKey6, Stat, csum::Delta, proto};

use crate::shared::{
    conntrack, flow, metrics,
    parse::{self, IcmpHdr, Ports, TCP_CSUM_OFF, UDP_CSUM_OFF},
    parse6::{self, IPV6_HLEN, Ipv6, Ipv6Hdr},
};

/// ICMPv6 error types (RFC 4443): 1 to 4.
const ICMPV6_ERROR_LAST: u8 = 4;

/// Whether the packet is an ICMPv6 error, which quotes the start of the offending packet.
#[inline(always)]
pub(crate) fn is_error(ctx: &TcContext, ip: &Ipv6) -> Result<bool, DropReason> {
    if ip.proto != proto::ICMPV6 || ip.is_later_fragment() {
        return Ok(false);
    }
    parse::ensure(ctx, ip.l4 + 8)?;
    // Type and code together: a one-byte read at a variable offset gives the verifier no
    // usable range check.
    let head = parse::ptr_at::<[u8; 2]>(ctx, ip.l4)?;
    // SAFETY: bounds checked by ptr_at.
    let [kind, _code] = unsafe { *head };
    Ok((1..=ICMPV6_ERROR_LAST).contains(&kind))
}

/// The quoted packet of an ICMPv6 error: the conntrack key of the error's direction (the
/// quoted packet went the other way). It starts 8 bytes into the error ([`quoted_l3`]).
pub(crate) struct Quoted {
    pub(crate) key: FlowKey6,
}

/// Offsets of the quoted IPv6 header and its transport header, from the error's `l4`.
/// Recomputed where they are used rather than kept: an offset spilled to the stack comes
/// back to the verifier without its bounds.
#[inline(always)]
fn quoted_l3(ip: &Ipv6) -> (usize, usize) {
    let l3 = ip.l4 + 8;
    (l3, l3 + IPV6_HLEN)
}

/// Locates the quoted packet and keys the error's direction, if conntrack could know it:
/// a quoted TCP, UDP or echo header right after the quoted fixed header (the router's own
/// packets carry no extension headers).
#[inline(always)]
pub(crate) fn quoted(ctx: &TcContext, ip: &Ipv6) -> Result<Option<Quoted>, DropReason> {
    let (l3, l4) = quoted_l3(ip);
    parse::ensure(ctx, l4 + 8)?;
    let inner = parse::ptr_at::<Ipv6Hdr>(ctx, l3)?;
    // SAFETY: bounds checked by ptr_at.
    let inner = unsafe { &*inner };
    let (saddr, daddr, next) = (inner.saddr, inner.daddr, inner.nexthdr);
    let Some((sport, dport, _)) = flow::ids::<true>(ctx, next, l4)? else {
        return Ok(None);
    };
    // The error's direction: the quoted packet's tuple, reversed.
    let key = FlowKey6 {
        saddr: parse6::addr_bytes(daddr),
        daddr: parse6::addr_bytes(saddr),
        sport: dport,
        dport: sport,
        proto: next,
        _pad: [0; 3],
    };
    Ok(Some(Quoted { key }))
}

/// Rewrites an ICMPv6 error with the entry of its direction: the outer addresses become the
/// entry's, the quoted packet becomes the one the other side sent (its source is the
/// entry's destination), the quoted transport checksum and the error's own are updated,
/// and the hop limit is decremented.
#[inline(always)]
pub(crate) fn translate_error(
    ctx: &TcContext,
    ip: &Ipv6,
    quoted: &Quoted,
    entry: &FlowEntry6,
) -> Result<(), DropReason> {
    if ip.hop_limit <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let (l3, l4) = quoted_l3(ip);
    let (new_saddr, new_daddr) = (
        parse6::addr_words(entry.saddr),
        parse6::addr_words(entry.daddr),
    );
    // The error's checksum: every changed word of the message, and the pseudo-header.
    let mut icmp = Delta::default();
    // The quoted transport checksum: its pseudo-header (the quoted addresses) and ports.
    let mut inner_l4 = Delta::default();
    {
        let inner = parse::ptr_at::<Ipv6Hdr>(ctx, l3)?;
        // SAFETY: bounds checked by ptr_at.
        let inner = unsafe { &mut *inner };
        for i in 0..4 {
            inner_l4.u32(inner.saddr[i], new_daddr[i]);
            inner_l4.u32(inner.daddr[i], new_saddr[i]);
        }
        inner.saddr = new_daddr;
        inner.daddr = new_saddr;
    }
    icmp.add(inner_l4);
    let iproto = quoted.key.proto;
    let (sport, dport) = (entry.dport.to_be(), entry.sport.to_be());
    let check_off = if iproto == proto::ICMPV6 {
        // A quoted echo: its identifier, and its checksum (which covers its pseudo-header).
        let echo = parse::ptr_at::<IcmpHdr>(ctx, l4)?;
        // SAFETY: bounds checked by ptr_at.
        let echo = unsafe { &mut *echo };
        let mut d = Delta::default();
        d.u16(echo.id, sport);
        echo.id = sport;
        icmp.add(d);
        inner_l4.add(d);
        l4 + 2
    } else {
        let ports = parse::ptr_at::<Ports>(ctx, l4)?;
        // SAFETY: bounds checked by ptr_at.
        let ports = unsafe { &mut *ports };
        let mut d = Delta::default();
        d.u16(ports.sport, sport);
        d.u16(ports.dport, dport);
        ports.sport = sport;
        ports.dport = dport;
        icmp.add(d);
        inner_l4.add(d);
        l4 + if iproto == proto::TCP {
            TCP_CSUM_OFF
        } else {
            UDP_CSUM_OFF
        }
    };
    // The quoted transport checksum, when the error quotes it (Packet Too Big quotes as
    // much as fits in the minimum MTU, so usually it does).
    if let Ok(check) = parse::ptr_at::<u16>(ctx, check_off) {
        // SAFETY: bounds checked by ptr_at.
        let check = unsafe { &mut *check };
        let new = inner_l4.apply(*check);
        icmp.u16(*check, new);
        *check = new;
    }
    // The outer header, and its part of the error's pseudo-header.
    let hdr = parse::ptr_at::<Ipv6Hdr>(ctx, crate::shared::parse::ETH_HLEN)?;
    // SAFETY: bounds checked by ptr_at; the packet is writable in TC.
    let hdr = unsafe { &mut *hdr };
    for i in 0..4 {
        icmp.u32(hdr.saddr[i], new_saddr[i]);
        icmp.u32(hdr.daddr[i], new_daddr[i]);
    }
    hdr.saddr = new_saddr;
    hdr.daddr = new_daddr;
    hdr.hop_limit -= 1;
    let error = parse::ptr_at::<IcmpHdr>(ctx, ip.l4)?;
    // SAFETY: bounds checked by ptr_at.
    let error = unsafe { &mut *error };
    error.check = icmp.apply(error.check);
    metrics::count(Stat::IcmpErrorsTranslated, 0);
    Ok(())
}

/// The entry of an ICMPv6 error's direction, if conntrack knows the flow it quotes.
#[inline(always)]
pub(crate) fn related(
    ctx: &TcContext,
    ip: &Ipv6,
) -> Result<Option<(Quoted, FlowEntry6)>, DropReason> {
    let Some(q) = quoted(ctx, ip)? else {
        return Ok(None);
    };
    Ok(conntrack::related(&q.key).map(|entry| (q, entry)))
}
