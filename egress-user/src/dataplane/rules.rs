//! The rules map as it should be ([`RuleSet`], from `EGRESS_DESTINATION` or the DNS
//! proxy's routes) and how a running map gets there ([`plan_rules`]): reconciled by
//! difference, so unchanged rules keep their id and counters. Rule ids are assigned here
//! and nowhere else. Pure code, tested on the host.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use egress_common::{Addr, MAX_RULES, RuleKey, RuleTarget, RuleTarget6, proto, rule_flags};

use crate::config::{
    dns_proxy::{DnsRoute, DnsTarget},
    redirect::{Destinations, Proto},
};

/// What the rules maps and the fallbacks should hold, per family. Targets carry no rule
/// id yet ([`plan_rules`] assigns them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    pub rules: Vec<(RuleKey, RuleTarget)>,
    /// Where IPv4 traffic that matches no rule goes, if anywhere.
    pub fallback: Option<Ipv4Addr>,
    /// The IPv6 rules ([`egress_common::maps::RULES6`]).
    pub rules6: Vec<(RuleKey, RuleTarget6)>,
    /// Where IPv6 traffic that matches no rule goes, if anywhere.
    pub fallback6: Option<Ipv6Addr>,
}

fn key(port: u16, protocol: u8) -> RuleKey {
    RuleKey {
        port,
        proto: protocol,
        instance: 0,
    }
}

impl RuleSet {
    /// The rules of `EGRESS_DESTINATION`, in the order written, each in its family's map.
    #[must_use]
    pub fn from_destinations(destinations: &Destinations) -> Self {
        let mut set = Self {
            fallback: destinations.fallback,
            fallback6: destinations.fallback6,
            ..Self::default()
        };
        for rule in &destinations.rules {
            let key = key(
                rule.local_port,
                match rule.proto {
                    Proto::Tcp => proto::TCP,
                    Proto::Udp => proto::UDP,
                },
            );
            match rule.remote_ip {
                IpAddr::V4(ip) => set.rules.push((key, target(ip.octets(), rule.remote_port))),
                IpAddr::V6(ip) => set
                    .rules6
                    .push((key, target(ip.octets(), rule.remote_port))),
            }
        }
        set
    }

    /// The DNS proxy's routes (TCP), in the map of each family the instance has (`ipv4`,
    /// `ipv6`): a route to an address in its family's, a route to a name in each, flagged
    /// [`rule_flags::ADDRS`] (its addresses live in their own maps).
    #[must_use]
    pub fn from_dns_routes(routes: &[DnsRoute], (ipv4, ipv6): (bool, bool)) -> Self {
        fn of<A: Addr>(
            routes: &[DnsRoute],
            v6: bool,
            addr: impl Fn(IpAddr) -> Option<A>,
        ) -> Vec<(RuleKey, RuleTarget<A>)> {
            routes
                .iter()
                .filter(|route| route.target.serves(v6))
                .filter_map(|route| {
                    let (remote_ip, flags) = match &route.target {
                        DnsTarget::Ip(ip) => (addr(*ip)?, 0),
                        DnsTarget::Host(_) => (A::default(), rule_flags::ADDRS),
                    };
                    let target = RuleTarget {
                        remote_ip,
                        remote_port: route.remote_port,
                        rule_id: 0,
                        flags,
                    };
                    Some((key(route.port, proto::TCP), target))
                })
                .collect()
        }
        let v4 = |ip| match ip {
            IpAddr::V4(ip) => Some(ip.octets()),
            IpAddr::V6(_) => None,
        };
        let v6 = |ip| match ip {
            IpAddr::V6(ip) => Some(ip.octets()),
            IpAddr::V4(_) => None,
        };
        Self {
            rules: if ipv4 {
                of(routes, false, v4)
            } else {
                Vec::new()
            },
            rules6: if ipv6 {
                of(routes, true, v6)
            } else {
                Vec::new()
            },
            ..Self::default()
        }
    }

    /// The set with `local_tcp_ports` delivered to the pod (the agent's own listeners),
    /// where no rule takes the port, in IPv4 and, for an instance with IPv6 (`ipv6`), in
    /// IPv6 too (a fallback of either would take them otherwise). An instance without IPv6
    /// has no IPv6 programs, and its IPv6 rules map holds one entry.
    #[must_use]
    pub fn with_local(mut self, local_tcp_ports: &[u16], ipv6: bool) -> Self {
        fn add<A: Addr>(rules: &mut Vec<(RuleKey, RuleTarget<A>)>, ports: &[u16]) {
            debug_assert!(ports.len() <= egress_common::MAX_LOCAL_RULES as usize);
            for &port in ports {
                let key = key(port, proto::TCP);
                if !rules.iter().any(|(k, _)| *k == key) {
                    // An unspecified remote: delivered to the pod.
                    rules.push((key, target(A::default(), 0)));
                }
            }
        }
        add(&mut self.rules, local_tcp_ports);
        if ipv6 {
            add(&mut self.rules6, local_tcp_ports);
        }
        self
    }
}

/// A target to `remote_ip`, with no id yet.
fn target<A>(remote_ip: A, remote_port: u16) -> RuleTarget<A> {
    RuleTarget {
        remote_ip,
        remote_port,
        rule_id: 0,
        flags: 0,
    }
}

/// How the rules map of one family changes.
#[derive(Debug, PartialEq, Eq)]
pub struct RulePlan<A = [u8; 4]> {
    pub write: Vec<(RuleKey, RuleTarget<A>)>,
    pub remove: Vec<RuleKey>,
    pub fresh_ids: Vec<u16>,
    pub result: Vec<(RuleKey, RuleTarget<A>)>,
}

impl<A> Default for RulePlan<A> {
    fn default() -> Self {
        Self {
            write: Vec::new(),
            remove: Vec::new(),
            fresh_ids: Vec::new(),
            result: Vec::new(),
        }
    }
}

/// Rule ids stay with unchanged rules (same key, same target); new and changed rules take
/// the lowest ids not in use, so counters are never shared between two different rules.
/// `taken` are ids the other family's rules hold (both families count into one
/// [`egress_common::maps::RULE_STATS`]): never given out here.
pub fn plan_rules<A: Addr>(
    current: &[(RuleKey, RuleTarget<A>)],
    wanted: &[(RuleKey, RuleTarget<A>)],
    taken: &BTreeSet<u16>,
) -> RulePlan<A> {
    let same = |a: &RuleTarget<A>, b: &RuleTarget<A>| {
        a.remote_ip == b.remote_ip && a.remote_port == b.remote_port && a.flags == b.flags
    };
    let mut plan = RulePlan::default();
    let kept: Vec<(RuleKey, RuleTarget<A>)> = current
        .iter()
        .filter(|(key, target)| wanted.iter().any(|(k, t)| k == key && same(t, target)))
        .copied()
        .collect();
    // Prefer ids no current rule has, so flows of a removed or changed rule (which keep
    // their translation until they end) never count into a different rule's counters.
    let mut avoid: BTreeSet<u16> = current.iter().map(|(_, t)| t.rule_id).collect();
    avoid.extend(taken);
    let max = u16::try_from(MAX_RULES).unwrap_or(u16::MAX);
    for (key, target) in wanted {
        if let Some(old) = kept.iter().find(|(k, _)| k == key) {
            plan.result.push(*old);
            continue;
        }
        let mut target = *target;
        if !target.is_local() {
            let free = |avoid: &BTreeSet<u16>| (1..=max).find(|id| !avoid.contains(id));
            let id = free(&avoid)
                .or_else(|| {
                    // Every id is taken: reuse those of rules that are going away.
                    avoid.retain(|id| {
                        taken.contains(id) || kept.iter().any(|(_, t)| t.rule_id == *id)
                    });
                    avoid.extend(plan.fresh_ids.iter().copied());
                    free(&avoid)
                })
                .expect("at most MAX_RULES rules");
            avoid.insert(id);
            target.rule_id = id;
            plan.fresh_ids.push(id);
        }
        plan.write.push((*key, target));
        plan.result.push((*key, target));
    }
    plan.remove = current
        .iter()
        .filter(|(key, _)| !wanted.iter().any(|(k, _)| k == key))
        .map(|(key, _)| *key)
        .collect();
    plan
}

/// The rule ids of `rules`.
pub fn ids<A>(rules: &[(RuleKey, RuleTarget<A>)]) -> BTreeSet<u16> {
    rules.iter().map(|(_, t)| t.rule_id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(port: u16, ip: u8, rule_id: u16) -> (RuleKey, RuleTarget) {
        (
            RuleKey {
                port,
                proto: egress_common::proto::TCP,
                instance: 0,
            },
            RuleTarget {
                remote_ip: [203, 0, 113, ip],
                remote_port: port,
                rule_id,
                flags: 0,
            },
        )
    }

    #[test]
    fn unchanged_rules_keep_their_ids_and_new_ones_take_free_ids() {
        let current = [rule(80, 1, 1), rule(81, 2, 2), rule(82, 3, 3)];
        // 80 unchanged, 81 removed, 82 changed target, 83 new.
        let wanted = [rule(80, 1, 0), rule(82, 9, 0), rule(83, 4, 0)];
        let plan = plan_rules(&current, &wanted, &BTreeSet::new());
        assert_eq!(
            plan.result,
            [rule(80, 1, 1), rule(82, 9, 4), rule(83, 4, 5)]
        );
        assert_eq!(plan.write, [rule(82, 9, 4), rule(83, 4, 5)]);
        assert_eq!(plan.remove, [rule(81, 2, 2).0]);
        assert_eq!(plan.fresh_ids, [4, 5]);
    }

    #[test]
    fn dns_routes_to_names_are_flagged_and_addresses_are_kept() {
        let routes =
            crate::config::dns_proxy::parse_dns_routes("80 203.0.113.10\n8080 app.example.com 80")
                .unwrap();
        let set = RuleSet::from_dns_routes(&routes, (true, false)).with_local(&[9469, 80], false);
        let rules = plan_rules(&[], &set.rules, &BTreeSet::new()).result;
        assert_eq!(rules.len(), 3, "9469 delivered to the pod, 80 stays a rule");
        assert_eq!(rules[0].0.port, 80);
        assert!(!rules[0].1.by_name());
        assert_eq!(rules[0].1.remote_ip, [203, 0, 113, 10]);
        assert_eq!((rules[1].0.port, rules[1].1.remote_port), (8080, 80));
        assert!(rules[1].1.by_name() && !rules[1].1.is_local());
        assert_eq!(rules[1].1.rule_id, 2);
        assert!(rules[2].1.is_local() && rules[2].0.port == 9469);
    }

    #[test]
    fn dns_routes_go_to_the_maps_of_the_families_they_serve() {
        let routes = crate::config::dns_proxy::parse_dns_routes(
            "80 203.0.113.10\n81 2001:db8:f::10 8081\n82 app.example.com",
        )
        .unwrap();
        let only4 = RuleSet::from_dns_routes(&routes, (true, false));
        let ports = |rules: &[(RuleKey, RuleTarget<_>)]| -> Vec<u16> {
            rules.iter().map(|(k, _)| k.port).collect()
        };
        assert_eq!(ports(&only4.rules), [80, 82]);
        assert!(only4.rules6.is_empty());
        let only6 = RuleSet::from_dns_routes(&routes, (false, true));
        assert!(only6.rules.is_empty() && only6.rules6.len() == 2);
        let dual = RuleSet::from_dns_routes(&routes, (true, true));
        assert_eq!(ports(&dual.rules), [80, 82]);
        let ports6: Vec<u16> = dual.rules6.iter().map(|(k, _)| k.port).collect();
        assert_eq!(ports6, [81, 82]);
        let literal = &dual.rules6[0].1;
        assert_eq!(
            (Ipv6Addr::from(literal.remote_ip), literal.remote_port),
            ("2001:db8:f::10".parse().unwrap(), 8081)
        );
        assert!(!literal.by_name());
        assert!(dual.rules6[1].1.by_name() && !dual.rules6[1].1.is_local());
    }

    #[test]
    fn a_fresh_table_numbers_rules_in_order() {
        let wanted = [rule(80, 1, 0), rule(81, 2, 0)];
        let plan = plan_rules(&[], &wanted, &BTreeSet::new());
        assert_eq!(plan.result, [rule(80, 1, 1), rule(81, 2, 2)]);
        assert!(plan.remove.is_empty());
    }
}
