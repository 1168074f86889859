//! The router answers for the path as a router does, with BPF_PROG_TEST_RUN: ICMP Time
//! Exceeded for a TTL that runs out here, ICMP Fragmentation Needed (with the next link's
//! MTU) for a DF packet too big for it, a drop for one without DF; each error checked as
//! its receiver would (addresses, type, checksum, the quoted packet). The MTU is the real
//! one of veth links in a throw-away namespace, read by `bpf_check_mtu`.

use egress_common::{DropReason, Stat, programs};
use egress_tests::{
    netns::Netns,
    pktgen::{
        CLIENT, POD, SERVER, SOURCE, TC_ACT_REDIRECT, TC_ACT_SHOT, check_udp, dataplane,
        dataplane_configured, drops, frame, ipv4, ones_complement, parse_ip, run, udp_frame,
    },
};
use egress_user::{dataplane::load::Dataplane, network::interface::ifindex};
use etherparse::{IpNumber, Ipv4Header, UdpHeader};

/// Checks an ICMP error the router sent: from `from` to `to`, `kind`/`code`, a valid
/// checksum over the whole message, and the quoted packet's header as `original` had it.
/// Returns the 4 bytes after the checksum (the next-hop MTU of a Fragmentation Needed).
fn check_error(
    out: &[u8],
    from: [u8; 4],
    to: [u8; 4],
    kind: u8,
    code: u8,
    original: &[u8],
) -> [u8; 4] {
    let (ip, icmp) = parse_ip(out);
    assert_eq!((ip.source, ip.destination), (from, to), "error addresses");
    assert_eq!(ip.protocol, IpNumber::ICMP);
    assert_eq!(usize::from(ip.total_len), 20 + icmp.len());
    assert_eq!((icmp[0], icmp[1]), (kind, code), "ICMP type and code");
    assert_eq!(ones_complement(icmp), 0, "ICMP checksum");
    // The quote: the original IP header and the start of its payload, unchanged.
    let quoted = &icmp[8..];
    let (orig_ip, orig_rest) = Ipv4Header::from_slice(&original[14..]).unwrap();
    let (quoted_ip, quoted_rest) = Ipv4Header::from_slice(quoted).unwrap();
    assert_eq!(quoted_ip, orig_ip, "quoted header");
    assert!(quoted_rest.len() >= 8, "at least 8 bytes of payload quoted");
    assert_eq!(quoted_rest, &orig_rest[..quoted_rest.len()]);
    [icmp[4], icmp[5], icmp[6], icmp[7]]
}

/// A UDP datagram with `payload` bytes, DF set or not, TTL 64.
fn udp_df(src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: usize, df: bool) -> Vec<u8> {
    let data = vec![b'd'; payload];
    let mut ip = ipv4(src.0, dst.0, IpNumber::UDP, 8 + data.len(), 64);
    ip.dont_fragment = df;
    let udp = UdpHeader::with_ipv4_checksum(src.1, dst.1, &ip, &data).unwrap();
    let mut l4 = udp.to_bytes().to_vec();
    l4.extend_from_slice(&data);
    frame(ip, &l4)
}

fn sent(dp: &Dataplane) -> u64 {
    dp.maps()
        .stats()
        .unwrap()
        .path(Stat::IcmpErrorsSent)
        .packets
}

/// A client's packet whose TTL runs out at the router gets Time Exceeded from the pod IP
/// (traceroute shows the router as a hop), and creates no flow; so does a reply whose TTL
/// runs out, from EGRESS_SOURCE to the remote.
#[test]
fn a_ttl_that_runs_out_here_is_answered_with_time_exceeded() {
    let mut dp = dataplane("8080 udp 203.0.113.10 80");
    let expiring = udp_frame((CLIENT, 41000), (POD, 8080), b"traceroute probe", 1);
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &expiring);
    assert_eq!(verdict, TC_ACT_REDIRECT, "sent back");
    let rest = check_error(&out, POD, CLIENT, 11, 0, &expiring);
    assert_eq!(rest, [0; 4]);
    assert!(dp.maps().conntrack().unwrap().is_empty(), "no flow");
    assert_eq!(sent(&dp), 1);

    // A flow, then its reply arrives with TTL 1.
    let query = udp_frame((CLIENT, 41000), (POD, 8080), b"query", 64);
    let (verdict, translated) = run(&mut dp, programs::POD_INGRESS, &query);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_udp(&translated, (SOURCE, 41000), (SERVER, 80));
    let late = udp_frame((SERVER, 80), (SOURCE, 41000), b"answer", 1);
    let (verdict, out) = run(&mut dp, programs::EGRESS_INGRESS, &late);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    check_error(&out, SOURCE, SERVER, 11, 0, &late);
    assert_eq!(sent(&dp), 2);

    // No error about an error: an expiring ICMP error (port unreachable, about the query
    // as it left) is dropped.
    let mut error = vec![3, 3, 0, 0, 0, 0, 0, 0];
    error.extend_from_slice(&translated[14..14 + 28]);
    let check = ones_complement(&error);
    error[2..4].copy_from_slice(&check.to_be_bytes());
    let expiring_error = frame(ipv4(SERVER, SOURCE, IpNumber::ICMP, error.len(), 1), &error);
    let (verdict, _) = run(&mut dp, programs::EGRESS_INGRESS, &expiring_error);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(drops(&dp, DropReason::TtlExceeded), 1);
    assert_eq!(sent(&dp), 2);
}

/// A client flooding the router with packets whose TTL runs out gets no more errors back
/// than the limit (shared with IPv6's); the rest are dropped, counted as held back.
#[test]
fn a_flood_of_expiring_packets_gets_no_more_errors_back_than_the_limit() {
    let mut dp = dataplane("8080 udp 203.0.113.10 80");
    let expiring = udp_frame((CLIENT, 41000), (POD, 8080), b"traceroute probe", 1);
    let out = egress_tests::flood::assert_errors_limited(
        &mut dp,
        programs::POD_INGRESS,
        &expiring,
        DropReason::TtlExceeded,
    );
    check_error(&out, POD, CLIENT, 11, 0, &expiring);
}

/// In a namespace with two links, `small` (MTU 1280) and `big` (MTU 1500): a packet
/// for the smaller link with DF gets Fragmentation Needed with MTU 1280 back, without DF it
/// is dropped (`too_big`), and one that fits is translated; both directions.
#[test]
fn a_df_packet_too_big_for_the_next_link_gets_fragmentation_needed() {
    let ns = Netns::new(&format!("er-lab-{}-path", std::process::id())).unwrap();
    for (name, mtu) in [("small", "1280"), ("big", "1500")] {
        let peer = format!("{name}-peer");
        ns.ip(&[
            "link", "add", name, "mtu", mtu, "type", "veth", "peer", "name", &peer,
        ])
        .unwrap();
        ns.ip(&["link", "set", name, "up"]).unwrap();
    }
    ns.enter(|| {
        let small = ifindex("small").unwrap();
        let big = ifindex("big").unwrap();

        // Client -> remote: the egress link is the small one.
        let mut dp = dataplane_configured("5300 udp 203.0.113.10", |cfg| {
            cfg.pod_ifindex = big;
            cfg.egress_ifindex = small;
            cfg.mss_clamp = 1280 - 40;
        });
        let fits = udp_df((CLIENT, 41000), (POD, 5300), 1280 - 28, true);
        let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &fits);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        check_udp(&out, (SOURCE, 41000), (SERVER, 5300));
        let too_big = udp_df((CLIENT, 41000), (POD, 5300), 1400, true);
        let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &too_big);
        assert_eq!(verdict, TC_ACT_REDIRECT, "answered");
        let rest = check_error(&out, POD, CLIENT, 3, 4, &too_big);
        assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 1280, "next-hop MTU");
        let no_df = udp_df((CLIENT, 41000), (POD, 5300), 1400, false);
        let (verdict, _) = run(&mut dp, programs::POD_INGRESS, &no_df);
        assert_eq!(verdict, TC_ACT_SHOT);
        assert_eq!(drops(&dp, DropReason::TooBig), 1);
        assert_eq!(sent(&dp), 1);

        // Remote -> client: the pod link is the small one.
        let mut dp = dataplane_configured("5300 udp 203.0.113.10", |cfg| {
            cfg.pod_ifindex = small;
            cfg.egress_ifindex = big;
            cfg.mss_clamp = 1280 - 40;
        });
        let query = udp_df((CLIENT, 41000), (POD, 5300), 10, true);
        let (verdict, _) = run(&mut dp, programs::POD_INGRESS, &query);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let big_answer = udp_df((SERVER, 5300), (SOURCE, 41000), 1400, true);
        let (verdict, out) = run(&mut dp, programs::EGRESS_INGRESS, &big_answer);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let rest = check_error(&out, SOURCE, SERVER, 3, 4, &big_answer);
        assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 1280);
        let answer = udp_df((SERVER, 5300), (SOURCE, 41000), 1000, true);
        let (verdict, out) = run(&mut dp, programs::EGRESS_INGRESS, &answer);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        check_udp(&out, (POD, 5300), (CLIENT, 41000));
    })
    .unwrap();
}
