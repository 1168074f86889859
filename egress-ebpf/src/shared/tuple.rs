//! A new flow's translated tuple: claiming the reply tuple atomically (the port search's
//! step), taking it over from a flow that is over, and writing the forward entry beside
//! it. The tables themselves: [`crate::shared::conntrack`].

use aya_ebpf::bindings::BPF_NOEXIST;
use egress_common::{DropReason, FlowEntry, FlowKey, Stat, peer_key, tuple_reusable};

use crate::shared::{
    conntrack::{self, EEXIST, Family, Table},
    metrics,
};

/// Result of claiming a reply tuple.
pub(crate) enum Claim {
    /// The tuple is now ours, in the unreplied table ([`Table::Unreplied`]).
    Claimed,
    /// The tuple already belongs to this very flow (its forward entry was evicted), in
    /// this table.
    Ours(Table),
    /// Another flow holds the tuple.
    Taken,
}

/// Atomically claims `reply_key` for a new flow: a BPF_NOEXIST insert into the unreplied
/// table is the claim, then the answered table must not hold the tuple either (checked
/// after, so that a flow promoted meanwhile is seen). With `RECLAIM`, a flow that is over
/// gives its tuple up ([`reclaim`]).
#[inline(always)]
pub(crate) fn claim<const RECLAIM: bool, A: Family>(
    reply_key: &FlowKey<A>,
    reply: &FlowEntry<A>,
    forward_key: &FlowKey<A>,
    now: u64,
) -> Result<Claim, DropReason> {
    let mut inserted = Table::Unreplied.insert(reply_key, reply, u64::from(BPF_NOEXIST));
    if inserted == Err(EEXIST) {
        let Some(existing) = Table::Unreplied.get_ptr_mut(reply_key) else {
            return Ok(Claim::Taken);
        };
        // SAFETY: a live map value, read only.
        let existing = unsafe { &*existing };
        if existing.returns_to(forward_key) {
            return Ok(Claim::Ours(Table::Unreplied));
        }
        if !RECLAIM || !reclaim(reply_key, existing, now, Table::Unreplied) {
            return Ok(Claim::Taken);
        }
        inserted = Table::Unreplied.insert(reply_key, reply, u64::from(BPF_NOEXIST));
        if inserted == Err(EEXIST) {
            return Ok(Claim::Taken);
        }
    }
    if inserted.is_err() {
        return Err(DropReason::ConntrackFull);
    }
    let Some(existing) = Table::Replied.get_ptr_mut(reply_key) else {
        return Ok(Claim::Claimed);
    };
    // SAFETY: a live map value, read only.
    let existing = unsafe { &*existing };
    if existing.returns_to(forward_key) {
        Table::Unreplied.remove(reply_key);
        return Ok(Claim::Ours(Table::Replied));
    }
    if RECLAIM && reclaim(reply_key, existing, now, Table::Replied) {
        return Ok(Claim::Claimed);
    }
    Table::Unreplied.remove(reply_key);
    Ok(Claim::Taken)
}

/// Writes the forward entry of a flow whose reply tuple was just claimed (into `table`,
/// where the reply entry is) and returns the entry to translate with (`forward`, or the
/// one in the table), and whether it is ours.
/// If another CPU created the same flow meanwhile, its entry is used: with the same
/// translation, since both chose the port the same way.
#[inline(always)]
pub(crate) fn commit<A: Family>(
    key: &FlowKey<A>,
    forward: &'static FlowEntry<A>,
    reply_key: &FlowKey<A>,
    claimed: bool,
    table: Table,
) -> Result<(&'static FlowEntry<A>, bool), DropReason> {
    let created = match table.insert(key, forward, u64::from(BPF_NOEXIST)) {
        Ok(()) => true,
        Err(EEXIST) => false,
        Err(_) => {
            if claimed {
                table.remove(reply_key);
            }
            return Err(DropReason::ConntrackFull);
        }
    };
    if created {
        // What was just written (a packet on another CPU may already have refreshed it,
        // which changes nothing this packet's rewrite needs).
        return Ok((forward, true));
    }
    // SAFETY: a live map value, read only (a map value stays valid for the rest of the
    // program even if its entry is deleted meanwhile).
    let entry = unsafe { &*table.get_ptr_mut(key).ok_or(DropReason::ConntrackFull)? };
    // The winner of a race uses the reply tuple we claimed when it chose the same port
    // (the usual case): then it is its reply entry too and stays. Otherwise our claim
    // goes.
    if claimed && !entry.returns_to(reply_key) {
        table.remove(reply_key);
    }
    Ok((entry, false))
}

/// Takes a translated tuple over from the flow holding it in `table` (`holder`, its reply
/// entry) when that flow is over ([`tuple_reusable`]): both its entries go.
#[inline(always)]
fn reclaim<A: Family>(
    reply_key: &FlowKey<A>,
    holder: &FlowEntry<A>,
    now: u64,
    table: Table,
) -> bool {
    let pkey = peer_key(reply_key, holder);
    let peer = conntrack::peer_at(&pkey, reply_key, table);
    if !tuple_reusable(reply_key.proto, holder, peer, now) {
        return false;
    }
    if peer.is_some() {
        table.remove(&pkey);
    }
    table.remove(reply_key);
    metrics::count(Stat::NatPortsReclaimed, 0);
    true
}
