//! Fields and line grammar every variable shares: EGRESS_SOURCE, EGRESS_GATEWAY, ports,
//! host names, and multi-line values (trimmed lines; blank and `#` lines skipped).

use std::{fmt, net::Ipv4Addr, str::FromStr};

use crate::config::error::ConfigError;

/// The lines of a multi-line value that hold something: trimmed, blank lines and whole-line
/// `#` comments skipped.
pub fn value_lines(value: &str) -> impl Iterator<Item = &str> {
    value
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
}

/// `EGRESS_SOURCE`: the dedicated source address, with the prefix to add it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressSource {
    /// The address used for SNAT and announced with ARP.
    pub ip: Ipv4Addr,
    /// Prefix length of the address on the egress interface (32 for a bare address).
    pub prefix: u8,
}

impl FromStr for EgressSource {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = match s.trim().split_once('/') {
            None => (s.trim(), 32),
            Some((ip, prefix)) => {
                // Digits only: "/+24" and "/ 24" are not prefixes. A /0 would make every
                // destination on-link and bypass the gateway, so it is refused too.
                let prefix = Some(prefix)
                    .filter(|p| {
                        !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|p| p.parse::<u8>().ok())
                    .filter(|p| (1..=32).contains(p))
                    .ok_or(ConfigError::Source)?;
                (ip, prefix)
            }
        };
        let ip = ip.parse().map_err(|_| ConfigError::Source)?;
        Ok(Self { ip, prefix })
    }
}

impl fmt::Display for EgressSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// A variable that is set and not empty, trimmed.
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// EGRESS_SOURCE where a command may do without it (teardown, the proxies' main
/// containers): `None` when unset or empty, OpenShift's error when invalid.
pub fn optional_source(value: Option<&str>) -> Result<Option<EgressSource>, ConfigError> {
    given(value).map(str::parse).transpose()
}

/// EGRESS_GATEWAY: OpenShift's error when unset or invalid.
pub fn gateway(value: Option<&str>) -> Result<Ipv4Addr, ConfigError> {
    optional_gateway(value)?.ok_or(ConfigError::Gateway)
}

/// EGRESS_GATEWAY where a command may do without it: `None` when unset or empty.
pub fn optional_gateway(value: Option<&str>) -> Result<Option<Ipv4Addr>, ConfigError> {
    given(value)
        .map(|v| v.parse().map_err(|_| ConfigError::Gateway))
        .transpose()
}

/// A port field: `None` if it is not a number at all (the line is invalid), `Some(Err)` if
/// it is a number outside 1-65535.
pub fn parse_port(field: &str) -> Option<Result<u16, ConfigError>> {
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        field
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| ConfigError::Port(field.to_owned())),
    )
}

/// A destination of `variable` must lead away from the router pod: not `source`
/// (EGRESS_SOURCE), loopback, unspecified or "this network" (0/8), multicast or broadcast.
pub fn check_destination(
    variable: &'static str,
    ip: Ipv4Addr,
    source: Option<Ipv4Addr>,
) -> Result<(), ConfigError> {
    let bad = Some(ip) == source
        || ip.is_loopback()
        || ip.is_unspecified()
        || ip.octets()[0] == 0
        || ip.is_multicast()
        || ip.is_broadcast();
    if bad {
        Err(ConfigError::NotADestination { variable, ip })
    } else {
        Ok(())
    }
}

/// The agent's own TCP ports (metrics, health) must not also be rules of `variable`.
pub fn check_local_ports(
    variable: &'static str,
    rule_tcp_ports: impl IntoIterator<Item = u16>,
    local_tcp_ports: &[u16],
) -> Result<(), ConfigError> {
    match rule_tcp_ports
        .into_iter()
        .find(|port| local_tcp_ports.contains(port))
    {
        Some(port) => Err(ConfigError::LocalPort { variable, port }),
        None => Ok(()),
    }
}

/// A host name as written, in the form every lookup and comparison uses: lower case, the
/// trailing dot of an absolute name dropped (names are always resolved as absolute). `None`
/// unless it is letters, digits and hyphens in dot-separated labels of 1-63 characters, not
/// starting or ending with a hyphen, 253 characters at most.
#[must_use]
pub fn hostname(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    valid.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::hostname;

    #[test]
    fn host_names_are_normalised_and_checked() {
        assert_eq!(
            hostname("Www.Example.COM.").as_deref(),
            Some("www.example.com")
        );
        assert_eq!(hostname("a-b.example").as_deref(), Some("a-b.example"));
        for bad in [
            "",
            ".",
            "a..b",
            "-a.example",
            "a-.example",
            "a_b.example",
            "a.example..",
        ] {
            assert_eq!(hostname(bad), None, "{bad:?}");
        }
        assert_eq!(hostname(&"a".repeat(64)), None, "a label of 64");
    }
}
