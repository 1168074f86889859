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

/// [`enforce_source_limit`] for both families after `pass` (IPv6 only where the data plane
/// has it), each with `--max-flows-per-source` (`max`, or a quarter of its table); returns
/// how many clients each family limits now.
pub fn enforce_source_limits(
    maps: &mut MapSet,
    pass: &GcPass,
    max: Option<u32>,
    ipv6: bool,
) -> Result<(u64, u64), Error> {
    let limit = |capacity: u64| flow_limit(max, capacity);
    let v4 = enforce_source_limit(maps, &pass.v4, limit(pass.v4.capacity))?;
    let v6 = if ipv6 {
        enforce_source_limit(maps, &pass.v6, limit(pass.v6.capacity))?
    } else {
        0
    };
    Ok((v4, v6))
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

/// The limit of a table of `capacity` entries: `configured`, or by default a quarter of
/// its flows (two entries each).
#[must_use]
pub fn flow_limit(configured: Option<u32>, capacity: u64) -> u32 {
    configured.unwrap_or(u32::try_from(capacity / 2 / 4).unwrap_or(u32::MAX))
}
