//! `egress-router status`: the running instance as an operator reads it (interfaces,
//! attached programs, rules with their counters), assembled from the data plane alone, so
//! it works with or without an agent, as text or JSON.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use egress_common::{
    FALLBACK6_RULE_ID, PacketCount, RouterConfig, RouterConfig6, RuleKey, RuleTarget, RuleTarget6,
    config_flags, maps,
};
use serde::Serialize;

use crate::{
    conntrack::proto_name,
    dataplane::{
        discover::{self, AttachedProgram, Source},
        family::CtFamily,
        flows::CtTable,
        maps::MapSet,
        programs::{Interfaces, Mode},
    },
    network::interface::ifname,
};

/// The maps of the running data plane (see [`discover::open`]), or an error that says
/// where none was found.
pub fn running_maps(pod_interface: &str, pin_dir: &Path) -> Result<(MapSet, Source)> {
    discover::open(pod_interface, pin_dir)?.with_context(|| {
        format!(
            "no egress-router data plane: nothing attached to {pod_interface} and no pins in {}",
            pin_dir.display()
        )
    })
}

/// A rule with its counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleView {
    pub id: u16,
    /// `ipv4` or `ipv6`: the family of the clients it takes (and of its remote).
    pub family: &'static str,
    pub proto: String,
    pub port: u16,
    /// `IP:PORT`, `[IP IP ...]:PORT` (a name's current addresses), `unresolved:PORT`,
    /// `name:PORT` (addresses not shown), `fallback IP`, or `local` (served by the pod).
    pub target: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The view of rule `id` (the fallback's: no key) with its counters; a target the pod
/// serves itself (`local`) counts nothing.
fn view(
    family: &'static str,
    key: Option<&RuleKey>,
    id: u16,
    target: String,
    counters: &[PacketCount],
) -> RuleView {
    let c = if target == "local" {
        PacketCount::default()
    } else {
        counters.get(usize::from(id)).copied().unwrap_or_default()
    };
    RuleView {
        id,
        family,
        proto: key.map_or_else(|| "any".to_owned(), |k| proto_name(k.proto)),
        port: key.map_or(0, |k| k.port),
        target,
        packets: c.packets,
        bytes: c.bytes,
    }
}

/// What a rule's target shows: `local`, a name's addresses (when `names` are given), or
/// its remote.
fn target_text<A: CtFamily>(
    key: &RuleKey,
    target: &RuleTarget<A>,
    names: Option<&[(RuleKey, Vec<IpAddr>)]>,
) -> String {
    if target.is_local() {
        return "local".to_owned();
    }
    if !target.by_name() {
        return SocketAddr::new(target.remote_ip.ip(), target.remote_port).to_string();
    }
    // A name's addresses change: stable `name:PORT` unless they are asked for.
    let Some(names) = names else {
        return format!("name:{}", target.remote_port);
    };
    let addrs: Vec<String> = names
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, a)| a.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    if addrs.is_empty() {
        format!("unresolved:{}", target.remote_port)
    } else {
        format!("[{}]:{}", addrs.join(" "), target.remote_port)
    }
}

/// Rules and the fallback with their counters.
#[must_use]
pub fn rules(
    rules: &[(RuleKey, RuleTarget)],
    counters: &[PacketCount],
    config: Option<&RouterConfig>,
    names: Option<&[(RuleKey, Vec<IpAddr>)]>,
) -> Vec<RuleView> {
    let mut views: Vec<RuleView> = rules
        .iter()
        .map(|(key, target)| {
            let text = target_text(key, target, names);
            view("ipv4", Some(key), target.rule_id, text, counters)
        })
        .collect();
    if let Some(config) = config
        && config.flags & config_flags::HAS_FALLBACK != 0
    {
        let text = format!("fallback {}", Ipv4Addr::from(config.fallback_ip));
        views.push(view("ipv4", None, 0, text, counters));
    }
    views
}

/// The IPv6 rules and fallback with their counters (the fallback's under its own id,
/// [`FALLBACK6_RULE_ID`]).
#[must_use]
pub fn rules6(
    rules: &[(RuleKey, RuleTarget6)],
    counters: &[PacketCount],
    config: &RouterConfig6,
    names: Option<&[(RuleKey, Vec<IpAddr>)]>,
) -> Vec<RuleView> {
    let mut views: Vec<RuleView> = rules
        .iter()
        .map(|(key, target)| {
            let text = target_text(key, target, names);
            view("ipv6", Some(key), target.rule_id, text, counters)
        })
        .collect();
    if config.flags & config_flags::HAS_FALLBACK != 0 {
        let text = format!("fallback {}", Ipv6Addr::from(config.fallback_ip));
        views.push(view("ipv6", None, FALLBACK6_RULE_ID, text, counters));
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
    /// The IPv6 half, for an instance that has it.
    pub pod_ip6: Option<Ipv6Addr>,
    pub egress_source6: Option<Ipv6Addr>,
    pub programs: Vec<AttachedProgram>,
    pub rules: Vec<RuleView>,
    /// Entries of answered flows (two per flow), and the table's capacity.
    pub conntrack_entries: usize,
    pub conntrack_capacity: u32,
    /// Entries of flows not answered yet, and that table's capacity.
    pub unreplied_entries: usize,
    pub unreplied_capacity: u32,
    /// The same for the IPv6 tables (one-entry placeholders without IPv6).
    pub conntrack6_entries: usize,
    pub conntrack6_capacity: u32,
    pub unreplied6_entries: usize,
    pub unreplied6_capacity: u32,
    /// Clients over `--max-flows-per-source`, whose new flows are refused.
    pub limited_clients: Vec<LimitedClient>,
}

/// A client over its flow limit.
#[derive(Clone, Debug, Serialize)]
pub struct LimitedClient {
    pub client: IpAddr,
    /// Flows it held when the agent's GC counted it.
    pub flows: u32,
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
        if let (Some(pod), Some(source)) = (self.pod_ip6, self.egress_source6) {
            writeln!(f, "ipv6:        pod {pod}, egress {source}")?;
        }
        writeln!(
            f,
            "conntrack:   {} entries of {} (answered), {} of {} (unanswered)",
            self.conntrack_entries,
            self.conntrack_capacity,
            self.unreplied_entries,
            self.unreplied_capacity
        )?;
        if self.egress_source6.is_some() {
            writeln!(
                f,
                "conntrack6:  {} entries of {} (answered), {} of {} (unanswered)",
                self.conntrack6_entries,
                self.conntrack6_capacity,
                self.unreplied6_entries,
                self.unreplied6_capacity
            )?;
        }
        for l in &self.limited_clients {
            writeln!(
                f,
                "limited:     {} held {} flows: its new flows are refused",
                l.client, l.flows
            )?;
        }
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

impl Status {
    /// Reads the status of the data plane running in this namespace.
    pub fn read(
        instance: &str,
        pod_interface: &str,
        egress_interface: &str,
        pin_dir: &Path,
    ) -> Result<Self> {
        let (maps, source) = running_maps(pod_interface, pin_dir)?;
        let config = maps.config()?;
        let config6 = maps.config6()?;
        let ipv6 = config.is_some_and(|c| c.flags & config_flags::IPV6 != 0);
        let rule_stats = maps.rule_stats()?;
        let mut rules = rules(
            &maps.rules()?,
            &rule_stats,
            config.as_ref(),
            Some(&maps.rule_addrs::<[u8; 4]>()?),
        );
        if ipv6 {
            rules.extend(rules6(
                &maps.rules6()?,
                &rule_stats,
                &config6,
                Some(&maps.rule_addrs::<[u8; 16]>()?),
            ));
        }
        let limited = maps
            .limited_sources::<[u8; 4]>()?
            .into_iter()
            .map(|(c, n)| (IpAddr::from(c), n));
        let limited6 = maps
            .limited_sources::<[u8; 16]>()?
            .into_iter()
            .map(|(c, n)| (IpAddr::from(c), n));
        let entries = |t| maps.conntrack_table(t).map(|f| f.len());
        let entries6 = |t| maps.conntrack_table_of::<[u8; 16]>(t).map(|f| f.len());
        Ok(Self {
            instance: instance.to_owned(),
            source: source.to_string(),
            pin_dir: pin_dir
                .join(maps::CONFIG)
                .exists()
                .then(|| pin_dir.to_owned()),
            pod_interface: config.and_then(|c| ifname(c.pod_ifindex)),
            egress_interface: config.and_then(|c| ifname(c.egress_ifindex)),
            // Unspecified in an instance with IPv6 alone.
            pod_ip: config
                .map(|c| Ipv4Addr::from(c.pod_ip))
                .filter(|ip| !ip.is_unspecified()),
            egress_source: config
                .map(|c| Ipv4Addr::from(c.egress_source))
                .filter(|ip| !ip.is_unspecified()),
            pod_ip6: ipv6.then(|| config6.pod_ip.into()),
            egress_source6: ipv6.then(|| config6.egress_source.into()),
            programs: discover::attached_programs(
                Mode::Pod,
                &Interfaces::pod(pod_interface, egress_interface),
            )?,
            rules,
            conntrack_entries: entries(CtTable::Replied)?,
            conntrack_capacity: maps.conntrack_capacity()?,
            unreplied_entries: entries(CtTable::Unreplied)?,
            unreplied_capacity: maps.unreplied_capacity()?,
            conntrack6_entries: entries6(CtTable::Replied)?,
            conntrack6_capacity: maps.capacity_of::<[u8; 16]>(CtTable::Replied)?,
            unreplied6_entries: entries6(CtTable::Unreplied)?,
            unreplied6_capacity: maps.capacity_of::<[u8; 16]>(CtTable::Unreplied)?,
            limited_clients: limited
                .chain(limited6)
                .map(|(client, flows)| LimitedClient { client, flows })
                .collect(),
        })
    }
}
