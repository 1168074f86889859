//! The IPv6 half of a data plane. Its programs are the IPv6 ones of
//! [`crate::dataplane::programs::PROGRAMS`], loaded and verified only for an instance with
//! IPv6 ([`crate::dataplane::load::LoadOptions::ipv6`]), and its maps are sized to one
//! entry otherwise ([`crate::dataplane::layout::size_ipv6_maps`]).
//!
//! The IPv6 programs are separate programs, attached with TCX after the IPv4 ones at the
//! same hooks: the IPv4 programs hand IPv6 frames on (TCX_NEXT) once
//! [`egress_common::config_flags::IPV6`] is set. Not a tail call: a program array is
//! emptied when its last user-space reference goes, which for an init container (whose
//! bpffs dies with it) is when it exits, while TCX programs stay with the interface.
//!
//! Its configuration and rules are written with the IPv4 ones
//! ([`crate::dataplane::maps::MapSet::configure_dual`]), and its maps are pinned and
//! handed over with them ([`egress_common::maps::ALL6`]). Their conntrack is collected
//! by the same GC as IPv4's, the sweep in the kernel included
//! ([`crate::conntrack::collect_garbage_in_kernel`]).

use aya::maps::HashMap;
use egress_common::{FlowEntry6, FlowKey6, maps};

use crate::dataplane::maps::{Error, MapSet};

impl MapSet {
    /// Every IPv6 conntrack entry, answered flows first (none where the maps have no IPv6
    /// half).
    pub fn conntrack6(&self) -> Result<Vec<(FlowKey6, FlowEntry6)>, Error> {
        let mut rows = Vec::new();
        for name in [maps::CONNTRACK6, maps::CT_UNREPLIED6] {
            if !self.has(name) {
                continue;
            }
            let err = |source| Error::Map { name, source };
            let table =
                HashMap::<_, FlowKey6, FlowEntry6>::try_from(self.map(name)?).map_err(err)?;
            for row in table.iter() {
                rows.push(row.map_err(err)?);
            }
        }
        Ok(rows)
    }
}
