//! The conntrack tables from user space: their clock, the flows as an operator reads them
//! (original and translated tuples, state, age), as text or JSON, and garbage collection,
//! with the per-client flow limit it enforces. An agent runs the GC with
//! [`crate::agent::gc`].
//!
//! | module | concern |
//! |---|---|
//! | `gc` | garbage collection of the tables, and the census of each client's flows |
//! | `sweep` | the GC pass with the judging done in the kernel (the sweep program) |
//! | `limits` | `--max-flows-per-source` applied after a pass |

mod gc;
mod limits;
mod sweep;

pub use gc::{
    FamilyPass, GcPass, SourceLimits, collect_garbage, collect_garbage_with, gc_interval,
    source_limits,
};
pub use limits::{Enforced, enforce_source_limit, enforce_source_limits, flow_limit, nat_ports};
pub use sweep::{collect_garbage_in_kernel, sweep_only};

use std::{fmt::Write as _, net::IpAddr};

pub use egress_common::flow_expired;
use egress_common::{FlowEntry, FlowKey, flow_kind, flow_timeout_ns, peer_key, proto, tcp_seen};
use serde::Serialize;

use crate::dataplane::flows::CtFamily;

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
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
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

fn tuple<A: CtFamily>(src: A, sport: u16, dst: A, dport: u16) -> Tuple {
    Tuple {
        src: src.ip(),
        sport,
        dst: dst.ip(),
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
        proto::ICMPV6 => "icmpv6".to_owned(),
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

/// The flows of a conntrack table of either family: one per forward entry (with its reply
/// entry merged in), and one per entry of the pod's own connections. Sorted by client
/// address and port.
#[must_use]
pub fn flows<A: CtFamily>(table: &[(FlowKey<A>, FlowEntry<A>)], now: u64) -> Vec<FlowView> {
    let index: std::collections::HashMap<FlowKey<A>, FlowEntry<A>> =
        table.iter().copied().collect();
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
        let t = |t: &Tuple| {
            let end = |ip: IpAddr, port: u16| match ip {
                IpAddr::V4(ip) => format!("{ip}:{port}"),
                IpAddr::V6(ip) => format!("[{ip}]:{port}"),
            };
            format!("{} -> {}", end(t.src, t.sport), end(t.dst, t.dport))
        };
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
