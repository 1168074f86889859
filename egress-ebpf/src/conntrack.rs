//! Connection tracking: one LRU hash holds both directions of every flow.
//!
//! A flow is two entries: the forward entry (the client's tuple -> the translated tuple) and
//! the reply entry (the remote's tuple -> the client-facing tuple). Connections the pod opens
//! itself have only a reply-side `LOCAL` entry. [`lookup`] says what a packet's tuple is to
//! the table ([`Ct`]), as cilium's `ct_lookup4` does, so the entry programs only decide what
//! to do with that state. Entries are refreshed at most once per [`TOUCH_INTERVAL_NS`], and a
//! refresh also looks up the peer entry, which keeps both alive in the LRU together and
//! re-creates the peer if it was evicted.

use aya_ebpf::{
    bindings::BPF_NOEXIST, btf_maps::LruHashMap, helpers::generated::bpf_ktime_get_coarse_ns,
    macros::btf_map,
};
use egress_common::{
    DEFAULT_CONNTRACK_FLOWS, DropReason, FlowEntry, FlowKey, MIN_TIMEOUT_NS, TOUCH_INTERVAL_NS,
    flow_expired, flow_kind, peer_key, proto, tcp_seen,
};

use crate::tcp::{self, Receiver, Seg};

/// Both directions of every flow; user space sizes it with `--conntrack-size`.
#[btf_map]
static CONNTRACK: LruHashMap<FlowKey, FlowEntry, { 2 * DEFAULT_CONNTRACK_FLOWS as usize }> =
    LruHashMap::new();

const EEXIST: i32 = 17;

/// CLOCK_MONOTONIC_COARSE: cheaper than the precise clock and plenty for timeouts.
#[inline(always)]
pub(crate) fn now() -> u64 {
    // SAFETY: no arguments, no side effects.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// What the table knows of a packet's tuple.
pub(crate) enum Ct {
    /// No entry: a new flow from a client, or a packet nobody asked for.
    New,
    /// Client -> remote of a translated flow (refreshed): rewrite with this entry.
    Forward(FlowEntry),
    /// Remote -> client of a translated flow (refreshed): rewrite with this entry.
    Reply(FlowEntry),
    /// A reply to a connection the pod opened itself (refreshed).
    Local,
    /// A reply-side entry that outlived its timeout. (A client's packet revives its flow,
    /// so forward entries are never reported expired.)
    Expired,
    /// The entry's other half now belongs to another flow, after an LRU eviction.
    Stale,
    /// A client's new SYN over a flow that ended (reset, closed both ways, or timed out):
    /// the tuple is being reused, and the new connection starts with fresh state.
    Closed(FlowEntry),
}

/// Looks a packet's tuple up and, for a live flow, records the packet on it: the TCP segment
/// (sequence numbers, and the flags that take effect) and, at most once per interval, the
/// time.
#[inline(always)]
pub(crate) fn lookup(key: &FlowKey, seg: &Seg) -> Ct {
    let Some(entry) = CONNTRACK.get_ptr_mut(key) else {
        return Ct::New;
    };
    let now = now();
    // SAFETY: a live map value, copied.
    let snapshot = unsafe { *entry };
    let idle = now.wrapping_sub(snapshot.last_seen_ns) > MIN_TIMEOUT_NS;
    match snapshot.kind {
        flow_kind::FORWARD => {
            if seg.flags & (tcp_seen::SYN | tcp_seen::ACK) == tcp_seen::SYN
                && ended(key, &snapshot, now)
            {
                return Ct::Closed(snapshot);
            }
        }
        flow_kind::REPLY => {
            // Alive whatever its flags while idle for less than the shortest timeout; past
            // that, judged with the other direction (one timeout per flow).
            if idle && flow_expired(key.proto, &snapshot, peer(key, &snapshot).as_ref(), now) {
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
                peer(key, &snapshot).map_or_else(Receiver::default, |p| Receiver::of(&p))
            }
        })
    } else {
        seg.flags
    };
    if !touch(key, entry, flags, now) {
        return Ct::Stale;
    }
    match snapshot.kind {
        flow_kind::FORWARD => Ct::Forward(snapshot),
        flow_kind::REPLY => Ct::Reply(snapshot),
        _ => Ct::Local,
    }
}

/// The other direction's entry of a translated flow, if it is there and still this flow's.
#[inline(always)]
fn peer(key: &FlowKey, entry: &FlowEntry) -> Option<FlowEntry> {
    // SAFETY: a live map value, copied.
    let peer = unsafe { *CONNTRACK.get_ptr(peer_key(key, entry))? };
    peer.returns_to(key).then_some(peer)
}

/// Whether the flow of a forward entry has ended: a RST took effect either way, both sides
/// sent their FIN, or it timed out.
#[inline(always)]
fn ended(key: &FlowKey, entry: &FlowEntry, now: u64) -> bool {
    let peer = peer(key, entry);
    let peer_flags = peer.map_or(0, |p| p.tcp_flags);
    (entry.tcp_flags | peer_flags) & tcp_seen::RST != 0
        || entry.tcp_flags & peer_flags & tcp_seen::FIN != 0
        || flow_expired(key.proto, entry, peer.as_ref(), now)
}

/// Removes both entries of a flow that ended, so that a new connection over the same tuple
/// starts afresh.
#[inline(always)]
pub(crate) fn reopen(key: &FlowKey, entry: &FlowEntry) {
    let pkey = peer_key(key, entry);
    if peer(key, entry).is_some() {
        let _ = CONNTRACK.remove(pkey);
    }
    let _ = CONNTRACK.remove(key);
}

/// The entry of an ICMP error's direction (cilium's "related"): read, not refreshed.
#[inline(always)]
pub(crate) fn related(key: &FlowKey) -> Option<FlowEntry> {
    // SAFETY: a live map value, copied.
    CONNTRACK.get_ptr(key).map(|entry| unsafe { *entry })
}

/// Records a packet on an entry: TCP flags seen in this direction and, at most once per
/// interval, the time, on both entries of a translated flow. Re-creates an evicted peer.
/// `false` when the peer entry now belongs to another flow (the entry must be recreated).
#[inline(always)]
fn touch(key: &FlowKey, entry: *mut FlowEntry, tcp_flags: u8, now: u64) -> bool {
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
    let pkey = peer_key(key, e);
    match CONNTRACK.get_ptr_mut(pkey) {
        Some(peer) => {
            // SAFETY: as above.
            let peer = unsafe { &mut *peer };
            if !peer.returns_to(key) {
                return false;
            }
            peer.last_seen_ns = now;
        }
        None => {
            let mut value = FlowEntry::new(&key.reversed(), e.rule_id, peer_kind(e.kind), 0, now);
            value.created_ns = e.created_ns;
            // A concurrent re-creation on another CPU is just as good.
            let _ = CONNTRACK.insert(pkey, value, u64::from(BPF_NOEXIST));
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

/// Removes a forward entry whose reply tuple was taken over by another flow.
#[inline(always)]
pub(crate) fn forget(key: &FlowKey) {
    let _ = CONNTRACK.remove(key);
}

/// Result of claiming a reply tuple.
pub(crate) enum Claim {
    /// The tuple is now ours.
    Claimed,
    /// The tuple already belongs to this very flow (its forward entry was evicted).
    Ours,
    /// Another flow holds the tuple.
    Taken,
}

/// Atomically claims `reply_key` for a new flow (BPF_NOEXIST is the claim).
#[inline(always)]
pub(crate) fn claim(
    reply_key: &FlowKey,
    reply: &FlowEntry,
    forward_key: &FlowKey,
) -> Result<Claim, DropReason> {
    match CONNTRACK.insert(reply_key, reply, u64::from(BPF_NOEXIST)) {
        Ok(()) => Ok(Claim::Claimed),
        Err(err) if err == -EEXIST => match CONNTRACK.get_ptr(reply_key) {
            // SAFETY: a live map value, read only.
            Some(existing) if unsafe { &*existing }.returns_to(forward_key) => Ok(Claim::Ours),
            _ => Ok(Claim::Taken),
        },
        Err(_) => Err(DropReason::ConntrackFull),
    }
}

/// Writes the forward entry of a flow whose reply tuple was just claimed and returns the
/// entry in the table, and whether it is ours. If another CPU created the same flow
/// meanwhile, our claim is rolled back and its entry is used: with the same translation,
/// since both chose the port the same way.
#[inline(always)]
pub(crate) fn commit(
    key: &FlowKey,
    forward: &FlowEntry,
    reply_key: &FlowKey,
    claimed: bool,
) -> Result<(FlowEntry, bool), DropReason> {
    let created = match CONNTRACK.insert(key, forward, u64::from(BPF_NOEXIST)) {
        Ok(()) => true,
        Err(err) if err == -EEXIST => false,
        Err(_) => {
            if claimed {
                let _ = CONNTRACK.remove(reply_key);
            }
            return Err(DropReason::ConntrackFull);
        }
    };
    // SAFETY: a live map value, copied.
    let entry = CONNTRACK
        .get_ptr(key)
        .map(|entry| unsafe { *entry })
        .ok_or(DropReason::ConntrackFull)?;
    // The winner of a race uses the reply tuple we claimed when it chose the same port
    // (the usual case): then it is its reply entry too and stays. Otherwise our claim
    // goes.
    if !created && claimed && !entry.returns_to(reply_key) {
        let _ = CONNTRACK.remove(reply_key);
    }
    Ok((entry, created))
}

/// Tracks a connection the pod itself opened through the egress interface, keyed by the
/// tuple its replies will carry. The pod's own segments are trusted: its FIN and RST take
/// effect, and its acknowledgements are what a RST from the remote must match.
#[inline(always)]
pub(crate) fn track_local(reply_key: &FlowKey, seg: &Seg) {
    let now = now();
    if let Some(entry) = CONNTRACK.get_ptr_mut(reply_key) {
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
        record_ack(e, seg);
        return;
    }
    let mut value = FlowEntry::new(&reply_key.reversed(), 0, flow_kind::LOCAL, 0, now);
    record_ack(&mut value, seg);
    let _ = CONNTRACK.insert(reply_key, value, u64::from(BPF_NOEXIST));
}

/// Records the pod's acknowledgement in the entry of its own connection.
#[inline(always)]
fn record_ack(e: &mut FlowEntry, seg: &Seg) {
    if seg.numbers
        && seg.flags & tcp_seen::ACK != 0
        && (e.tcp_flags & tcp_seen::ACK_KNOWN == 0 || (seg.ack.wrapping_sub(e.ack_max) as i32) > 0)
    {
        e.ack_max = seg.ack;
        e.tcp_flags |= tcp_seen::ACK_KNOWN;
    }
}
