//! Connection tracking: one LRU hash holds both directions of every flow.
//!
//! A flow is two entries: the forward entry (the client's tuple -> the translated tuple) and
//! the reply entry (the remote's tuple -> the client-facing tuple). Connections the pod opens
//! itself have only a reply-side `LOCAL` entry. Entries are refreshed at most once per
//! [`TOUCH_INTERVAL_NS`], and a refresh also looks up the peer entry, which keeps both alive
//! in the LRU together and re-creates the peer if it was evicted.

use aya_ebpf::{
    bindings::BPF_NOEXIST, btf_maps::LruHashMap, helpers::generated::bpf_ktime_get_coarse_ns,
    macros::btf_map,
};
use egress_common::{
    DEFAULT_CONNTRACK_FLOWS, DropReason, FRAGMENTS_MAX, FlowEntry, FlowKey, FragKey, FragPorts,
    TOUCH_INTERVAL_NS, flow_kind, flow_timeout_ns, tcp_seen,
};

/// Both directions of every flow; user space sizes it with `--conntrack-size`.
#[btf_map]
static CONNTRACK: LruHashMap<FlowKey, FlowEntry, { 2 * DEFAULT_CONNTRACK_FLOWS as usize }> =
    LruHashMap::new();

/// L4 ports of datagrams in flight as fragments, keyed by the datagram as it arrived.
#[btf_map]
static FRAGMENTS: LruHashMap<FragKey, FragPorts, { FRAGMENTS_MAX as usize }> = LruHashMap::new();

const EEXIST: i32 = 17;

/// CLOCK_MONOTONIC_COARSE: cheaper than the precise clock and plenty for timeouts.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: no arguments, no side effects.
    unsafe { bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
pub fn lookup(key: &FlowKey) -> Option<*mut FlowEntry> {
    CONNTRACK.get_ptr_mut(key)
}

pub use egress_common::peer_key;

/// The entry for the other direction of a translated flow, as it was created.
#[inline(always)]
pub fn peer_entry(key: &FlowKey, entry: &FlowEntry, now: u64) -> FlowEntry {
    FlowEntry {
        saddr: key.daddr,
        daddr: key.saddr,
        sport: key.dport,
        dport: key.sport,
        rule_id: entry.rule_id,
        kind: if entry.kind == flow_kind::FORWARD {
            flow_kind::REPLY
        } else {
            flow_kind::FORWARD
        },
        tcp_flags: 0,
        last_seen_ns: now,
        created_ns: entry.created_ns,
    }
}

/// Whether `peer` (found under `peer_key(key, entry)`) translates back to `key`: the same
/// flow, not another one that claimed the tuple after an eviction.
#[inline(always)]
fn is_peer(key: &FlowKey, peer: &FlowEntry) -> bool {
    peer.saddr == key.daddr
        && peer.daddr == key.saddr
        && peer.sport == key.dport
        && peer.dport == key.sport
}

/// Outcome of [`touch`].
#[derive(PartialEq, Eq)]
pub enum Touch {
    /// The flow is intact.
    Ok,
    /// The peer entry now belongs to another flow: this entry must be recreated.
    Stale,
}

/// Records a packet on a translated flow's entry: TCP flags seen in this direction and, at
/// most once per interval, the time, on both entries. Re-creates an evicted peer.
#[inline(always)]
pub fn touch(key: &FlowKey, entry: *mut FlowEntry, tcp_flags: u8, now: u64) -> Touch {
    // SAFETY: a live map value; concurrent writers only store timestamps and flag bits.
    let e = unsafe { &mut *entry };
    let flags = e.tcp_flags | tcp_flags;
    if flags == e.tcp_flags && now.wrapping_sub(e.last_seen_ns) < TOUCH_INTERVAL_NS {
        return Touch::Ok;
    }
    e.tcp_flags = flags;
    e.last_seen_ns = now;
    if e.kind == flow_kind::LOCAL {
        return Touch::Ok;
    }
    let pkey = peer_key(key, e);
    match CONNTRACK.get_ptr_mut(pkey) {
        Some(peer) => {
            // SAFETY: as above.
            let peer = unsafe { &mut *peer };
            if !is_peer(key, peer) {
                return Touch::Stale;
            }
            peer.last_seen_ns = now;
        }
        None => {
            let value = peer_entry(key, e, now);
            // A concurrent re-creation on another CPU is just as good.
            let _ = CONNTRACK.insert(pkey, value, u64::from(BPF_NOEXIST));
        }
    }
    Touch::Ok
}

/// Whether the entry has outlived its timeout.
#[inline(always)]
pub fn expired(key: &FlowKey, entry: &FlowEntry, now: u64) -> bool {
    now.wrapping_sub(entry.last_seen_ns) > flow_timeout_ns(key.proto, entry.tcp_flags)
}

/// Removes a forward entry whose reply tuple was taken over by another flow.
#[inline(always)]
pub fn forget(key: &FlowKey) {
    let _ = CONNTRACK.remove(key);
}

/// Result of claiming a reply tuple.
pub enum Claim {
    /// The tuple is now ours.
    Claimed,
    /// The tuple already belongs to this very flow (its forward entry was evicted).
    Ours,
    /// Another flow holds the tuple.
    Taken,
}

/// Atomically claims `reply_key` for a new flow (BPF_NOEXIST is the claim).
#[inline(always)]
pub fn claim(
    reply_key: &FlowKey,
    reply: &FlowEntry,
    forward_key: &FlowKey,
) -> Result<Claim, DropReason> {
    match CONNTRACK.insert(reply_key, reply, u64::from(BPF_NOEXIST)) {
        Ok(()) => Ok(Claim::Claimed),
        Err(err) if err == -EEXIST => match CONNTRACK.get_ptr(reply_key) {
            // SAFETY: a live map value, read only.
            Some(existing) if is_peer(forward_key, unsafe { &*existing }) => Ok(Claim::Ours),
            _ => Ok(Claim::Taken),
        },
        Err(_) => Err(DropReason::ConntrackFull),
    }
}

/// Writes the forward entry of a flow whose reply tuple was just claimed. If another CPU
/// created the same flow meanwhile, our claim is rolled back and its entry is used.
#[inline(always)]
pub fn commit(
    key: &FlowKey,
    forward: &FlowEntry,
    reply_key: &FlowKey,
    claimed: bool,
) -> Result<*mut FlowEntry, DropReason> {
    match CONNTRACK.insert(key, forward, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        Err(err) if err == -EEXIST => {
            if claimed {
                let _ = CONNTRACK.remove(reply_key);
            }
        }
        Err(_) => {
            if claimed {
                let _ = CONNTRACK.remove(reply_key);
            }
            return Err(DropReason::ConntrackFull);
        }
    }
    CONNTRACK.get_ptr_mut(key).ok_or(DropReason::ConntrackFull)
}

/// Tracks a connection the pod itself opened through the egress interface, keyed by the
/// tuple its replies will carry.
#[inline(always)]
pub fn track_local(reply_key: &FlowKey, tcp_flags: u8, now: u64) {
    if let Some(entry) = CONNTRACK.get_ptr_mut(reply_key) {
        // SAFETY: a live map value.
        let e = unsafe { &mut *entry };
        if e.kind == flow_kind::LOCAL && now.wrapping_sub(e.last_seen_ns) >= TOUCH_INTERVAL_NS {
            e.last_seen_ns = now;
        }
        if e.kind == flow_kind::LOCAL && tcp_flags & (tcp_seen::FIN | tcp_seen::RST) != 0 {
            e.tcp_flags |= tcp_flags;
        }
        return;
    }
    let value = FlowEntry {
        saddr: reply_key.daddr,
        daddr: reply_key.saddr,
        sport: reply_key.dport,
        dport: reply_key.sport,
        rule_id: 0,
        kind: flow_kind::LOCAL,
        tcp_flags: 0,
        last_seen_ns: now,
        created_ns: now,
    };
    let _ = CONNTRACK.insert(reply_key, value, u64::from(BPF_NOEXIST));
}

/// Remembers the ports of a first fragment for the fragments that follow.
#[inline(always)]
pub fn remember_fragment(key: &FragKey, ports: &FragPorts) {
    let _ = FRAGMENTS.insert(key, ports, 0);
}

/// The ports of a later fragment's datagram, from its first fragment.
#[inline(always)]
pub fn fragment_ports(key: &FragKey) -> Option<FragPorts> {
    // SAFETY: read-only copy of a live value.
    FRAGMENTS.get_ptr(key).map(|p| unsafe { *p })
}
