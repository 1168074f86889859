//! The IPv6 conntrack tables under the agent's GC, census and per-client limit, and the
//! IPv6 fallback's own counters: real flows made by BPF_PROG_TEST_RUN through the IPv6
//! programs, collected by the same pass the agent runs.

use egress_common::{DropReason, FALLBACK6_RULE_ID, programs};
use egress_tests::{
    pktgen::{TC_ACT_REDIRECT, TC_ACT_SHOT, drops, run},
    pktgen6::{CLIENT6, FALLBACK6, POD6, SERVER6, SOURCE6, dataplane6, udp6},
};
use egress_user::conntrack::{collect_garbage_in_kernel, monotonic_ns, source_limits};

const UDP: u8 = egress_common::proto::UDP;
const HOUR_NS: u64 = 3_600_000_000_000;

#[test]
fn ipv6_flows_are_collected_counted_and_limited() {
    let mut dp = dataplane6(&[(5353, UDP, SERVER6, 53)], Some(FALLBACK6));
    // Two flows by the rule, one answered; one by the fallback.
    for port in [41000, 41001] {
        let query = udp6((CLIENT6, port), (POD6, 5353), b"query");
        assert_eq!(
            run(&mut dp, programs::POD_INGRESS6, &query).0,
            TC_ACT_REDIRECT
        );
    }
    let answer = udp6((SERVER6, 53), (SOURCE6, 41000), b"answer");
    assert_eq!(
        run(&mut dp, programs::EGRESS_INGRESS6, &answer).0,
        TC_ACT_REDIRECT
    );
    let other = udp6((CLIENT6, 41002), (POD6, 9999), b"fallback");
    assert_eq!(
        run(&mut dp, programs::POD_INGRESS6, &other).0,
        TC_ACT_REDIRECT
    );
    assert_eq!(
        dp.maps().conntrack6().unwrap().len(),
        6,
        "three flows, two entries each"
    );

    // The IPv6 fallback counts under its own id, not the IPv4 fallback's.
    let rule_stats = dp.maps().rule_stats().unwrap();
    assert_eq!(rule_stats[usize::from(FALLBACK6_RULE_ID)].packets, 1);
    assert_eq!(rule_stats[0].packets, 0, "the IPv4 fallback saw nothing");
    assert_eq!(
        rule_stats[1].packets, 3,
        "the rule: two queries and an answer"
    );

    // Now: nothing expires, and the census counts the client's three flows.
    let pass = collect_garbage_in_kernel(&mut dp, monotonic_ns()).unwrap();
    assert_eq!(pass.v6.expired_total(), 0, "{pass:?}");
    assert_eq!(pass.v6.entries + pass.v6.unreplied_entries, 6, "{pass:?}");
    assert_eq!(
        pass.v6.entries, 2,
        "the answered flow's two entries: {pass:?}"
    );
    assert_eq!(pass.v6.flows_by_source.get(&CLIENT6), Some(&3), "{pass:?}");
    assert!(
        pass.v6.capacity > 1 && pass.v4.flows_by_source.is_empty(),
        "{pass:?}"
    );

    // Over a limit of 2: limited, and its next new flow is refused in the data plane.
    let limits = source_limits(&pass.v6.flows_by_source, &[], 2);
    assert_eq!(limits.limit, [(CLIENT6, 3)]);
    dp.maps_mut().limit_source(CLIENT6, 3).unwrap();
    assert_eq!(
        dp.maps().limited_sources::<[u8; 16]>().unwrap(),
        [(CLIENT6, 3)]
    );
    let fourth = udp6((CLIENT6, 41003), (POD6, 5353), b"one more");
    assert_eq!(run(&mut dp, programs::POD_INGRESS6, &fourth).0, TC_ACT_SHOT);
    assert_eq!(drops(&dp, DropReason::SourceLimit), 1);
    // Its established flows still pass.
    let again = udp6((CLIENT6, 41000), (POD6, 5353), b"again");
    assert_eq!(
        run(&mut dp, programs::POD_INGRESS6, &again).0,
        TC_ACT_REDIRECT
    );

    // An hour later every flow is over: all six entries go, the IPv4 tables untouched.
    let pass = collect_garbage_in_kernel(&mut dp, monotonic_ns() + HOUR_NS).unwrap();
    assert_eq!(pass.v6.expired_total(), 6, "{pass:?}");
    assert_eq!(pass.v4.expired_total(), 0, "{pass:?}");
    assert!(pass.v6.flows_by_source.is_empty(), "{pass:?}");
    assert!(dp.maps().conntrack6().unwrap().is_empty());
    // The client holds nothing now: released.
    let limits = source_limits(
        &pass.v6.flows_by_source,
        &dp.maps().limited_sources::<[u8; 16]>().unwrap(),
        2,
    );
    assert_eq!(limits.release, [CLIENT6]);
}
