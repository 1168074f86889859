//! `EGRESS_DESTINATION` (redirect mode) and the whole configuration of the redirect modes,
//! validated in OpenShift's order before anything changes, and the translation plan
//! `EGRESS_ROUTER_MODE=unit-test` prints.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use crate::config::{
    error::ConfigError,
    fields::{
        Egress, Egress4, Egress6, Family as _, Gateways, Sources, check_destination,
        check_local_ports, check_pairs, parse_port, value_lines,
    },
    mode::Mode,
};

/// Transport protocol of a redirect rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// IP protocol number.
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// One `EGRESS_DESTINATION` rule: `PORT PROTO IP [REMOTEPORT]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Port on the router pod's IP that clients connect to.
    pub local_port: u16,
    pub proto: Proto,
    /// Where the traffic is sent: of the family the client's packets arrive in.
    pub remote_ip: IpAddr,
    /// The remote port (the local port unless remapped).
    pub remote_port: u16,
}

/// The parsed `EGRESS_DESTINATION`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destinations {
    /// Port rules, in the order written.
    pub rules: Vec<Rule>,
    /// The bare IPv4 address that takes all other IPv4 traffic arriving on the pod
    /// interface.
    pub fallback: Option<Ipv4Addr>,
    /// The same for IPv6.
    pub fallback6: Option<Ipv6Addr>,
}

impl FromStr for Destinations {
    type Err = ConfigError;

    /// Parses the value without checking its families against EGRESS_SOURCE.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value, None)
    }
}

impl Destinations {
    /// Parses the multi-line value: each line trimmed; blank lines and whole-line `#`
    /// comments skipped; the fallback IPs, at most one per family, last. With `sources`, a
    /// line whose address has a family without EGRESS_SOURCE is an error.
    pub fn parse(value: &str, sources: Option<&Sources>) -> Result<Self, ConfigError> {
        let mut dest = Self::default();
        let mut used = HashSet::new();
        for line in value_lines(value) {
            let invalid = || ConfigError::DestinationInvalid(line.to_owned());
            let fields: Vec<&str> = line.split_whitespace().collect();
            let ip = |field: &str| -> Result<IpAddr, ConfigError> {
                let ip: IpAddr = field.parse().map_err(|_| invalid())?;
                let missing = match (ip, sources) {
                    (IpAddr::V4(_), Some(s)) if s.v4.is_none() => Some(Ipv4Addr::NAME),
                    (IpAddr::V6(_), Some(s)) if s.v6.is_none() => Some(Ipv6Addr::NAME),
                    _ => None,
                };
                match missing {
                    Some(family) => Err(ConfigError::NoSourceForFamily {
                        variable: "EGRESS_DESTINATION",
                        line: line.to_owned(),
                        family,
                    }),
                    None => Ok(ip),
                }
            };
            // OpenShift allows nothing after its fallback; a dual-stack value may follow it
            // with the other family's, and anything else is OpenShift's error.
            let after_fallback = dest.fallback.is_some() || dest.fallback6.is_some();
            if let [fallback] = fields[..] {
                if after_fallback && fallback.parse::<IpAddr>().is_err() {
                    return Err(ConfigError::FallbackNotLast);
                }
                let second = match ip(fallback)? {
                    IpAddr::V4(v4) => dest.fallback.replace(v4).is_some(),
                    IpAddr::V6(v6) => dest.fallback6.replace(v6).is_some(),
                };
                if second {
                    return Err(ConfigError::FallbackNotLast);
                }
                continue;
            }
            if after_fallback {
                return Err(ConfigError::FallbackNotLast);
            }
            let ([port, proto, remote] | [port, proto, remote, _]) = fields[..] else {
                return Err(invalid());
            };
            let local_port = parse_port(port).ok_or_else(invalid)??;
            let proto = match proto {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                _ => return Err(invalid()),
            };
            let remote_ip = ip(remote)?;
            let remote_port = match fields.get(3) {
                Some(port) => parse_port(port).ok_or_else(invalid)??,
                None => local_port,
            };
            // One rule per local port and family: an IPv4 and an IPv6 client may reach the
            // same port, each sent to a remote of its own family.
            if !used.insert((local_port, remote_ip.is_ipv6())) {
                return Err(ConfigError::LocalPortUsed(local_port));
            }
            if dest.rules.len() >= egress_common::MAX_RULES as usize {
                return Err(ConfigError::TooManyRules(line.to_owned()));
            }
            dest.rules.push(Rule {
                local_port,
                proto,
                remote_ip,
                remote_port,
            });
        }
        if dest.rules.is_empty() && dest.fallback.is_none() && dest.fallback6.is_none() {
            return Err(ConfigError::DestinationUnspecified);
        }
        Ok(dest)
    }

    /// Every remote address: the rules', then the fallbacks.
    pub fn remotes(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let rules = self.rules.iter().map(|rule| rule.remote_ip);
        rules
            .chain(self.fallback.map(IpAddr::V4))
            .chain(self.fallback6.map(IpAddr::V6))
    }
}

/// The raw values, as the environment or the command line gave them.
#[derive(Clone, Debug, Default)]
pub struct Raw {
    pub source: Option<String>,
    pub gateway: Option<String>,
    pub destination: Option<String>,
    pub mode: Option<String>,
}

/// What the router is to do, validated as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    pub source: Sources,
    /// A gateway for each family of [`Self::source`], and no other.
    pub gateway: Gateways,
    /// Empty in the proxy modes.
    pub destinations: Destinations,
}

impl Config {
    /// Validates everything, in OpenShift's order, before anything is changed.
    pub fn from_raw(raw: &Raw) -> Result<Self, ConfigError> {
        let value = |v: &Option<String>| v.as_deref().map(str::trim).unwrap_or("").to_owned();
        let mode: Mode = value(&raw.mode).parse()?;
        let source = value(&raw.source);
        if source.is_empty() {
            return Err(ConfigError::Source);
        }
        let source: Sources = source.parse()?;
        let gateway = value(&raw.gateway);
        if gateway.is_empty() {
            return Err(ConfigError::Gateway);
        }
        let gateway: Gateways = gateway.parse()?;
        check_pairs(&source, &gateway)?;
        let destinations = if mode.is_redirect() {
            Destinations::parse(raw.destination.as_deref().unwrap_or(""), Some(&source))?
        } else {
            Destinations::default()
        };
        for ip in destinations.remotes() {
            check_destination("EGRESS_DESTINATION", ip, &source)?;
        }
        Ok(Self {
            mode,
            source,
            gateway,
            destinations,
        })
    }

    /// EGRESS_SOURCE and EGRESS_GATEWAY as the data plane applies them: each family
    /// EGRESS_SOURCE has, with its gateway.
    #[must_use]
    pub fn egress(&self) -> Egress {
        // Validation paired them: a source of a family has its gateway.
        Egress {
            v4: self
                .source
                .v4
                .zip(self.gateway.v4)
                .map(|(source, gateway)| Egress4 { source, gateway }),
            v6: self
                .source
                .v6
                .zip(self.gateway.v6)
                .map(|(source, gateway)| Egress6 { source, gateway }),
        }
    }

    /// The agent's own TCP ports (metrics, health) must not also be redirect rules.
    pub fn check_local_ports(&self, local_tcp_ports: &[u16]) -> Result<(), ConfigError> {
        let tcp = self
            .destinations
            .rules
            .iter()
            .filter(|rule| rule.proto == Proto::Tcp)
            .map(|rule| rule.local_port);
        check_local_ports("EGRESS_DESTINATION", tcp, local_tcp_ports)
    }

    /// The translation plan, in the stable text form documented in
    /// docs/configuration.md#the-plan-egress_router_modeunit-test (`EGRESS_ROUTER_MODE=unit-test`
    /// prints it).
    #[must_use]
    pub fn plan(&self, pod_interface: &str, egress_interface: &str) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line("egress-router plan v1".to_owned());
        line(format!("mode {}", self.mode.name()));
        let source = self.source;
        let gateway = self.gateway;
        // Each family's source and gateway: validated to come in pairs.
        let families = [
            source
                .v4
                .map(|s| (s.to_string(), IpAddr::V4(s.ip)))
                .zip(gateway.v4.map(IpAddr::V4)),
            source
                .v6
                .map(|s| (s.to_string(), IpAddr::V6(s.ip)))
                .zip(gateway.v6.map(IpAddr::V6)),
        ];
        for ((address, ip), gateway) in families.iter().flatten() {
            line(format!(
                "egress {egress_interface} address {address} source {ip} gateway {gateway}"
            ));
        }
        let snat = |remote: IpAddr| match remote {
            IpAddr::V4(_) => source.v4.map(|s| IpAddr::V4(s.ip)),
            IpAddr::V6(_) => source.v6.map(|s| IpAddr::V6(s.ip)),
        };
        let snat = |remote: IpAddr| snat(remote).map_or_else(String::new, |ip| ip.to_string());
        line(format!("ingress {pod_interface}"));
        for r in &self.destinations.rules {
            line(format!(
                "rule {} {} -> {} snat {}",
                r.proto.name(),
                r.local_port,
                SocketAddr::new(r.remote_ip, r.remote_port),
                snat(r.remote_ip)
            ));
        }
        let fallbacks = [
            self.destinations.fallback.map(IpAddr::V4),
            self.destinations.fallback6.map(IpAddr::V6),
        ];
        for ip in fallbacks.iter().flatten() {
            line(format!("fallback any -> {ip} snat {}", snat(*ip)));
        }
        // What no rule or fallback takes reaches the pod: unless every family the router
        // sends in has a fallback.
        let covered = (source.v4.is_none() || self.destinations.fallback.is_some())
            && (source.v6.is_none() || self.destinations.fallback6.is_some());
        if !covered {
            line("otherwise pass".to_owned());
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::fields::EgressSource;

    /// The raw values of a `unit-test` configuration (the dual-stack tests use it too).
    pub(crate) fn raw(source: &str, gateway: &str, destination: &str) -> Raw {
        Raw {
            source: Some(source.to_owned()),
            gateway: Some(gateway.to_owned()),
            destination: Some(destination.to_owned()),
            mode: Some("unit-test".to_owned()),
        }
    }

    #[test]
    fn parses_all_rule_forms_with_comments_and_blank_lines() {
        let cfg = Config::from_raw(&raw(
            " 198.51.100.100/24 ",
            "198.51.100.1",
            "# comment\n\n  80 tcp 203.0.113.10  \n8080 tcp 203.0.113.10 80\n53 udp 203.0.113.11\n203.0.113.20\n# trailing comment\n",
        ))
        .unwrap();
        assert_eq!(
            cfg.source.v4,
            Some(EgressSource {
                ip: Ipv4Addr::new(198, 51, 100, 100),
                prefix: 24
            })
        );
        assert_eq!(cfg.source.v6, None);
        assert_eq!(cfg.destinations.rules.len(), 3);
        assert_eq!(cfg.destinations.rules[1].local_port, 8080);
        assert_eq!(cfg.destinations.rules[1].remote_port, 80);
        assert_eq!(cfg.destinations.rules[2].proto, Proto::Udp);
        assert_eq!(cfg.destinations.rules[2].remote_port, 53);
        assert_eq!(
            cfg.destinations.fallback,
            Some(Ipv4Addr::new(203, 0, 113, 20))
        );
        assert_eq!(cfg.destinations.fallback6, None);
    }

    #[test]
    fn bare_source_is_a_host_address() {
        let s: EgressSource = "198.51.100.100".parse().unwrap();
        assert_eq!(s.prefix, 32);
    }

    #[test]
    fn destinations_lead_away_from_the_router_pod() {
        for dest in [
            "80 tcp 127.0.0.1",
            "80 tcp 198.51.100.100",
            "80 tcp 0.0.0.0",
            "80 udp 224.0.0.251",
            "255.255.255.255",
        ] {
            let err = Config::from_raw(&raw("198.51.100.100", "198.51.100.1", dest)).unwrap_err();
            assert!(
                matches!(err, ConfigError::NotADestination { .. }),
                "{dest}: {err}"
            );
        }
        assert!(Config::from_raw(&raw("198.51.100.100", "198.51.100.1", "203.0.113.1")).is_ok());
    }

    #[test]
    fn the_agents_ports_are_not_rules() {
        let cfg = Config::from_raw(&raw(
            "198.51.100.100",
            "198.51.100.1",
            "9469 udp 203.0.113.1\n80 tcp 203.0.113.1",
        ))
        .unwrap();
        assert!(
            cfg.check_local_ports(&[9469]).is_ok(),
            "UDP 9469 is not the TCP listener"
        );
        assert_eq!(
            cfg.check_local_ports(&[80]).unwrap_err().to_string(),
            "EGRESS_DESTINATION: TCP port 80 is also the agent's metrics or health port; choose \
             another --metrics-address or --health-address port or remove the rule"
        );
    }

    #[test]
    fn proxy_modes_need_no_destination() {
        let mut r = raw("198.51.100.100", "198.51.100.1", "");
        r.mode = Some("http-proxy".to_owned());
        assert_eq!(Config::from_raw(&r).unwrap().mode, Mode::HttpProxyInit);
    }

    #[test]
    fn plan_is_stable() {
        let cfg = Config::from_raw(&raw(
            "198.51.100.100",
            "198.51.100.1",
            "8080 tcp 203.0.113.10 80\n203.0.113.20",
        ))
        .unwrap();
        assert_eq!(
            cfg.plan("eth0", "macvlan0"),
            "egress-router plan v1\n\
             mode unit-test\n\
             egress macvlan0 address 198.51.100.100/32 source 198.51.100.100 gateway 198.51.100.1\n\
             ingress eth0\n\
             rule tcp 8080 -> 203.0.113.10:80 snat 198.51.100.100\n\
             fallback any -> 203.0.113.20 snat 198.51.100.100\n"
        );
    }
}
