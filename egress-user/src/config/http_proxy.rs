//! `EGRESS_HTTP_PROXY_DESTINATION`: the HTTP proxy's access rules, parsed and validated with
//! OpenShift's grammar and messages. Nothing here touches the system, so a bad value is
//! reported before anything changes.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{
    error::ConfigError,
    fields::{hostname, value_lines},
};

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
        for line in value_lines(value) {
            if rules
                .last()
                .is_some_and(|r: &HttpRule| r.matches == HttpMatch::Any)
            {
                return Err(ConfigError::WildcardNotLast);
            }
            // As OpenShift's script: a leading `!` is stripped as it is, the message names the
            // destination without it, and `*` stands alone (`!*` is a bad destination: deny
            // is what a list without `*` does to the rest anyway).
            let (deny, dest) = match line.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let matches = if deny && dest == "*" {
                None
            } else {
                http_match(dest)
            }
            .ok_or_else(|| ConfigError::BadDestination(dest.to_owned()))?;
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
        // Every form of an address is matched as its canonical one: `[::ffff:203.0.113.10]`
        // (or in hex) is 203.0.113.10 for an IPv4 rule.
        let literal: Option<IpAddr> = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
            .map(|ip: IpAddr| ip.to_canonical());
        for rule in &self.0 {
            let hit = match &rule.matches {
                HttpMatch::Any => true,
                HttpMatch::Net(net) => literal
                    .into_iter()
                    .chain(addrs.iter().map(IpAddr::to_canonical))
                    .any(|addr| net.contains(&addr)),
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
        return hostname(domain).map(HttpMatch::Domain);
    }
    hostname(dest).map(HttpMatch::Host)
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
             2001:db8::/32\n198.51.100.7\nexact.example.net.\n*\n",
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
                (false, HttpMatch::Host("exact.example.net".into())),
                (false, HttpMatch::Any),
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
                "*\n# fine\n\n!www.example.com",
                "Wildcard must be last rule, if present",
            ),
            // OpenShift strips the `!` from the message, and `*` stands alone.
            ("!foo bar", "Bad destination 'foo bar'"),
            ("!*", "Bad destination '*'"),
            ("! a.example", "Bad destination ' a.example'"),
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
        // IPv4-mapped forms are their IPv4 address, whether in the URL or resolved.
        assert_eq!(v("[::ffff:203.0.113.200]", &[]), "deny !203.0.113.128/25");
        assert_eq!(v("[::ffff:cb00:71c8]", &[]), "deny !203.0.113.128/25");
        assert_eq!(
            v("svc.test", &["::ffff:203.0.113.200"]),
            "deny !203.0.113.128/25"
        );
    }
}
