//! `--max-flows-per-source` applied: after a GC pass, the clients of one family that hold
//! more flows than the limit go into its table of limited clients (the data plane then
//! refuses their new flows), and those back under it come out. The pod agent and the node
//! agent apply it alike (on a node, a client's flows to every instance count together:
//! the tables are shared).

use crate::{
    conntrack::gc::{FamilyPass, GcPass, SourceLimits, source_limits},
    dataplane::{
        flows::CtFamily,
        maps::{Error, MapSet},
    },
};

/// What [`enforce_source_limits`] did: the limit in force and the clients limited now, per
/// family (IPv4, IPv6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Enforced {
    pub limits: (u32, u32),
    pub limited: (u64, u64),
}

/// [`enforce_source_limit`] for both families after `pass` (IPv6 only where the data plane
/// has it), each with `--max-flows-per-source` (`max`, or by default [`flow_limit`]'s).
pub fn enforce_source_limits(
    maps: &mut MapSet,
    pass: &GcPass,
    max: Option<u32>,
    ipv6: bool,
) -> Result<Enforced, Error> {
    // The translated ports one remote offers (per address, port and protocol): a node
    // agent's instances may differ; the smallest range decides.
    let nat_ports = maps.config()?.map_or(u64::from(u16::MAX), |c| {
        nat_ports(c.nat_port_min, c.nat_port_max)
    });
    let limit = |capacity: u64| flow_limit(max, capacity, nat_ports);
    let limits = (limit(pass.v4.capacity), limit(pass.v6.capacity));
    let v4 = enforce_source_limit(maps, &pass.v4, limits.0)?;
    let v6 = if ipv6 {
        enforce_source_limit(maps, &pass.v6, limits.1)?
    } else {
        0
    };
    Ok(Enforced {
        limits,
        limited: (v4, v6),
    })
}

/// How many translated ports `min..=max` holds.
#[must_use]
pub fn nat_ports(min: u16, max: u16) -> u64 {
    u64::from(max.saturating_sub(min)) + 1
}

/// Limits the clients of family `A` that hold more flows than `limit` and lets go of those
/// back under it, as the GC pass counted them; returns how many are limited now.
pub fn enforce_source_limit<A: CtFamily>(
    maps: &mut MapSet,
    pass: &FamilyPass<A>,
    limit: u32,
) -> Result<u64, Error> {
    let limited = maps.limited_sources::<A>()?;
    let SourceLimits {
        limit: limit_now,
        release,
    } = source_limits(&pass.flows_by_source, &limited, limit);
    let mut added = 0;
    for (source, flows) in &limit_now {
        if limited.len() + added + 1 > egress_common::maps::CT_LIMITED_MAX as usize {
            break;
        }
        maps.limit_source(*source, *flows)?;
        added += 1;
        tracing::warn!(
            client = %source.ip(),
            flows,
            limit,
            "client over its flow limit: its new flows are refused until it holds fewer \
             (--max-flows-per-source)"
        );
    }
    for source in &release {
        maps.unlimit_source(*source)?;
        tracing::info!(client = %source.ip(), "client back under its flow limit");
    }
    Ok((limited.len() + added - release.len()) as u64)
}

/// The limit of a table of `capacity` entries when a remote offers `nat_ports` translated
/// ports: `configured`, or by default a quarter of the table's flows (two entries each)
/// and at most a quarter of the ports, so that one client cannot take a remote's ports
/// from the others (7,936 of the default range's 31,744).
#[must_use]
pub fn flow_limit(configured: Option<u32>, capacity: u64, nat_ports: u64) -> u32 {
    configured.unwrap_or_else(|| {
        u32::try_from((capacity / 2 / 4).min(nat_ports / 4).max(1)).unwrap_or(u32::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_one_client_gets_at_most_a_quarter_of_a_remotes_ports() {
        let ports = nat_ports(1024, 32767);
        assert_eq!(ports, 31_744);
        // The default table (262,144 flows) would allow 65,536: the ports decide.
        assert_eq!(flow_limit(None, 2 * 262_144, ports), 7_936);
        // A small table decides itself.
        assert_eq!(flow_limit(None, 2 * 4096, ports), 1024);
        assert_eq!(flow_limit(Some(50_000), 2 * 4096, ports), 50_000);
        assert_eq!(flow_limit(Some(0), 2 * 4096, ports), 0, "0: no limit");
    }
}
