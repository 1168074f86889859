//! One parse of a packet's flow: the conntrack key (addresses, ports or ICMP echo
//! identifier, protocol), what follows the IPv4 header, and the TCP segment conntrack
//! tracks.
//! The ports and echo id of an ICMP error's embedded packet are decoded by the same
//! [`ids`].

use aya_ebpf::programs::TcContext;
use egress_common::{DropReason, FlowKey, flow::Addr, proto};

use crate::shared::{
    frag,
    parse::{self, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, IcmpHdr, Ipv4, Ports},
    parse6::{ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, Ipv6},
    tcp::{self, Seg},
};

/// What follows the IPv4 header of a packet being rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum L4 {
    /// TCP or UDP with its header (unfragmented or first fragment).
    Ports,
    /// ICMP echo request or reply: the identifier plays the port.
    Echo,
    /// A later fragment: addresses only.
    None,
}

/// The L4 part of a packet, as conntrack keys it.
pub(crate) struct Flow<A: Addr = [u8; 4]> {
    pub(crate) key: FlowKey<A>,
    pub(crate) l4: L4,
    /// TCP: flags and sequence numbers (zero for other protocols).
    pub(crate) seg: Seg,
}

/// The flow ids of the L4 header at `l4` (which the caller made linear): TCP and UDP ports,
/// or an ICMP echo's identifier as both (ICMPv6's with `V6`). `Ok(None)`: ICMP other than
/// echo, or a protocol without ports.
#[inline(always)]
pub(crate) fn ids<const V6: bool>(
    ctx: &TcContext,
    protocol: u8,
    l4: usize,
) -> Result<Option<(u16, u16, L4)>, DropReason> {
    let (icmp, request, reply) = if V6 {
        (proto::ICMPV6, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
    } else {
        (proto::ICMP, ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
    };
    match protocol {
        proto::TCP | proto::UDP => {
            let ports = parse::ptr_at::<Ports>(ctx, l4)?;
            // SAFETY: bounds checked by ptr_at.
            let ports = unsafe { &*ports };
            Ok(Some((
                u16::from_be(ports.sport),
                u16::from_be(ports.dport),
                L4::Ports,
            )))
        }
        p if p == icmp => {
            // ICMPv6's header has the same layout.
            let hdr = parse::ptr_at::<IcmpHdr>(ctx, l4)?;
            // SAFETY: bounds checked by ptr_at.
            let hdr = unsafe { &*hdr };
            if hdr.kind != request && hdr.kind != reply {
                return Ok(None);
            }
            let id = u16::from_be(hdr.id);
            Ok(Some((id, id, L4::Echo)))
        }
        _ => Ok(None),
    }
}

/// The flow of a packet. A later fragment takes its ports from its first fragment
/// (`fragment_unknown` when that was not seen). `Ok(None)` for ICMP that is neither echo nor
/// error, and protocols without ports.
#[inline(always)]
pub(crate) fn of(ctx: &TcContext, ip: &Ipv4) -> Result<Option<Flow>, DropReason> {
    let mut key = FlowKey {
        saddr: ip.saddr.to_ne_bytes(),
        daddr: ip.daddr.to_ne_bytes(),
        sport: 0,
        dport: 0,
        proto: ip.proto,
        _pad: [0; 3],
    };
    if ip.is_later_fragment() {
        // TCP, UDP and ICMP echo (whose first fragment carries the id); other ICMP has no
        // flow of its own.
        if ip.proto != proto::TCP && ip.proto != proto::UDP && ip.proto != proto::ICMP {
            return Ok(None);
        }
        let Some(ports) = frag::ports(ip) else {
            if ip.proto == proto::ICMP {
                // The rest of an ICMP message that is not a tracked echo (e.g. a large
                // error): not a flow.
                return Ok(None);
            }
            return Err(DropReason::FragmentUnknown);
        };
        key.sport = ports.sport;
        key.dport = ports.dport;
        return Ok(Some(Flow {
            key,
            l4: L4::None,
            seg: Seg::default(),
        }));
    }
    let min = match ip.proto {
        proto::TCP => 20,
        proto::UDP | proto::ICMP => 8,
        _ => return Ok(None),
    };
    parse::ensure(ctx, ip.l4 + min)?;
    let Some((sport, dport, l4)) = ids::<false>(ctx, ip.proto, ip.l4)? else {
        return Ok(None);
    };
    key.sport = sport;
    key.dport = dport;
    let seg = if ip.proto == proto::TCP {
        tcp::segment(ctx, ip.l4, u32::from(ip.len), ip.is_fragment())?
    } else {
        Seg::default()
    };
    Ok(Some(Flow { key, l4, seg }))
}

/// [`of`] for IPv6: a later fragment takes its ports from its first fragment (the
/// fragment header's identification names the datagram).
#[inline(always)]
pub(crate) fn of6(ctx: &TcContext, ip: &Ipv6) -> Result<Option<Flow<[u8; 16]>>, DropReason> {
    let min = match ip.proto {
        proto::TCP => 20,
        proto::UDP | proto::ICMPV6 => 8,
        _ => return Ok(None),
    };
    if ip.is_later_fragment() {
        let Some(ports) = frag::ports6(ip) else {
            if ip.proto == proto::ICMPV6 {
                // The rest of an ICMPv6 message that is not a tracked echo.
                return Ok(None);
            }
            return Err(DropReason::FragmentUnknown);
        };
        let key = FlowKey {
            saddr: ip.saddr,
            daddr: ip.daddr,
            sport: ports.sport,
            dport: ports.dport,
            proto: ip.proto,
            _pad: [0; 3],
        };
        return Ok(Some(Flow {
            key,
            l4: L4::None,
            seg: Seg::default(),
        }));
    }
    parse::ensure(ctx, ip.l4 + min)?;
    let Some((sport, dport, l4)) = ids::<true>(ctx, ip.proto, ip.l4)? else {
        return Ok(None);
    };
    let key = FlowKey {
        saddr: ip.saddr,
        daddr: ip.daddr,
        sport,
        dport,
        proto: ip.proto,
        _pad: [0; 3],
    };
    let seg = if ip.proto == proto::TCP {
        tcp::segment(ctx, ip.l4, ip.len, ip.is_fragment())?
    } else {
        Seg::default()
    };
    Ok(Some(Flow { key, l4, seg }))
}

impl Flow {
    /// A first fragment's ports (or echo id) are remembered for the fragments that follow.
    #[inline(always)]
    pub(crate) fn remember_ports(&self, ip: &Ipv4) {
        if ip.is_fragment() && !ip.is_later_fragment() && self.l4 != L4::None {
            frag::remember(ip, self.key.sport, self.key.dport);
        }
    }
}

impl Flow<[u8; 16]> {
    /// [`Flow::remember_ports`] for IPv6.
    #[inline(always)]
    pub(crate) fn remember_ports6(&self, ip: &Ipv6) {
        if ip.is_fragment() && !ip.is_later_fragment() && self.l4 != L4::None {
            frag::remember6(ip, self.key.sport, self.key.dport);
        }
    }
}
