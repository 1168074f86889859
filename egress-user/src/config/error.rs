//! Configuration errors. Each is the exact message printed to stderr (exit status 1),
//! OpenShift's text where it has one, so scripts and docs keep working.

use std::net::{IpAddr, Ipv6Addr};

/// A configuration error. Its [`crate::error_chain`] is the exact message printed to stderr
/// (exit status 1): `Display` alone, but for an unreadable `--config-file`, whose cause follows.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("EGRESS_SOURCE unspecified or invalid")]
    Source,
    #[error("EGRESS_GATEWAY unspecified or invalid")]
    Gateway,
    #[error("EGRESS_DESTINATION unspecified")]
    DestinationUnspecified,
    #[error("EGRESS_DESTINATION value '{0}' is invalid")]
    DestinationInvalid(String),
    #[error("Invalid port: {0}, must be in the range 1 to 65535")]
    Port(String),
    #[error(
        "EGRESS_DESTINATION localport {0} is already used, must be unique for each destination"
    )]
    LocalPortUsed(u16),
    #[error("EGRESS_DESTINATION fallback IP must be the last line")]
    FallbackNotLast,
    #[error(
        "EGRESS_DESTINATION value '{0}' is invalid: at most {max} rules are supported",
        max = egress_common::MAX_RULES
    )]
    TooManyRules(String),
    #[error("Unrecognized EGRESS_ROUTER_MODE '{0}'")]
    Mode(String),
    #[error("No EGRESS_HTTP_PROXY_DESTINATION specified")]
    HttpProxyUnspecified,
    #[error("Bad destination '{0}'")]
    BadDestination(String),
    #[error("Wildcard must be last rule, if present")]
    WildcardNotLast,
    #[error("Must specify EGRESS_DNS_PROXY_DESTINATION")]
    DnsProxyUnspecified,
    #[error("Proxy port {0} already used, must be unique for each destination")]
    ProxyPortUsed(u16),
    #[error(
        "{variable}: TCP port {port} is also the agent's metrics or health port; choose \
         another --metrics-address or --health-address port or remove the rule"
    )]
    LocalPort { variable: &'static str, port: u16 },
    #[error(
        "{variable}: {ip} is not a destination: it is EGRESS_SOURCE, loopback, unspecified, \
         multicast or broadcast"
    )]
    NotADestination { variable: &'static str, ip: IpAddr },
    #[error("{variable}: more than one {family} address; give at most one IPv4 and one IPv6")]
    TwoOfAFamily {
        variable: &'static str,
        family: &'static str,
    },
    #[error(
        "EGRESS_SOURCE: {0} is not a source address: it is unspecified, loopback, multicast, \
         link-local or IPv4-mapped"
    )]
    NotASource(Ipv6Addr),
    #[error("EGRESS_GATEWAY has no {family} gateway for EGRESS_SOURCE's {family} address")]
    GatewayMissing { family: &'static str },
    #[error("EGRESS_GATEWAY: {family} gateway given, but EGRESS_SOURCE has no {family} address")]
    GatewayWithoutSource { family: &'static str },
    #[error(
        "{variable} value '{line}' is invalid: EGRESS_SOURCE has no {family} address \
         (traffic leaves in the family it arrived in)"
    )]
    NoSourceForFamily {
        variable: &'static str,
        line: String,
        family: &'static str,
    },
    #[error("--conntrack-size (EGRESS_ROUTER_CONNTRACK_SIZE) must be at least 1")]
    ConntrackSize,
    /// Out of the range of `config::agents` (`GC_MAX_INTERVAL_MIN` to `GC_MAX_INTERVAL_MAX`).
    #[error(
        "--gc-max-interval (EGRESS_ROUTER_GC_MAX_INTERVAL) {0}: must be from 0.1 to 86400 seconds"
    )]
    GcMaxInterval(String),
    #[error("--client-cidrs (EGRESS_ROUTER_CLIENT_CIDRS) value '{value}' is invalid: {reason}")]
    ClientCidrs { value: String, reason: String },
    #[error("reading --config-file {path}")]
    ConfigFile {
        path: String,
        source: std::sync::Arc<std::io::Error>,
    },
}
