//! Fields and line grammar every variable shares: EGRESS_SOURCE, EGRESS_GATEWAY, ports,
//! host names, and multi-line values (trimmed lines; blank and `#` lines skipped).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use crate::config::error::ConfigError;

/// The lines of a multi-line value that hold something: trimmed, blank lines and whole-line
/// `#` comments skipped.
pub fn value_lines(value: &str) -> impl Iterator<Item = &str> {
    value
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
}

/// An address family's form of an address: the two `std::net` types.
pub trait Family: Copy + Eq + fmt::Display + FromStr {
    /// Bits in an address: the longest prefix.
    const BITS: u8;
    /// The family's name in messages and plans.
    const NAME: &'static str;
}

impl Family for Ipv4Addr {
    const BITS: u8 = 32;
    const NAME: &'static str = "IPv4";
}

impl Family for Ipv6Addr {
    const BITS: u8 = 128;
    const NAME: &'static str = "IPv6";
}

/// One family's `EGRESS_SOURCE`: the dedicated source address, with the prefix to add it
/// with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressSource<A = Ipv4Addr> {
    /// The address used for SNAT and announced with ARP (or neighbour advertisements).
    pub ip: A,
    /// Prefix length of the address on the egress interface (the full length for a bare
    /// address).
    pub prefix: u8,
}

impl<A: Family> FromStr for EgressSource<A> {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = match s.trim().split_once('/') {
            None => (s.trim(), A::BITS),
            Some((ip, prefix)) => {
                // Digits only: "/+24" and "/ 24" are not prefixes. A /0 would make every
                // destination on-link and bypass the gateway, so it is refused too.
                let prefix = Some(prefix)
                    .filter(|p| {
                        !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|p| p.parse::<u8>().ok())
                    .filter(|p| (1..=A::BITS).contains(p))
                    .ok_or(ConfigError::Source)?;
                (ip, prefix)
            }
        };
        let ip = ip.parse().map_err(|_| ConfigError::Source)?;
        Ok(Self { ip, prefix })
    }
}

impl<A: Family> fmt::Display for EgressSource<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// A value with at most one address of each family, written `IPv4,IPv6` (either order, or
/// one alone): `EGRESS_SOURCE` (`Dual<EgressSource, EgressSource<Ipv6Addr>>`) and
/// `EGRESS_GATEWAY` (`Dual<Ipv4Addr, Ipv6Addr>`). At least one is present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dual<V4, V6> {
    pub v4: Option<V4>,
    pub v6: Option<V6>,
}

/// One family's half of the egress side: EGRESS_SOURCE's address of the family and the
/// gateway of the family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressHalf<A> {
    pub source: EgressSource<A>,
    pub gateway: A,
}

/// The IPv4 half of [`Egress`].
pub type Egress4 = EgressHalf<Ipv4Addr>;
/// The IPv6 half of [`Egress`].
pub type Egress6 = EgressHalf<Ipv6Addr>;

/// The egress side of an instance as the data plane applies it: IPv4, IPv6, or both
/// ([`crate::config::redirect::Config::egress`]). At least one half is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Egress {
    pub v4: Option<Egress4>,
    pub v6: Option<Egress6>,
}

impl Egress {
    /// The address the egress interface's stable MAC is made from: the IPv4 one when there
    /// is one (a dual-stack instance keeps the MAC of its IPv4 address), else the IPv6 one.
    #[must_use]
    pub fn mac_address(&self) -> IpAddr {
        match (self.v4, self.v6) {
            (Some(v4), _) => IpAddr::V4(v4.source.ip),
            (None, Some(v6)) => IpAddr::V6(v6.source.ip),
            (None, None) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// `EGRESS_SOURCE`: one address per family.
pub type Sources = Dual<EgressSource, EgressSource<Ipv6Addr>>;
/// `EGRESS_GATEWAY`: one gateway per family.
pub type Gateways = Dual<Ipv4Addr, Ipv6Addr>;

impl<V4, V6> Default for Dual<V4, V6> {
    /// Neither family: what a variable that is not given checks against.
    fn default() -> Self {
        Self { v4: None, v6: None }
    }
}

impl<V4, V6> Dual<V4, V6> {
    /// Parses `value` of `variable`: one or two comma-separated items, each parsed by its
    /// family (an item with a `:` is IPv6), at most one per family. `invalid` is the
    /// variable's error for an item that does not parse.
    fn parse(
        variable: &'static str,
        value: &str,
        invalid: ConfigError,
        v4: impl Fn(&str) -> Result<V4, ConfigError>,
        v6: impl Fn(&str) -> Result<V6, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let mut dual = Self::default();
        for item in value.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(invalid);
            }
            let second = if item.contains(':') {
                dual.v6
                    .replace(v6(item)?)
                    .is_some()
                    .then_some(Ipv6Addr::NAME)
            } else {
                dual.v4
                    .replace(v4(item)?)
                    .is_some()
                    .then_some(Ipv4Addr::NAME)
            };
            if let Some(family) = second {
                return Err(ConfigError::TwoOfAFamily { variable, family });
            }
        }
        Ok(dual)
    }
}

impl FromStr for Sources {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(
            "EGRESS_SOURCE",
            s,
            ConfigError::Source,
            str::parse,
            |item| {
                let source: EgressSource<Ipv6Addr> = item.parse()?;
                if !is_unicast_v6(source.ip) || source.ip.is_unicast_link_local() {
                    return Err(ConfigError::NotASource(source.ip));
                }
                Ok(source)
            },
        )
    }
}

impl FromStr for Gateways {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v4 = |item: &str| item.parse().map_err(|_| ConfigError::Gateway);
        Self::parse("EGRESS_GATEWAY", s, ConfigError::Gateway, v4, |item| {
            // A link-local gateway is the usual IPv6 router address on a segment.
            let ip: Ipv6Addr = item.parse().map_err(|_| ConfigError::Gateway)?;
            if is_unicast_v6(ip) {
                Ok(ip)
            } else {
                Err(ConfigError::Gateway)
            }
        })
    }
}

/// Each family of EGRESS_SOURCE has its gateway in EGRESS_GATEWAY, and each gateway its
/// source.
pub fn check_pairs(source: &Sources, gateway: &Gateways) -> Result<(), ConfigError> {
    for (family, has_source, has_gateway) in [
        (Ipv4Addr::NAME, source.v4.is_some(), gateway.v4.is_some()),
        (Ipv6Addr::NAME, source.v6.is_some(), gateway.v6.is_some()),
    ] {
        match (has_source, has_gateway) {
            (true, false) => return Err(ConfigError::GatewayMissing { family }),
            (false, true) => return Err(ConfigError::GatewayWithoutSource { family }),
            _ => {}
        }
    }
    Ok(())
}

/// `v4,v6`, or the one present: the form the variables are written in.
impl<V4: fmt::Display, V6: fmt::Display> fmt::Display for Dual<V4, V6> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.v4, &self.v6) {
            (Some(v4), Some(v6)) => write!(f, "{v4},{v6}"),
            (Some(v4), None) => write!(f, "{v4}"),
            (None, Some(v6)) => write!(f, "{v6}"),
            (None, None) => Ok(()),
        }
    }
}

/// Not unspecified, loopback, multicast or an IPv4-mapped address (which would be NAT46
/// by another name). Link-local (fe80::/10) is valid on one link only: a gateway may be
/// one, a source or a remote may not.
fn is_unicast_v6(ip: Ipv6Addr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.to_ipv4_mapped().is_some())
}

/// A variable that is set and not empty, trimmed.
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// EGRESS_SOURCE of either family where a command may do without it (teardown): `None`
/// when unset or empty, OpenShift's error when invalid.
pub fn optional_sources(value: Option<&str>) -> Result<Option<Sources>, ConfigError> {
    given(value).map(str::parse).transpose()
}

/// EGRESS_GATEWAY of either family where a command may do without it.
pub fn optional_gateways(value: Option<&str>) -> Result<Option<Gateways>, ConfigError> {
    given(value).map(str::parse).transpose()
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
/// (EGRESS_SOURCE of its family), loopback, unspecified, "this network" (0/8), multicast,
/// broadcast, IPv6 link-local or IPv4-mapped.
pub fn check_destination(
    variable: &'static str,
    ip: IpAddr,
    sources: &Sources,
) -> Result<(), ConfigError> {
    let bad = match ip {
        IpAddr::V4(v4) => {
            Some(v4) == sources.v4.map(|s| s.ip)
                || v4.is_loopback()
                || v4.is_unspecified()
                || v4.octets()[0] == 0
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            Some(v6) == sources.v6.map(|s| s.ip) || !is_unicast_v6(v6) || v6.is_unicast_link_local()
        }
    };
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
