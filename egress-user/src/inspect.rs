//! Views of a running data plane for operators: the conntrack table as flows (original and
//! translated tuples, state, age) and the instance status, as text or JSON.

use std::{fmt::Write as _, net::Ipv4Addr, path::PathBuf};

use egress_common::{
    FlowEntry, FlowKey, PacketCount, RouterConfig, RuleKey, RuleTarget, config_flags, flow_kind,
    flow_timeout_ns, peer_key, proto, tcp_seen,
};
use serde::Serialize;

use crate::running::AttachedProgram;

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

fn proto_name(p: u8) -> String {
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
                    timeout_seconds: secs(flow_timeout_ns(key.proto, entry.tcp_flags)),
                    reply_entry: reply.is_some(),
                });
            }
            flow_kind::LOCAL => {
                // Keyed by the reply tuple; the pod sent the other way round.
                let original = tuple(key.daddr, key.dport, key.saddr, key.sport);
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

/// A rule with its counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleView {
    pub id: u16,
    pub proto: String,
    pub port: u16,
    /// `IP:PORT`, `[IP IP ...]:PORT` (a name's current addresses), `unresolved:PORT`,
    /// `name:PORT` (addresses not shown), `fallback IP`, or `local` (served by the pod).
    pub target: String,
    pub packets: u64,
    pub bytes: u64,
}

/// Rules and the fallback with their counters.
#[must_use]
pub fn rules(
    rules: &[(RuleKey, RuleTarget)],
    counters: &[PacketCount],
    config: Option<&RouterConfig>,
    names: Option<&[(RuleKey, Vec<Ipv4Addr>)]>,
) -> Vec<RuleView> {
    let count = |id: u16| counters.get(usize::from(id)).copied().unwrap_or_default();
    let mut views: Vec<RuleView> = rules
        .iter()
        .map(|(key, target)| {
            let c = if target.is_local() {
                PacketCount::default()
            } else {
                count(target.rule_id)
            };
            RuleView {
                id: target.rule_id,
                proto: proto_name(key.proto),
                port: key.port,
                target: if target.is_local() {
                    "local".to_owned()
                } else if target.by_name() {
                    // A name's addresses change: stable `name:PORT` unless they are asked for.
                    let addrs = names.map(|names| {
                        names
                            .iter()
                            .find(|(k, _)| k == key)
                            .map(|(_, a)| a.iter().map(ToString::to_string).collect::<Vec<_>>())
                            .unwrap_or_default()
                    });
                    match addrs {
                        None => format!("name:{}", target.remote_port),
                        Some(addrs) if addrs.is_empty() => {
                            format!("unresolved:{}", target.remote_port)
                        }
                        Some(addrs) => format!("[{}]:{}", addrs.join(" "), target.remote_port),
                    }
                } else {
                    format!(
                        "{}:{}",
                        Ipv4Addr::from(target.remote_ip),
                        target.remote_port
                    )
                },
                packets: c.packets,
                bytes: c.bytes,
            }
        })
        .collect();
    if let Some(config) = config
        && config.flags & config_flags::HAS_FALLBACK != 0
    {
        let c = count(0);
        views.push(RuleView {
            id: 0,
            proto: "any".to_owned(),
            port: 0,
            target: format!("fallback {}", Ipv4Addr::from(config.fallback_ip)),
            packets: c.packets,
            bytes: c.bytes,
        });
    }
    views
}

/// What `egress-router status` shows.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub instance: String,
    /// Where the maps were found.
    pub source: String,
    pub pin_dir: Option<PathBuf>,
    pub pod_interface: Option<String>,
    pub egress_interface: Option<String>,
    pub pod_ip: Option<Ipv4Addr>,
    pub egress_source: Option<Ipv4Addr>,
    pub programs: Vec<AttachedProgram>,
    pub rules: Vec<RuleView>,
    pub conntrack_entries: usize,
    pub conntrack_capacity: u32,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        writeln!(f, "instance:    {}", self.instance)?;
        writeln!(f, "maps:        {}", self.source)?;
        writeln!(
            f,
            "pod:         {} {}",
            opt(self.pod_interface.clone()),
            opt(self.pod_ip.map(|i| i.to_string()))
        )?;
        writeln!(
            f,
            "egress:      {} {}",
            opt(self.egress_interface.clone()),
            opt(self.egress_source.map(|i| i.to_string()))
        )?;
        writeln!(
            f,
            "conntrack:   {} entries of {}",
            self.conntrack_entries, self.conntrack_capacity
        )?;
        writeln!(f, "programs:")?;
        if self.programs.is_empty() {
            writeln!(f, "  (none attached)")?;
        }
        for p in &self.programs {
            writeln!(
                f,
                "  {:<16} {:<10} {:<8} {:<8} id {:<6} tag {}",
                p.name, p.interface, p.direction, p.hook, p.id, p.tag
            )?;
        }
        writeln!(f, "rules:")?;
        writeln!(
            f,
            "  {:>4} {:<5} {:>5}  {:<28} {:>12} {:>14}",
            "ID", "PROTO", "PORT", "TARGET", "PACKETS", "BYTES"
        )?;
        for r in &self.rules {
            let id = if r.target == "local" {
                "-".to_owned()
            } else {
                r.id.to_string()
            };
            writeln!(
                f,
                "  {:>4} {:<5} {:>5}  {:<28} {:>12} {:>14}",
                id, r.proto, r.port, r.target, r.packets, r.bytes
            )?;
        }
        Ok(())
    }
}

/// The name of an interface index in the current network namespace.
#[must_use]
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}
