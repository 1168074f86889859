//! Node mode's share of the maps ([`egress_common::node`]): each instance's configuration
//! at its number, its rules keyed by it, and the node maps that find it from a packet (by
//! its router pod's host-side interface, or by EGRESS_SOURCE). Node mode's programs are in
//! the one table, [`crate::dataplane::programs`].

use aya::maps::{Array, HashMap, MapError};
use egress_common::{
    DropReason, NODE_INSTANCES_MAX, NODE_STATS_PER_INSTANCE, NodeHop, NodeUplink, PacketCount,
    RouterConfig, RouterConfig6, RuleKey, RuleTarget, maps, node_stat,
};

use crate::dataplane::{
    maps::{Error as MapsError, MapSet, is_not_found},
    rules::{RuleSet, ids, plan_rules},
};

/// One instance's counters in node mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCounts {
    /// Clients' packets translated toward the remotes.
    pub forwarded: PacketCount,
    /// Replies translated toward the clients.
    pub replied: PacketCount,
    /// Packets no rule took, let into the router pod.
    pub passed: PacketCount,
    /// Packets of the instance's fallback flows, both ways: IPv4, IPv6.
    pub fallback: PacketCount,
    pub fallback6: PacketCount,
    /// ICMP errors it sent to clients in place of their packets.
    pub icmp_errors: PacketCount,
    /// Its drops by reason, the reasons with none left out.
    pub drops: Vec<(DropReason, PacketCount)>,
}

impl NodeCounts {
    /// Its drops, all reasons together.
    #[must_use]
    pub fn dropped(&self) -> PacketCount {
        self.drops
            .iter()
            .fold(PacketCount::default(), |acc, (_, c)| acc.add(*c))
    }
}

impl MapSet {
    /// The instances configured now, by number.
    pub fn node_instances(&self) -> Result<Vec<RouterConfig>, MapsError> {
        let name = maps::CONFIG;
        let err = |source| MapsError::Map { name, source };
        let array = Array::<_, RouterConfig>::try_from(self.map(name)?).map_err(err)?;
        let mut found = Vec::new();
        for index in 1..=NODE_INSTANCES_MAX {
            let cfg = array.get(&index, 0).map_err(err)?;
            if cfg.host_ifindex() != 0 {
                found.push(cfg);
            }
        }
        Ok(found)
    }

    /// Instance `instance`'s way out.
    pub fn node_hop(&self, instance: u8) -> Result<NodeHop, MapsError> {
        let name = maps::NODE_HOPS;
        let err = |source| MapsError::Map { name, source };
        let array = Array::<_, NodeHop>::try_from(self.map(name)?).map_err(err)?;
        array.get(&u32::from(instance), 0).map_err(err)
    }

    /// Instance `instance`'s counters ([`egress_common::node_stat`]), summed over CPUs.
    pub fn node_counts(&self, instance: u8) -> Result<NodeCounts, MapsError> {
        let name = maps::NODE_STATS;
        let err = |source| MapsError::Map { name, source };
        let array =
            aya::maps::PerCpuArray::<_, PacketCount>::try_from(self.map(name)?).map_err(err)?;
        let slot = |slot: u32| -> Result<PacketCount, MapsError> {
            let index = u32::from(instance) * NODE_STATS_PER_INSTANCE + slot;
            let values = array.get(&index, 0).map_err(err)?;
            Ok(values
                .iter()
                .fold(PacketCount::default(), |acc, v| acc.add(*v)))
        };
        let mut drops = Vec::new();
        for reason in DropReason::ALL {
            let count = slot(node_stat::drop(reason))?;
            if count.packets > 0 {
                drops.push((reason, count));
            }
        }
        Ok(NodeCounts {
            forwarded: slot(node_stat::FORWARDED)?,
            replied: slot(node_stat::REPLIED)?,
            passed: slot(node_stat::PASSED)?,
            fallback: slot(node_stat::FALLBACK)?,
            fallback6: slot(node_stat::FALLBACK6)?,
            icmp_errors: slot(node_stat::ICMP_ERRORS)?,
            drops,
        })
    }

    /// The uplink's facts as the maps hold them (zero before an agent wrote them).
    pub fn node_uplink(&self) -> Result<NodeUplink, MapsError> {
        let name = maps::NODE_UPLINK;
        let err = |source| MapsError::Map { name, source };
        let array = Array::<_, NodeUplink>::try_from(self.map(name)?).map_err(err)?;
        array.get(&0, 0).map_err(err)
    }

    /// Writes the uplink's facts for the ARP responder.
    pub fn set_node_uplink(&mut self, uplink: &NodeUplink) -> Result<(), MapsError> {
        let name = maps::NODE_UPLINK;
        let err = |source| MapsError::Map { name, source };
        let mut array = Array::<_, NodeUplink>::try_from(self.map_mut(name)?).map_err(err)?;
        array.set(0, uplink, 0).map_err(err)
    }

    /// The IPv6 half of instance `instance` (zero for an instance without IPv6).
    pub fn node_config6(&self, instance: u8) -> Result<RouterConfig6, MapsError> {
        let name = maps::CONFIG6;
        let err = |source| MapsError::Map { name, source };
        let array = Array::<_, RouterConfig6>::try_from(self.map(name)?).map_err(err)?;
        array.get(&u32::from(instance), 0).map_err(err)
    }

    /// Configures instance `config.instance` of a node: its rules of both families (by
    /// difference, with ids unique on the node, as the instances share the counters), its
    /// way out, the lookups from its host-side interface and EGRESS_SOURCE's addresses,
    /// and its configuration last, the IPv6 half first, which arms `node_forward` for it.
    /// Returns its rules as written.
    pub fn configure_node(
        &mut self,
        config: &RouterConfig,
        config6: &RouterConfig6,
        hop: &NodeHop,
        wanted: &RuleSet,
    ) -> Result<Vec<(RuleKey, RuleTarget)>, MapsError> {
        let instance = config.instance;
        let index = u32::from(instance);
        let old6 = self.node_config6(instance)?;
        let (all, all6) = (self.rules()?, self.rules6()?);
        let mine = |key: &RuleKey| key.instance == instance;
        let (current, others): (Vec<_>, Vec<_>) = all.iter().copied().partition(|(k, _)| mine(k));
        let (current6, others6): (Vec<_>, Vec<_>) =
            all6.iter().copied().partition(|(k, _)| mine(k));
        let wanted4: Vec<_> = wanted
            .rules
            .iter()
            .map(|(key, target)| (RuleKey { instance, ..*key }, *target))
            .collect();
        let wanted6: Vec<_> = wanted
            .rules6
            .iter()
            .map(|(key, target)| (RuleKey { instance, ..*key }, *target))
            .collect();
        // One id space for the node's rules of both families (they share the counters):
        // IPv4 avoids every other rule's id and this instance's IPv6 ones; IPv6 then
        // avoids what IPv4 holds now or will.
        let mut taken = ids(&others);
        taken.extend(ids(&all6));
        let plan = plan_rules(&current, &wanted4, &taken);
        let mut taken6 = ids(&all);
        taken6.extend(ids(&others6));
        taken6.extend(ids(&plan.result));
        let plan6 = plan_rules(&current6, &wanted6, &taken6);
        self.reset_rule_stats(&plan.fresh_ids)?;
        self.reset_rule_stats(&plan6.fresh_ids)?;
        let (mut done, mut done6) = (0, 0);
        self.write_rules(maps::RULES, &plan.remove, &plan.write, &mut done)?;
        if !wanted6.is_empty() || !current6.is_empty() {
            self.write_rules(maps::RULES6, &plan6.remove, &plan6.write, &mut done6)?;
        }
        self.write_node(maps::NODE_HOPS, Some(index), hop)?;
        self.put_node(maps::NODE_PODS, config.host_ifindex(), index)?;
        if config.egress_source != [0; 4] {
            self.put_node(maps::NODE_SOURCES, config.egress_source, index)?;
        }
        if old6.egress_source != [0; 16] && old6.egress_source != config6.egress_source {
            self.delete_node(maps::NODE_SOURCES6, old6.egress_source)?;
        }
        if config6.egress_source != [0; 16] {
            self.put_node(maps::NODE_SOURCES6, config6.egress_source, index)?;
        }
        self.write_node(maps::CONFIG6, Some(index), config6)?;
        self.write_node(maps::CONFIG, Some(index), config)?;
        Ok(plan.result)
    }

    /// Removes an instance from the node's maps: its configuration first (which disarms
    /// `node_forward` for it), then its lookups and rules. Its flows end on their own.
    pub fn remove_node_instance(&mut self, config: &RouterConfig) -> Result<(), MapsError> {
        let index = u32::from(config.instance);
        let config6 = self.node_config6(config.instance)?;
        self.write_node(maps::CONFIG, Some(index), &RouterConfig::default())?;
        self.write_node(maps::CONFIG6, Some(index), &RouterConfig6::default())?;
        self.delete_node(maps::NODE_PODS, config.host_ifindex())?;
        if config.egress_source != [0; 4] {
            self.delete_node(maps::NODE_SOURCES, config.egress_source)?;
        }
        if config6.egress_source != [0; 16] {
            self.delete_node(maps::NODE_SOURCES6, config6.egress_source)?;
        }
        let rules: Vec<RuleKey> = self
            .rules()?
            .into_iter()
            .filter(|(key, _)| key.instance == config.instance)
            .map(|(key, _)| key)
            .collect();
        self.write_rules::<[u8; 4]>(maps::RULES, &rules, &[], &mut 0)?;
        let rules6: Vec<RuleKey> = self
            .rules6()?
            .into_iter()
            .filter(|(key, _)| key.instance == config.instance)
            .map(|(key, _)| key)
            .collect();
        if rules6.is_empty() {
            return Ok(());
        }
        self.write_rules::<[u8; 16]>(maps::RULES6, &rules6, &[], &mut 0)
    }

    fn write_node<T: aya::Pod>(
        &mut self,
        name: &'static str,
        index: Option<u32>,
        value: &T,
    ) -> Result<(), MapsError> {
        let err = |source| MapsError::Map { name, source };
        let mut array = Array::<_, T>::try_from(self.map_mut(name)?).map_err(err)?;
        array.set(index.unwrap_or(0), value, 0).map_err(err)
    }

    fn put_node<K: aya::Pod>(
        &mut self,
        name: &'static str,
        key: K,
        index: u32,
    ) -> Result<(), MapsError> {
        let err = |source| MapsError::Map { name, source };
        let mut table = HashMap::<_, K, u32>::try_from(self.map_mut(name)?).map_err(err)?;
        table.insert(key, index, 0).map_err(err)
    }

    fn delete_node<K: aya::Pod>(&mut self, name: &'static str, key: K) -> Result<(), MapsError> {
        let err = |source| MapsError::Map { name, source };
        let mut table = HashMap::<_, K, u32>::try_from(self.map_mut(name)?).map_err(err)?;
        match table.remove(&key) {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) || matches!(e, MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(err(source)),
        }
    }
}
