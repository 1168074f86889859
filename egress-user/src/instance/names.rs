//! The DNS proxy in the data plane: each `EGRESS_DNS_PROXY_DESTINATION` port that names a
//! host is a rule whose addresses live in [`egress_common::maps::RULE_ADDRS`] (A records,
//! for clients over IPv4) and [`egress_common::maps::RULE_ADDRS6`] (AAAA records, for
//! clients over IPv6, when EGRESS_SOURCE has an IPv6 address); new connections take one of
//! them at random, and established ones keep theirs in conntrack. [`Names`] is the rule
//! source that keeps those lists current, resolving each name again when its records' TTL
//! runs out. Nothing cuts idle connections.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use egress_common::{RuleKey, flow_kind, proto};
use hickory_resolver::TokioResolver;
use tokio::time::Instant;

use crate::{
    config::dns_proxy::{DnsRoute, DnsTarget},
    dataplane::{family::CtFamily, flows::CtTable, maps::MapSet, rules::RuleSet},
    instance::{
        Instance,
        source::{Outcome, RuleSource, Trigger},
    },
    proxy::outbound::{Unresolved, destinations_of, resolve},
};

/// Whether this process may run the BPF data plane: CAP_NET_ADMIN (attach, netlink) and
/// CAP_BPF or CAP_SYS_ADMIN (load programs, update maps), in its effective set.
#[must_use]
pub fn may_use_bpf() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let Some(effective) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
    else {
        return false;
    };
    let has = |cap: u32| effective & (1 << cap) != 0;
    has(CAP_NET_ADMIN) && (has(CAP_BPF) || has(CAP_SYS_ADMIN))
}

/// How long to wait before resolving a name again after a failure.
const RETRY: Duration = Duration::from_secs(5);
/// The shortest interval between two resolutions of one name (a TTL of 0 included).
const MIN_REFRESH: Duration = Duration::from_secs(1);

fn key(port: u16) -> RuleKey {
    RuleKey {
        port,
        proto: proto::TCP,
        instance: 0,
    }
}

/// One name a rule sends to, in one family, as last resolved.
struct Name {
    host: String,
    key: RuleKey,
    /// AAAA records (for clients over IPv6), else A records.
    v6: bool,
    addrs: Vec<IpAddr>,
    /// The last answer said the name has no record of the family (logged once).
    no_records: bool,
    due: Instant,
}

impl Name {
    fn family(&self) -> &'static str {
        if self.v6 { "ipv6" } else { "ipv4" }
    }
}

/// The names of the data plane's rules, re-resolved as their TTLs expire, and the
/// connection log of `EGRESS_DNS_PROXY_DEBUG`.
pub struct Names {
    resolver: TokioResolver,
    routes: Vec<DnsRoute>,
    /// The families EGRESS_SOURCE has (IPv4, IPv6): names are resolved to A records for
    /// the one, AAAA records for the other.
    families: (bool, bool),
    names: Vec<Name>,
    /// Log every new connection (read from conntrack).
    debug: bool,
    connection_log: Option<tokio::time::Interval>,
    /// The forward conntrack entries of the last scan (key, creation time).
    seen: std::collections::HashSet<Seen>,
}

impl Names {
    /// The names of `routes` in the families EGRESS_SOURCE has (`ipv4`, `ipv6`).
    #[must_use]
    pub fn new(
        resolver: TokioResolver,
        routes: &[DnsRoute],
        (ipv4, ipv6): (bool, bool),
        debug: bool,
    ) -> Self {
        let now = Instant::now();
        let families: Vec<bool> = [(ipv4, false), (ipv6, true)]
            .into_iter()
            .filter_map(|(has, v6)| has.then_some(v6))
            .collect();
        let names = routes
            .iter()
            .filter_map(|route| match &route.target {
                DnsTarget::Host(host) => Some((host, route.port)),
                DnsTarget::Ip(_) => None,
            })
            .flat_map(|(host, port)| {
                families.clone().into_iter().map(move |v6| Name {
                    host: host.clone(),
                    key: key(port),
                    v6,
                    addrs: Vec::new(),
                    no_records: false,
                    due: now,
                })
            })
            .collect();
        Self {
            resolver,
            routes: routes.to_vec(),
            families: (ipv4, ipv6),
            names,
            debug,
            connection_log: None,
            seen: std::collections::HashSet::new(),
        }
    }

    /// The rules of the routes.
    #[must_use]
    pub fn rules(&self) -> RuleSet {
        RuleSet::from_dns_routes(&self.routes, self.families)
    }

    /// When the next name is due for resolution.
    #[must_use]
    fn next_due(&self) -> Instant {
        self.names
            .iter()
            .map(|n| n.due)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400))
    }

    /// Resolves the names that are due (all of them, past any cache, if `force`) and writes changed address
    /// lists to the data plane. A name that fails to resolve keeps its last addresses, and
    /// so does one whose answer has no record of the family (logged once: a name with A
    /// records only is common, and IPv6 clients of it are dropped as `unresolved`).
    /// Addresses that are the router pod's own (the pod IPs, EGRESS_SOURCE), loopback,
    /// multicast or broadcast are left out: a new connection never loops back into the pod.
    pub async fn refresh(&mut self, instance: &mut Instance, force: bool) {
        let router = instance.router();
        // (Unspecified in an instance with IPv6 alone, which resolves no A records.)
        let mut own = vec![
            IpAddr::V4(router.pod_ip.into()),
            IpAddr::V4(router.egress_source.into()),
        ];
        if let Some(router6) = instance.router6() {
            own.push(IpAddr::V6(router6.pod_ip.into()));
            own.push(IpAddr::V6(router6.egress_source.into()));
        }
        let maps = instance.maps_mut();
        let now = Instant::now();
        if force {
            // Asked for now (SIGHUP): the resolver's own cache would answer with what the
            // TTL still covers, which is exactly what the operator wants to skip.
            self.resolver.clear_cache();
        }
        for name in &mut self.names {
            if !force && name.due > now {
                continue;
            }
            match resolve(&self.resolver, &name.host, name.v6).await {
                Ok((addrs, valid_until)) => {
                    name.due = valid_until.max(Instant::now() + MIN_REFRESH);
                    name.no_records = false;
                    let addrs = destinations_of(&addrs, &own, name.v6);
                    if addrs == name.addrs {
                        continue;
                    }
                    let written = if name.v6 {
                        let octets: Vec<[u8; 16]> = addrs.iter().filter_map(octets6).collect();
                        maps.set_rule_addrs(&name.key, &octets)
                    } else {
                        let octets: Vec<[u8; 4]> = addrs.iter().filter_map(octets4).collect();
                        maps.set_rule_addrs(&name.key, &octets)
                    };
                    match written {
                        Ok(()) => {
                            tracing::info!(
                                name = %name.host,
                                family = name.family(),
                                port = name.key.port,
                                addresses = %join(&addrs),
                                before = %join(&name.addrs),
                                "addresses updated"
                            );
                            name.addrs = addrs;
                        }
                        Err(err) => {
                            tracing::error!(name = %name.host, error = %crate::error_chain(&err), "updating the data plane failed");
                            name.due = Instant::now() + RETRY;
                        }
                    }
                }
                Err(Unresolved::NoRecords(until)) => {
                    name.due = until.max(Instant::now() + MIN_REFRESH);
                    if !name.no_records {
                        name.no_records = true;
                        tracing::info!(
                            name = %name.host,
                            family = name.family(),
                            port = name.key.port,
                            keeping = %join(&name.addrs),
                            "the name has no address of this family; new connections of \
                             this family keep the last addresses (none: they are dropped)"
                        );
                    }
                }
                Err(Unresolved::Failed(err)) => {
                    name.due = Instant::now() + RETRY;
                    tracing::warn!(
                        name = %name.host,
                        family = name.family(),
                        port = name.key.port,
                        error = %err,
                        keeping = %join(&name.addrs),
                        "resolution failed; new connections keep the last addresses"
                    );
                }
            }
        }
    }

    /// Logs the connections created since the last call, from conntrack (both families):
    /// those whose forward entry was not there at the last scan (a watermark on creation
    /// time would miss entries inserted behind the iteration).
    fn log_new_connections(&mut self, maps: &MapSet) {
        let mut flows = Vec::new();
        if let Err(err) = forward_flows::<[u8; 4]>(maps, &mut flows)
            .and_then(|()| forward_flows::<[u8; 16]>(maps, &mut flows))
        {
            tracing::warn!(error = %crate::error_chain(&err), "reading conntrack for the connection log");
            return;
        }
        let current: std::collections::HashSet<Seen> = flows.iter().map(|c| c.seen).collect();
        let mut new: Vec<&Connection> = flows
            .iter()
            .filter(|c| !self.seen.contains(&c.seen))
            .collect();
        new.sort_by_key(|c| c.seen.2);
        for c in new {
            tracing::info!(
                client = %c.seen.0,
                port = c.seen.1,
                remote = %c.remote,
                source = %c.source,
                "connection"
            );
        }
        self.seen = current;
    }
}

/// A connection's identity in the log: client, port on the pod, creation time.
type Seen = (SocketAddr, u16, u64);

/// A translated connection, as the log shows it.
struct Connection {
    seen: Seen,
    remote: SocketAddr,
    source: SocketAddr,
}

/// The forward entries of family `A`'s conntrack tables, into `out`.
fn forward_flows<A: CtFamily>(
    maps: &MapSet,
    out: &mut Vec<Connection>,
) -> Result<(), crate::dataplane::maps::Error> {
    for t in CtTable::ALL {
        for (key, entry) in maps.conntrack_table_of::<A>(t)? {
            if entry.kind != flow_kind::FORWARD {
                continue;
            }
            out.push(Connection {
                seen: (
                    SocketAddr::new(key.saddr.ip(), key.sport),
                    key.dport,
                    entry.created_ns,
                ),
                remote: SocketAddr::new(entry.daddr.ip(), entry.dport),
                source: SocketAddr::new(entry.saddr.ip(), entry.sport),
            });
        }
    }
    Ok(())
}

fn octets4(ip: &IpAddr) -> Option<[u8; 4]> {
    match ip {
        IpAddr::V4(ip) => Some(ip.octets()),
        IpAddr::V6(_) => None,
    }
}

fn octets6(ip: &IpAddr) -> Option<[u8; 16]> {
    match ip {
        IpAddr::V6(ip) => Some(ip.octets()),
        IpAddr::V4(_) => None,
    }
}

fn join(addrs: &[IpAddr]) -> String {
    if addrs.is_empty() {
        return "-".to_owned();
    }
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What [`Names`] waits for.
pub enum NameEvent {
    /// A name's records expired.
    Due,
    /// Time to log the connections created since the last look (`EGRESS_DNS_PROXY_DEBUG`).
    LogConnections,
}

impl RuleSource for Names {
    type Event = NameEvent;

    async fn next_event(&mut self) -> NameEvent {
        let due = self.next_due();
        let log = async {
            match (&mut self.connection_log, self.debug) {
                (Some(tick), _) => {
                    tick.tick().await;
                }
                (None, true) => {
                    let tick = self
                        .connection_log
                        .insert(tokio::time::interval(Duration::from_secs(1)));
                    tick.tick().await;
                }
                (None, false) => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(due) => NameEvent::Due,
            () = log => NameEvent::LogConnections,
        }
    }

    async fn apply(&mut self, trigger: Trigger<NameEvent>, instance: &mut Instance) -> Outcome {
        match trigger {
            Trigger::Hangup => {
                tracing::info!("SIGHUP: resolving every name again");
                self.refresh(instance, true).await;
            }
            Trigger::Event(NameEvent::Due) => self.refresh(instance, false).await,
            Trigger::Event(NameEvent::LogConnections) => self.log_new_connections(instance.maps()),
        }
        Outcome::Unchanged
    }
}
