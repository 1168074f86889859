//! The proxy modes' variables, parsed and validated with OpenShift's grammar and messages
//! (issue 6): `EGRESS_HTTP_PROXY_DESTINATION` (the HTTP proxy's access rules) and
//! `EGRESS_DNS_PROXY_DESTINATION` (the DNS proxy's port map). Like [`crate::config`], nothing
//! here touches the system, so a bad value is reported before anything changes.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr},
};

use ipnet::IpNet;

use crate::config::{ConfigError, parse_port};

/// What an HTTP access rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpMatch {
    /// `*`: everything not matched before.
    Any,
    /// An IPv4 or IPv6 address or CIDR: matches when one of the destination's resolved
    /// addresses is inside (squid's `dst`).
    Net(IpNet),
    /// `*.example.com`: the domain and all its subdomains (stored without `*.`, lower case).
    Domain(String),
    /// A plain hostname: exactly that name (lower case).
    Host(String),
}

/// One line of `EGRESS_HTTP_PROXY_DESTINATION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRule {
    /// A leading `!`.
    pub deny: bool,
    pub matches: HttpMatch,
    /// The line as written (trimmed), for the 403 body and the access log.
    pub line: String,
}

/// The access rules, first match wins; without a `*` rule, everything else is denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRules(pub Vec<HttpRule>);

/// The decision for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    Allow(&'a HttpRule),
    Deny(&'a HttpRule),
    /// No rule matched: denied by the implicit last rule.
    DenyDefault,
}

impl HttpRules {
    /// Parses the variable: one rule per line, trimmed, blank and `#` lines skipped.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        let mut rules = Vec::new();
        for line in value.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if rules
                .last()
                .is_some_and(|r: &HttpRule| r.matches == HttpMatch::Any)
            {
                return Err(ConfigError::WildcardNotLast);
            }
            let (deny, dest) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, line),
            };
            let matches =
                http_match(dest).ok_or_else(|| ConfigError::BadDestination(line.to_owned()))?;
            rules.push(HttpRule {
                deny,
                matches,
                line: line.to_owned(),
            });
        }
        if rules.is_empty() {
            return Err(ConfigError::HttpProxyUnspecified);
        }
        Ok(Self(rules))
    }

    /// The first rule matching `host` (a name or an address literal, as the request gave
    /// it) whose resolved addresses are `addrs`.
    #[must_use]
    pub fn decide<'a>(&'a self, host: &str, addrs: &[IpAddr]) -> Verdict<'a> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let literal: Option<IpAddr> = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok();
        for rule in &self.0 {
            let hit = match &rule.matches {
                HttpMatch::Any => true,
                HttpMatch::Net(net) => literal.iter().chain(addrs).any(|addr| net.contains(addr)),
                HttpMatch::Domain(domain) => {
                    host == *domain
                        || host
                            .strip_suffix(domain.as_str())
                            .is_some_and(|head| head.ends_with('.'))
                }
                HttpMatch::Host(name) => host == *name,
            };
            if hit {
                return if rule.deny {
                    Verdict::Deny(rule)
                } else {
                    Verdict::Allow(rule)
                };
            }
        }
        Verdict::DenyDefault
    }
}

fn http_match(dest: &str) -> Option<HttpMatch> {
    if dest == "*" {
        return Some(HttpMatch::Any);
    }
    if let Ok(addr) = dest.parse::<IpAddr>() {
        return Some(HttpMatch::Net(IpNet::from(addr)));
    }
    if let Ok(net) = dest.parse::<IpNet>() {
        return Some(HttpMatch::Net(net.trunc()));
    }
    if let Some(domain) = dest.strip_prefix("*.") {
        return is_hostname(domain).then(|| HttpMatch::Domain(domain.to_ascii_lowercase()));
    }
    is_hostname(dest).then(|| HttpMatch::Host(dest.to_ascii_lowercase()))
}

/// Letters, digits and hyphens in dot-separated labels of 1-63 characters, not starting or
/// ending with a hyphen; 253 characters at most.
fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

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
    for line in value.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || ConfigError::BadDestination(line.to_owned());
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (port, target, remote_port) = match fields[..] {
            [port, target] => (port, target, None),
            [port, target, rport] => (port, target, Some(rport)),
            _ => return Err(bad()),
        };
        let port = parse_port(port).ok_or_else(bad)??;
        let remote_port = match remote_port {
            Some(rport) => parse_port(rport).ok_or_else(bad)??,
            None => port,
        };
        let target = if let Ok(ip) = target.parse::<Ipv4Addr>() {
            DnsTarget::Ip(ip)
        } else if target.contains('.') && is_hostname(target) {
            DnsTarget::Host(target.to_ascii_lowercase())
        } else {
            return Err(bad());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(result: Result<impl std::fmt::Debug, ConfigError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn http_rules_parse_every_form_and_skip_comments() {
        let rules = HttpRules::parse(
            "  # comment\n\nwww.example.com\n!*.Bad.Example\n203.0.113.0/24\n\
             2001:db8::/32\n198.51.100.7\n!*\n",
        )
        .unwrap();
        let kinds: Vec<(bool, HttpMatch)> = rules
            .0
            .iter()
            .map(|r| (r.deny, r.matches.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (false, HttpMatch::Host("www.example.com".into())),
                (true, HttpMatch::Domain("bad.example".into())),
                (false, HttpMatch::Net("203.0.113.0/24".parse().unwrap())),
                (false, HttpMatch::Net("2001:db8::/32".parse().unwrap())),
                (false, HttpMatch::Net("198.51.100.7/32".parse().unwrap())),
                (true, HttpMatch::Any),
            ]
        );
        assert_eq!(rules.0[1].line, "!*.Bad.Example");
    }

    #[test]
    fn http_rule_errors_are_openshifts_messages() {
        let cases = [
            ("", "No EGRESS_HTTP_PROXY_DESTINATION specified"),
            (" \n# only\n", "No EGRESS_HTTP_PROXY_DESTINATION specified"),
            ("a.example\nfoo bar", "Bad destination 'foo bar'"),
            ("*.", "Bad destination '*.'"),
            ("203.0.113.0/33", "Bad destination '203.0.113.0/33'"),
            ("-bad.example", "Bad destination '-bad.example'"),
            (
                "*\nwww.example.com",
                "Wildcard must be last rule, if present",
            ),
            (
                "!*\n# fine\n\nwww.example.com",
                "Wildcard must be last rule, if present",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(msg(HttpRules::parse(value)), expected, "{value:?}");
        }
    }

    #[test]
    fn first_match_wins_and_the_default_is_deny() {
        let rules = HttpRules::parse(
            "!*.internal.example\n*.example\n!203.0.113.128/25\n203.0.113.0/24\nexact.test",
        )
        .unwrap();
        let v = |host: &str, addrs: &[&str]| {
            let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
            match rules.decide(host, &addrs) {
                Verdict::Allow(r) => format!("allow {}", r.line),
                Verdict::Deny(r) => format!("deny {}", r.line),
                Verdict::DenyDefault => "deny default".to_owned(),
            }
        };
        assert_eq!(v("www.example", &[]), "allow *.example");
        assert_eq!(v("example", &[]), "allow *.example");
        assert_eq!(v("WWW.Example.", &[]), "allow *.example");
        assert_eq!(v("badexample", &[]), "deny default");
        assert_eq!(v("db.internal.example", &[]), "deny !*.internal.example");
        assert_eq!(v("exact.test", &["192.0.2.9"]), "allow exact.test");
        assert_eq!(v("sub.exact.test", &["192.0.2.9"]), "deny default");
        assert_eq!(v("svc.test", &["203.0.113.200"]), "deny !203.0.113.128/25");
        assert_eq!(
            v("svc.test", &["192.0.2.1", "203.0.113.5"]),
            "allow 203.0.113.0/24"
        );
        assert_eq!(v("203.0.113.5", &[]), "allow 203.0.113.0/24");
        assert_eq!(v("[2001:db8::1]", &[]), "deny default");
    }

    #[test]
    fn dns_routes_parse_hosts_addresses_and_remote_ports() {
        let routes =
            parse_dns_routes("# db\n5432 db.example.com\n8080 203.0.113.25 80\n\n").unwrap();
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
