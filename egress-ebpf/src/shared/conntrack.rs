//! Connection tracking: two LRU hashes hold both directions of every flow.
//!
//! A flow lives in the unreplied table until the remote answers, then both its entries move
//! to the answered one ([`crate::shared::ctmaps`]; cilium and the kernel call the answered
//! state "replied"/"assured"). A flood of flows nobody answers (a client spraying a
//! fallback port, a scan) therefore only churns the unreplied table: it can never evict an
//! answered connection, however idle, which is what the kernel's conntrack does by
//! dropping unassured entries first.
//!
//! A flow is two entries: the forward entry (the client's tuple -> the translated tuple) and
//! the reply entry (the remote's tuple -> the client-facing tuple). Connections the pod opens
//! itself have only a reply-side `LOCAL` entry. [`lookup`] says what a packet's tuple is to
//! the table ([`Ct`]), as cilium's `ct_lookup4` does, so the entry programs only decide what
//! to do with that state. Entries are refreshed at most once per [`TOUCH_INTERVAL_NS`], and a
//! refresh also looks up the peer entry, which keeps both alive in the LRU together and
//! re-creates the peer if it was evicted.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::generated::bpf_ktime_get_coarse_ns};
use egress_common::{
    DropReason, FlowEntry, FlowKey, MIN_TIMEOUT_NS, Stat, TOUCH_INTERVAL_NS, flow::Addr,
    flow_expired, flow_kind, peer_key, proto, tcp_ended, tcp_seen,
};

pub(crate) use crate::shared::ctmaps::{EEXIST, Family, Table};
use crate::shared::{
    metrics,
    tcp::{self, Receiver, Seg},
};

/// Whether a client may open another flow: not when the agent found it over its limit.
#[inline(always)]
pub(crate) fn admit<A: Family>(client: A) -> Result<(), DropReason> {
    match A::limited().get_ptr(client) {
        Some(_) => Err(DropReason::SourceLimit),
        None => Ok(()),
    }
}

/// CLOCK_MONOTONIC_COARSE: cheaper than the precise clock and plenty for timeouts.
#[inline(always)]
pub(crate) fn now() -> u64 {
    // SAFETY: no arguments, no side effects.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// What the table knows of a packet's tuple.
pub(crate) enum Ct<A: Addr = [u8; 4]> {
    /// No entry: a new flow from a client, or a packet nobody asked for.
    New,
    /// Client -> remote of a translated flow (refreshed): rewrite with this entry.
    Forward(FlowEntry<A>),
    /// Remote -> client of a translated flow (refreshed): rewrite with this entry.
    Reply(FlowEntry<A>),
    /// A reply to a connection the pod opened itself (refreshed).
    Local,
    /// A reply-side entry that outlived its timeout. (A client's packet revives its flow,
    /// so forward entries are never reported expired.)
    Expired,
    /// The entry's other half now belongs to another flow, after an LRU eviction.
    Stale(Table),
    /// A client's new SYN over a flow that ended (reset, closed both ways, or timed out):
    /// the tuple is being reused, and the new connection starts with fresh state.
    Closed(FlowEntry<A>, Table),
}

/// Looks a packet's tuple up and, for a live flow, records the packet on it: the TCP segment
/// (sequence numbers, and the flags that take effect) and, at most once per interval, the
/// time.
#[inline(always)]
pub(crate) fn lookup<A: Family>(key: &FlowKey<A>, seg: &Seg) -> Ct<A> {
    let (entry, table) = match A::answered().get_ptr_mut(key) {
        Some(entry) => (entry, Table::Replied),
        None => match A::unanswered().get_ptr_mut(key) {
            Some(entry) => (entry, Table::Unreplied),
            None => return Ct::New,
        },
    };
    let now = now();
    // SAFETY: a live map value, copied.
    let snapshot = unsafe { *entry };
    // The other direction's key, once for every use below (each a 40-byte key in IPv6).
    let pkey = peer_key(key, &snapshot);
    let idle = now.wrapping_sub(snapshot.last_seen_ns) > MIN_TIMEOUT_NS;
    match snapshot.kind {
        flow_kind::FORWARD => {
            if seg.flags & (tcp_seen::SYN | tcp_seen::ACK) == tcp_seen::SYN
                && ended(key, &pkey, &snapshot, now, table)
            {
                return Ct::Closed(snapshot, table);
            }
        }
        flow_kind::REPLY => {
            // Alive whatever its flags while idle for less than the shortest timeout; past
            // that, judged with the other direction (one timeout per flow).
            if idle && flow_expired(key.proto, &snapshot, peer_at(&pkey, key, table), now) {
                return Ct::Expired;
            }
        }
        _ => {
            if idle && flow_expired(key.proto, &snapshot, None, now) {
                return Ct::Expired;
            }
        }
    }
    let flags = if key.proto == proto::TCP {
        let local = snapshot.kind == flow_kind::LOCAL;
        // SAFETY: a live map value; concurrent writers store sequence numbers, flag bits
        // and timestamps, and a lost update only delays one.
        tcp::track(unsafe { &mut *entry }, seg, !local, || {
            if local {
                // The pod's own connection: its acknowledgements are in the same entry.
                Receiver {
                    known: snapshot.tcp_flags & tcp_seen::ACK_KNOWN,
                    ..Receiver::of(&snapshot)
                }
            } else {
                peer_at(&pkey, key, table).map_or_else(Receiver::default, Receiver::of)
            }
        })
    } else {
        seg.flags
    };
    if !touch(key, &pkey, entry, flags, now, table) {
        return Ct::Stale(table);
    }
    match snapshot.kind {
        flow_kind::FORWARD => Ct::Forward(snapshot),
        flow_kind::REPLY => {
            // The first answer (a RST refusing the connection is none): the flow moves to
            // the table of answered flows.
            if table == Table::Unreplied && flags & tcp_seen::RST == 0 {
                promote(key, &pkey, entry);
            }
            Ct::Reply(snapshot)
        }
        _ => Ct::Local,
    }
}

/// Moves a flow from the unreplied table to the answered one, given its reply entry. The answered
/// table gets both entries first, so that a concurrent lookup finds the flow in one table
/// or the other (a client packet that misses both in between re-creates the same
/// translation, see `nat::create_flow`).
#[inline(always)]
fn promote<A: Family>(reply_key: &FlowKey<A>, forward_key: &FlowKey<A>, reply: *mut FlowEntry<A>) {
    // SAFETY: a live map value, after this packet's update; the insert copies it.
    let reply = unsafe { &*reply };
    let Some(forward) = Table::Unreplied.get_ptr_mut(forward_key) else {
        return;
    };
    // SAFETY: as above.
    let forward = unsafe { &*forward };
    if !forward.returns_to(reply_key) {
        return;
    }
    // Written straight from the unreplied table's values (the helper copies them), not
    // through copies on the stack, which IPv6's 64-byte entries cannot spare.
    let _ = Table::Replied.insert(forward_key, forward, u64::from(BPF_NOEXIST));
    let _ = Table::Replied.insert(reply_key, reply, u64::from(BPF_NOEXIST));
    Table::Unreplied.remove(forward_key);
    Table::Unreplied.remove(reply_key);
    metrics::count(Stat::FlowsReplied, 0);
}

/// The other direction's entry of a translated flow, if it is there and still this flow's.
#[inline(always)]
fn peer<A: Family>(key: &FlowKey<A>, entry: &FlowEntry<A>, table: Table) -> Option<FlowEntry<A>> {
    let peer = table.get(&peer_key(key, entry))?;
    peer.returns_to(key).then_some(peer)
}

/// [`peer`] read in place instead of copied (for paths short of stack: the port search,
/// the GC sweep's callback).
#[inline(always)]
pub(crate) fn peer_in_place<'a, A: Family>(
    key: &FlowKey<A>,
    entry: &FlowEntry<A>,
    table: Table,
) -> Option<&'a FlowEntry<A>> {
    peer_at(&peer_key(key, entry), key, table)
}

/// The entry under `pkey`, the peer key of `key`'s entry, read in place if it is still
/// that flow's.
#[inline(always)]
pub(crate) fn peer_at<'a, A: Family>(
    pkey: &FlowKey<A>,
    key: &FlowKey<A>,
    table: Table,
) -> Option<&'a FlowEntry<A>> {
    // SAFETY: a live map value, read only.
    let peer = unsafe { &*table.get_ptr_mut(pkey)? };
    peer.returns_to(key).then_some(peer)
}

/// Whether the flow of a forward entry has ended: a RST took effect either way, both sides
/// sent their FIN, or it timed out.
#[inline(always)]
fn ended<A: Family>(
    key: &FlowKey<A>,
    pkey: &FlowKey<A>,
    entry: &FlowEntry<A>,
    now: u64,
    table: Table,
) -> bool {
    let peer = peer_at(pkey, key, table);
    tcp_ended(entry, peer) || flow_expired(key.proto, entry, peer, now)
}

/// Removes both entries of a flow that ended, so that a new connection over the same tuple
/// starts afresh.
#[inline(always)]
fn reopen<A: Family>(key: &FlowKey<A>, entry: &FlowEntry<A>, table: Table) {
    if peer(key, entry, table).is_some() {
        table.remove(&peer_key(key, entry));
    }
    table.remove(key);
}

/// The entry of an ICMP error's direction (cilium's "related"): read, not refreshed.
#[inline(always)]
pub(crate) fn related<A: Family>(key: &FlowKey<A>) -> Option<FlowEntry<A>> {
    Table::Replied
        .get(key)
        .or_else(|| Table::Unreplied.get(key))
}

/// Records a packet on an entry: TCP flags seen in this direction and, at most once per
/// interval, the time, on both entries of a translated flow. Re-creates an evicted peer.
/// `false` when the peer entry now belongs to another flow (the entry must be recreated).
#[inline(always)]
fn touch<A: Family>(
    key: &FlowKey<A>,
    pkey: &FlowKey<A>,
    entry: *mut FlowEntry<A>,
    tcp_flags: u8,
    now: u64,
    table: Table,
) -> bool {
    // SAFETY: a live map value; concurrent writers only store timestamps and flag bits.
    let e = unsafe { &mut *entry };
    let flags = e.tcp_flags | tcp_flags;
    if flags == e.tcp_flags && now.wrapping_sub(e.last_seen_ns) < TOUCH_INTERVAL_NS {
        return true;
    }
    e.tcp_flags = flags;
    e.last_seen_ns = now;
    if e.kind == flow_kind::LOCAL {
        return true;
    }
    match table.get_ptr_mut(pkey) {
        Some(peer) => {
            // SAFETY: as above.
            let peer = unsafe { &mut *peer };
            if !peer.returns_to(key) {
                return false;
            }
            peer.last_seen_ns = now;
        }
        None => {
            let mut value = FlowEntry::back_to(key, e.rule_id, peer_kind(e.kind), 0, now);
            value.created_ns = e.created_ns;
            // A concurrent re-creation on another CPU is just as good.
            let _ = table.insert(pkey, &value, u64::from(BPF_NOEXIST));
        }
    }
    true
}

/// The kind of the other direction of a translated flow.
#[inline(always)]
fn peer_kind(kind: u8) -> u8 {
    if kind == flow_kind::FORWARD {
        flow_kind::REPLY
    } else {
        flow_kind::FORWARD
    }
}

/// Clears what stands in the way of a new flow over `key`: a forward entry whose reply
/// tuple went to another flow after an eviction (`Stale`), or both entries of a flow that
/// ended (`Closed`: a new connection over its tuple starts afresh).
#[inline(always)]
pub(crate) fn start_over<A: Family>(key: &FlowKey<A>, state: &Ct<A>) {
    match state {
        Ct::Stale(table) => forget(key, *table),
        Ct::Closed(old, table) => {
            reopen(key, old, *table);
            metrics::count(Stat::FlowsReopened, 0);
        }
        _ => {}
    }
}

/// Removes a forward entry whose reply tuple was taken over by another flow.
#[inline(always)]
fn forget<A: Family>(key: &FlowKey<A>, table: Table) {
    table.remove(key);
}

/// Tracks a connection the pod itself opened through the egress interface, keyed by the
/// tuple its replies will carry. The pod's own segments are trusted: its FIN and RST take
/// effect, and its acknowledgements are what a RST from the remote must match.
#[inline(always)]
pub(crate) fn track_local<A: Family>(reply_key: &FlowKey<A>, seg: &Seg) {
    let now = now();
    if let Some(entry) = A::answered().get_ptr_mut(reply_key) {
        // SAFETY: a live map value.
        let e = unsafe { &mut *entry };
        if e.kind != flow_kind::LOCAL {
            return;
        }
        if now.wrapping_sub(e.last_seen_ns) >= TOUCH_INTERVAL_NS {
            e.last_seen_ns = now;
        }
        if seg.flags & (tcp_seen::FIN | tcp_seen::RST) != 0 {
            e.tcp_flags |= seg.flags & (tcp_seen::FIN | tcp_seen::RST);
        }
        tcp::record_ack(e, seg);
        return;
    }
    let mut value = FlowEntry::back_to(reply_key, 0, flow_kind::LOCAL, 0, now);
    tcp::record_ack(&mut value, seg);
    let _ = A::answered().insert(reply_key, value, u64::from(BPF_NOEXIST));
}
