//! BPF_PROG_TEST_RUN tests of the router's own ICMPv6 errors: a packet whose hop limit runs
//! out at the router is answered with Time Exceeded from the router's address on the
//! sender's side, quoting the packet, with a valid checksum over the pseudo-header. (Packet
//! Too Big needs real interfaces for the MTU: `tests/tests/pod/dual_stack.rs`.)

use egress_common::{DropReason, Stat, programs};
use egress_tests::{
    flood::assert_errors_limited,
    pktgen::{TC_ACT_REDIRECT, TC_ACT_SHOT, drops, run},
    pktgen6::{CLIENT6, POD6, SERVER6, SOURCE6, check_icmp6, dataplane6, parse6, udp6},
};
use etherparse::{Icmpv6Type, icmpv6::TimeExceededCode};

const UDP: u8 = egress_common::proto::UDP;
/// Offset of the IPv6 hop limit in a frame.
const HOP_LIMIT: usize = 14 + 7;

#[test]
fn a_reply_whose_hop_limit_runs_out_gets_time_exceeded_from_egress_source() {
    let mut dp = dataplane6(&[(5353, UDP, SERVER6, 53)], None);
    let query = udp6((CLIENT6, 41000), (POD6, 5353), b"query");
    assert_eq!(
        run(&mut dp, programs::POD_INGRESS6, &query).0,
        TC_ACT_REDIRECT
    );

    let mut answer = udp6((SERVER6, 53), (SOURCE6, 41000), b"an answer");
    answer[HOP_LIMIT] = 1;
    let (verdict, out) = run(&mut dp, programs::EGRESS_INGRESS6, &answer);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "sent back out of the egress interface"
    );
    assert_eq!(
        check_icmp6(&out, SOURCE6, SERVER6),
        Icmpv6Type::TimeExceeded(TimeExceededCode::HopLimitExceeded)
    );
    let (ip, rest) = parse6(&out);
    assert_eq!(ip.hop_limit, 64);
    // The quote: the packet as it arrived (header and datagram; whole 32-bit words).
    let quoted = &rest[8..];
    let sent = &answer[14..];
    assert_eq!(quoted.len(), sent.len() & !3);
    assert_eq!(quoted, &sent[..quoted.len()]);
    let stats = dp.maps().stats().unwrap();
    assert_eq!(stats.path(Stat::IcmpErrorsSent).packets, 1, "{stats}");
    assert_eq!(
        stats.path(Stat::Replied).packets,
        0,
        "not translated: {stats}"
    );

    // An ICMPv6 error is never answered with another: with its hop limit out, it is
    // dropped. (A forged one quoting no flow is dropped before that: unsolicited.)
    let mut error = out.clone();
    error[HOP_LIMIT] = 1;
    // From the server's side: an error about the client's flow, hop limit 1.
    let quoted_query = &query[14..];
    let mut reported = egress_tests::pktgen6::icmp6(
        SERVER6,
        SOURCE6,
        Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port),
        1,
        &translated(&mut dp, quoted_query),
    );
    reported[HOP_LIMIT] = 1;
    let (verdict, _) = run(&mut dp, programs::EGRESS_INGRESS6, &reported);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(drops(&dp, DropReason::TtlExceeded), 1);
    assert_eq!(
        dp.maps()
            .stats()
            .unwrap()
            .path(Stat::IcmpErrorsSent)
            .packets,
        1,
        "no error about an error"
    );
}

/// The client's packet as the router sent it on (what a remote quotes in its errors).
fn translated(dp: &mut egress_user::dataplane::load::Dataplane, sent: &[u8]) -> Vec<u8> {
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
    frame.extend_from_slice(sent);
    let (verdict, out) = run(dp, programs::POD_INGRESS6, &frame);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    out[14..].to_vec()
}

#[test]
fn a_client_packet_whose_hop_limit_runs_out_gets_time_exceeded_from_the_pod() {
    let mut dp = dataplane6(&[(5353, UDP, SERVER6, 53)], None);
    // traceroute's first probe to a rule's port: the router is the hop.
    let mut probe = udp6((CLIENT6, 41000), (POD6, 5353), b"probe");
    probe[HOP_LIMIT] = 1;
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS6, &probe);
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "sent back out of the pod interface"
    );
    assert_eq!(
        check_icmp6(&out, POD6, CLIENT6),
        Icmpv6Type::TimeExceeded(TimeExceededCode::HopLimitExceeded)
    );
    assert!(dp.maps().conntrack6().unwrap().is_empty(), "no flow for it");
    // Hop limit 1 to a port no rule takes is the pod's own: delivered, no error.
    let mut local = udp6((CLIENT6, 41001), (POD6, 9999), b"for the pod");
    local[HOP_LIMIT] = 1;
    let (verdict, _) = run(&mut dp, programs::POD_INGRESS6, &local);
    assert_eq!(verdict, egress_tests::pktgen::TC_ACT_OK);
    // The next probe, with hop limit 2, goes through.
    let mut next = udp6((CLIENT6, 41000), (POD6, 5353), b"probe");
    next[HOP_LIMIT] = 2;
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS6, &next);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(parse6(&out).0.hop_limit, 1);
    let stats = dp.maps().stats().unwrap();
    assert_eq!(stats.path(Stat::IcmpErrorsSent).packets, 1, "{stats}");
    assert_eq!(stats.path(Stat::Forwarded).packets, 1, "{stats}");
}

/// A client flooding the router with probes whose hop limit runs out (the cheapest way
/// to make a router work) gets no more errors back than the limit; the rest are dropped.
#[test]
fn a_flood_of_expiring_probes_gets_no_more_errors_back_than_the_limit() {
    let mut dp = dataplane6(&[(5353, UDP, SERVER6, 53)], None);
    let mut probe = udp6((CLIENT6, 41000), (POD6, 5353), b"probe");
    probe[HOP_LIMIT] = 1;
    let out = assert_errors_limited(
        &mut dp,
        programs::POD_INGRESS6,
        &probe,
        DropReason::TtlExceeded,
    );
    assert_eq!(
        check_icmp6(&out, POD6, CLIENT6),
        Icmpv6Type::TimeExceeded(TimeExceededCode::HopLimitExceeded)
    );
}

#[test]
fn a_client_error_about_a_reply_goes_back_to_the_remote_translated() {
    let mut dp = dataplane6(&[(5353, UDP, SERVER6, 53)], None);
    let query = udp6((CLIENT6, 41000), (POD6, 5353), b"query");
    let (_, sent) = run(&mut dp, programs::POD_INGRESS6, &query);
    let sport = u16::from_be_bytes([sent[14 + 40], sent[14 + 41]]);
    let answer = udp6((SERVER6, 53), (SOURCE6, sport), b"an answer");
    let (verdict, delivered) = run(&mut dp, programs::EGRESS_INGRESS6, &answer);
    assert_eq!(verdict, TC_ACT_REDIRECT);

    // The client has closed its socket: Port Unreachable about the answer it got (from
    // the pod's address), quoting it.
    let unreachable = egress_tests::pktgen6::icmp6(
        CLIENT6,
        POD6,
        Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port),
        64,
        &delivered[14..],
    );
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS6, &unreachable);
    assert_eq!(verdict, TC_ACT_REDIRECT, "to the remote");
    assert_eq!(
        check_icmp6(&out, SOURCE6, SERVER6),
        Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port)
    );
    // The quote is the answer as the server sent it (its checksum valid again), but for
    // the hop limit the router took one off on the way.
    let (_, rest) = parse6(&out);
    let mut quoted = rest[8..].to_vec();
    assert_eq!(quoted[7], 63);
    quoted[7] = 64;
    assert_eq!(
        quoted,
        &answer[14..],
        "the server's own datagram, byte for byte"
    );
    let stats = dp.maps().stats().unwrap();
    assert_eq!(stats.path(Stat::IcmpErrorsTranslated).packets, 1, "{stats}");

    // An error quoting nothing the router tracks is the pod's own business.
    let stray = udp6((POD6, 7), (CLIENT6, 9), b"the pod's own");
    let unrelated = egress_tests::pktgen6::icmp6(
        CLIENT6,
        POD6,
        Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port),
        64,
        &stray[14..],
    );
    let (verdict, _) = run(&mut dp, programs::POD_INGRESS6, &unrelated);
    assert_eq!(verdict, egress_tests::pktgen::TC_ACT_OK);
}
