//! `EGRESS_DNS_PROXY_DESTINATION`: the DNS proxy's port map, parsed and validated with
//! OpenShift's grammar and messages.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::config::{
    error::ConfigError,
    fields::{
        Family as _, Sources, check_destination, check_local_ports, hostname, parse_port,
        value_lines,
    },
};

/// Where a DNS-proxy port sends its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsTarget {
    /// A name (it contains a dot), resolved with the pod's nameservers: A records for
    /// clients over IPv4, AAAA records for clients over IPv6.
    Host(String),
    /// An address: clients of its family only (traffic leaves in the family it arrived in).
    Ip(IpAddr),
}

impl DnsTarget {
    /// Whether clients over IPv4 (`v6` false) or IPv6 (`v6` true) are served.
    #[must_use]
    pub const fn serves(&self, v6: bool) -> bool {
        match self {
            Self::Host(_) => true,
            Self::Ip(ip) => ip.is_ipv6() == v6,
        }
    }
}

/// One line of `EGRESS_DNS_PROXY_DESTINATION`: `PORT HOST [RPORT]` or `PORT IP [RPORT]`
/// (IPv4 or IPv6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRoute {
    /// The port on the pod IP.
    pub port: u16,
    pub target: DnsTarget,
    /// The remote port (`RPORT`, default `PORT`).
    pub remote_port: u16,
}

/// Parses `EGRESS_DNS_PROXY_DESTINATION`: one route per line (TCP), trimmed, blank and `#`
/// lines skipped, each proxy port used once.
pub fn parse_dns_routes(value: &str) -> Result<Vec<DnsRoute>, ConfigError> {
    let mut routes = Vec::new();
    let mut ports = HashSet::new();
    for line in value_lines(value) {
        let bad = || ConfigError::BadDestination(line.to_owned());
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (port, target, remote_port) = match fields[..] {
            [port, target] => (port, target, None),
            [port, target, rport] => (port, target, Some(rport)),
            _ => return Err(bad()),
        };
        // The line's form first, its numbers after, as OpenShift's script checks them: a
        // target that is neither an address nor a name with a dot makes the line bad
        // whatever its ports say. Dotted digits are an address or nothing.
        let target = if let Ok(ip) = target.parse::<IpAddr>() {
            check_destination("EGRESS_DNS_PROXY_DESTINATION", ip, &Sources::default())?;
            DnsTarget::Ip(ip)
        } else if target.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(bad());
        } else {
            match hostname(target) {
                Some(name) if name.contains('.') => DnsTarget::Host(name),
                _ => return Err(bad()),
            }
        };
        let port = parse_port(port).ok_or_else(bad)??;
        let remote_port = match remote_port {
            Some(rport) => parse_port(rport).ok_or_else(bad)??,
            None => port,
        };
        if !ports.insert(port) {
            return Err(ConfigError::ProxyPortUsed(port));
        }
        routes.push(DnsRoute {
            port,
            target,
            remote_port,
        });
    }
    if routes.is_empty() {
        return Err(ConfigError::DnsProxyUnspecified);
    }
    Ok(routes)
}

/// Every address route must have an EGRESS_SOURCE address of its family (`v4`, `v6`:
/// which EGRESS_SOURCE has), and names must have one of some family: there is no NAT46.
pub fn check_dns_families(routes: &[DnsRoute], v4: bool, v6: bool) -> Result<(), ConfigError> {
    for route in routes {
        let DnsTarget::Ip(ip) = route.target else {
            continue;
        };
        let family = match ip {
            IpAddr::V4(_) if !v4 => Ipv4Addr::NAME,
            IpAddr::V6(_) if !v6 => Ipv6Addr::NAME,
            _ => continue,
        };
        let line = if route.remote_port == route.port {
            format!("{} {ip}", route.port)
        } else {
            format!("{} {ip} {}", route.port, route.remote_port)
        };
        return Err(ConfigError::NoSourceForFamily {
            variable: "EGRESS_DNS_PROXY_DESTINATION",
            line,
            family,
        });
    }
    Ok(())
}

/// The agent's own TCP ports (metrics, health) must not also be proxy ports.
pub fn check_dns_local_ports(
    routes: &[DnsRoute],
    local_tcp_ports: &[u16],
) -> Result<(), ConfigError> {
    check_local_ports(
        "EGRESS_DNS_PROXY_DESTINATION",
        routes.iter().map(|route| route.port),
        local_tcp_ports,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(result: Result<impl std::fmt::Debug, ConfigError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn dns_routes_parse_hosts_addresses_and_remote_ports() {
        let routes =
            parse_dns_routes("# db\n5432 DB.example.com.\n8080 203.0.113.25 80\n\n").unwrap();
        assert_eq!(
            routes,
            [
                DnsRoute {
                    port: 5432,
                    target: DnsTarget::Host("db.example.com".into()),
                    remote_port: 5432
                },
                DnsRoute {
                    port: 8080,
                    target: DnsTarget::Ip("203.0.113.25".parse().unwrap()),
                    remote_port: 80
                },
            ]
        );
    }

    #[test]
    fn dns_route_errors_are_openshifts_messages() {
        let cases = [
            ("", "Must specify EGRESS_DNS_PROXY_DESTINATION"),
            ("80 localhost", "Bad destination '80 localhost'"),
            (
                "80 127.0.0.1",
                "EGRESS_DNS_PROXY_DESTINATION: 127.0.0.1 is not a destination: it is \
                 EGRESS_SOURCE, loopback, unspecified, multicast or broadcast",
            ),
            ("70000 localhost", "Bad destination '70000 localhost'"),
            ("80 300.1.2.3", "Bad destination '80 300.1.2.3'"),
            (
                "80 db.example.com..",
                "Bad destination '80 db.example.com..'",
            ),
            ("80", "Bad destination '80'"),
            ("80 a.example 81 82", "Bad destination '80 a.example 81 82'"),
            ("http a.example", "Bad destination 'http a.example'"),
            (
                "70000 a.example",
                "Invalid port: 70000, must be in the range 1 to 65535",
            ),
            (
                "80 a.example 0",
                "Invalid port: 0, must be in the range 1 to 65535",
            ),
            (
                "80 a.example\n80 203.0.113.1",
                "Proxy port 80 already used, must be unique for each destination",
            ),
            (
                "80 ::1",
                "EGRESS_DNS_PROXY_DESTINATION: ::1 is not a destination: it is \
                 EGRESS_SOURCE, loopback, unspecified, multicast or broadcast",
            ),
            (
                "80 fe80::1",
                "EGRESS_DNS_PROXY_DESTINATION: fe80::1 is not a destination: it is \
                 EGRESS_SOURCE, loopback, unspecified, multicast or broadcast",
            ),
            (
                "80 ::ffff:203.0.113.1",
                "EGRESS_DNS_PROXY_DESTINATION: ::ffff:203.0.113.1 is not a destination: it is \
                 EGRESS_SOURCE, loopback, unspecified, multicast or broadcast",
            ),
            ("80 2001:db8::zz", "Bad destination '80 2001:db8::zz'"),
            ("80 [2001:db8::1]", "Bad destination '80 [2001:db8::1]'"),
        ];
        for (value, expected) in cases {
            assert_eq!(msg(parse_dns_routes(value)), expected, "{value:?}");
        }
    }

    #[test]
    fn ipv6_routes_parse_and_need_an_ipv6_source() {
        let routes =
            parse_dns_routes("80 2001:db8:f::10 8080\n81 a.example\n82 203.0.113.9").unwrap();
        assert_eq!(
            routes[0].target,
            DnsTarget::Ip("2001:db8:f::10".parse().unwrap())
        );
        assert_eq!(routes[0].remote_port, 8080);
        assert!(routes[0].target.serves(true) && !routes[0].target.serves(false));
        assert!(routes[1].target.serves(true) && routes[1].target.serves(false));
        assert!(!routes[2].target.serves(true) && routes[2].target.serves(false));
        check_dns_families(&routes, true, true).unwrap();
        assert_eq!(
            msg(check_dns_families(&routes, true, false)),
            "EGRESS_DNS_PROXY_DESTINATION value '80 2001:db8:f::10 8080' is invalid: \
             EGRESS_SOURCE has no IPv6 address (traffic leaves in the family it arrived in)"
        );
        assert_eq!(
            msg(check_dns_families(&routes, false, true)),
            "EGRESS_DNS_PROXY_DESTINATION value '82 203.0.113.9' is invalid: \
             EGRESS_SOURCE has no IPv4 address (traffic leaves in the family it arrived in)"
        );
    }
}
