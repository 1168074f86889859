//! BPF_PROG_TEST_RUN tests of the IPv6 data plane (NAT66): IPv6 frames built with
//! etherparse through the real programs, the output re-parsed with its checksums
//! recomputed; the IPv4 programs hand IPv6 on to the IPv6 ones; and what an attacker on
//! the egress network sends gets nowhere.

use egress_common::{DropReason, Stat, programs};
use egress_tests::{
    pktgen::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, dataplane, drops, mss, run},
    pktgen6::{
        CLIENT6, FALLBACK6, MSS6, POD6, SERVER6, SOURCE6, TCP, TCX_NEXT, addr, check_icmp6,
        check_tcp6, check_udp6, dataplane6, frame6, icmp6, parse6, tcp6, udp6,
    },
};
use etherparse::{IcmpEchoHeader, Icmpv6Type, IpNumber};

#[test]
fn tcp_is_translated_both_ways_over_ipv6() {
    let mut dp = dataplane6(&[(8080, TCP, SERVER6, 80)], None);
    let syn = tcp6((CLIENT6, 40000), (POD6, 8080), true, &[]);
    // The IPv4 program hands IPv6 on to the IPv6 one.
    assert_eq!(run(&mut dp, programs::POD_INGRESS, &syn).0, TCX_NEXT);
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS6, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let tcp = check_tcp6(&out, (SOURCE6, 40000), (SERVER6, 80));
    assert_eq!(parse6(&out).0.hop_limit, 63, "hop limit decremented");
    assert_eq!(mss(&tcp), Some(MSS6), "MSS clamped to the IPv6 MTU - 60");

    let syn_ack = tcp6((SERVER6, 80), (SOURCE6, 40000), true, &[]);
    assert_eq!(run(&mut dp, programs::EGRESS_INGRESS, &syn_ack).0, TCX_NEXT);
    let (verdict, out) = run(&mut dp, programs::EGRESS_INGRESS6, &syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_tcp6(&out, (POD6, 8080), (CLIENT6, 40000));

    let data = tcp6(
        (CLIENT6, 40000),
        (POD6, 8080),
        false,
        b"GET / HTTP/1.0\r\n\r\n",
    );
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS6, &data);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_tcp6(&out, (SOURCE6, 40000), (SERVER6, 80));

    let flows = dp.maps().conntrack6().unwrap();
    assert_eq!(flows.len(), 2, "forward and reply entries: {flows:?}");
    let stats = dp.maps().stats().unwrap();
    assert_eq!(stats.path(Stat::FlowsCreated).packets, 1, "{stats}");
    assert_eq!(stats.path(Stat::FlowsReplied).packets, 1, "{stats}");
    assert_eq!(stats.path(Stat::Forwarded).packets, 2, "{stats}");
    assert_eq!(stats.path(Stat::Replied).packets, 1, "{stats}");
    assert_eq!(stats.path(Stat::MssClamped).packets, 2, "{stats}");
    assert_eq!(
        dp.maps().rule_stats().unwrap()[1].packets,
        3,
        "the rule's counter, both ways"
    );
}

#[test]
fn udp_and_echo_go_through_the_ipv6_fallback() {
    let mut dp = dataplane6(&[], Some(FALLBACK6));
    let query = udp6((CLIENT6, 41000), (POD6, 5353), b"query");
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS6, &query);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_udp6(&out, (SOURCE6, 41000), (FALLBACK6, 5353));
    let answer = udp6((FALLBACK6, 5353), (SOURCE6, 41000), b"answer");
    let (verdict, out) = run(&mut dp, programs::EGRESS_INGRESS6, &answer);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_udp6(&out, (POD6, 5353), (CLIENT6, 41000));

    // Echo: the identifier plays the port, and ICMPv6's checksum covers the addresses.
    let echo = IcmpEchoHeader { id: 7000, seq: 1 };
    let request = icmp6(CLIENT6, POD6, Icmpv6Type::EchoRequest(echo), 64, b"ping");
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS6, &request);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let Icmpv6Type::EchoRequest(sent) = check_icmp6(&out, SOURCE6, FALLBACK6) else {
        panic!("not an echo request");
    };
    let reply = icmp6(FALLBACK6, SOURCE6, Icmpv6Type::EchoReply(sent), 64, b"ping");
    let (verdict, out) = run(&mut dp, programs::EGRESS_INGRESS6, &reply);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        check_icmp6(&out, POD6, CLIENT6),
        Icmpv6Type::EchoReply(echo),
        "the client's own identifier back"
    );

    // A UDP checksum of 0 is not "none" over IPv6: it is not passed on as valid.
    let mut zero = udp6((CLIENT6, 41001), (POD6, 5353), b"zero");
    let csum = 14 + 40 + 6;
    zero[csum..csum + 2].copy_from_slice(&[0, 0]);
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS6, &zero);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_ne!(&out[csum..csum + 2], &[0, 0]);
}

#[test]
fn neighbour_discovery_and_other_ipv6_reach_the_pod() {
    let mut dp = dataplane6(&[(8080, TCP, SERVER6, 80)], None);
    // The pod's own address resolution, and traffic to its ports without a rule.
    let solicit = icmp6(
        CLIENT6,
        POD6,
        Icmpv6Type::Unknown {
            type_u8: 135,
            code_u8: 0,
            bytes5to8: [0; 4],
        },
        255,
        &POD6,
    );
    assert_eq!(run(&mut dp, programs::POD_INGRESS6, &solicit).0, TC_ACT_OK);
    let other = tcp6((CLIENT6, 40001), (POD6, 22), true, &[]);
    assert_eq!(run(&mut dp, programs::POD_INGRESS6, &other).0, TC_ACT_OK);
    // The egress interface's neighbour discovery (from the link: hop limit 255).
    let advert = icmp6(
        addr(0xe, 1),
        SOURCE6,
        Icmpv6Type::Unknown {
            type_u8: 136,
            code_u8: 0,
            bytes5to8: [0x60, 0, 0, 0],
        },
        255,
        &addr(0xe, 1),
    );
    assert_eq!(
        run(&mut dp, programs::EGRESS_INGRESS6, &advert).0,
        TC_ACT_OK
    );
    // An IPv4 frame is not the IPv6 programs' business: on to the next program.
    let v4 = egress_tests::pktgen::udp_frame(
        ([203, 0, 113, 10], 53),
        ([198, 51, 100, 100], 5353),
        b"x",
        64,
    );
    assert_eq!(run(&mut dp, programs::EGRESS_INGRESS6, &v4).0, TCX_NEXT);
    assert_eq!(run(&mut dp, programs::POD_INGRESS6, &v4).0, TCX_NEXT);
}

/// What a host on the egress network can send: nothing gets in that no flow asked for,
/// and what the parser cannot walk is dropped, counted by reason.
#[test]
fn unsolicited_and_malformed_ipv6_from_the_egress_network_is_dropped() {
    let mut dp = dataplane6(&[(8080, TCP, SERVER6, 80)], None);
    let shot = |dp: &mut egress_user::dataplane::load::Dataplane, frame: &[u8]| {
        run(dp, programs::EGRESS_INGRESS6, frame).0 == TC_ACT_SHOT
    };
    // A connection attempt to EGRESS_SOURCE, and to another address (routing through the
    // pod).
    assert!(shot(
        &mut dp,
        &tcp6((SERVER6, 80), (SOURCE6, 40000), true, &[])
    ));
    assert!(shot(&mut dp, &tcp6((SERVER6, 80), (POD6, 8080), true, &[])));
    // Neighbour discovery from off the link (hop limit below 255) is no way in either.
    let forged = icmp6(
        SERVER6,
        SOURCE6,
        Icmpv6Type::Unknown {
            type_u8: 136,
            code_u8: 0,
            bytes5to8: [0; 4],
        },
        64,
        &SOURCE6,
    );
    assert!(shot(&mut dp, &forged));
    assert_eq!(drops(&dp, DropReason::Unsolicited), 2);
    assert_eq!(drops(&dp, DropReason::NotEgressSource), 1);

    // Five destination-options headers before the transport header: more than the bound.
    let udp = udp6((SERVER6, 53), (SOURCE6, 41000), b"x");
    let dest_opts = |next: u8| [next, 0, 1, 4, 0, 0, 0, 0];
    let mut ext = Vec::new();
    for i in 0..5 {
        ext.extend_from_slice(&dest_opts(if i == 4 { 17 } else { 60 }));
    }
    let deep = frame6(
        SERVER6,
        SOURCE6,
        IpNumber::IPV6_DESTINATION_OPTIONS,
        64,
        &ext,
        &udp[14 + 40..],
    );
    assert!(shot(&mut dp, &deep));
    assert_eq!(drops(&dp, DropReason::Ipv6ExtHeaders), 1);
    // Four are walked: the datagram is then just unsolicited.
    let walked = frame6(
        SERVER6,
        SOURCE6,
        IpNumber::IPV6_DESTINATION_OPTIONS,
        64,
        &ext[8..],
        &udp[14 + 40..],
    );
    assert!(shot(&mut dp, &walked));
    assert_eq!(drops(&dp, DropReason::Unsolicited), 3);

    // A version that is not 6, and a payload length beyond the frame.
    let mut bad = udp6((SERVER6, 53), (SOURCE6, 41000), b"x");
    bad[14] = 0x40;
    assert!(shot(&mut dp, &bad));
    assert_eq!(drops(&dp, DropReason::MalformedIpv6), 1);
    let mut long = udp6((SERVER6, 53), (SOURCE6, 41000), b"x");
    long[14 + 5] += 100;
    assert!(shot(&mut dp, &long));
    assert_eq!(drops(&dp, DropReason::Truncated), 1);
    assert!(
        dp.maps().conntrack6().unwrap().is_empty(),
        "nothing tracked"
    );
}

/// An instance without IPv6 handles IPv6 as before: to the pod on the pod interface,
/// dropped on the egress interface.
#[test]
fn an_ipv4_instance_keeps_ipv6_out_of_the_egress_network() {
    let mut dp = dataplane("8080 tcp 203.0.113.10 80");
    let syn = tcp6((CLIENT6, 40000), (POD6, 8080), true, &[]);
    assert_eq!(run(&mut dp, programs::POD_INGRESS, &syn).0, TC_ACT_OK);
    let inbound = tcp6((SERVER6, 80), (SOURCE6, 40000), true, &[]);
    assert_eq!(
        run(&mut dp, programs::EGRESS_INGRESS, &inbound).0,
        TC_ACT_SHOT
    );
    assert_eq!(drops(&dp, DropReason::Ipv6Unsupported), 1);
    // Its IPv6 programs are not even loaded.
    assert!(dp.program(programs::POD_INGRESS6).unwrap().fd().is_err());
}

/// Path-MTU discovery through the router: a Packet Too Big from a router on the path,
/// quoting what the router sent, reaches the client about what the client sent, with
/// every checksum right. One quoting no flow gets nowhere.
#[test]
fn packet_too_big_is_translated_back_to_the_client() {
    let mut dp = dataplane6(&[(8080, TCP, SERVER6, 80)], None);
    let syn = tcp6((CLIENT6, 40000), (POD6, 8080), true, &[]);
    let (_, sent) = run(&mut dp, programs::POD_INGRESS6, &syn);
    let syn_ack = tcp6((SERVER6, 80), (SOURCE6, 40000), true, &[]);
    assert_eq!(
        run(&mut dp, programs::EGRESS_INGRESS6, &syn_ack).0,
        TC_ACT_REDIRECT
    );

    // What the router sent, quoted by a router on the path: 2001:db8:f::1.
    let hop = addr(0xf, 1);
    let quoted = &sent[14..];
    let too_big = icmp6(
        hop,
        SOURCE6,
        Icmpv6Type::PacketTooBig { mtu: 1280 },
        64,
        quoted,
    );
    let (verdict, out) = run(&mut dp, programs::EGRESS_INGRESS6, &too_big);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        check_icmp6(&out, POD6, CLIENT6),
        Icmpv6Type::PacketTooBig { mtu: 1280 }
    );
    // The quoted packet is now the client's own: CLIENT6:40000 -> POD6:8080, its TCP
    // checksum right for those addresses.
    let (_, icmp) = parse6(&out);
    let inner = &icmp[8..];
    let mut framed = vec![0u8; 14];
    framed[12..14].copy_from_slice(&[0x86, 0xdd]);
    framed.extend_from_slice(inner);
    check_tcp6(&framed, (CLIENT6, 40000), (POD6, 8080));
    let stats = dp.maps().stats().unwrap();
    assert_eq!(stats.path(Stat::IcmpErrorsTranslated).packets, 1, "{stats}");

    // A Packet Too Big about a flow that does not exist (a forged one, to shrink some
    // connection's MSS): dropped.
    let mut forged = quoted.to_vec();
    forged[40 + 2..40 + 4].copy_from_slice(&81u16.to_be_bytes());
    let forged = icmp6(
        hop,
        SOURCE6,
        Icmpv6Type::PacketTooBig { mtu: 1280 },
        64,
        &forged,
    );
    assert_eq!(
        run(&mut dp, programs::EGRESS_INGRESS6, &forged).0,
        TC_ACT_SHOT
    );
    assert_eq!(drops(&dp, DropReason::Unsolicited), 1);
}
