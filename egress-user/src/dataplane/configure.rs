//! Writing an instance's configuration and rules into its maps: both families' rules
//! reconciled by difference ([`crate::dataplane::rules::plan_rules`]), undone if a write
//! fails, and the configuration, which arms the programs, written last.

use aya::maps::{Array, HashMap, MapError, PerCpuArray};
use egress_common::{
    Addr, FALLBACK6_RULE_ID, PacketCount, RouterConfig, RouterConfig6, RuleKey, RuleTarget,
    RuleTarget6, maps,
};

use crate::dataplane::{
    maps::{Error, MapSet},
    rules::{RulePlan, ids, plan_rules},
};

/// The rules of both families as written, with their ids.
pub type Written = (Vec<(RuleKey, RuleTarget)>, Vec<(RuleKey, RuleTarget6)>);

impl MapSet {
    /// [`MapSet::configure_dual`] for an instance without IPv6: its IPv6 rules are
    /// removed and its IPv6 configuration cleared.
    ///
    /// Returns the rules as written, with their ids.
    pub fn configure(
        &mut self,
        config: &RouterConfig,
        wanted: &[(RuleKey, RuleTarget)],
    ) -> Result<Vec<(RuleKey, RuleTarget)>, Error> {
        self.configure_dual(config, &RouterConfig6::default(), wanted, &[])
            .map(|(v4, _)| v4)
    }

    /// Writes the instance configuration and reconciles the rules of both families by
    /// difference: unchanged rules keep their id and counters, new or changed rules get a
    /// free id (from one id space for both families, as they share the counters) with
    /// zeroed counters, rules no longer wanted are removed. The configurations, which arm
    /// the programs, are written last, IPv6 first: [`egress_common::config_flags::IPV6`]
    /// in the IPv4 one hands IPv6 on to the IPv6 programs.
    pub fn configure_dual(
        &mut self,
        config: &RouterConfig,
        config6: &RouterConfig6,
        wanted: &[(RuleKey, RuleTarget)],
        wanted6: &[(RuleKey, RuleTarget6)],
    ) -> Result<Written, Error> {
        let current = self.rules()?;
        let current6 = self.rules6()?;
        let old_config = self.config()?;
        let old_config6 = self.config6()?;
        // IPv4 first, avoiding the ids IPv6 rules hold now; IPv6 then avoids what IPv4
        // holds now or will.
        let plan = plan_rules(&current, wanted, &ids(&current6));
        let mut taken = ids(&current);
        taken.extend(ids(&plan.result));
        let plan6 = plan_rules(&current6, wanted6, &taken);
        let mut reset: Vec<u16> = plan
            .fresh_ids
            .iter()
            .chain(&plan6.fresh_ids)
            .copied()
            .collect();
        // Each family's fallback has its counters: zeroed when it changes.
        if old_config
            .is_none_or(|old| old.fallback_ip != config.fallback_ip || old.flags != config.flags)
        {
            reset.push(0);
        }
        if old_config6.fallback_ip != config6.fallback_ip || old_config6.flags != config6.flags {
            reset.push(FALLBACK6_RULE_ID);
        }
        self.reset_rule_stats(&reset)?;
        // Removed rules go first, so a map never holds more than the larger of the two
        // sets (a full map swapped for another full one fits). If a write fails, what was
        // done is undone: nothing is left half applied.
        let (mut done, mut done6) = (0, 0);
        let applied = self
            .write_rules(maps::RULES, &plan.remove, &plan.write, &mut done)
            .and_then(|()| self.write_rules(maps::RULES6, &plan6.remove, &plan6.write, &mut done6))
            .and_then(|()| self.write_config(maps::CONFIG6, config6))
            .and_then(|()| self.write_config(maps::CONFIG, config));
        if let Err(err) = applied {
            let restored = self
                .undo(maps::RULES, &current, &plan, done)
                .and_then(|()| self.undo(maps::RULES6, &current6, &plan6, done6));
            return Err(match restored {
                Ok(()) => err,
                Err(restore) => Error::Restore {
                    error: Box::new(err),
                    restore: Box::new(restore),
                },
            });
        }
        Ok((plan.result, plan6.result))
    }

    /// The IPv6 rules, sorted by rule id (none where the maps have no IPv6 half).
    pub fn rules6(&self) -> Result<Vec<(RuleKey, RuleTarget6)>, Error> {
        if !self.has(maps::RULES6) {
            return Ok(Vec::new());
        }
        self.rules_of(maps::RULES6)
    }

    /// The IPv6 configuration (zero where none was written).
    pub fn config6(&self) -> Result<RouterConfig6, Error> {
        let name = maps::CONFIG6;
        if !self.has(name) {
            return Ok(RouterConfig6::default());
        }
        let err = |source| Error::Map { name, source };
        let array = Array::<_, RouterConfig6>::try_from(self.map(name)?).map_err(err)?;
        array.get(&0, 0).map_err(err)
    }

    pub(super) fn rules_of<A: Addr>(
        &self,
        name: &'static str,
    ) -> Result<Vec<(RuleKey, RuleTarget<A>)>, Error> {
        let err = |source| Error::Map { name, source };
        let table = HashMap::<_, RuleKey, RuleTarget<A>>::try_from(self.map(name)?).map_err(err)?;
        let mut rules = table.iter().collect::<Result<Vec<_>, _>>().map_err(err)?;
        rules.sort_by_key(|(key, target)| (target.rule_id, key.port, key.proto));
        Ok(rules)
    }

    /// Zeroes the counters of rule ids `reset`.
    pub(super) fn reset_rule_stats(&mut self, reset: &[u16]) -> Result<(), Error> {
        let name = maps::RULE_STATS;
        let err = |source| Error::Map { name, source };
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, source)| Error::Cpus(source))?;
        let mut array =
            PerCpuArray::<_, PacketCount>::try_from(self.map_mut(name)?).map_err(err)?;
        for &id in reset {
            let zero = aya::maps::PerCpuValues::try_from(vec![PacketCount::default(); nr_cpus])
                .map_err(Error::Cpus)?;
            array.set(u32::from(id), zero, 0).map_err(err)?;
        }
        Ok(())
    }

    /// Puts back the rules map `name` as `current` was, after the first `done` operations
    /// of `plan` succeeded.
    fn undo<A: Addr>(
        &mut self,
        name: &'static str,
        current: &[(RuleKey, RuleTarget<A>)],
        plan: &RulePlan<A>,
        done: usize,
    ) -> Result<(), Error> {
        let was = |key: &RuleKey| current.iter().find(|(k, _)| k == key).copied();
        let removed = &plan.remove[..done.min(plan.remove.len())];
        let written = &plan.write[..done.saturating_sub(plan.remove.len())];
        let (mut undo_remove, mut undo_write) = (Vec::new(), Vec::new());
        for key in removed {
            undo_write.extend(was(key));
        }
        for (key, _) in written {
            match was(key) {
                Some(old) => undo_write.push(old),
                None => undo_remove.push(*key),
            }
        }
        self.write_rules(name, &undo_remove, &undo_write, &mut 0)
    }

    /// Removes `remove` from the rules map `name`, then writes `write`; `done` counts the
    /// operations that succeeded, in that order.
    pub(super) fn write_rules<A: Addr>(
        &mut self,
        name: &'static str,
        remove: &[RuleKey],
        write: &[(RuleKey, RuleTarget<A>)],
        done: &mut usize,
    ) -> Result<(), Error> {
        if remove.is_empty() && write.is_empty() {
            return Ok(());
        }
        let err = |source| Error::Map { name, source };
        let mut table =
            HashMap::<_, RuleKey, RuleTarget<A>>::try_from(self.map_mut(name)?).map_err(err)?;
        for key in remove {
            match table.remove(key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(err(source)),
            }
            *done += 1;
        }
        for (key, target) in write {
            table.insert(key, target, 0).map_err(err)?;
            *done += 1;
        }
        Ok(())
    }

    fn write_config<T: aya::Pod>(&mut self, name: &'static str, config: &T) -> Result<(), Error> {
        if name == maps::CONFIG6 && !self.has(name) {
            // Maps of a running data plane without an IPv6 half, configured for IPv4.
            return Ok(());
        }
        let err = |source| Error::Map { name, source };
        let mut array = Array::<_, T>::try_from(self.map_mut(name)?).map_err(err)?;
        array.set(0, config, 0).map_err(err)
    }
}
