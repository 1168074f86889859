//! Announcing EGRESS_SOURCE with gratuitous ARP, as OpenShift's router does with
//! `arping -A` and `arping -U`, and its IPv6 address with unsolicited neighbour
//! advertisements (RFC 4861 7.2.6).

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use egress_common::ClaimId;
use etherparse::{ArpEthIpv4Packet, ArpOperation, PacketBuilder};

use crate::network::{
    error::Error,
    packet::{Framing, PacketSocket},
    probe::with_trailer,
};

/// Announces `ip` at `mac` on interface `ifindex` (named `iface` in errors) so the upstream
/// switch and neighbours learn it at once, e.g. after a failover: an unsolicited ARP reply
/// now and a gratuitous ARP request `request_after` later, as OpenShift's router does with
/// `arping -A` and `arping -U`. A pod-mode router's announcements carry its `claim`
/// (`crate::network::probe`), so that another egress-router holding the same address with
/// the same MAC knows it for a rival.
pub async fn announce(
    iface: &str,
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv4Addr,
    request_after: Duration,
    claim: Option<ClaimId>,
) -> Result<(), Error> {
    announce_once(iface, ifindex, mac, ip, ArpOperation::REPLY, claim)?;
    tokio::time::sleep(request_after).await;
    announce_once(iface, ifindex, mac, ip, ArpOperation::REQUEST, claim)
}

/// One of [`announce`]'s two frames: the unsolicited reply, or the gratuitous request.
pub fn announce_once(
    iface: &str,
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv4Addr,
    operation: ArpOperation,
    claim: Option<ClaimId>,
) -> Result<(), Error> {
    send_gratuitous_arp(ifindex, mac, ip, operation, claim).map_err(|source| Error::Arp {
        iface: iface.to_owned(),
        source,
    })
}

/// Announces `ip` at `mac` on interface `ifindex` with an unsolicited neighbour
/// advertisement to all nodes, now and again `repeat_after` later (RFC 4861 allows a few,
/// for the loss of one): the override flag makes neighbours that know `ip` at another MAC
/// (a predecessor's, after a failover) take this one.
pub async fn announce6(
    iface: &str,
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv6Addr,
    repeat_after: Duration,
) -> Result<(), Error> {
    announce6_once(iface, ifindex, mac, ip)?;
    tokio::time::sleep(repeat_after).await;
    announce6_once(iface, ifindex, mac, ip)
}

/// One of [`announce6`]'s advertisements.
pub fn announce6_once(iface: &str, ifindex: u32, mac: [u8; 6], ip: Ipv6Addr) -> Result<(), Error> {
    let frame = unsolicited_na(mac, ip);
    PacketSocket::bind(ifindex, libc::ETH_P_IPV6 as u16, Framing::Raw)
        .and_then(|socket| socket.send(&frame, None))
        .map_err(|source| Error::Ndisc {
            iface: iface.to_owned(),
            source,
        })
}

/// An Ethernet frame with an unsolicited neighbour advertisement of `ip` at `mac`.
fn unsolicited_na(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    const NEIGHBOR_ADVERTISEMENT: u8 = 136;
    /// The override flag, in the first byte after the checksum.
    const OVERRIDE: u8 = 0x20;
    /// Option "target link-layer address", 1 unit of 8 bytes.
    const TARGET_LLADDR: [u8; 2] = [2, 1];
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut payload = Vec::with_capacity(24);
    payload.extend_from_slice(&ip.octets());
    payload.extend_from_slice(&TARGET_LLADDR);
    payload.extend_from_slice(&mac);
    // Neighbour discovery must come with hop limit 255 (RFC 4861 7.1.2).
    let builder = PacketBuilder::ethernet2(mac, [0x33, 0x33, 0, 0, 0, 1])
        .ipv6(ip.octets(), all_nodes.octets(), 255)
        .icmpv6_raw(NEIGHBOR_ADVERTISEMENT, 0, [OVERRIDE, 0, 0, 0]);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut frame, &payload)
        .expect("a Vec takes any frame");
    frame
}

/// Sends one broadcast ARP packet whose sender and target are both `ip`.
fn send_gratuitous_arp(
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv4Addr,
    operation: ArpOperation,
    claim: Option<ClaimId>,
) -> io::Result<()> {
    let arp = ArpEthIpv4Packet {
        operation,
        sender_mac: mac,
        sender_ipv4: ip.octets(),
        // A reply names our own MAC as target; a gratuitous request leaves it zero (RFC 5227).
        target_mac: if operation == ArpOperation::REPLY {
            mac
        } else {
            [0; 6]
        },
        target_ipv4: ip.octets(),
    };
    let arp = match claim {
        Some(claim) => with_trailer(&arp, claim),
        None => arp.to_bytes().to_vec(),
    };
    // Datagram framing: the kernel builds the Ethernet header for the broadcast.
    PacketSocket::bind(ifindex, libc::ETH_P_ARP as u16, Framing::Datagram)?
        .send(&arp, Some([0xff; 6]))
}

#[cfg(test)]
mod tests {
    use etherparse::{Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    #[test]
    fn the_advertisement_overrides_names_the_mac_and_checks_out() {
        let mac = [0x02, 0, 0x5e, 0, 0x53, 0x99];
        let ip: Ipv6Addr = "2001:db8:e::99".parse().unwrap();
        let frame = unsolicited_na(mac, ip);
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(NetSlice::Ipv6(ipv6)) = &packet.net else {
            panic!("not IPv6")
        };
        let header = ipv6.header();
        assert_eq!(header.hop_limit(), 255);
        assert_eq!(header.source_addr(), ip);
        assert_eq!(header.destination_addr().to_string(), "ff02::1");
        let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
            panic!("not ICMPv6")
        };
        let Icmpv6Type::Unknown {
            type_u8, bytes5to8, ..
        } = icmp.icmp_type()
        else {
            panic!("{:?}", icmp.icmp_type())
        };
        assert_eq!(
            (type_u8, bytes5to8[0]),
            (136, 0x20),
            "unsolicited, override"
        );
        let checksum = icmp
            .header()
            .icmp_type
            .calc_checksum(ip.octets(), header.destination(), icmp.payload())
            .unwrap();
        assert_eq!(checksum, icmp.checksum());
        assert_eq!(&icmp.payload()[..16], &ip.octets());
        assert_eq!(&icmp.payload()[16..], &[2, 1, 0x02, 0, 0x5e, 0, 0x53, 0x99]);
    }
}
