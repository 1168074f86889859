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

use std::{io, net::Ipv4Addr, time::Duration};

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
}

/// Probes for `ip` on interface `ifindex` (which must be up) from `mac`; returns the first
/// other host that claims it: one that answers, announces it, or probes for it too.
/// Blocking; run it off the async runtime.
pub fn probe(ifindex: u32, mac: [u8; 6], ip: Ipv4Addr, how: Probe) -> io::Result<Option<Holder>> {
    let socket = ArpSocket::bind(ifindex)?;
    let request = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: [0; 4],
        target_mac: [0; 6],
        target_ipv4: ip.octets(),
    }
    .to_bytes();
    for n in 0..how.probes {
        socket.send_broadcast(&request)?;
        let listen = if n + 1 == how.probes {
            how.wait
        } else {
            how.interval
        };
        let deadline = std::time::Instant::now() + listen;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Some(arp) = socket.recv(left)? else {
                break;
            };
            if claims(&arp, ip, mac) {
                return Ok(Some(Holder {
                    mac: arp.sender_mac,
                }));
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
            let Some(arp) = socket.recv(left)? else {
                break;
            };
            if arp.operation == ArpOperation::REPLY && arp.sender_ipv4 == target.octets() {
                return Ok(Some(arp.sender_mac));
            }
        }
    }
    Ok(None)
}

/// Whether an ARP packet received from another host claims `ip`: a reply or an
/// announcement from it, or a probe for it that is not ours (RFC 5227 section 2.1.1).
fn claims(arp: &ArpEthIpv4Packet, ip: Ipv4Addr, ours: [u8; 6]) -> bool {
    let ip = ip.octets();
    let from_holder = arp.sender_ipv4 == ip;
    let other_probe = arp.operation == ArpOperation::REQUEST
        && arp.sender_ipv4 == [0; 4]
        && arp.target_ipv4 == ip
        && arp.sender_mac != ours;
    from_holder || other_probe
}

/// An AF_PACKET socket for ARP on one interface.
struct ArpSocket(PacketSocket);

impl ArpSocket {
    fn bind(ifindex: u32) -> io::Result<Self> {
        PacketSocket::bind(ifindex, libc::ETH_P_ARP as u16, Framing::Datagram).map(Self)
    }

    fn send_broadcast(&self, arp: &[u8]) -> io::Result<()> {
        self.0.send(arp, Some([0xff; 6]))
    }

    /// The next ARP packet another host sent (our own, seen going out, are skipped), or
    /// None after `timeout`.
    fn recv(&self, timeout: Duration) -> io::Result<Option<ArpEthIpv4Packet>> {
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
                return Ok(Some(arp));
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
        let ours = [2, 0, 0, 0, 0, 1];
        let o = ip.octets();
        let other = [198, 51, 100, 7];
        assert!(claims(&arp(ArpOperation::REPLY, o, [0; 4], 9), ip, ours));
        assert!(
            claims(&arp(ArpOperation::REQUEST, o, o, 9), ip, ours),
            "announcement"
        );
        assert!(
            claims(&arp(ArpOperation::REQUEST, [0; 4], o, 9), ip, ours),
            "a probe"
        );
        assert!(
            !claims(&arp(ArpOperation::REQUEST, [0; 4], o, 1), ip, ours),
            "our probe"
        );
        assert!(
            !claims(&arp(ArpOperation::REQUEST, other, o, 9), ip, ours),
            "a question"
        );
        assert!(!claims(
            &arp(ArpOperation::REPLY, other, [0; 4], 9),
            ip,
            ours
        ));
    }
}
