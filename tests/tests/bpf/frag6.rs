//! BPF_PROG_TEST_RUN tests of IPv6 fragments: a datagram in two fragments (fragment header,
//! RFC 8200 4.5) is translated both ways, the later fragment with the ports its first
//! fragment carried, and the reassembled datagram's checksum is valid for the translated
//! addresses; a later fragment whose first was not seen is dropped.

use egress_common::{DropReason, Stat, programs};
use egress_tests::{
    pktgen::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, drops, run},
    pktgen6::{CLIENT6, POD6, SERVER6, SOURCE6, dataplane6, frame6, header6, parse6},
};
use etherparse::{IpNumber, UdpHeader};

const UDP: u8 = egress_common::proto::UDP;
/// The fragment header's protocol number.
const FRAGMENT: IpNumber = IpNumber(44);
/// Bytes of the datagram in the first fragment (a multiple of 8).
const FIRST: usize = 32;

/// A UDP datagram from `src` to `dst` (checksummed) as two fragments with identification
/// `id`.
fn fragments(src: ([u8; 16], u16), dst: ([u8; 16], u16), id: u32) -> [Vec<u8>; 2] {
    let data: Vec<u8> = (0..100u8).collect();
    let ip = header6(src.0, dst.0, IpNumber::UDP, 8 + data.len());
    let udp = UdpHeader::with_ipv6_checksum(src.1, dst.1, &ip, &data).unwrap();
    let mut datagram = udp.to_bytes().to_vec();
    datagram.extend_from_slice(&data);
    let header = |offset: usize, more: bool| {
        let field = ((offset / 8) as u16) << 3 | u16::from(more);
        let mut h = vec![UDP, 0];
        h.extend_from_slice(&field.to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h
    };
    [
        frame6(
            src.0,
            dst.0,
            FRAGMENT,
            64,
            &header(0, true),
            &datagram[..FIRST],
        ),
        frame6(
            src.0,
            dst.0,
            FRAGMENT,
            64,
            &header(FIRST, false),
            &datagram[FIRST..],
        ),
    ]
}

/// CHECK: two translated fragments: addresses, identification kept, and the reassembled
/// datagram's ports and checksum over the new addresses. Returns the ports.
fn check(out: &[Vec<u8>; 2], src: [u8; 16], dst: [u8; 16], id: u32) -> (u16, u16) {
    let mut datagram = Vec::new();
    for frame in out {
        let (ip, rest) = parse6(frame);
        assert_eq!((ip.source, ip.destination), (src, dst));
        assert_eq!(ip.next_header, FRAGMENT);
        assert_eq!(&rest[4..8], &id.to_be_bytes(), "identification kept");
        datagram.extend_from_slice(&rest[8..]);
    }
    let (udp, data) = UdpHeader::from_slice(&datagram).unwrap();
    let ip = header6(src, dst, IpNumber::UDP, datagram.len());
    assert_eq!(
        udp.checksum,
        udp.calc_checksum_ipv6(&ip, data).unwrap(),
        "the reassembled datagram's checksum"
    );
    (udp.source_port, udp.destination_port)
}

#[test]
fn fragmented_datagrams_are_translated_both_ways() {
    let mut dp = dataplane6(&[(5353, UDP, SERVER6, 53)], None);
    let query = fragments((CLIENT6, 41000), (POD6, 5353), 0x1234_5678);
    let out = query.map(|frame| {
        let (verdict, out) = run(&mut dp, programs::POD_INGRESS6, &frame);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        out
    });
    let (sport, dport) = check(&out, SOURCE6, SERVER6, 0x1234_5678);
    assert_eq!(dport, 53);

    // The answer, fragmented by the server, back to the client.
    let answer = fragments((SERVER6, 53), (SOURCE6, sport), 0x9abc_def0);
    let out = answer.map(|frame| {
        let (verdict, out) = run(&mut dp, programs::EGRESS_INGRESS6, &frame);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        out
    });
    assert_eq!(check(&out, POD6, CLIENT6, 0x9abc_def0), (5353, 41000));
    let stats = dp.maps().stats().unwrap();
    assert_eq!(stats.path(Stat::FragmentsTranslated).packets, 2, "{stats}");

    // A later fragment whose first fragment was not seen is not guessed: without a
    // fallback it is the pod's (as over IPv4); from the egress network it is dropped.
    let [_, orphan] = fragments((CLIENT6, 41001), (POD6, 5353), 7);
    assert_eq!(run(&mut dp, programs::POD_INGRESS6, &orphan).0, TC_ACT_OK);
    let [_, forged] = fragments((SERVER6, 53), (SOURCE6, sport), 8);
    assert_eq!(
        run(&mut dp, programs::EGRESS_INGRESS6, &forged).0,
        TC_ACT_SHOT
    );
    assert_eq!(drops(&dp, DropReason::FragmentUnknown), 1);
    // A first fragment from the egress network that no flow asked for remembers nothing:
    // its later fragment is dropped too.
    let [first, later] = fragments((SERVER6, 53), (SOURCE6, 40999), 9);
    assert_eq!(
        run(&mut dp, programs::EGRESS_INGRESS6, &first).0,
        TC_ACT_SHOT
    );
    assert_eq!(
        run(&mut dp, programs::EGRESS_INGRESS6, &later).0,
        TC_ACT_SHOT
    );
    assert_eq!(drops(&dp, DropReason::Unsolicited), 1);
    assert_eq!(drops(&dp, DropReason::FragmentUnknown), 2);

    // With a fallback, the pod is not where unknown fragments go: dropped.
    let mut dp = dataplane6(&[], Some(SERVER6));
    assert_eq!(run(&mut dp, programs::POD_INGRESS6, &orphan).0, TC_ACT_SHOT);
    assert_eq!(drops(&dp, DropReason::FragmentUnknown), 1);
}
