//! BPF_PROG_TEST_RUN tests of the drop reasons no other test reaches: each sends the
//! packet a user (or an attacker) would, and checks the verdict and that exactly that
//! reason was counted.

use aya::programs::{TestRun as _, TestRunOptions};
use egress_common::{DropReason, Stat, programs};
use egress_tests::pktgen::{
    CLIENT, POD, SERVER, SOURCE, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, check_udp, dataplane,
    dataplane_with, drops, frame, ipv4, run, udp_frame,
};
use egress_user::dataplane::load::{Dataplane, LoadOptions};
use etherparse::IpNumber;

/// Every drop reason's count but `reason`'s is 0.
fn only_dropped(dp: &Dataplane, reason: DropReason, packets: u64) {
    for other in DropReason::ALL {
        let expected = if other == reason { packets } else { 0 };
        assert_eq!(drops(dp, other), expected, "{}", other.name());
    }
}

/// A GRE packet (protocol 47) to the pod.
fn gre_frame() -> Vec<u8> {
    let payload = [0u8, 0, 0x08, 0x00, 0, 0, 0, 0];
    frame(
        ipv4(CLIENT, POD, IpNumber::GRE, payload.len(), 64),
        &payload,
    )
}

/// Before the loader has written the configuration (between load and attach, or a map
/// emptied by hand), nothing from the egress network reaches the pod; the pod interface
/// keeps working as if there were no router.
#[test]
fn unconfigured_data_plane_drops_egress_side_traffic_and_passes_the_pod_side() {
    let mut dp = Dataplane::load(&LoadOptions {
        conntrack_flows: 1024,
        pin_dir: None,
        ipv6: false,
    })
    .unwrap();
    let mut test_run = |name: &'static str, data: &[u8]| {
        let mut out = vec![0u8; data.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(data);
        opts.data_out = Some(&mut out);
        dp.program(name)
            .unwrap()
            .test_run(opts)
            .unwrap()
            .return_value
    };
    let inbound = udp_frame((SERVER, 53), (SOURCE, 40000), b"answer", 64);
    assert_eq!(test_run(programs::EGRESS_INGRESS, &inbound), TC_ACT_SHOT);
    let to_pod = udp_frame((CLIENT, 40000), (POD, 53), b"query", 64);
    assert_eq!(test_run(programs::POD_INGRESS, &to_pod), TC_ACT_OK);
    only_dropped(&dp, DropReason::Unconfigured, 1);
    let stats = dp.maps().stats().unwrap();
    assert_eq!(stats.path(Stat::PodIngressPassed).packets, 1, "{stats}");
}

/// With a fallback every protocol is the router's, and one it cannot translate (GRE) is
/// dropped, not handed to the pod's own stack; without one, it is the pod's.
#[test]
fn a_protocol_the_fallback_cannot_translate_is_dropped() {
    let mut dp = dataplane("203.0.113.10");
    let (verdict, _) = run(&mut dp, programs::POD_INGRESS, &gre_frame());
    assert_eq!(verdict, TC_ACT_SHOT);
    only_dropped(&dp, DropReason::UnsupportedProtocol, 1);
    assert!(dp.maps().conntrack().unwrap().is_empty());

    let mut dp = dataplane("8080 tcp 203.0.113.10 80");
    let gre = gre_frame();
    let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &gre);
    assert_eq!((verdict, out.as_slice()), (TC_ACT_OK, gre.as_slice()));
    only_dropped(&dp, DropReason::UnsupportedProtocol, 0);
}

/// A NAT range of two ports serves two flows to one remote port: a third client flow is
/// dropped as `nat_exhausted` after the bounded search (each probe counted), and the two
/// flows keep their translations.
#[test]
fn a_full_nat_range_drops_the_next_flow_and_keeps_the_others() {
    let mut dp = dataplane_with("5300 udp 203.0.113.10 53", (20000, 20001));
    let mut ports = Vec::new();
    for sport in [40000, 40001] {
        let query = udp_frame((CLIENT, sport), (POD, 5300), b"query", 64);
        let (verdict, out) = run(&mut dp, programs::POD_INGRESS, &query);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let port = u16::from_be_bytes([out[34], out[35]]);
        check_udp(&out, (SOURCE, port), (SERVER, 53));
        ports.push((sport, port));
    }
    let mut taken: Vec<u16> = ports.iter().map(|&(_, port)| port).collect();
    taken.sort_unstable();
    assert_eq!(taken, [20000, 20001]);
    let retries_before = dp.maps().stats().unwrap().path(Stat::NatRetries).packets;

    let third = udp_frame((CLIENT, 40002), (POD, 5300), b"query", 64);
    let (verdict, _) = run(&mut dp, programs::POD_INGRESS, &third);
    assert_eq!(verdict, TC_ACT_SHOT);
    only_dropped(&dp, DropReason::NatExhausted, 1);
    let retries = dp.maps().stats().unwrap().path(Stat::NatRetries).packets - retries_before;
    assert!(
        (2..=32).contains(&retries),
        "a bounded search: {retries} retries"
    );
    assert_eq!(
        dp.maps().conntrack().unwrap().len(),
        4,
        "two flows, two entries each"
    );

    // The two flows still pass both ways.
    for (sport, port) in ports {
        let answer = udp_frame((SERVER, 53), (SOURCE, port), b"answer", 64);
        let (verdict, out) = run(&mut dp, programs::EGRESS_INGRESS, &answer);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        check_udp(&out, (POD, 5300), (CLIENT, sport));
        let again = udp_frame((CLIENT, sport), (POD, 5300), b"more", 64);
        let (verdict, _) = run(&mut dp, programs::POD_INGRESS, &again);
        assert_eq!(verdict, TC_ACT_REDIRECT);
    }
    only_dropped(&dp, DropReason::NatExhausted, 1);
}
