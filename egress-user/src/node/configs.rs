//! What the data plane is given for a node instance: its configuration of each family,
//! its way out of the uplink and its rules, from a validated registration and the facts
//! of its host-side interface and the uplink.

use std::net::IpAddr;

use egress_common::{DEFAULT_NAT_PORTS, NodeHop, RouterConfig, RouterConfig6, config_flags};

use crate::{
    config::fields::Egress,
    dataplane::rules::RuleSet,
    instance::router::router_config6,
    network::{interface::InterfaceFacts, route::route_interface},
    node::registration::NodeInstance,
};

/// An instance as the node's maps hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfigs {
    pub config: RouterConfig,
    /// Zero without IPv6.
    pub config6: RouterConfig6,
    /// Its IPv4 way out (zero without IPv4).
    pub hop: NodeHop,
    pub rules: RuleSet,
}

/// Whether the agent may serve `instance`'s IPv6 half, its router pod behind host-side
/// interface `host`: only with IPv6 on (`ipv6`), and only the pod's own IPv6 address.
pub async fn check_ipv6(instance: &NodeInstance, host: u32, ipv6: bool) -> anyhow::Result<()> {
    let (Some(_), Some(pod_ip6)) = (instance.egress.v6, instance.pod_ip6) else {
        return Ok(());
    };
    anyhow::ensure!(
        ipv6,
        "EGRESS_SOURCE has an IPv6 address: this node agent serves IPv6 only with --ipv6 \
         (EGRESS_ROUTER_NODE_IPV6)"
    );
    // The pod names its IPv6 address itself: it is its own only if the node routes it to
    // the same interface as the pod IP the spool vouches for.
    let routed = route_interface(IpAddr::V6(pod_ip6)).await?;
    anyhow::ensure!(
        routed == Some(host),
        "the pod's IPv6 address {pod_ip6} is not routed to its interface (the one of {}): \
         not this pod's address",
        instance.pod_ip
    );
    Ok(())
}

/// Instance number `number` serving `instance`, its router pod behind the host-side
/// interface and the uplink given as `[(index, MTU); 2]`, with the port-choice key
/// `nat_secret`.
#[must_use]
pub fn node_configs(
    instance: &NodeInstance,
    number: u8,
    [(host, host_mtu), (uplink, uplink_mtu)]: [(u32, u32); 2],
    nat_secret: u32,
) -> NodeConfigs {
    let (v4, v6) = (instance.egress.v4, instance.egress.v6);
    let source = v4.map_or([0; 4], |v4| v4.source.ip.octets());
    let facts = |index, mtu| InterfaceFacts {
        index,
        mtu,
        ipv4: Vec::new(),
        ipv6: Vec::new(),
    };
    let rules = RuleSet::from_destinations(&instance.destinations);
    let fallback = rules.fallback.filter(|_| v4.is_some());
    let mut flags = if fallback.is_some() {
        config_flags::HAS_FALLBACK
    } else {
        0
    };
    let config6 = match (v6, instance.pod_ip6) {
        (Some(v6), Some(pod_ip6)) => {
            flags |= config_flags::IPV6;
            let (host, uplink) = (facts(host, host_mtu), facts(uplink, uplink_mtu));
            let mut config6 = router_config6(&v6, pod_ip6, &host, &uplink);
            if let Some(fallback6) = rules.fallback6 {
                config6.fallback_ip = fallback6.octets();
                config6.flags = config_flags::HAS_FALLBACK;
            }
            config6
        }
        _ => RouterConfig6::default(),
    };
    let config = RouterConfig {
        pod_ip: instance.pod_ip.octets(),
        egress_source: source,
        fallback_ip: fallback.map_or([0; 4], |ip| ip.octets()),
        flags,
        // No connection of the node's own leaves from an egress address: every port is
        // the instance's.
        nat_port_min: DEFAULT_NAT_PORTS.0,
        nat_port_max: DEFAULT_NAT_PORTS.1,
        mss_clamp: u16::try_from(host_mtu.min(uplink_mtu).saturating_sub(40)).unwrap_or(u16::MAX),
        instance: number,
        _pad: 0,
        nat_secret,
        ..RouterConfig::default()
    }
    .with_node_interfaces(host, uplink);
    let hop = match v4 {
        Some(v4) => NodeHop::new(v4.gateway.octets(), source, v4.source.prefix),
        None => NodeHop::default(),
    };
    NodeConfigs {
        config,
        config6,
        hop,
        rules,
    }
}

/// EGRESS_SOURCE's addresses, for the log.
pub(crate) fn sources(egress: &Egress) -> String {
    let v4 = egress.v4.map(|v4| v4.source.ip.to_string());
    let v6 = egress.v6.map(|v6| v6.source.ip.to_string());
    v4.into_iter().chain(v6).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::registration::Registration;

    fn registration(source: &str, gateway: &str, destination: &str) -> Registration {
        Registration {
            pod_ip: "192.0.2.10".parse().unwrap(),
            pod_ip6: Some("2001:db8:2::10".parse().unwrap()),
            instance: None,
            source: source.to_owned(),
            gateway: gateway.to_owned(),
            destination: destination.to_owned(),
        }
    }

    #[test]
    fn a_dual_stack_instance_has_both_halves_and_its_own_fallbacks() {
        let instance = registration(
            "198.51.100.99/24,2001:db8:e::99/64",
            "198.51.100.1,2001:db8:e::1",
            "80 tcp 203.0.113.10\n80 tcp 2001:db8:f::10\n203.0.113.20\n2001:db8:f::20",
        )
        .validate()
        .unwrap();
        let c = node_configs(&instance, 7, [(21, 1500), (2, 9000)], 42);
        assert_eq!(c.config.instance, 7);
        assert_eq!(
            c.config.flags,
            config_flags::HAS_FALLBACK | config_flags::IPV6
        );
        assert_eq!(
            (c.config.host_ifindex(), c.config.uplink_ifindex()),
            (21, 2)
        );
        assert_eq!(c.config.mss_clamp, 1460, "the smaller MTU");
        assert_eq!(
            c.config6.mss_clamp, 1440,
            "IPv6's header is 20 bytes longer"
        );
        assert_eq!(c.config6.flags, config_flags::HAS_FALLBACK);
        assert_eq!(
            c.config6.next_hop_addr(),
            "2001:db8:e::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!((c.rules.rules.len(), c.rules.rules6.len()), (1, 1));
        assert_eq!(sources(&instance.egress), "198.51.100.99,2001:db8:e::99");
    }

    #[test]
    fn an_ipv6_only_instance_leaves_the_ipv4_half_empty() {
        let instance = registration(
            "2001:db8:e::99/64",
            "2001:db8:e::1",
            "80 tcp 2001:db8:f::10",
        )
        .validate()
        .unwrap();
        let c = node_configs(&instance, 1, [(21, 1500), (2, 1500)], 42);
        assert_eq!(c.config.egress_source, [0; 4]);
        assert_eq!(c.config.flags, config_flags::IPV6);
        assert_eq!(c.hop, NodeHop::default());
        assert_ne!(c.config6.egress_source, [0; 16]);
    }
}
