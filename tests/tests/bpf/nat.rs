//! BPF_PROG_TEST_RUN tests of the translation (cilium's PKTGEN -> SETUP -> CHECK): frames
//! built with etherparse run through the real programs in the kernel, and the output is
//! re-parsed: rewritten headers, IPv4 and L4 checksums, counters and conntrack entries.

use egress_common::{DropReason, Stat, programs};
use egress_tests::pktgen::{
    CLIENT, POD, ROUTER_HOP, SERVER, SOURCE, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, check_tcp,
    check_udp, dataplane, dataplane_with, drops, frame, ipv4, mss, ones_complement, parse_ip, run,
    tcp_frame, udp_frame,
};
use egress_user::dataplane::load::Dataplane;
use etherparse::{IpFragOffset, IpNumber, Ipv4Header, UdpHeader};

#[test]
fn tcp_with_ip_options_is_translated_both_ways_with_valid_checksums() {
    let mut dp = dataplane("8080 tcp 203.0.113.10 80");
    // Record route option (7 bytes) + end of list: IHL 7.
    let options = [7, 7, 4, 0, 0, 0, 0, 0];
    let syn = tcp_frame((CLIENT, 40000), (POD, 8080), true, &options, &[]);
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let tcp = check_tcp(&out, (SOURCE, 40000), (SERVER, 80));
    let (ip, _) = parse_ip(&out);
    assert_eq!(ip.time_to_live, 63, "TTL decremented");
    assert_eq!(ip.options.as_slice(), &options, "IP options kept");
    assert_eq!(mss(&tcp), Some(1360), "MSS clamped to the smaller MTU");

    let syn_ack = tcp_frame((SERVER, 80), (SOURCE, 40000), true, &[], &[]);
    let (verdict, out) = run(&mut dp, programs::EGRESS_INGRESS, &syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_tcp(&out, (POD, 8080), (CLIENT, 40000));

    let data = tcp_frame(
        (CLIENT, 40000),
        (POD, 8080),
        false,
        &[],
        b"GET / HTTP/1.0\r\n\r\n",
    );
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &data);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_tcp(&out, (SOURCE, 40000), (SERVER, 80));

    let stats = dp.maps().stats().unwrap();
    assert_eq!(stats.path(Stat::FlowsCreated).packets, 1, "{stats}");
    assert_eq!(stats.path(Stat::MssClamped).packets, 2, "{stats}");
    let flows = dp.maps().conntrack().unwrap();
    assert_eq!(flows.len(), 2, "forward and reply entries: {flows:?}");
}

#[test]
fn udp_port_remap_and_zero_checksum() {
    let mut dp = dataplane("5300 udp 203.0.113.10 5353");
    let query = udp_frame((CLIENT, 41000), (POD, 5300), b"query", 64);
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &query);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_udp(&out, (SOURCE, 41000), (SERVER, 5353));

    let answer = udp_frame((SERVER, 5353), (SOURCE, 41000), b"answer", 64);
    let (verdict, out) = run(&mut dp, programs::EGRESS_INGRESS, &answer);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_udp(&out, (POD, 5300), (CLIENT, 41000));

    // A UDP checksum of 0 means "none" and must stay 0 (BPF_F_MARK_MANGLED_0).
    let mut none = udp_frame((CLIENT, 41000), (POD, 5300), b"again", 64);
    let csum = 14 + 20 + 6;
    none[csum..csum + 2].copy_from_slice(&[0, 0]);
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &none);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[csum..csum + 2], &[0, 0]);
}

/// A client port outside the NAT range (which user space keeps out of the pod's ephemeral
/// range) is not kept: it could be the port of one of the pod's own sockets on
/// EGRESS_SOURCE. It is folded into the range, one translated port per client port, so a
/// client whose ephemeral range is no wider than the NAT range never has two connections
/// share a translated tuple (which a remote in TIME_WAIT may refuse: PAWS). Replies find
/// their way back.
#[test]
fn a_client_port_outside_the_nat_range_is_folded_into_it() {
    let mut dp = dataplane_with("5300 udp 203.0.113.10 5353", (1024, 32767));
    // Linux's default ephemeral range, 32768-60999, lands on 1024-29255, in order.
    for (client, translated) in [(32768, 1024), (32769, 1025), (41000, 9256), (60999, 29255)] {
        let query = udp_frame((CLIENT, client), (POD, 5300), b"query", 64);
        let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &query);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        check_udp(&out, (SOURCE, translated), (SERVER, 5353));
        let answer = udp_frame((SERVER, 5353), (SOURCE, translated), b"answer", 64);
        let (verdict, out) = run(&mut dp, programs::EGRESS_INGRESS, &answer);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        check_udp(&out, (POD, 5300), (CLIENT, client));
    }
    // Inside the range, the client's port is kept.
    let inside = udp_frame((CLIENT, 20000), (POD, 5300), b"query", 64);
    let (_, out) = run(&mut dp, programs::POD_INGRESS, &inside);
    check_udp(&out, (SOURCE, 20000), (SERVER, 5353));
    // Its twin one range above (20000 + 31744) finds that port taken and probes others.
    let twin = udp_frame((CLIENT, 51744), (POD, 5300), b"query", 64);
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &twin);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (_, l4) = parse_ip(&out);
    let port = u16::from_be_bytes([l4[0], l4[1]]);
    assert!(
        port != 20000 && (1024..=32767).contains(&port),
        "port {port}"
    );
    assert_eq!(dp.maps().stats().unwrap().path(Stat::NatRetries).packets, 1);
}

#[test]
fn unmatched_and_non_ipv4_traffic_reaches_the_pod_untouched() {
    let mut dp = dataplane("8080 tcp 203.0.113.10 80");
    let other_port = tcp_frame((CLIENT, 40000), (POD, 22), true, &[], &[]);
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &other_port);
    assert_eq!(
        (verdict, out.as_slice()),
        (TC_ACT_OK, other_port.as_slice())
    );

    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 2, 0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &arp);
    assert_eq!((verdict, out.as_slice()), (TC_ACT_OK, arp.as_slice()));
    let (verdict, _) = run(&mut dp, programs::EGRESS_INGRESS, &arp);
    assert_eq!(verdict, TC_ACT_OK, "ARP keeps working on the egress side");
    let stats = dp.maps().stats().unwrap();
    assert_eq!(stats.path(Stat::PodIngressPassed).packets, 2, "{stats}");
}

/// IPv6 is not supported yet: on the egress interface none of it passes, either way (an
/// egress-network host must not reach the pod's link-local address; the pod's neighbour
/// discovery does not leave). The pod interface's IPv6 is the cluster's business.
#[test]
fn ipv6_on_the_egress_interface_is_dropped_both_ways() {
    let mut dp = dataplane("8080 tcp 203.0.113.10 80\n203.0.113.10");
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 1])
        .ipv6(
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
            [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            64,
        )
        .tcp(50000, 8080, 1, 1024)
        .syn()
        .write(&mut frame, b"")
        .unwrap();
    let (verdict, _) = run(&mut dp, programs::EGRESS_INGRESS, &frame);
    assert_eq!(verdict, TC_ACT_SHOT, "in from the egress network");
    let (verdict, _) = run(&mut dp, programs::EGRESS_EGRESS, &frame);
    assert_eq!(verdict, TC_ACT_SHOT, "out to the egress network");
    assert_eq!(drops(&dp, DropReason::Ipv6Unsupported), 2);
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &frame);
    assert_eq!((verdict, out.as_slice()), (TC_ACT_OK, frame.as_slice()));
}

#[test]
fn truncated_and_malformed_are_dropped_by_reason() {
    let mut dp = dataplane("8080 tcp 203.0.113.10 80");
    let syn = tcp_frame((CLIENT, 40000), (POD, 8080), true, &[], &[]);
    // Cut inside the TCP header, consistently with the IPv4 total length.
    let mut cut = syn[..14 + 20 + 10].to_vec();
    cut[16..18].copy_from_slice(&30u16.to_be_bytes());
    let (verdict, _) = run(&mut dp, programs::POD_INGRESS, &cut);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(drops(&dp, DropReason::Truncated), 1);
    // IHL 4 (16 bytes): not a valid header.
    let mut bad = syn.clone();
    bad[14] = 0x44;
    let (verdict, _) = run(&mut dp, programs::POD_INGRESS, &bad);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(drops(&dp, DropReason::MalformedIpv4), 1);
    // Total length beyond the frame.
    let (verdict, _) = run(&mut dp, programs::POD_INGRESS, &syn[..syn.len() - 4]);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(drops(&dp, DropReason::Truncated), 2);
    // (A TTL that would expire here is answered: tests/tests/bpf/path.rs.)
}

#[test]
fn unsolicited_packets_to_egress_source_are_dropped() {
    let mut dp = dataplane("8080 tcp 203.0.113.10 80\n203.0.113.10");
    let probe = tcp_frame((ROUTER_HOP, 50000), (SOURCE, 22), true, &[], &[]);
    let (verdict, _) = run(&mut dp, programs::EGRESS_INGRESS, &probe);
    assert_eq!(verdict, TC_ACT_SHOT);
    let other = tcp_frame((ROUTER_HOP, 50000), ([198, 51, 100, 7], 22), true, &[], &[]);
    let (verdict, _) = run(&mut dp, programs::EGRESS_INGRESS, &other);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(drops(&dp, DropReason::Unsolicited), 1);
    assert_eq!(drops(&dp, DropReason::NotEgressSource), 1);
}

/// Splits a UDP datagram into two IPv4 fragments (the first carries the UDP header).
fn udp_fragments(src: ([u8; 4], u16), dst: ([u8; 4], u16), data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let ip = ipv4(src.0, dst.0, IpNumber::UDP, 8 + data.len(), 64);
    let udp = UdpHeader::with_ipv4_checksum(src.1, dst.1, &ip, data).unwrap();
    let mut datagram = udp.to_bytes().to_vec();
    datagram.extend_from_slice(data);
    let (first, second) = datagram.split_at(64);
    let mut ip1 = ipv4(src.0, dst.0, IpNumber::UDP, first.len(), 64);
    ip1.more_fragments = true;
    let mut ip2 = ipv4(src.0, dst.0, IpNumber::UDP, second.len(), 64);
    ip2.fragment_offset = IpFragOffset::try_new(64 / 8).unwrap();
    (frame(ip1, first), frame(ip2, second))
}

#[test]
fn fragments_follow_their_first_fragment_and_are_never_half_translated() {
    let mut dp = dataplane("5300 udp 203.0.113.10 5353\n203.0.113.10");
    let data: Vec<u8> = (0..200u8).collect();
    let (first, second) = udp_fragments((CLIENT, 41000), (POD, 5300), &data);

    let (verdict, out1) = run(&mut dp, programs::POD_INGRESS, &first);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (verdict, out2) = run(&mut dp, programs::POD_INGRESS, &second);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    // Reassemble the output and check the datagram as the server would.
    let (ip1, l4_1) = parse_ip(&out1);
    let (ip2, l4_2) = parse_ip(&out2);
    assert_eq!((ip1.source, ip1.destination), (SOURCE, SERVER));
    assert_eq!((ip2.source, ip2.destination), (SOURCE, SERVER));
    assert!(ip1.more_fragments && ip2.fragment_offset.value() == 8);
    let mut datagram = l4_1.to_vec();
    datagram.extend_from_slice(l4_2);
    let (udp, payload) = UdpHeader::from_slice(&datagram).unwrap();
    assert_eq!((udp.source_port, udp.destination_port), (41000, 5353));
    assert_eq!(payload, &data[..]);
    let whole = ipv4(SOURCE, SERVER, IpNumber::UDP, datagram.len(), 63);
    assert_eq!(
        udp.checksum,
        udp.calc_checksum_ipv4(&whole, payload).unwrap()
    );

    // A later fragment whose first fragment was never seen is dropped, not forwarded.
    let (_, orphan) = udp_fragments(([192, 0, 2, 3], 41000), (POD, 5300), &data);
    let (verdict, _) = run(&mut dp, programs::POD_INGRESS, &orphan);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(drops(&dp, DropReason::FragmentUnknown), 1);
    let stats = dp.maps().stats().unwrap();
    assert_eq!(stats.path(Stat::FragmentsTranslated).packets, 1, "{stats}");
}

#[test]
fn icmp_frag_needed_about_a_flow_is_translated_with_its_embedded_header() {
    let mut dp = dataplane("5300 udp 203.0.113.10 5353");
    let query = udp_frame((CLIENT, 41000), (POD, 5300), b"a query that is too big", 64);
    let (verdict, sent) = run(&mut dp, programs::POD_INGRESS, &query);
    assert_eq!(verdict, TC_ACT_REDIRECT);

    // The gateway answers "fragmentation needed, MTU 1280" quoting what the router sent.
    let quoted = &sent[14..14 + 20 + 8];
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x00];
    icmp.extend_from_slice(quoted);
    let check = ones_complement(&icmp);
    icmp[2..4].copy_from_slice(&check.to_be_bytes());
    let error = frame(
        ipv4(ROUTER_HOP, SOURCE, IpNumber::ICMP, icmp.len(), 64),
        &icmp,
    );
    let (verdict, out) = run(&mut dp, programs::EGRESS_INGRESS, &error);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (ip, icmp_out) = parse_ip(&out);
    assert_eq!((ip.source, ip.destination), (POD, CLIENT), "outer header");
    assert_eq!(ones_complement(icmp_out), 0, "ICMP checksum");
    assert_eq!(
        &icmp_out[..8],
        &[3, 4, icmp_out[2], icmp_out[3], 0, 0, 0x05, 0x00]
    );
    // The embedded packet is now the one the client sent.
    let (inner, inner_l4) = Ipv4Header::from_slice(&icmp_out[8..]).unwrap();
    assert_eq!(
        inner.header_checksum,
        inner.calc_header_checksum(),
        "inner IPv4 checksum"
    );
    assert_eq!((inner.source, inner.destination), (CLIENT, POD));
    assert_eq!(&inner_l4[..4], &[0xa0, 0x28, 0x14, 0xb4], "41000 -> 5300");
    let stats = dp.maps().stats().unwrap();
    assert_eq!(stats.path(Stat::IcmpErrorsTranslated).packets, 1, "{stats}");
}

#[test]
fn echo_through_the_fallback_gets_its_id_back() {
    let mut dp = dataplane("203.0.113.10");
    let echo = |src, dst, kind: u8, id: u16| {
        let mut icmp = vec![kind, 0, 0, 0];
        icmp.extend_from_slice(&id.to_be_bytes());
        icmp.extend_from_slice(&[0, 1, b'p', b'i', b'n', b'g']);
        let check = ones_complement(&icmp);
        icmp[2..4].copy_from_slice(&check.to_be_bytes());
        frame(ipv4(src, dst, IpNumber::ICMP, icmp.len(), 64), &icmp)
    };
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &echo(CLIENT, POD, 8, 77));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (ip, icmp) = parse_ip(&out);
    assert_eq!((ip.source, ip.destination), (SOURCE, SERVER));
    assert_eq!(ones_complement(icmp), 0);
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let (verdict, out) = run(
        &mut dp,
        programs::EGRESS_INGRESS,
        &echo(SERVER, SOURCE, 0, id),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (ip, icmp) = parse_ip(&out);
    assert_eq!((ip.source, ip.destination), (POD, CLIENT));
    assert_eq!(ones_complement(icmp), 0);
    assert_eq!(u16::from_be_bytes([icmp[4], icmp[5]]), 77);
}

/// `ping -s 3000` through the fallback: the echo request and its reply arrive in fragments;
/// every fragment is translated (the later ones by the id their first fragment carried),
/// and the reassembled messages have the translated id and a valid checksum.
#[test]
fn fragmented_echo_through_the_fallback_is_translated_whole() {
    let mut dp = dataplane("203.0.113.10");
    // An echo message of 8 + 192 bytes split after 64 bytes, as one datagram (IP id 0x1234).
    let fragments = |src, dst, kind: u8, id: u16| {
        let mut icmp = vec![kind, 0, 0, 0];
        icmp.extend_from_slice(&id.to_be_bytes());
        icmp.extend_from_slice(&[0, 1]);
        icmp.extend((0..192u16).map(|i| i as u8));
        let check = ones_complement(&icmp);
        icmp[2..4].copy_from_slice(&check.to_be_bytes());
        let (first, second) = icmp.split_at(64);
        let mut ip1 = ipv4(src, dst, IpNumber::ICMP, first.len(), 64);
        ip1.more_fragments = true;
        let mut ip2 = ipv4(src, dst, IpNumber::ICMP, second.len(), 64);
        ip2.fragment_offset = IpFragOffset::try_new(64 / 8).unwrap();
        (frame(ip1, first), frame(ip2, second))
    };
    let reassemble = |dp: &mut Dataplane, prog, (first, second): (Vec<u8>, Vec<u8>)| {
        let (verdict, out1) = run(dp, prog, &first);
        assert_eq!(verdict, TC_ACT_REDIRECT, "first fragment");
        let (verdict, out2) = run(dp, prog, &second);
        assert_eq!(verdict, TC_ACT_REDIRECT, "later fragment");
        let (ip1, l4_1) = parse_ip(&out1);
        let (ip2, l4_2) = parse_ip(&out2);
        assert_eq!((ip1.source, ip1.destination), (ip2.source, ip2.destination));
        let mut icmp = l4_1.to_vec();
        icmp.extend_from_slice(l4_2);
        assert_eq!(ones_complement(&icmp), 0, "checksum of the whole message");
        (
            (ip1.source, ip1.destination),
            u16::from_be_bytes([icmp[4], icmp[5]]),
        )
    };
    let (addrs, id) = reassemble(
        &mut dp,
        programs::POD_INGRESS,
        fragments(CLIENT, POD, 8, 77),
    );
    assert_eq!(addrs, (SOURCE, SERVER));
    let (addrs, back) = reassemble(
        &mut dp,
        programs::EGRESS_INGRESS,
        fragments(SERVER, SOURCE, 0, id),
    );
    assert_eq!((addrs, back), ((POD, CLIENT), 77));
    let stats = dp.maps().stats().unwrap();
    assert_eq!(stats.path(Stat::FragmentsTranslated).packets, 2, "{stats}");
}
