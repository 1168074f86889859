//! `egress-router node-status`: every instance a node agent serves, as an operator reads
//! it (pod, host-side interface, EGRESS_SOURCE and gateway, rules with their counters, its
//! flows), from the node's pinned maps alone, with or without the agent.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use anyhow::Result;
use egress_common::{FALLBACK6_RULE_ID, RouterConfig, flow_kind};
use serde::Serialize;

use crate::{
    dataplane::maps::MapSet,
    inspect::{RuleView, rules, rules6},
    network::interface::ifname,
};

/// One instance of the node.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceView {
    /// Its number (its index of CONFIG, and of its rules' keys).
    pub instance: u8,
    pub pod_ip: Ipv4Addr,
    /// The router pod's host-side interface, by name where it still exists.
    pub host_interface: String,
    pub egress_source: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// A dual-stack instance's IPv6 half: the pod's address, EGRESS_SOURCE's, the gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_ip6: Option<Ipv6Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_source6: Option<Ipv6Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// Its rules and fallback with their counters (the fallback's are the instance's own).
    pub rules: Vec<RuleView>,
    /// Its translated flows in the conntrack tables (both families).
    pub flows: u64,
    /// Its packets by verdict: translated toward the remotes, replies toward the clients,
    /// let into the pod (no rule), answered with an ICMP error, dropped.
    pub forwarded: u64,
    pub replied: u64,
    pub passed: u64,
    pub icmp_errors: u64,
    pub dropped: u64,
    /// Its drops by reason (`egress-router stats` names), the reasons with none left out.
    pub drops: BTreeMap<&'static str, u64>,
}

/// Every instance, by number.
pub fn instances(maps: &MapSet) -> Result<Vec<InstanceView>> {
    let configs = maps.node_instances()?;
    let all_rules = maps.rules()?;
    let all_rules6 = maps.rules6()?;
    let counters = maps.rule_stats()?;
    // A flow's forward entry is keyed by the client's packet, to the router pod's IP.
    let mut flows: BTreeMap<[u8; 4], u64> = BTreeMap::new();
    for (key, entry) in maps.conntrack()? {
        if entry.kind == flow_kind::FORWARD {
            *flows.entry(key.daddr).or_default() += 1;
        }
    }
    let mut flows6: BTreeMap<[u8; 16], u64> = BTreeMap::new();
    for (key, entry) in maps.conntrack6()? {
        if entry.kind == flow_kind::FORWARD {
            *flows6.entry(key.daddr).or_default() += 1;
        }
    }
    configs
        .iter()
        .map(|config: &RouterConfig| {
            let hop = maps.node_hop(config.instance)?;
            let counts = maps.node_counts(config.instance)?;
            let config6 = maps.node_config6(config.instance)?;
            let has6 = config6.egress_source != [0; 16];
            let mine: Vec<_> = all_rules
                .iter()
                .filter(|(key, _)| key.instance == config.instance)
                .copied()
                .collect();
            let mine6: Vec<_> = all_rules6
                .iter()
                .filter(|(key, _)| key.instance == config.instance)
                .copied()
                .collect();
            let mut rules = rules(&mine, &counters, Some(config), None);
            if has6 {
                rules.extend(rules6(&mine6, &counters, &config6, None));
            }
            // The fallbacks (rules 0 and FALLBACK6_RULE_ID in pod mode) count on the
            // instance's own counters.
            for view in rules
                .iter_mut()
                .filter(|r| r.id == 0 || r.id == FALLBACK6_RULE_ID)
            {
                let count = if view.id == 0 {
                    counts.fallback
                } else {
                    counts.fallback6
                };
                view.packets = count.packets;
                view.bytes = count.bytes;
            }
            let v6 = |bytes: [u8; 16]| has6.then(|| Ipv6Addr::from(bytes));
            let gateway6 = config6.next_hop_addr();
            Ok(InstanceView {
                instance: config.instance,
                pod_ip: config.pod_ip.into(),
                host_interface: ifname(config.host_ifindex())
                    .unwrap_or_else(|| format!("ifindex {} (gone)", config.host_ifindex())),
                egress_source: config.egress_source.into(),
                gateway: hop.next_hop[1].to_ne_bytes().into(),
                pod_ip6: v6(config6.pod_ip),
                egress_source6: v6(config6.egress_source),
                gateway6: v6(gateway6),
                rules,
                flows: flows.get(&config.pod_ip).copied().unwrap_or(0)
                    + if has6 {
                        flows6.get(&config6.pod_ip).copied().unwrap_or(0)
                    } else {
                        0
                    },
                forwarded: counts.forwarded.packets,
                replied: counts.replied.packets,
                passed: counts.passed.packets,
                icmp_errors: counts.icmp_errors.packets,
                dropped: counts.dropped().packets,
                drops: counts
                    .drops
                    .iter()
                    .map(|(reason, c)| (reason.name(), c.packets))
                    .collect(),
            })
        })
        .collect()
}

/// The text form.
#[must_use]
pub fn text(instances: &[InstanceView]) -> String {
    let mut out = format!("{} instance(s)\n", instances.len());
    for i in instances {
        out.push_str(&format!(
            "instance {}: pod {}{} via {}, EGRESS_SOURCE {} via {}{}, {} flow(s); packets: \
             {} forwarded, {} replied, {} passed, {} ICMP errors sent, {} dropped{}\n",
            i.instance,
            i.pod_ip,
            i.pod_ip6.map_or_else(String::new, |ip| format!(" {ip}")),
            i.host_interface,
            i.egress_source,
            i.gateway,
            match (i.egress_source6, i.gateway6) {
                (Some(s), Some(g)) => format!(", {s} via {g}"),
                _ => String::new(),
            },
            i.flows,
            i.forwarded,
            i.replied,
            i.passed,
            i.icmp_errors,
            i.dropped,
            reasons(&i.drops)
        ));
        for r in &i.rules {
            out.push_str(&format!(
                "  rule {} {} {} -> {}: {} packets, {} bytes\n",
                r.id, r.proto, r.port, r.target, r.packets, r.bytes
            ));
        }
    }
    out
}

/// ` (reason n, ...)` for the drops, or nothing without any.
fn reasons(drops: &BTreeMap<&'static str, u64>) -> String {
    if drops.is_empty() {
        return String::new();
    }
    let each: Vec<String> = drops.iter().map(|(r, n)| format!("{r} {n}")).collect();
    format!(" ({})", each.join(", "))
}
