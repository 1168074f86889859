//! Garbage collection of the conntrack tables, and the census of each client's flows that
//! `--max-flows-per-source` is enforced with.

use std::time::Duration;

use egress_common::{
    FlowEntry, FlowKey, counts_against_client, flow_kind, gc_collectable, peer_key,
};

use crate::dataplane::{
    flows::{CtFamily, CtTable},
    maps::{Error, MapSet},
};

/// What one garbage-collection pass saw and did, per family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcPass {
    pub v4: FamilyPass<[u8; 4]>,
    /// The IPv6 tables (one-entry placeholders, empty, for an instance without IPv6).
    pub v6: FamilyPass<[u8; 16]>,
}

/// What a pass saw and did in one family's two tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyPass<A: Eq + std::hash::Hash> {
    /// Entries of answered flows before the pass.
    pub entries: u64,
    /// Of those, removed because their flow outlived its timeout.
    pub expired: u64,
    /// The answered-flows table's capacity in entries.
    pub capacity: u64,
    /// The same for the table of flows not answered yet.
    pub unreplied_entries: u64,
    pub unreplied_expired: u64,
    pub unreplied_capacity: u64,
    /// Translated flows each client holds after the pass (both tables), by its address.
    pub flows_by_source: std::collections::HashMap<A, u32>,
}

impl<A: Eq + std::hash::Hash> Default for FamilyPass<A> {
    fn default() -> Self {
        Self {
            entries: 0,
            expired: 0,
            capacity: 0,
            unreplied_entries: 0,
            unreplied_expired: 0,
            unreplied_capacity: 0,
            flows_by_source: std::collections::HashMap::new(),
        }
    }
}

impl<A: CtFamily> FamilyPass<A> {
    /// A pass's result: each table's (entries before, entries removed), and the census.
    pub(super) fn of(
        maps: &MapSet,
        flows_by_source: std::collections::HashMap<A, u32>,
        (entries, expired): (u64, u64),
        (unreplied_entries, unreplied_expired): (u64, u64),
    ) -> Result<Self, Error> {
        Ok(Self {
            flows_by_source,
            entries,
            expired,
            capacity: u64::from(maps.capacity_of::<A>(CtTable::Replied)?),
            unreplied_entries,
            unreplied_expired,
            unreplied_capacity: u64::from(maps.capacity_of::<A>(CtTable::Unreplied)?),
        })
    }

    /// How full the fuller table is after the pass (0..=1).
    #[must_use]
    pub fn fill(&self) -> f64 {
        let fill = |entries: u64, expired: u64, capacity: u64| {
            entries.saturating_sub(expired) as f64 / capacity.max(1) as f64
        };
        fill(self.entries, self.expired, self.capacity).max(fill(
            self.unreplied_entries,
            self.unreplied_expired,
            self.unreplied_capacity,
        ))
    }

    /// Entries removed from both tables.
    #[must_use]
    pub fn expired_total(&self) -> u64 {
        self.expired + self.unreplied_expired
    }
}

impl GcPass {
    /// How full the fullest table of either family is after the pass (0..=1). An IPv6
    /// placeholder's one entry does not count.
    #[must_use]
    pub fn fill(&self) -> f64 {
        let v6 = if self.v6.capacity > 1 {
            self.v6.fill()
        } else {
            0.0
        };
        self.v4.fill().max(v6)
    }
}

/// Removes conntrack entries whose flow outlived its timeout at `now` (CLOCK_MONOTONIC
/// nanoseconds, the data plane's clock; see [`flow_expired`]). A flow's two entries go
/// together, and a packet that arrives while they go keeps the flow:
///
/// - both entries are read again and judged together right before;
/// - the reply entry goes first, taken out atomically, so no reply can refresh it unseen;
///   the forward entry is then taken out the same way;
/// - what was taken out is judged again: a flow that turned out alive (a packet in
///   between) is put back, without overwriting what the data plane wrote meanwhile.
///
/// A client packet in the instant between is translated as before anyway: the flow is
/// re-created with the same translated port (a keyed hash of the tuple), and a missing
/// reply entry is re-created from its forward entry.
pub fn collect_garbage(maps: &mut MapSet, now: u64) -> Result<GcPass, Error> {
    collect_garbage_with(maps, now, |_| {})
}

/// [`collect_garbage`], calling `between` with each expired flow's key after the flow was
/// judged expired and right before its entries are taken out: where a packet can arrive
/// and refresh it (tests play that packet there).
pub fn collect_garbage_with(
    maps: &mut MapSet,
    now: u64,
    mut between: impl FnMut(&FlowKey),
) -> Result<GcPass, Error> {
    Ok(GcPass {
        v4: collect_family(maps, now, &mut between)?,
        v6: collect_family(maps, now, &mut |_| {})?,
    })
}

/// [`collect_garbage_with`] on one family's two tables.
pub(super) fn collect_family<A: CtFamily>(
    maps: &mut MapSet,
    now: u64,
    between: &mut impl FnMut(&FlowKey<A>),
) -> Result<FamilyPass<A>, Error> {
    let mut flows_by_source = std::collections::HashMap::new();
    let answered = collect_table(maps, CtTable::Replied, now, between, &mut flows_by_source)?;
    let unreplied = collect_table(maps, CtTable::Unreplied, now, between, &mut flows_by_source)?;
    FamilyPass::of(maps, flows_by_source, answered, unreplied)
}

/// [`collect_garbage_with`] on one table: (entries before, entries removed).
pub(super) fn collect_table<A: CtFamily>(
    maps: &mut MapSet,
    t: CtTable,
    now: u64,
    between: &mut impl FnMut(&FlowKey<A>),
    flows_by_source: &mut std::collections::HashMap<A, u32>,
) -> Result<(u64, u64), Error> {
    let flows = maps.conntrack_table_of::<A>(t)?;
    // Reply-entry key -> position in `flows`: the only entries another entry looks up
    // (a forward entry its reply entry). foldhash: several times faster than SipHash over
    // 2M keys, and seeded per process, so flow keys a client chooses cannot be aimed at one
    // bucket without knowing the seed.
    let mut index: std::collections::HashMap<FlowKey<A>, u32, foldhash::fast::RandomState> =
        std::collections::HashMap::with_capacity_and_hasher(flows.len() / 2, Default::default());
    index.extend(
        flows
            .iter()
            .enumerate()
            .filter(|(_, (_, entry))| entry.kind == flow_kind::REPLY)
            .map(|(i, (key, _))| (*key, i as u32)),
    );
    // Reply entries whose forward entry was found: judged with it, not again alone.
    let mut paired = vec![false; flows.len()];
    // One unit per flow: a forward entry with its reply entry, or an entry alone (a pod's
    // own connection, or half a flow whose other half is gone).
    let mut doomed = Vec::new();
    let mut census: std::collections::HashMap<A, u32, foldhash::fast::RandomState> =
        std::collections::HashMap::default();
    for (key, entry) in flows.iter().filter(|(_, e)| e.kind != flow_kind::REPLY) {
        let peer = (entry.kind == flow_kind::FORWARD)
            .then(|| {
                let pkey = peer_key(key, entry);
                let i = *index.get(&pkey)? as usize;
                let peer = &flows[i].1;
                // A reply entry that returns to this forward entry has it as its peer too
                // (both are `peer_key` of the other), so each pair is seen once, here.
                peer.returns_to(key).then(|| {
                    paired[i] = true;
                    (pkey, peer)
                })
            })
            .flatten();
        let peer_entry = peer.map(|(_, e)| e);
        if gc_collectable(key.proto, entry, peer_entry, now) {
            doomed.push((*key, peer.map(|(k, _)| k)));
        } else if entry.kind == flow_kind::FORWARD
            && counts_against_client(key.proto, entry, peer_entry)
        {
            *census.entry(key.saddr).or_default() += 1;
        }
    }
    // Reply entries without their forward entry (evicted, or taken over), judged alone.
    for (i, (key, entry)) in flows.iter().enumerate() {
        if entry.kind == flow_kind::REPLY
            && !paired[i]
            && gc_collectable(key.proto, entry, None, now)
        {
            doomed.push((*key, None));
        }
    }
    for (source, n) in census {
        *flows_by_source.entry(source).or_default() += n;
    }
    let mut expired = 0;
    for (key, peer) in doomed {
        expired += remove_flow(maps, t, &key, peer.as_ref(), now, between)?;
    }
    Ok((flows.len() as u64, expired))
}

/// Removes one expired flow (see [`collect_garbage`]); returns how many entries went.
pub(super) fn remove_flow<A: CtFamily>(
    maps: &mut MapSet,
    t: CtTable,
    key: &FlowKey<A>,
    peer: Option<&FlowKey<A>>,
    now: u64,
    between: &mut impl FnMut(&FlowKey<A>),
) -> Result<u64, Error> {
    let proto = key.proto;
    let still = |entry: &FlowEntry<A>, other: Option<&FlowEntry<A>>| -> bool {
        gc_collectable(proto, entry, other, now)
    };
    let Some(entry) = maps.flow(t, key)? else {
        return Ok(0);
    };
    let peer_entry = match peer {
        Some(p) => maps.flow(t, p)?.filter(|e| e.returns_to(key)),
        None => None,
    };
    if !still(&entry, peer_entry.as_ref()) {
        return Ok(0);
    }
    between(key);
    let taken_peer = match (peer, peer_entry) {
        (Some(p), Some(_)) => maps.take_flow(t, p)?.map(|e| (*p, e)),
        _ => None,
    };
    let Some(current) = maps.flow(t, key)? else {
        // The forward entry went meanwhile (evicted): the reply entry is judged alone.
        return match &taken_peer {
            Some((p, e)) if !still(e, None) => {
                maps.put_flow_if_absent(t, p, e)?;
                Ok(0)
            }
            Some(_) => Ok(1),
            None => Ok(0),
        };
    };
    if !still(&current, taken_peer.as_ref().map(|(_, e)| e)) {
        // Refreshed in between: the reply entry goes back.
        if let Some((p, e)) = &taken_peer {
            maps.put_flow_if_absent(t, p, e)?;
        }
        return Ok(0);
    }
    let Some(taken) = maps.take_flow(t, key)? else {
        return Ok(u64::from(taken_peer.is_some()));
    };
    if !still(&taken, taken_peer.as_ref().map(|(_, e)| e)) {
        maps.put_flow_if_absent(t, key, &taken)?;
        if let Some((p, e)) = &taken_peer {
            maps.put_flow_if_absent(t, p, e)?;
        }
        return Ok(0);
    }
    Ok(1 + u64::from(taken_peer.is_some()))
}

/// What a census changes in the set of limited clients (of one family).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLimits<A = [u8; 4]> {
    /// Clients to limit now, with the flows each holds.
    pub limit: Vec<(A, u32)>,
    /// Limited clients to let go.
    pub release: Vec<A>,
}

impl<A> Default for SourceLimits<A> {
    fn default() -> Self {
        Self {
            limit: Vec::new(),
            release: Vec::new(),
        }
    }
}

/// What a census changes in the set of limited clients: those holding more than `limit`
/// flows are limited (with their count); limited ones are let go once they hold at most
/// nine tenths of it (so that a client at the edge does not flap). `limit` 0: no limit.
#[must_use]
pub fn source_limits<A: Copy + Ord + std::hash::Hash>(
    flows_by_source: &std::collections::HashMap<A, u32>,
    limited: &[(A, u32)],
    limit: u32,
) -> SourceLimits<A> {
    let held = |source: &A| flows_by_source.get(source).copied().unwrap_or(0);
    let mut limit_now: Vec<(A, u32)> = if limit == 0 {
        Vec::new()
    } else {
        flows_by_source
            .iter()
            .filter(|(source, flows)| **flows > limit && !limited.iter().any(|(l, _)| l == *source))
            .map(|(source, flows)| (*source, *flows))
            .collect()
    };
    limit_now.sort_unstable();
    let release = limited
        .iter()
        .filter(|(source, _)| limit == 0 || u64::from(held(source)) * 10 <= u64::from(limit) * 9)
        .map(|(source, _)| *source)
        .collect();
    SourceLimits {
        limit: limit_now,
        release,
    }
}

/// GC interval for a table `fill` full (0..=1): the maximum when empty, down to one second
/// as it fills, so expired flows give their ports and slots back before the LRU has to
/// evict live ones.
#[must_use]
pub fn gc_interval(fill: f64, max: Duration) -> Duration {
    let free = (1.0 - fill.clamp(0.0, 1.0)).powi(2);
    max.mul_f64(free).max(Duration::from_secs(1)).min(max)
}

#[cfg(test)]
mod tests {
    use egress_common::{flow_expired, proto};

    use super::*;

    fn entry(kind: u8, tcp_flags: u8, last_seen_s: u64) -> FlowEntry {
        FlowEntry {
            kind,
            tcp_flags,
            last_seen_ns: last_seen_s * 1_000_000_000,
            ..<FlowEntry>::default()
        }
    }

    #[test]
    fn a_flow_has_one_timeout_from_both_directions() {
        use egress_common::tcp_seen::{ACK, RST, SYN};
        let s = 1_000_000_000;
        let forward = entry(flow_kind::FORWARD, SYN | ACK | RST, 100);
        let reply = entry(flow_kind::REPLY, SYN | ACK, 100);
        // The client's RST ends the flow after 10 s for both halves.
        assert!(flow_expired(proto::TCP, &reply, Some(&forward), 111 * s));
        assert!(flow_expired(proto::TCP, &forward, Some(&reply), 111 * s));
        assert!(!flow_expired(proto::TCP, &reply, Some(&forward), 105 * s));
        // Alone, the reply half would have lived 6 h; but half a flow that no packet healed
        // for 10 s goes.
        assert!(!flow_expired(proto::TCP, &reply, None, 111 * s));
        assert!(gc_collectable(proto::TCP, &reply, None, 111 * s));
        assert!(!gc_collectable(proto::TCP, &reply, None, 105 * s));
        assert!(!gc_collectable(proto::TCP, &reply, Some(&forward), 105 * s));
        // The later of the two last packets counts.
        let recent = entry(flow_kind::REPLY, ACK, 3600);
        let old = entry(flow_kind::FORWARD, SYN | ACK, 100);
        assert!(!flow_expired(
            proto::TCP,
            &old,
            Some(&recent),
            3600 * s + 10 * s
        ));
    }

    #[test]
    fn closed_tcp_flows_do_not_count_against_their_client() {
        use egress_common::tcp_seen::{ACK, FIN, RST, SYN};
        let open = entry(flow_kind::FORWARD, SYN | ACK, 1);
        let fin = entry(flow_kind::FORWARD, SYN | ACK | FIN, 1);
        let reply_fin = entry(flow_kind::REPLY, SYN | ACK | FIN, 1);
        let reply_rst = entry(flow_kind::REPLY, SYN | ACK | RST, 1);
        let reply = entry(flow_kind::REPLY, SYN | ACK, 1);
        assert!(counts_against_client(proto::TCP, &open, Some(&reply)));
        assert!(
            counts_against_client(proto::TCP, &fin, Some(&reply)),
            "half closed still counts"
        );
        assert!(!counts_against_client(proto::TCP, &fin, Some(&reply_fin)));
        assert!(!counts_against_client(proto::TCP, &open, Some(&reply_rst)));
        assert!(
            counts_against_client(proto::UDP, &fin, Some(&reply_fin)),
            "only TCP closes"
        );
    }

    #[test]
    fn sources_over_the_limit_are_limited_until_well_under_it() {
        let a = [192, 0, 2, 2];
        let b = [192, 0, 2, 3];
        let counts = |pairs: &[([u8; 4], u32)]| pairs.iter().copied().collect();
        let change =
            |limit: Vec<([u8; 4], u32)>, release: Vec<[u8; 4]>| SourceLimits { limit, release };
        assert_eq!(
            source_limits(&counts(&[(a, 101), (b, 100)]), &[], 100),
            change(vec![(a, 101)], vec![])
        );
        // Still over, or at the limit: stays limited (nothing new to do).
        assert_eq!(
            source_limits(&counts(&[(a, 95)]), &[(a, 101)], 100),
            SourceLimits::default()
        );
        // At nine tenths: let go.
        assert_eq!(
            source_limits(&counts(&[(a, 90)]), &[(a, 101)], 100),
            change(vec![], vec![a])
        );
        // Gone from the table altogether, or no limit any more: let go.
        assert_eq!(
            source_limits(&counts(&[]), &[(a, 101)], 100).release,
            vec![a]
        );
        assert_eq!(
            source_limits(&counts(&[(a, 500)]), &[(a, 101)], 0),
            change(vec![], vec![a])
        );
    }

    #[test]
    fn gc_runs_more_often_as_the_table_fills() {
        let max = Duration::from_secs(30);
        assert_eq!(gc_interval(0.0, max), max);
        assert!(gc_interval(0.5, max) < gc_interval(0.1, max));
        assert_eq!(gc_interval(0.95, max), Duration::from_secs(1));
        assert_eq!(
            gc_interval(1.0, Duration::from_millis(500)),
            Duration::from_millis(500)
        );
    }
}
