//! Duplicate address detection for EGRESS_SOURCE's IPv6 address before it is claimed, the
//! IPv6 twin of the ARP probe ([`crate::network::probe`]): neighbour solicitations for the
//! address from the unspecified address (RFC 4862 5.4: no neighbour learns anything from
//! them) to its solicited-node multicast group; a host that holds the address answers with
//! an advertisement to all nodes, and one that is probing for it too sends the same kind
//! of solicitation. The timing is the ARP probe's ([`Probe`]): 250 ms, not RFC 4862's
//! second, for the same reason (a router replacing a failed one must be up at once).
//!
//! As for IPv4, the MAC tells nothing (a rival egress-router has ours): each probe carries
//! our claim in a nonce option (RFC 3971's type, as RFC 7527's enhanced DAD uses it), so
//! that our own probes are recognised as ours and two routers probing at once agree that
//! the older claim goes on.

use std::{io, net::Ipv6Addr};

use egress_common::ClaimId;
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

use crate::network::{
    packet::{Framing, PacketSocket},
    probe::{Holder, Probe},
};

const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// The nonce option (RFC 3971 5.3.2), two 8-byte units long: the claim's time and nonce
/// and two zero bytes (Linux's own enhanced DAD sends one unit, six bytes of nonce).
const OPTION_NONCE: u8 = 14;
const CLAIM_OPTION_UNITS: u8 = 2;
const ETH_P_IPV6: u16 = libc::ETH_P_IPV6 as u16;

/// The solicited-node multicast address of `ip` (RFC 4291 2.7.1) and its Ethernet group.
fn solicited_node(ip: Ipv6Addr) -> (Ipv6Addr, [u8; 6]) {
    let o = ip.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    );
    let g = group.octets();
    (group, [0x33, 0x33, g[12], g[13], g[14], g[15]])
}

/// The probe: a neighbour solicitation for `ip` from `::` and `mac`, hop limit 255, with
/// `claim` in a nonce option.
fn solicitation(mac: [u8; 6], ip: Ipv6Addr, claim: ClaimId) -> Vec<u8> {
    let (group, group_mac) = solicited_node(ip);
    // No source link-layer option: not allowed from the unspecified address.
    let builder = PacketBuilder::ethernet2(mac, group_mac)
        .ipv6(Ipv6Addr::UNSPECIFIED.octets(), group.octets(), 255)
        .icmpv6_raw(NEIGHBOR_SOLICITATION, 0, [0; 4]);
    let mut payload = ip.octets().to_vec();
    payload.extend_from_slice(&[OPTION_NONCE, CLAIM_OPTION_UNITS]);
    payload.extend_from_slice(&claim.trailer()[4..]);
    payload.extend_from_slice(&[0; 2]);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut frame, &payload)
        .expect("a Vec takes any frame");
    frame
}

/// The claim in a probe's nonce option (the bytes after the target), if it carries ours.
fn claim_of(options: &[u8]) -> Option<ClaimId> {
    let option = options.get(..16)?;
    if option[0] != OPTION_NONCE || option[1] != CLAIM_OPTION_UNITS {
        return None;
    }
    let mut trailer = egress_common::claim::TRAILER_MAGIC.to_vec();
    trailer.extend_from_slice(&option[2..14]);
    ClaimId::from_trailer(&trailer)
}

/// The holder a frame another host sent shows for `ip`, if it shows one: an
/// advertisement for it (whatever the MAC), or a probe for it (a solicitation from `::`)
/// that is not ours: from an egress-router with an older claim, or from another host.
fn claims(frame: &[u8], ip: Ipv6Addr, ours: ClaimId) -> Option<Holder> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv6(ipv6)) = &packet.net else {
        return None;
    };
    let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
        return None;
    };
    let mac: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    let header = icmp.slice();
    let (kind, target) = (*header.first()?, header.get(8..24)?);
    // Neighbour discovery comes from the link only (RFC 4861 7.1).
    if ipv6.header().hop_limit() != 255 || target != ip.octets() {
        return None;
    }
    let claim = claim_of(header.get(24..).unwrap_or_default());
    let holder = |probing| Holder {
        mac,
        claim,
        probing,
    };
    if kind == NEIGHBOR_ADVERTISEMENT {
        return Some(holder(false));
    }
    if kind != NEIGHBOR_SOLICITATION || !ipv6.header().source_addr().is_unspecified() {
        return None;
    }
    match claim {
        Some(theirs) if theirs == ours => None,
        Some(theirs) => (theirs < ours).then(|| holder(true)),
        None => Some(holder(true)),
    }
}

/// Probes for `ip` on interface `ifindex` (which must be up) from `mac`; returns the first
/// other host that claims it. Blocking; run it off the async runtime.
pub fn probe6(
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv6Addr,
    how: Probe,
    ours: ClaimId,
) -> io::Result<Option<Holder>> {
    let socket = PacketSocket::bind(ifindex, ETH_P_IPV6, Framing::Raw)?;
    // The answers go to all nodes, other probes to the solicited-node group: both joined
    // on the interface for the probe's length (it may have no IPv6 yet).
    socket.join([0x33, 0x33, 0, 0, 0, 1])?;
    socket.join(solicited_node(ip).1)?;
    let request = solicitation(mac, ip, ours);
    for n in 0..how.probes {
        socket.send(&request, None)?;
        let listen = if n + 1 == how.probes {
            how.wait
        } else {
            how.interval
        };
        let deadline = std::time::Instant::now() + listen;
        let mut buf = [0u8; 256];
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Some(len) = socket.recv(&mut buf, left)? else {
                break;
            };
            if let Some(holder) = claims(&buf[..len], ip, ours) {
                return Ok(Some(holder));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisements_and_other_probes_claim_the_address() {
        let ip: Ipv6Addr = "2001:db8:e::100".parse().unwrap();
        let (group, group_mac) = solicited_node(ip);
        assert_eq!(group.to_string(), "ff02::1:ff00:100");
        assert_eq!(group_mac, [0x33, 0x33, 0xff, 0, 0x01, 0]);
        let ours_mac = [2, 0, 0, 0, 0, 1];
        let theirs = [2, 0, 0, 0, 0, 9];
        let ours = ClaimId {
            claimed_at_ms: 1000,
            nonce: 5,
        };
        let older = ClaimId {
            claimed_at_ms: 999,
            nonce: 1,
        };
        let younger = ClaimId {
            claimed_at_ms: 1001,
            nonce: 1,
        };
        // Our own probe, seen again: not a claim; another router's, older: a claim (from
        // our own MAC too); a younger one's: not (it yields).
        assert_eq!(claims(&solicitation(ours_mac, ip, ours), ip, ours), None);
        assert_eq!(
            claims(&solicitation(ours_mac, ip, older), ip, ours),
            Some(Holder {
                mac: ours_mac,
                claim: Some(older),
                probing: true
            })
        );
        assert_eq!(claims(&solicitation(theirs, ip, younger), ip, ours), None);
        // A host's probe, without our option: a claim.
        let mut plain = solicitation(theirs, ip, older);
        plain[14 + 40 + 24] = 1;
        assert!(claims(&plain, ip, ours).is_some_and(|h| h.claim.is_none()));
        // A probe for another address claims nothing.
        let other: Ipv6Addr = "2001:db8:e::7".parse().unwrap();
        assert_eq!(claims(&solicitation(theirs, other, older), ip, ours), None);
        // An advertisement (what the kernel of a holder answers) claims it.
        let na = {
            let builder = PacketBuilder::ethernet2(theirs, [0x33, 0x33, 0, 0, 0, 1])
                .ipv6(
                    ip.octets(),
                    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets(),
                    255,
                )
                .icmpv6_raw(NEIGHBOR_ADVERTISEMENT, 0, [0x20, 0, 0, 0]);
            let mut frame = Vec::new();
            builder.write(&mut frame, &ip.octets()).unwrap();
            frame
        };
        assert_eq!(
            claims(&na, ip, ours),
            Some(Holder {
                mac: theirs,
                claim: None,
                probing: false
            })
        );
        // With a hop limit below 255 it was routed: not from this link, not a claim.
        let mut routed = na.clone();
        routed[14 + 7] = 64;
        assert_eq!(claims(&routed, ip, ours), None);
    }
}
