//! `EGRESS_DNS_PROXY_DESTINATION`: the DNS proxy's port map, parsed and validated with
//! OpenShift's grammar and messages.

use std::{collections::HashSet, net::Ipv4Addr};

use crate::config::{
    error::ConfigError,
    fields::{Sources, check_destination, check_local_ports, hostname, parse_port, value_lines},
};

/// Where a DNS-proxy port sends its connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsTarget {
    /// A name (it contains a dot), resolved with the pod's nameservers.
    Host(String),
    Ip(Ipv4Addr),
}

/// One line of `EGRESS_DNS_PROXY_DESTINATION`: `PORT HOST [RPORT]` or `PORT IPv4 [RPORT]`.
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
        let target = if let Ok(ip) = target.parse::<Ipv4Addr>() {
            check_destination(
                "EGRESS_DNS_PROXY_DESTINATION",
                ip.into(),
                &Sources::default(),
            )?;
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
        ];
        for (value, expected) in cases {
            assert_eq!(msg(parse_dns_routes(value)), expected, "{value:?}");
        }
    }
}
