//! The options both agents take: the pod agent (`legacy` mode and the DNS proxy's data
//! plane) and the node agent. Conntrack capacity, GC interval and per-client flow limit
//! ([`Conntrack`]), and where metrics are served ([`Listen`], [`NodeListen`]). One rule and
//! one message for each, whatever the mode; `unit-test` applies them too.

use std::{
    net::{IpAddr, SocketAddr},
    str::FromStr,
    time::Duration,
};

use crate::config::{error::ConfigError, mode::Mode};

/// The shortest `--gc-max-interval`, in seconds.
pub const GC_MAX_INTERVAL_MIN: f64 = 0.1;
/// The longest `--gc-max-interval`, in seconds (a day): the agents add it to the clock, and
/// a longer wait leaves an empty table's expired flows for ever.
pub const GC_MAX_INTERVAL_MAX: f64 = 86_400.0;

/// The conntrack options, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conntrack {
    /// Capacity in flows (the table holds two entries per flow), at least 1.
    pub flows: u32,
    /// The longest interval between GC passes (used when the table is empty).
    pub gc_max_interval: Duration,
    /// Flows one client may hold: `None`, a quarter of the capacity; 0, no limit.
    pub max_flows_per_source: Option<u32>,
    /// `--client-cidrs`: the networks clients come from (empty: any address that can be a
    /// client).
    pub client_cidrs: Vec<(IpAddr, u8)>,
}

impl Conntrack {
    /// `--conntrack-size`, `--gc-max-interval` (seconds) and `--max-flows-per-source`.
    pub fn new(
        flows: u32,
        gc_max_interval: f64,
        max_flows_per_source: Option<u32>,
        client_cidrs: Option<&str>,
    ) -> Result<Self, ConfigError> {
        if flows == 0 {
            return Err(ConfigError::ConntrackSize);
        }
        // NaN is in no range.
        if !(GC_MAX_INTERVAL_MIN..=GC_MAX_INTERVAL_MAX).contains(&gc_max_interval) {
            return Err(ConfigError::GcMaxInterval(format!("{gc_max_interval:?}")));
        }
        Ok(Self {
            flows,
            gc_max_interval: Duration::from_secs_f64(gc_max_interval),
            max_flows_per_source,
            client_cidrs: client_cidrs.map_or(Ok(Vec::new()), parse_cidrs)?,
        })
    }
}

/// The most prefixes `--client-cidrs` takes (the data plane's table holds a few more, for
/// the prefixes where no client can be).
pub const CLIENT_CIDRS_MAX: usize = 32;

/// `--client-cidrs` (`EGRESS_ROUTER_CLIENT_CIDRS`): prefixes (`10.128.0.0/14`,
/// `fd00::/48`, or an address alone for one host) separated by commas or spaces.
pub fn parse_cidrs(raw: &str) -> Result<Vec<(IpAddr, u8)>, ConfigError> {
    let bad = |value: &str, reason: &str| ConfigError::ClientCidrs {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    let mut nets = Vec::new();
    for value in raw
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|v| !v.is_empty())
    {
        let (ip, prefix) = match value.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (value, None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| bad(value, "not an IPv4 or IPv6 address"))?;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| bad(value, &format!("the prefix length must be 0 to {bits}")))?,
        };
        nets.push((ip, prefix));
    }
    if nets.is_empty() {
        return Err(bad(
            raw,
            "no prefix given (leave it unset for any client address)",
        ));
    }
    if nets.len() > CLIENT_CIDRS_MAX {
        return Err(bad(raw, &format!("at most {CLIENT_CIDRS_MAX} prefixes")));
    }
    Ok(nets)
}

/// Where the pod agent serves `/metrics` and `/healthz` (`--metrics-address`): a socket
/// address, a port on the pod IP, or nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    Off,
    /// This port on the pod interface's address.
    PodIp(u16),
    At(SocketAddr),
}

impl Listen {
    /// The agent's own TCP port on the pod IP, which no rule may take.
    #[must_use]
    pub const fn tcp_port(self) -> Option<u16> {
        match self {
            Self::Off => None,
            Self::PodIp(port) => Some(port),
            Self::At(addr) => Some(addr.port()),
        }
    }

    /// The TCP ports the rules of `mode` are checked against: the agent's, in the mode that
    /// runs it (legacy) and in `unit-test`, which refuses what legacy refuses; none in the
    /// modes that exit after the set-up.
    #[must_use]
    pub fn reserved_in(self, mode: Mode) -> Vec<u16> {
        match mode {
            Mode::Legacy | Mode::UnitTest => self.tcp_port().into_iter().collect(),
            Mode::Init | Mode::HttpProxyInit | Mode::DnsProxyInit => Vec::new(),
        }
    }
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "off" {
            return Ok(Self::Off);
        }
        if let Some(port) = s.strip_prefix(':') {
            return port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .map(Self::PodIp)
                .ok_or_else(|| format!("'{s}': the port must be in the range 1 to 65535"));
        }
        s.parse::<SocketAddr>()
            .map(Self::At)
            .map_err(|_| format!("'{s}' is not ADDRESS:PORT, :PORT or off"))
    }
}

/// Where the node agent serves `/metrics` and `/healthz` (`--node-metrics-address`):
/// ADDRESS:PORT, or nowhere (`None`). The node has no pod IP, so `:PORT` is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeListen(pub Option<SocketAddr>);

impl FromStr for NodeListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<Listen>() {
            Ok(Listen::Off) => Ok(Self(None)),
            Ok(Listen::At(addr)) => Ok(Self(Some(addr))),
            Ok(Listen::PodIp(_)) | Err(_) => {
                Err(format!("'{}' is not ADDRESS:PORT or off", s.trim()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gc_interval_has_one_range_named_with_its_value() {
        let conntrack = Conntrack::new(16, 0.1, None, None).unwrap();
        assert_eq!(conntrack.gc_max_interval, Duration::from_millis(100));
        assert_eq!(
            Conntrack::new(16, 86_400.0, Some(0), None)
                .unwrap()
                .gc_max_interval,
            Duration::from_secs(86_400)
        );
        for bad in [0.05, 0.0, -1.0, 86_400.5, 1e300, f64::INFINITY, f64::NAN] {
            let err = Conntrack::new(16, bad, None, None).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "--gc-max-interval (EGRESS_ROUTER_GC_MAX_INTERVAL) {bad:?}: must be from \
                     0.1 to 86400 seconds"
                )
            );
        }
        assert_eq!(
            Conntrack::new(0, 30.0, None, None).unwrap_err().to_string(),
            "--conntrack-size (EGRESS_ROUTER_CONNTRACK_SIZE) must be at least 1"
        );
    }

    #[test]
    fn client_cidrs_are_prefixes_of_either_family_named_in_errors() {
        let nets = parse_cidrs("10.128.0.0/14, fd01::/48 192.0.2.7").unwrap();
        assert_eq!(
            nets,
            vec![
                ("10.128.0.0".parse().unwrap(), 14),
                ("fd01::".parse().unwrap(), 48),
                ("192.0.2.7".parse().unwrap(), 32),
            ]
        );
        for (raw, value, reason) in [
            (
                "10.0.0.0/33",
                "10.0.0.0/33",
                "the prefix length must be 0 to 32",
            ),
            (
                "fd01::/129",
                "fd01::/129",
                "the prefix length must be 0 to 128",
            ),
            ("10.0.0/8", "10.0.0/8", "not an IPv4 or IPv6 address"),
            (
                "10.0.0.0/x",
                "10.0.0.0/x",
                "the prefix length must be 0 to 32",
            ),
            (
                " , ",
                " , ",
                "no prefix given (leave it unset for any client address)",
            ),
        ] {
            assert_eq!(
                parse_cidrs(raw).unwrap_err().to_string(),
                format!(
                    "--client-cidrs (EGRESS_ROUTER_CLIENT_CIDRS) value '{value}' is invalid: {reason}"
                )
            );
        }
        let many = vec!["10.0.0.0/8"; CLIENT_CIDRS_MAX + 1].join(",");
        assert!(parse_cidrs(&many).is_err());
    }

    #[test]
    fn metrics_addresses_of_both_agents() {
        assert_eq!(":9469".parse(), Ok(Listen::PodIp(9469)));
        assert_eq!(" off ".parse(), Ok(Listen::Off));
        let at: SocketAddr = "192.0.2.1:9000".parse().unwrap();
        assert_eq!("192.0.2.1:9000".parse(), Ok(Listen::At(at)));
        assert!(":0".parse::<Listen>().is_err());
        assert!("9469".parse::<Listen>().is_err());
        assert_eq!(Listen::PodIp(9469).reserved_in(Mode::UnitTest), [9469]);
        assert_eq!(Listen::At(at).reserved_in(Mode::Legacy), [9000]);
        assert!(Listen::PodIp(9469).reserved_in(Mode::Init).is_empty());
        assert!(Listen::Off.reserved_in(Mode::Legacy).is_empty());
        assert_eq!("192.0.2.1:9000".parse(), Ok(NodeListen(Some(at))));
        assert_eq!("off".parse(), Ok(NodeListen(None)));
        assert_eq!(
            ":9469".parse::<NodeListen>(),
            Err("':9469' is not ADDRESS:PORT or off".to_owned())
        );
    }
}
