//! ICMP errors about tracked flows: the outer header and the embedded one are translated
//! together, so the client's path-MTU discovery and error reporting work through the router.
//!
//! An error carries the start of the packet that caused it. That packet went the opposite
//! way of the error, so the error's own direction is the inverse of the embedded tuple:
//! that inverse is the conntrack key, and the entry found says how to rewrite both headers.

use aya_ebpf::programs::TcContext;
use egress_common::{DropReason, FlowEntry, FlowKey, Stat, csum::Delta, proto};

use crate::shared::{
    conntrack, flow, metrics, nat,
    parse::{
        self, ICMP_DEST_UNREACH, ICMP_PARAMETER_PROBLEM, ICMP_TIME_EXCEEDED, IcmpHdr, Ipv4,
        Ipv4Hdr, Ports, TCP_CSUM_OFF, UDP_CSUM_OFF,
    },
};

/// Whether the packet is an ICMP error, which embeds the start of the offending packet.
#[inline(always)]
pub(crate) fn is_error(ctx: &TcContext, ip: &Ipv4) -> Result<bool, DropReason> {
    if ip.proto != proto::ICMP || ip.is_later_fragment() {
        return Ok(false);
    }
    parse::ensure(ctx, ip.l4 + 8)?;
    let icmp = parse::ptr_at::<IcmpHdr>(ctx, ip.l4)?;
    // SAFETY: bounds checked by ptr_at.
    let kind = unsafe { (*icmp).kind };
    Ok(kind == ICMP_DEST_UNREACH || kind == ICMP_TIME_EXCEEDED || kind == ICMP_PARAMETER_PROBLEM)
}

/// The embedded packet of an ICMP error and the conntrack entry of the error's direction,
/// if conntrack knows the flow.
#[inline(always)]
pub(crate) fn related(
    ctx: &TcContext,
    ip: &Ipv4,
) -> Result<Option<(Embedded, FlowEntry)>, DropReason> {
    let Some(emb) = embedded(ctx, ip)? else {
        return Ok(None);
    };
    Ok(conntrack::related(&emb.key).map(|entry| (emb, entry)))
}

/// An ICMP error's embedded packet, located and keyed.
pub(crate) struct Embedded {
    /// Offset of the embedded IPv4 header.
    l3: usize,
    /// Offset of the embedded L4 header.
    l4: usize,
    /// The conntrack key of the error's direction.
    key: FlowKey,
}

/// Locates the embedded packet of the ICMP error at `ip.l4` and builds the conntrack key of
/// the error's direction. `Ok(None)`: nothing conntrack could know about.
#[inline(always)]
fn embedded(ctx: &TcContext, ip: &Ipv4) -> Result<Option<Embedded>, DropReason> {
    let l3 = ip.l4 + 8;
    parse::ensure(ctx, l3 + 20)?;
    let inner = parse::ptr_at::<Ipv4Hdr>(ctx, l3)?;
    // SAFETY: bounds checked by ptr_at.
    let inner = unsafe { &*inner };
    let ihl = usize::from(inner.version_ihl & 0x0f) * 4;
    if ihl < 20 {
        return Err(DropReason::MalformedIpv4);
    }
    let (isaddr, idaddr, iproto) = (inner.saddr, inner.daddr, inner.proto);
    let l4 = l3 + ihl;
    parse::ensure(ctx, l4 + 8)?;
    let Some((sport, dport, _)) = flow::ids::<false>(ctx, iproto, l4)? else {
        return Ok(None);
    };
    // The embedded packet went the other way: the error's direction is its reverse.
    let sent = FlowKey {
        saddr: isaddr.to_ne_bytes(),
        daddr: idaddr.to_ne_bytes(),
        sport,
        dport,
        proto: iproto,
        _pad: [0; 3],
    };
    Ok(Some(Embedded {
        l3,
        l4,
        key: sent.reversed(),
    }))
}

/// Rewrites an ICMP error with the entry of its direction: the outer addresses become the
/// entry's, the embedded packet becomes the one the other side sent (its source is the
/// entry's destination), every checksum on the way is updated, and the TTL is decremented.
#[inline(always)]
pub(crate) fn translate_error(
    ctx: &TcContext,
    ip: &Ipv4,
    emb: &Embedded,
    entry: &FlowEntry,
) -> Result<(), DropReason> {
    if ip.ttl <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let (new_saddr, new_daddr) = (
        u32::from_ne_bytes(entry.saddr),
        u32::from_ne_bytes(entry.daddr),
    );
    // Embedded packet: source <- entry.daddr/dport, destination <- entry.saddr/sport.
    let mut icmp_delta = Delta::default();
    let mut inner_l4_delta = Delta::default();
    {
        let inner = parse::ptr_at::<Ipv4Hdr>(ctx, emb.l3)?;
        // SAFETY: bounds checked by ptr_at.
        let inner = unsafe { &mut *inner };
        let mut d = Delta::default();
        d.u32(inner.saddr, new_daddr);
        d.u32(inner.daddr, new_saddr);
        inner_l4_delta.add(d);
        let check = d.apply(inner.check);
        icmp_delta.add(d);
        icmp_delta.u16(inner.check, check);
        inner.saddr = new_daddr;
        inner.daddr = new_saddr;
        inner.check = check;
    }
    let iproto = emb.key.proto;
    if iproto == proto::ICMP {
        let echo = parse::ptr_at::<IcmpHdr>(ctx, emb.l4)?;
        // SAFETY: bounds checked by ptr_at.
        let echo = unsafe { &mut *echo };
        let id = entry.dport.to_be();
        let mut d = Delta::default();
        d.u16(echo.id, id);
        let check = d.apply(echo.check);
        icmp_delta.add(d);
        icmp_delta.u16(echo.check, check);
        echo.id = id;
        echo.check = check;
    } else {
        let ports = parse::ptr_at::<Ports>(ctx, emb.l4)?;
        // SAFETY: bounds checked by ptr_at.
        let ports = unsafe { &mut *ports };
        let (sport, dport) = (entry.dport.to_be(), entry.sport.to_be());
        let mut d = Delta::default();
        d.u16(ports.sport, sport);
        d.u16(ports.dport, dport);
        icmp_delta.add(d);
        inner_l4_delta.add(d);
        ports.sport = sport;
        ports.dport = dport;
        // The embedded L4 checksum, when the error quotes it (UDP always does; TCP when
        // more than 8 bytes are quoted). A zero UDP checksum means "none" and stays zero.
        let off = emb.l4
            + if iproto == proto::TCP {
                TCP_CSUM_OFF
            } else {
                UDP_CSUM_OFF
            };
        if let Ok(check) = parse::ptr_at::<u16>(ctx, off) {
            // SAFETY: bounds checked by ptr_at.
            let check = unsafe { &mut *check };
            if !(iproto == proto::UDP && *check == 0) {
                let new = inner_l4_delta.apply(*check);
                icmp_delta.u16(*check, new);
                *check = new;
            }
        }
    }
    {
        let icmp = parse::ptr_at::<IcmpHdr>(ctx, ip.l4)?;
        // SAFETY: bounds checked by ptr_at.
        let icmp = unsafe { &mut *icmp };
        icmp.check = icmp_delta.apply(icmp.check);
    }
    // Outer header: from the entry's source to its destination, TTL decremented.
    nat::rewrite_ipv4(ctx, entry)?;
    metrics::count(Stat::IcmpErrorsTranslated, 0);
    Ok(())
}
