//! Address conflict detection before EGRESS_SOURCE is claimed (RFC 5227's ARP probe): a
//! request for the address with sender address 0.0.0.0, so that no neighbour learns
//! anything from it; any host that holds the address answers. Two routers with one
//! EGRESS_SOURCE on one segment (a failed-over pod whose predecessor still runs) would
//! split the replies between them.
//!
//! Timing: RFC 5227 waits up to 1 s, probes three times 1-2 s apart and waits 2 s more, for
//! about 7 s in all, sized for slow links and hosts. A router replacing a failed one must
//! be up in well under a second, and on a LAN a live host answers an ARP request in
//! microseconds to milliseconds: [`Probe::default`] sends three probes 50 ms apart and
//! listens for 150 ms after the last, 250 ms in all.
//!
//! Another egress-router with the same EGRESS_SOURCE has the same (stable) MAC, so the MAC
//! tells nothing: any ARP from another host with the address as its sender is a holder,
//! whatever its MAC. A running router's data plane answers probes with a broadcast (a
//! unicast answer to the stable MAC would go back to the holder's own port), and every
//! probe carries the prober's claim ([`ClaimId`]) in its trailer, so that two routers
//! probing at once can tell each other's probes from their own and agree: the older claim
//! goes on, the younger yields.

use std::{io, net::Ipv4Addr, time::Duration};

use egress_common::{ClaimId, TRAILER_LEN};
use etherparse::{ArpEthIpv4Packet, ArpOperation};

use crate::network::packet::{Framing, PacketSocket};

/// How long to probe.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub probes: u32,
    pub interval: Duration,
    /// Listening after the last probe.
    pub wait: Duration,
}

impl Default for Probe {
    fn default() -> Self {
        Self {
            probes: 3,
            interval: Duration::from_millis(50),
            wait: Duration::from_millis(150),
        }
    }
}

/// A host that answered for the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    pub mac: [u8; 6],
    /// Its claim, when it is an egress-router (its frame carried a claim trailer).
    pub claim: Option<ClaimId>,
    /// It was probing too (an older claim than ours), not holding the address yet.
    pub probing: bool,
}

/// A new claim: now, and a random nonce.
#[must_use]
pub fn new_claim() -> ClaimId {
    let claimed_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .max(1);
    ClaimId {
        claimed_at_ms,
        nonce: crate::instance::router::nat_secret(),
    }
}

/// An ARP payload with `claim`'s trailer after it (in the frame's Ethernet padding).
#[must_use]
pub fn with_trailer(arp: &ArpEthIpv4Packet, claim: ClaimId) -> Vec<u8> {
    let mut bytes = arp.to_bytes().to_vec();
    bytes.extend_from_slice(&claim.trailer());
    bytes
}

/// Probes for `ip` on interface `ifindex` (which must be up) from `mac` for the claim
/// `ours`; returns the first other host that claims it: one that answers or announces it
/// (whatever its MAC), or probes for it too with an older claim than ours (or as a host
/// that is no egress-router). Blocking; run it off the async runtime.
pub fn probe(
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv4Addr,
    how: Probe,
    ours: ClaimId,
) -> io::Result<Option<Holder>> {
    let socket = ArpSocket::bind(ifindex)?;
    let request = with_trailer(
        &ArpEthIpv4Packet {
            operation: ArpOperation::REQUEST,
            sender_mac: mac,
            sender_ipv4: [0; 4],
            target_mac: [0; 6],
            target_ipv4: ip.octets(),
        },
        ours,
    );
    for n in 0..how.probes {
        socket.send_broadcast(&request)?;
        let listen = if n + 1 == how.probes {
            how.wait
        } else {
            how.interval
        };
        let deadline = std::time::Instant::now() + listen;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Some((arp, claim)) = socket.recv(left)? else {
                break;
            };
            if let Some(holder) = claims(&arp, claim, ip, ours) {
                return Ok(Some(holder));
            }
        }
    }
    Ok(None)
}

/// Asks "who has `target`?" from `mac` on interface `ifindex` (sender address
/// `sender`; 0.0.0.0 makes it a probe that teaches nobody anything), up to `tries` times
/// `wait` apart; returns the MAC that answered, if any. Blocking.
pub fn ask(
    ifindex: u32,
    mac: [u8; 6],
    sender: Ipv4Addr,
    target: Ipv4Addr,
    tries: u32,
    wait: Duration,
) -> io::Result<Option<[u8; 6]>> {
    let socket = ArpSocket::bind(ifindex)?;
    let request = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: sender.octets(),
        target_mac: [0; 6],
        target_ipv4: target.octets(),
    }
    .to_bytes();
    for _ in 0..tries {
        socket.send_broadcast(&request)?;
        let deadline = std::time::Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Some((arp, _)) = socket.recv(left)? else {
                break;
            };
            if arp.operation == ArpOperation::REPLY && arp.sender_ipv4 == target.octets() {
                return Ok(Some(arp.sender_mac));
            }
        }
    }
    Ok(None)
}

/// The holder an ARP packet received from another host shows for `ip`, if it shows one:
/// a reply or an announcement from it, whatever the MAC, or a probe for it (RFC 5227
/// section 2.1.1) that is not ours: from an egress-router with an older claim (a younger
/// one yields to ours), or from a host that is no egress-router.
fn claims(
    arp: &ArpEthIpv4Packet,
    claim: Option<ClaimId>,
    ip: Ipv4Addr,
    ours: ClaimId,
) -> Option<Holder> {
    let ip = ip.octets();
    let holder = |probing| Holder {
        mac: arp.sender_mac,
        claim,
        probing,
    };
    if arp.sender_ipv4 == ip {
        return Some(holder(false));
    }
    let probe = arp.operation == ArpOperation::REQUEST
        && arp.sender_ipv4 == [0; 4]
        && arp.target_ipv4 == ip;
    match claim {
        _ if !probe => None,
        Some(theirs) if theirs == ours => None,
        Some(theirs) => (theirs < ours).then(|| holder(true)),
        None => Some(holder(true)),
    }
}

/// The ARP payload for IPv4 over Ethernet, before the trailer.
const ARP_LEN: usize = 28;

/// An AF_PACKET socket for ARP on one interface.
struct ArpSocket(PacketSocket);

impl ArpSocket {
    fn bind(ifindex: u32) -> io::Result<Self> {
        PacketSocket::bind(ifindex, libc::ETH_P_ARP as u16, Framing::Datagram).map(Self)
    }

    fn send_broadcast(&self, arp: &[u8]) -> io::Result<()> {
        self.0.send(arp, Some([0xff; 6]))
    }

    /// The next ARP packet another host sent, with the claim its trailer carries if any
    /// (our own, seen going out, are skipped), or None after `timeout`.
    fn recv(&self, timeout: Duration) -> io::Result<Option<(ArpEthIpv4Packet, Option<ClaimId>)>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = [0u8; 128];
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Some(n) = self.0.recv(&mut buf, left)? else {
                return Ok(None);
            };
            let parsed = etherparse::ArpPacket::from_slice(&buf[..n])
                .ok()
                .and_then(|packet| packet.try_eth_ipv4().ok());
            if let Some(arp) = parsed {
                let claim = buf[..n]
                    .get(ARP_LEN..ARP_LEN + TRAILER_LEN)
                    .and_then(ClaimId::from_trailer);
                return Ok(Some((arp, claim)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp(operation: ArpOperation, sender: [u8; 4], target: [u8; 4], mac: u8) -> ArpEthIpv4Packet {
        ArpEthIpv4Packet {
            operation,
            sender_mac: [2, 0, 0, 0, 0, mac],
            sender_ipv4: sender,
            target_mac: [0; 6],
            target_ipv4: target,
        }
    }

    #[test]
    fn replies_announcements_and_other_probes_claim_the_address() {
        let ip = Ipv4Addr::new(198, 51, 100, 100);
        let ours = ClaimId {
            claimed_at_ms: 1000,
            nonce: 5,
        };
        let older = ClaimId {
            claimed_at_ms: 999,
            nonce: 7,
        };
        let younger = ClaimId {
            claimed_at_ms: 1000,
            nonce: 6,
        };
        let o = ip.octets();
        let other = [198, 51, 100, 7];
        let says = |a: ArpEthIpv4Packet, claim| claims(&a, claim, ip, ours).is_some();
        // A holder answers or announces, whatever its MAC (ours, the stable one, too).
        assert!(says(arp(ArpOperation::REPLY, o, [0; 4], 9), None));
        assert!(says(arp(ArpOperation::REPLY, o, [0; 4], 1), Some(older)));
        assert!(says(arp(ArpOperation::REPLY, o, [0; 4], 1), Some(younger)));
        assert!(
            says(arp(ArpOperation::REQUEST, o, o, 1), None),
            "announcement"
        );
        // Probes: a host's, an older router's claim; not our own, not a younger claim's.
        let probe = || arp(ArpOperation::REQUEST, [0; 4], o, 1);
        assert!(
            says(arp(ArpOperation::REQUEST, [0; 4], o, 9), None),
            "a probe"
        );
        assert!(says(probe(), None), "a probe from our MAC without a claim");
        assert!(says(probe(), Some(older)), "an older claim's probe");
        assert!(!says(probe(), Some(ours)), "our probe");
        assert!(!says(probe(), Some(younger)), "a younger claim's probe");
        let found = claims(&probe(), Some(older), ip, ours).unwrap();
        assert!(found.probing && found.claim == Some(older));
        assert!(
            !says(arp(ArpOperation::REQUEST, other, o, 9), None),
            "a question"
        );
        assert!(!says(arp(ArpOperation::REPLY, other, [0; 4], 9), None));
    }

    #[test]
    fn a_probe_carries_its_claim_after_the_arp_payload() {
        let claim = ClaimId {
            claimed_at_ms: 1_765_000_000_000,
            nonce: 42,
        };
        let request = arp(ArpOperation::REQUEST, [0; 4], [198, 51, 100, 100], 1);
        let bytes = with_trailer(&request, claim);
        assert_eq!(bytes.len(), ARP_LEN + TRAILER_LEN);
        let parsed = etherparse::ArpPacket::from_slice(&bytes)
            .unwrap()
            .try_eth_ipv4()
            .unwrap();
        assert_eq!(parsed, request);
        assert_eq!(ClaimId::from_trailer(&bytes[ARP_LEN..]), Some(claim));
    }
}
