//! The DNS proxy in the data plane: each `EGRESS_DNS_PROXY_DESTINATION` port that names a
//! host is a rule whose addresses live in [`egress_common::maps::RULE_ADDRS`]; new
//! connections take one of them at random, and established ones keep theirs in conntrack.
//! [`Names`] is the rule source that keeps those lists current, resolving each name again
//! when its records' TTL runs out. Nothing cuts idle connections.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use egress_common::{RuleKey, flow_kind, proto};
use hickory_resolver::TokioResolver;
use tokio::time::Instant;

use crate::{
    config::dns_proxy::{DnsRoute, DnsTarget},
    dataplane::{maps::MapSet, rules::RuleSet},
    instance::{
        Instance,
        source::{Outcome, RuleSource, Trigger},
    },
    proxy::outbound::{destinations_v4, resolve_ipv4},
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
        _pad: 0,
    }
}

/// One name a rule sends to, as last resolved.
struct Name {
    host: String,
    key: RuleKey,
    addrs: Vec<Ipv4Addr>,
    due: Instant,
}

/// The names of the data plane's rules, re-resolved as their TTLs expire, and the
/// connection log of `EGRESS_DNS_PROXY_DEBUG`.
pub struct Names {
    resolver: TokioResolver,
    routes: Vec<DnsRoute>,
    names: Vec<Name>,
    /// Log every new connection (read from conntrack).
    debug: bool,
    connection_log: Option<tokio::time::Interval>,
    /// The forward conntrack entries of the last scan (key, creation time).
    seen: std::collections::HashSet<(egress_common::FlowKey, u64)>,
}

impl Names {
    #[must_use]
    pub fn new(resolver: TokioResolver, routes: &[DnsRoute], debug: bool) -> Self {
        let now = Instant::now();
        let names = routes
            .iter()
            .filter_map(|route| match &route.target {
                DnsTarget::Host(host) => Some(Name {
                    host: host.clone(),
                    key: key(route.port),
                    addrs: Vec::new(),
                    due: now,
                }),
                DnsTarget::Ip(_) => None,
            })
            .collect();
        Self {
            resolver,
            routes: routes.to_vec(),
            names,
            debug,
            connection_log: None,
            seen: std::collections::HashSet::new(),
        }
    }

    /// The rules of the routes.
    #[must_use]
    pub fn rules(&self) -> RuleSet {
        RuleSet::from_dns_routes(&self.routes)
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
    /// lists to the data plane. A name that fails to resolve keeps its last addresses.
    /// Addresses that are the router pod's own (the pod IP, EGRESS_SOURCE), loopback,
    /// multicast or broadcast are left out: a new connection never loops back into the pod.
    pub async fn refresh(&mut self, instance: &mut Instance, force: bool) {
        let router = instance.router();
        let own = [
            IpAddr::V4(router.pod_ip.into()),
            IpAddr::V4(router.egress_source.into()),
        ];
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
            match resolve_ipv4(&self.resolver, &name.host).await {
                Ok((addrs, valid_until)) => {
                    name.due = valid_until.max(Instant::now() + MIN_REFRESH);
                    let addrs = destinations_v4(addrs.into_iter().map(IpAddr::V4), &own);
                    if addrs == name.addrs {
                        continue;
                    }
                    match maps.set_rule_addrs(&name.key, &addrs) {
                        Ok(()) => {
                            tracing::info!(
                                name = %name.host,
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
                Err(err) => {
                    name.due = Instant::now() + RETRY;
                    tracing::warn!(
                        name = %name.host,
                        port = name.key.port,
                        error = %err,
                        keeping = %join(&name.addrs),
                        "resolution failed; new connections keep the last addresses"
                    );
                }
            }
        }
    }

    /// Logs the connections created since the last call, from conntrack: those whose
    /// forward entry was not there at the last scan (a watermark on creation time would
    /// miss entries inserted behind the iteration).
    fn log_new_connections(&mut self, maps: &MapSet) {
        let flows = match maps.conntrack() {
            Ok(flows) => flows,
            Err(err) => {
                tracing::warn!(error = %err, "reading conntrack for the connection log");
                return;
            }
        };
        let mut current = std::collections::HashSet::with_capacity(self.seen.len());
        let mut new: Vec<_> = flows
            .iter()
            .filter(|(_, e)| e.kind == flow_kind::FORWARD)
            .filter(|(k, e)| {
                current.insert((*k, e.created_ns));
                !self.seen.contains(&(*k, e.created_ns))
            })
            .collect();
        new.sort_by_key(|(_, e)| e.created_ns);
        for (key, entry) in new {
            tracing::info!(
                client = %SocketAddr::from((Ipv4Addr::from(key.saddr), key.sport)),
                port = key.dport,
                remote = %SocketAddr::from((Ipv4Addr::from(entry.daddr), entry.dport)),
                source = %SocketAddr::from((Ipv4Addr::from(entry.saddr), entry.sport)),
                "connection"
            );
        }
        self.seen = current;
    }
}

fn join(addrs: &[Ipv4Addr]) -> String {
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
