//! The conntrack table from user space: its clock, garbage collection, and the flows as an
//! operator reads them (original and translated tuples, state, age), as text or JSON.

use std::{fmt::Write as _, net::Ipv4Addr, time::Duration};

pub use egress_common::flow_expired;
use egress_common::{FlowEntry, FlowKey, flow_kind, flow_timeout_ns, peer_key, proto, tcp_seen};
use serde::Serialize;

use crate::dataplane::maps::{Error, MapSet};

/// CLOCK_MONOTONIC_COARSE in nanoseconds: the clock of the data plane's timestamps.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// One direction's addresses and ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

/// A tracked connection as an operator reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowView {
    /// `tcp`, `udp`, `icmp` or the protocol number.
    pub proto: String,
    /// `nat` for a translated client connection, `local` for one the pod opened itself.
    pub kind: &'static str,
    /// As the client sent it (for `local`: as the pod sent it).
    pub original: Tuple,
    /// As it left the egress interface.
    pub translated: Tuple,
    /// The rule that created it (0 = fallback); absent for `local`.
    pub rule_id: Option<u16>,
    pub state: &'static str,
    pub age_seconds: u64,
    pub idle_seconds: u64,
    /// Seconds without packets after which it expires.
    pub timeout_seconds: u64,
    /// Whether the reply direction's entry is present.
    pub reply_entry: bool,
}

fn tuple(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Tuple {
    Tuple {
        src: src.into(),
        sport,
        dst: dst.into(),
        dport,
    }
}

/// `tcp`, `udp`, `icmp`, or the protocol number.
#[must_use]
pub fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".to_owned(),
        proto::UDP => "udp".to_owned(),
        proto::ICMP => "icmp".to_owned(),
        other => other.to_string(),
    }
}

fn state(p: u8, forward: u8, reply: u8) -> &'static str {
    if p != proto::TCP {
        return if reply != 0 { "replied" } else { "active" };
    }
    let both = forward | reply;
    if both & tcp_seen::RST != 0 {
        "reset"
    } else if forward & tcp_seen::FIN != 0 && reply & tcp_seen::FIN != 0 {
        "closed"
    } else if both & tcp_seen::FIN != 0 {
        "closing"
    } else if reply & tcp_seen::SYN != 0 && both & tcp_seen::ACK != 0 {
        "established"
    } else if reply & tcp_seen::SYN != 0 {
        "syn_received"
    } else {
        "syn_sent"
    }
}

/// The flows of a conntrack table: one per forward entry (with its reply entry merged in),
/// and one per entry of the pod's own connections. Sorted by client address and port.
#[must_use]
pub fn flows(table: &[(FlowKey, FlowEntry)], now: u64) -> Vec<FlowView> {
    let index: std::collections::HashMap<FlowKey, FlowEntry> = table.iter().copied().collect();
    let secs = |ns: u64| ns / 1_000_000_000;
    let mut views = Vec::new();
    for (key, entry) in table {
        match entry.kind {
            flow_kind::FORWARD => {
                let reply = index.get(&peer_key(key, entry));
                let reply_flags = reply.map_or(0, |r| r.tcp_flags);
                let last_seen = reply.map_or(entry.last_seen_ns, |r| {
                    r.last_seen_ns.max(entry.last_seen_ns)
                });
                views.push(FlowView {
                    proto: proto_name(key.proto),
                    kind: "nat",
                    original: tuple(key.saddr, key.sport, key.daddr, key.dport),
                    translated: tuple(entry.saddr, entry.sport, entry.daddr, entry.dport),
                    rule_id: Some(entry.rule_id),
                    state: state(key.proto, entry.tcp_flags, reply_flags),
                    age_seconds: secs(now.saturating_sub(entry.created_ns)),
                    idle_seconds: secs(now.saturating_sub(last_seen)),
                    timeout_seconds: secs(flow_timeout_ns(
                        key.proto,
                        entry.tcp_flags | reply_flags,
                    )),
                    reply_entry: reply.is_some(),
                });
            }
            flow_kind::LOCAL => {
                // Keyed by the reply tuple; the pod sent the other way round.
                let sent = key.reversed();
                let original = tuple(sent.saddr, sent.sport, sent.daddr, sent.dport);
                views.push(FlowView {
                    proto: proto_name(key.proto),
                    kind: "local",
                    original,
                    translated: original,
                    rule_id: None,
                    state: state(key.proto, entry.tcp_flags, 0),
                    age_seconds: secs(now.saturating_sub(entry.created_ns)),
                    idle_seconds: secs(now.saturating_sub(entry.last_seen_ns)),
                    timeout_seconds: secs(flow_timeout_ns(key.proto, entry.tcp_flags)),
                    reply_entry: true,
                });
            }
            _ => {}
        }
    }
    views.sort_by_key(|v| (v.original.src, v.original.sport, v.original.dport));
    views
}

/// The flows as a table for a terminal.
#[must_use]
pub fn flows_text(flows: &[FlowView]) -> String {
    let mut out = format!(
        "{:<5} {:<5} {:<44} {:<44} {:>4} {:<12} {:>8} {:>8}\n",
        "PROTO", "KIND", "ORIGINAL", "TRANSLATED", "RULE", "STATE", "AGE", "IDLE"
    );
    for f in flows {
        let t = |t: &Tuple| format!("{}:{} -> {}:{}", t.src, t.sport, t.dst, t.dport);
        let _ = writeln!(
            out,
            "{:<5} {:<5} {:<44} {:<44} {:>4} {:<12} {:>7}s {:>7}s",
            f.proto,
            f.kind,
            t(&f.original),
            t(&f.translated),
            f.rule_id.map_or("-".to_owned(), |r| r.to_string()),
            f.state,
            f.age_seconds,
            f.idle_seconds
        );
    }
    out
}

/// What one garbage-collection pass saw and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcPass {
    /// Entries in the table before the pass.
    pub entries: u64,
    /// Entries removed because they outlived their timeout.
    pub expired: u64,
    /// The table's capacity in entries.
    pub capacity: u64,
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
    let capacity = u64::from(maps.conntrack_capacity()?);
    let flows = maps.conntrack()?;
    let index: std::collections::HashMap<FlowKey, FlowEntry> = flows.iter().copied().collect();
    let peer_of = |key: &FlowKey, entry: &FlowEntry| -> Option<FlowKey> {
        if entry.kind == flow_kind::LOCAL {
            return None;
        }
        let pkey = peer_key(key, entry);
        index
            .get(&pkey)
            .filter(|peer| peer.returns_to(key))
            .map(|_| pkey)
    };
    // One unit per flow: a forward entry with its reply entry, or an entry alone (a pod's
    // own connection, or half a flow whose other half is gone).
    let mut doomed = Vec::new();
    for (key, entry) in &flows {
        let peer = peer_of(key, entry);
        if entry.kind == flow_kind::REPLY && peer.is_some() {
            continue;
        }
        let peer_entry = peer.and_then(|p| index.get(&p));
        if flow_expired(key.proto, entry, peer_entry, now) {
            doomed.push((*key, peer));
        }
    }
    let mut expired = 0;
    for (key, peer) in doomed {
        expired += remove_flow(maps, &key, peer.as_ref(), now, &mut between)?;
    }
    Ok(GcPass {
        entries: flows.len() as u64,
        expired,
        capacity,
    })
}

/// Removes one expired flow (see [`collect_garbage`]); returns how many entries went.
fn remove_flow(
    maps: &mut MapSet,
    key: &FlowKey,
    peer: Option<&FlowKey>,
    now: u64,
    between: &mut impl FnMut(&FlowKey),
) -> Result<u64, Error> {
    let proto = key.proto;
    let still = |entry: &FlowEntry, other: Option<&FlowEntry>| -> bool {
        flow_expired(proto, entry, other, now)
    };
    let Some(entry) = maps.flow(key)? else {
        return Ok(0);
    };
    let peer_entry = match peer {
        Some(p) => maps.flow(p)?.filter(|e| e.returns_to(key)),
        None => None,
    };
    if !still(&entry, peer_entry.as_ref()) {
        return Ok(0);
    }
    between(key);
    let taken_peer = match (peer, peer_entry) {
        (Some(p), Some(_)) => maps.take_flow(p)?.map(|e| (*p, e)),
        _ => None,
    };
    let Some(current) = maps.flow(key)? else {
        // The forward entry went meanwhile (evicted): the reply entry is judged alone.
        return match &taken_peer {
            Some((p, e)) if !still(e, None) => {
                maps.put_flow_if_absent(p, e)?;
                Ok(0)
            }
            Some(_) => Ok(1),
            None => Ok(0),
        };
    };
    if !still(&current, taken_peer.as_ref().map(|(_, e)| e)) {
        // Refreshed in between: the reply entry goes back.
        if let Some((p, e)) = &taken_peer {
            maps.put_flow_if_absent(p, e)?;
        }
        return Ok(0);
    }
    let Some(taken) = maps.take_flow(key)? else {
        return Ok(u64::from(taken_peer.is_some()));
    };
    if !still(&taken, taken_peer.as_ref().map(|(_, e)| e)) {
        maps.put_flow_if_absent(key, &taken)?;
        if let Some((p, e)) = &taken_peer {
            maps.put_flow_if_absent(p, e)?;
        }
        return Ok(0);
    }
    Ok(1 + u64::from(taken_peer.is_some()))
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
    use super::*;

    fn entry(kind: u8, tcp_flags: u8, last_seen_s: u64) -> FlowEntry {
        FlowEntry {
            kind,
            tcp_flags,
            last_seen_ns: last_seen_s * 1_000_000_000,
            ..FlowEntry::default()
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
        // Alone, the reply half would have lived 6 h.
        assert!(!flow_expired(proto::TCP, &reply, None, 111 * s));
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
