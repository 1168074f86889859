//! [`crate::pktgen`] for IPv6: a dual-stack data plane (its IPv6 programs loaded), IPv6
//! frames built with etherparse, and checks that re-parse the output and recompute its
//! checksums (IPv6 has none of its own; every transport checksum covers the pseudo-header).

use egress_common::{RouterConfig6, RuleKey, RuleTarget6, config_flags, proto};
use egress_user::dataplane::load::{Dataplane, LoadOptions};
use etherparse::{
    Icmpv6Header, Icmpv6Type, IpNumber, Ipv6Header, TcpHeader, TcpOptionElement, UdpHeader,
};

use crate::pktgen::{EGRESS_IFINDEX, POD, POD_IFINDEX, SOURCE};

pub const CLIENT6: [u8; 16] = addr(0xc, 2);
pub const POD6: [u8; 16] = addr(0xc, 1);
pub const SOURCE6: [u8; 16] = addr(0xe, 0x99);
pub const SERVER6: [u8; 16] = addr(0xf, 0x10);
pub const FALLBACK6: [u8; 16] = addr(0xf, 0x20);
/// The MSS clamp the IPv6 configuration carries (an MTU of 1400 - 60).
pub const MSS6: u16 = 1340;
/// TCX_NEXT as the test run reports it: the IPv4 program hands the frame on.
pub const TCX_NEXT: u32 = u32::MAX;

/// 2001:db8:`net`::`host`, in the IPv6 documentation prefix.
pub const fn addr(net: u8, host: u8) -> [u8; 16] {
    [
        0x20, 0x01, 0x0d, 0xb8, 0, net, 0, 0, 0, 0, 0, 0, 0, 0, 0, host,
    ]
}

/// SETUP: a dual-stack data plane: the IPv4 half as [`crate::pktgen::dataplane`] (no
/// IPv4 rules), and IPv6 rules `(local port, protocol, remote, remote port)` with
/// `fallback`.
pub fn dataplane6(rules: &[(u16, u8, [u8; 16], u16)], fallback: Option<[u8; 16]>) -> Dataplane {
    let mut dp = Dataplane::load(&LoadOptions {
        conntrack_flows: 1024,
        pin_dir: None,
        ipv6: true,
    })
    .unwrap();
    let cfg = egress_common::RouterConfig {
        pod_ip: POD,
        egress_source: SOURCE,
        fallback_ip: [0; 4],
        pod_ifindex: POD_IFINDEX,
        egress_ifindex: EGRESS_IFINDEX,
        flags: config_flags::IPV6,
        nat_port_min: 1024,
        nat_port_max: 65535,
        mss_clamp: 1360,
        instance: 0,
        _pad: 0,
        nat_secret: 0x5eed_0001,
    };
    let rules: Vec<_> = rules
        .iter()
        .map(|&(port, protocol, remote_ip, remote_port)| {
            let key = RuleKey {
                port,
                proto: protocol,
                instance: 0,
            };
            let target = RuleTarget6 {
                remote_ip,
                remote_port,
                rule_id: 0,
                flags: 0,
            };
            (key, target)
        })
        .collect();
    let cfg6 = RouterConfig6 {
        pod_ip: POD6,
        egress_source: SOURCE6,
        fallback_ip: fallback.unwrap_or_default(),
        flags: if fallback.is_some() {
            config_flags::HAS_FALLBACK
        } else {
            0
        },
        mss_clamp: MSS6,
        _pad: 0,
        ..RouterConfig6::default()
    };
    // Ids in order from 1, as for IPv4.
    dp.maps_mut()
        .configure_dual(&cfg, &cfg6, &[], &rules)
        .unwrap();
    dp
}

/// An Ethernet frame around an IPv6 header (with `ext`, raw extension headers, after it,
/// the first of them named by `next`) and its payload.
pub fn frame6(
    src: [u8; 16],
    dst: [u8; 16],
    next: IpNumber,
    hop_limit: u8,
    ext: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut ip = header6(src, dst, next, ext.len() + payload.len());
    ip.hop_limit = hop_limit;
    let mut out = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
    ip.write(&mut out).unwrap();
    out.extend_from_slice(ext);
    out.extend_from_slice(payload);
    out
}

/// An IPv6 header (hop limit 64) for `len` bytes of payload of protocol `next`: what
/// frames are built from, and the pseudo-header transport checksums are computed with.
pub fn header6(src: [u8; 16], dst: [u8; 16], next: IpNumber, len: usize) -> Ipv6Header {
    Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: len as u16,
        next_header: next,
        hop_limit: 64,
        source: src,
        destination: dst,
    }
}

/// A TCP segment over IPv6: a SYN with the usual options, or an ACK with `data`.
pub fn tcp6(src: ([u8; 16], u16), dst: ([u8; 16], u16), syn: bool, data: &[u8]) -> Vec<u8> {
    let mut tcp = TcpHeader::new(src.1, dst.1, 1000, 64240);
    tcp.syn = syn;
    tcp.ack = !syn;
    if syn {
        tcp.set_options(&[
            TcpOptionElement::MaximumSegmentSize(1440),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(7),
        ])
        .unwrap();
    }
    let ip = header6(src.0, dst.0, IpNumber::TCP, tcp.header_len() + data.len());
    tcp.checksum = tcp.calc_checksum_ipv6(&ip, data).unwrap();
    let mut l4 = tcp.to_bytes().to_vec();
    l4.extend_from_slice(data);
    frame6(src.0, dst.0, IpNumber::TCP, 64, &[], &l4)
}

/// A UDP datagram over IPv6, checksummed.
pub fn udp6(src: ([u8; 16], u16), dst: ([u8; 16], u16), data: &[u8]) -> Vec<u8> {
    let ip = header6(src.0, dst.0, IpNumber::UDP, 8 + data.len());
    let udp = UdpHeader::with_ipv6_checksum(src.1, dst.1, &ip, data).unwrap();
    let mut l4 = udp.to_bytes().to_vec();
    l4.extend_from_slice(data);
    frame6(src.0, dst.0, IpNumber::UDP, 64, &[], &l4)
}

/// An ICMPv6 message over IPv6, checksummed, with hop limit `hop_limit`.
pub fn icmp6(
    src: [u8; 16],
    dst: [u8; 16],
    kind: Icmpv6Type,
    hop_limit: u8,
    data: &[u8],
) -> Vec<u8> {
    let icmp = Icmpv6Header::with_checksum(kind, src, dst, data).unwrap();
    let mut l4 = icmp.to_bytes().to_vec();
    l4.extend_from_slice(data);
    frame6(src, dst, IpNumber::IPV6_ICMP, hop_limit, &[], &l4)
}

/// CHECK: the IPv6 header of an output frame, and what follows it.
pub fn parse6(out: &[u8]) -> (Ipv6Header, &[u8]) {
    assert_eq!(&out[12..14], &[0x86, 0xdd], "EtherType");
    let (ip, rest) = Ipv6Header::from_slice(&out[14..]).unwrap();
    assert_eq!(usize::from(ip.payload_length), rest.len(), "payload length");
    (ip, rest)
}

/// CHECK: a TCP segment's addresses, ports and checksum over IPv6.
pub fn check_tcp6(out: &[u8], src: ([u8; 16], u16), dst: ([u8; 16], u16)) -> TcpHeader {
    let (ip, rest) = parse6(out);
    let (tcp, data) = TcpHeader::from_slice(rest).unwrap();
    assert_eq!((ip.source, tcp.source_port), src, "source");
    assert_eq!((ip.destination, tcp.destination_port), dst, "destination");
    assert_eq!(
        tcp.checksum,
        tcp.calc_checksum_ipv6(&ip, data).unwrap(),
        "TCP checksum"
    );
    tcp
}

/// CHECK: a UDP datagram's addresses, ports and checksum over IPv6.
pub fn check_udp6(out: &[u8], src: ([u8; 16], u16), dst: ([u8; 16], u16)) {
    let (ip, rest) = parse6(out);
    let (udp, data) = UdpHeader::from_slice(rest).unwrap();
    assert_eq!((ip.source, udp.source_port), src, "source");
    assert_eq!((ip.destination, udp.destination_port), dst, "destination");
    assert_ne!(udp.checksum, 0, "mandatory over IPv6");
    assert_eq!(
        udp.checksum,
        udp.calc_checksum_ipv6(&ip, data).unwrap(),
        "UDP checksum"
    );
}

/// CHECK: an ICMPv6 message's addresses and checksum; returns its type.
pub fn check_icmp6(out: &[u8], src: [u8; 16], dst: [u8; 16]) -> Icmpv6Type {
    let (ip, rest) = parse6(out);
    assert_eq!((ip.source, ip.destination), (src, dst), "addresses");
    let (icmp, data) = Icmpv6Header::from_slice(rest).unwrap();
    let expected = Icmpv6Header::with_checksum(icmp.icmp_type, src, dst, data).unwrap();
    assert_eq!(icmp.checksum, expected.checksum, "ICMPv6 checksum");
    icmp.icmp_type
}

/// The protocol number TCP rules take.
pub const TCP: u8 = proto::TCP;
