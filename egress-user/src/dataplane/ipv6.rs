//! The IPv6 half of a data plane: its configuration and conntrack. Its programs are
//! [`crate::dataplane::programs::PROGRAMS6`], loaded and verified only for an instance with
//! IPv6 ([`crate::dataplane::load::LoadOptions::ipv6`]), and its maps are sized to one
//! entry otherwise ([`crate::dataplane::layout::size_ipv6_maps`]).
//!
//! The IPv6 programs are separate programs, attached with TCX after the IPv4 ones at the
//! same hooks: the IPv4 programs hand IPv6 frames on (TCX_NEXT) once
//! [`egress_common::config_flags::IPV6`] is set. Not a tail call: a program array is
//! emptied when its last user-space reference goes, which for an init container (whose
//! bpffs dies with it) is when it exits, while TCX programs stay with the interface.
//!
//! Not yet here (issue 18): pinning and handover of the IPv6 maps, their GC and
//! inspection, fragments, the ICMPv6 errors the router sends itself and the path checks.

use aya::maps::{Array, HashMap, MapError};
use egress_common::{FlowEntry6, FlowKey6, RouterConfig6, RuleKey, RuleTarget6, maps};

use crate::dataplane::load::{Dataplane, Error};

impl Dataplane {
    /// Writes the IPv6 rules (with their ids) and then the IPv6 configuration, which arms
    /// the IPv6 programs.
    pub fn configure6(
        &mut self,
        config: &RouterConfig6,
        rules: &[(RuleKey, RuleTarget6)],
    ) -> Result<(), Error> {
        let name = maps::RULES6;
        let err = |source| Error::ObjectMap { name, source };
        let map = self.object_map(name)?;
        let mut table = HashMap::<_, RuleKey, RuleTarget6>::try_from(map).map_err(err)?;
        let stale: Vec<RuleKey> = table
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !rules.iter().any(|(k, _)| k == key))
            .collect();
        for key in stale {
            match table.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(err(source)),
            }
        }
        for (key, target) in rules {
            table.insert(key, target, 0).map_err(err)?;
        }
        let name = maps::CONFIG6;
        let err = |source| Error::ObjectMap { name, source };
        let map = self.object_map(name)?;
        Array::<_, RouterConfig6>::try_from(map)
            .map_err(err)?
            .set(0, config, 0)
            .map_err(err)
    }

    /// Every IPv6 conntrack entry, answered flows first.
    pub fn conntrack6(&mut self) -> Result<Vec<(FlowKey6, FlowEntry6)>, Error> {
        let mut rows = Vec::new();
        for name in [maps::CONNTRACK6, maps::CT_UNREPLIED6] {
            let err = |source| Error::ObjectMap { name, source };
            let map = self.object_map(name)?;
            let table = HashMap::<_, FlowKey6, FlowEntry6>::try_from(&*map).map_err(err)?;
            for row in table.iter() {
                rows.push(row.map_err(err)?);
            }
        }
        Ok(rows)
    }
}
