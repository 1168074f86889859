//! Tests of the dual-stack configuration: EGRESS_SOURCE and EGRESS_GATEWAY with an address
//! of each family, EGRESS_DESTINATION with IPv6 remotes, and every error that comes with
//! them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::{
    error::ConfigError,
    fields::{Egress6, EgressSource, Gateways, Sources, optional_gateways, optional_sources},
    redirect::{Config, Destinations, tests::raw},
};

const DUAL_SOURCE: &str = "198.51.100.99/24,2001:db8:e::99/64";
const DUAL_GATEWAY: &str = "198.51.100.1,2001:db8:e::1";

fn error(source: &str, gateway: &str, destination: &str) -> String {
    Config::from_raw(&raw(source, gateway, destination))
        .unwrap_err()
        .to_string()
}

#[test]
fn both_families_in_either_order() {
    let v6: Ipv6Addr = "2001:db8:e::99".parse().unwrap();
    for source in [DUAL_SOURCE, " 2001:db8:e::99/64 , 198.51.100.99/24 "] {
        let sources: Sources = source.parse().unwrap();
        assert_eq!(
            sources.v4,
            Some(EgressSource {
                ip: Ipv4Addr::new(198, 51, 100, 99),
                prefix: 24
            })
        );
        assert_eq!(sources.v6, Some(EgressSource { ip: v6, prefix: 64 }));
        assert_eq!(sources.to_string(), DUAL_SOURCE);
    }
    let alone: Sources = "2001:db8:e::99".parse().unwrap();
    assert_eq!(alone.v4, None);
    assert_eq!(
        alone.v6.unwrap().prefix,
        128,
        "a bare address is a host address"
    );
    // The usual IPv6 router address is link-local.
    let gateways: Gateways = "fe80::1,198.51.100.1".parse().unwrap();
    assert_eq!(gateways.v6, Some("fe80::1".parse().unwrap()));
}

#[test]
fn the_plan_shows_both_families() {
    let cfg = Config::from_raw(&raw(
        DUAL_SOURCE,
        DUAL_GATEWAY,
        "80 tcp 203.0.113.10\n80 tcp 2001:db8:f::10\n8080 tcp 2001:db8:f::10 80\n\
         53 udp 2001:db8:f::53\n2001:db8:f::20\n203.0.113.20",
    ))
    .unwrap();
    assert_eq!(
        cfg.plan("eth0", "macvlan0"),
        "egress-router plan v1\n\
         mode unit-test\n\
         egress macvlan0 address 198.51.100.99/24 source 198.51.100.99 gateway 198.51.100.1\n\
         egress macvlan0 address 2001:db8:e::99/64 source 2001:db8:e::99 gateway 2001:db8:e::1\n\
         ingress eth0\n\
         rule tcp 80 -> 203.0.113.10:80 snat 198.51.100.99\n\
         rule tcp 80 -> [2001:db8:f::10]:80 snat 2001:db8:e::99\n\
         rule tcp 8080 -> [2001:db8:f::10]:80 snat 2001:db8:e::99\n\
         rule udp 53 -> [2001:db8:f::53]:53 snat 2001:db8:e::99\n\
         fallback any -> 203.0.113.20 snat 198.51.100.99\n\
         fallback any -> 2001:db8:f::20 snat 2001:db8:e::99\n"
    );
    // One family without a fallback: its other traffic reaches the pod.
    let cfg = Config::from_raw(&raw(
        DUAL_SOURCE,
        DUAL_GATEWAY,
        "80 tcp 2001:db8:f::10\n203.0.113.20",
    ))
    .unwrap();
    assert!(
        cfg.plan("eth0", "macvlan0")
            .ends_with("fallback any -> 203.0.113.20 snat 198.51.100.99\notherwise pass\n")
    );
    // IPv6 alone.
    let cfg = Config::from_raw(&raw("2001:db8:e::99/64", "fe80::1", "2001:db8:f::20")).unwrap();
    assert_eq!(
        cfg.plan("eth0", "macvlan0"),
        "egress-router plan v1\n\
         mode unit-test\n\
         egress macvlan0 address 2001:db8:e::99/64 source 2001:db8:e::99 gateway fe80::1\n\
         ingress eth0\n\
         fallback any -> 2001:db8:f::20 snat 2001:db8:e::99\n"
    );
}

#[test]
fn each_family_needs_its_source_and_gateway() {
    assert_eq!(
        error(DUAL_SOURCE, "198.51.100.1", "203.0.113.20"),
        "EGRESS_GATEWAY has no IPv6 gateway for EGRESS_SOURCE's IPv6 address"
    );
    assert_eq!(
        error("198.51.100.99", DUAL_GATEWAY, "203.0.113.20"),
        "EGRESS_GATEWAY: IPv6 gateway given, but EGRESS_SOURCE has no IPv6 address"
    );
    assert_eq!(
        error("2001:db8:e::99", "198.51.100.1", "203.0.113.20"),
        "EGRESS_GATEWAY: IPv4 gateway given, but EGRESS_SOURCE has no IPv4 address"
    );
    // A remote of a family without EGRESS_SOURCE: no NAT46 or NAT64.
    assert_eq!(
        error(
            "198.51.100.99",
            "198.51.100.1",
            "80 tcp 203.0.113.10\n443 tcp 2001:db8:f::10"
        ),
        "EGRESS_DESTINATION value '443 tcp 2001:db8:f::10' is invalid: EGRESS_SOURCE has no \
         IPv6 address (traffic leaves in the family it arrived in)"
    );
    assert_eq!(
        error("2001:db8:e::99", "2001:db8:e::1", "203.0.113.20"),
        "EGRESS_DESTINATION value '203.0.113.20' is invalid: EGRESS_SOURCE has no IPv4 \
         address (traffic leaves in the family it arrived in)"
    );
}

#[test]
fn at_most_one_address_and_one_fallback_per_family() {
    assert_eq!(
        error(
            "198.51.100.99,198.51.100.98",
            "198.51.100.1",
            "203.0.113.20"
        ),
        "EGRESS_SOURCE: more than one IPv4 address; give at most one IPv4 and one IPv6"
    );
    assert_eq!(
        error(DUAL_SOURCE, "fe80::1,2001:db8:e::1", "203.0.113.20"),
        "EGRESS_GATEWAY: more than one IPv6 address; give at most one IPv4 and one IPv6"
    );
    for bad in [
        "198.51.100.99,",
        ",198.51.100.99",
        "198.51.100.99;2001:db8:e::99",
    ] {
        assert_eq!(
            error(bad, "198.51.100.1", "203.0.113.20"),
            "EGRESS_SOURCE unspecified or invalid",
            "{bad}"
        );
    }
    assert_eq!(
        error(DUAL_SOURCE, DUAL_GATEWAY, "2001:db8:f::20\n2001:db8:f::21"),
        "EGRESS_DESTINATION fallback IP must be the last line",
        "as OpenShift says of two IPv4 fallbacks"
    );
    for after in ["80 tcp 203.0.113.10", "not-an-ip", "203.0.113.300"] {
        assert_eq!(
            error(
                DUAL_SOURCE,
                DUAL_GATEWAY,
                &format!("2001:db8:f::20\n{after}")
            ),
            "EGRESS_DESTINATION fallback IP must be the last line",
            "{after}"
        );
    }
    // One rule per port and family: the same port in both families is two rules.
    assert_eq!(
        error(
            DUAL_SOURCE,
            DUAL_GATEWAY,
            "80 tcp 2001:db8:f::10\n80 udp 2001:db8:f::11"
        ),
        "EGRESS_DESTINATION localport 80 is already used, must be unique for each destination"
    );
}

#[test]
fn ipv6_sources_and_destinations_lead_somewhere() {
    for prefix in ["/0", "/129", "/", "/+64", "/1000"] {
        assert_eq!(
            error(
                &format!("2001:db8:e::99{prefix}"),
                "fe80::1",
                "2001:db8:f::20"
            ),
            "EGRESS_SOURCE unspecified or invalid",
            "{prefix}"
        );
    }
    for source in ["::", "::1", "fe80::99", "ff02::1", "::ffff:198.51.100.99"] {
        assert!(
            error(source, "fe80::1", "2001:db8:f::20")
                .starts_with(&format!("EGRESS_SOURCE: {source} is not a source address")),
            "{source}"
        );
    }
    for gateway in ["::", "::1", "ff02::2", "::ffff:198.51.100.1"] {
        assert_eq!(
            error("2001:db8:e::99", gateway, "2001:db8:f::20"),
            "EGRESS_GATEWAY unspecified or invalid",
            "{gateway}"
        );
    }
    for remote in [
        "2001:db8:e::99",
        "::1",
        "::",
        "fe80::10",
        "ff05::2",
        "::ffff:203.0.113.10",
    ] {
        let err = Config::from_raw(&raw(DUAL_SOURCE, DUAL_GATEWAY, &format!("80 tcp {remote}")))
            .unwrap_err();
        let expected: std::net::IpAddr = remote.parse().unwrap();
        assert!(
            matches!(
                err,
                ConfigError::NotADestination { variable: "EGRESS_DESTINATION", ip }
                    if ip == expected
            ),
            "{remote}: {err}"
        );
    }
}

#[test]
fn every_family_is_applied() {
    let dual = Config::from_raw(&raw(DUAL_SOURCE, DUAL_GATEWAY, "203.0.113.20")).unwrap();
    let egress = dual.egress();
    assert_eq!(egress.v4.unwrap().source, dual.source.v4.unwrap());
    assert_eq!(
        egress.v6,
        Some(Egress6 {
            source: dual.source.v6.unwrap(),
            gateway: dual.gateway.v6.unwrap(),
        })
    );
    let alone = Config::from_raw(&raw("2001:db8:e::99/64", "fe80::1", "2001:db8:f::10")).unwrap();
    let egress = alone.egress();
    assert_eq!(egress.v4, None);
    assert_eq!(
        egress.v6.map(|v6| (v6.source.ip, v6.gateway)),
        Some((
            "2001:db8:e::99".parse().unwrap(),
            "fe80::1".parse().unwrap()
        ))
    );
    assert_eq!(
        egress.mac_address(),
        "2001:db8:e::99".parse::<std::net::IpAddr>().unwrap()
    );
    let v4 = Config::from_raw(&raw("198.51.100.99/24", "198.51.100.1", "203.0.113.20")).unwrap();
    let egress = v4.egress();
    let half = egress.v4.unwrap();
    assert_eq!(
        (half.source.prefix, half.gateway, egress.v6),
        (24, Ipv4Addr::new(198, 51, 100, 1), None)
    );
    let both = optional_sources(Some(DUAL_SOURCE)).unwrap().unwrap();
    assert!(both.v4.is_some() && both.v6.is_some());
    assert!(matches!(optional_sources(Some("  ")), Ok(None)));
    assert_eq!(
        optional_gateways(Some("fe80::1")).unwrap().unwrap().v6,
        Some("fe80::1".parse().unwrap())
    );
    let text: Destinations = "80 tcp 2001:db8:f::10\n203.0.113.20".parse().unwrap();
    assert_eq!(
        text.remotes().collect::<Vec<_>>(),
        [
            IpAddr::V6("2001:db8:f::10".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 20))
        ]
    );
}
