//! DNS proxy mode: `egress-router dns-proxy`, the main container of a dns-proxy pod.
//!
//! `EGRESS_DNS_PROXY_DESTINATION` maps TCP ports on the pod IP to a name or an address.
//! Where the process may load BPF programs and update maps, the redirect data plane serves
//! it: a port that names a host becomes a rule whose addresses live in
//! [`egress_common::maps::RULE_ADDRS`]; new connections take one of them at random, and
//! established ones keep theirs in conntrack. [`Names`] keeps those lists current,
//! resolving each name again when its records' TTL runs out. Nothing cuts idle
//! connections (HAProxy's one-minute idle timeout is a known pain of OpenShift's image).
//!
//! Without those capabilities (OpenShift runs this container unprivileged), [`relay`]
//! serves the same ports from user space: one tokio task per connection, outbound from
//! EGRESS_SOURCE, new connections spread over the name's addresses in turn, no idle
//! timeout either.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use egress_common::{RuleKey, RuleTarget, flow_kind, proto, rule_flags};
use hickory_resolver::TokioResolver;
use tokio::{net::TcpListener, time::Instant};

use crate::{
    maps::MapSet,
    outbound,
    proxy_config::{DnsRoute, DnsTarget},
};

/// How long to wait before resolving a name again after a failure.
const RETRY: Duration = Duration::from_secs(5);
/// The shortest interval between two resolutions of one name (a TTL of 0 included).
const MIN_REFRESH: Duration = Duration::from_secs(1);

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

/// The rules map of the routes: ids in order from 1, names flagged [`rule_flags::ADDRS`].
#[must_use]
pub fn rules(routes: &[DnsRoute]) -> Vec<(RuleKey, RuleTarget)> {
    routes
        .iter()
        .enumerate()
        .map(|(i, route)| {
            let (remote_ip, flags) = match &route.target {
                DnsTarget::Ip(ip) => (ip.octets(), 0),
                DnsTarget::Host(_) => ([0; 4], rule_flags::ADDRS),
            };
            (
                key(route.port),
                RuleTarget {
                    remote_ip,
                    remote_port: route.remote_port,
                    rule_id: u16::try_from(i + 1).expect("at most MAX_RULES routes"),
                    flags,
                },
            )
        })
        .collect()
}

fn key(port: u16) -> RuleKey {
    RuleKey {
        port,
        proto: proto::TCP,
        _pad: 0,
    }
}

/// The IPv4 addresses of `host`, sorted, and until when they are valid.
async fn lookup(resolver: &TokioResolver, host: &str) -> Result<(Vec<Ipv4Addr>, Instant), String> {
    let found = resolver
        .ipv4_lookup(host)
        .await
        .map_err(|err| err.to_string())?;
    let mut addrs: Vec<Ipv4Addr> = found.iter().map(|a| a.0).collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err("no IPv4 address".to_owned());
    }
    Ok((addrs, Instant::from_std(found.valid_until())))
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
    names: Vec<Name>,
    /// Log every new connection (read from conntrack).
    pub debug: bool,
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
            names,
            debug,
            seen: std::collections::HashSet::new(),
        }
    }

    /// When the next name is due for resolution.
    #[must_use]
    pub fn next_due(&self) -> Instant {
        self.names
            .iter()
            .map(|n| n.due)
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400))
    }

    /// Resolves the names that are due (all of them if `force`) and writes changed address
    /// lists to the data plane. A name that fails to resolve keeps its last addresses.
    pub async fn refresh(&mut self, maps: &mut MapSet, force: bool) {
        let now = Instant::now();
        for name in &mut self.names {
            if !force && name.due > now {
                continue;
            }
            match lookup(&self.resolver, &name.host).await {
                Ok((addrs, valid_until)) => {
                    name.due = valid_until.max(Instant::now() + MIN_REFRESH);
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
                            tracing::error!(name = %name.host, error = %err, "updating the data plane failed");
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
    pub fn log_new_connections(&mut self, maps: &MapSet) {
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

/// The userspace relay: listens on `pod_ip` on every route's port, and relays each
/// connection from `source` until either side closes, with no idle timeout.
pub async fn relay(
    routes: Vec<DnsRoute>,
    resolver: TokioResolver,
    pod_ip: Ipv4Addr,
    source: Ipv4Addr,
    debug: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    // Every port bound before any is served: all or nothing.
    let mut listeners = Vec::new();
    for route in &routes {
        let addr = SocketAddr::from((pod_ip, route.port));
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        listeners.push(listener);
    }
    let resolver = Arc::new(resolver);
    let mut tasks = tokio::task::JoinSet::new();
    for (route, listener) in routes.into_iter().zip(listeners) {
        tasks.spawn(serve_route(
            Arc::new(route),
            listener,
            resolver.clone(),
            source,
            debug,
        ));
    }
    tokio::select! {
        () = shutdown => Ok(()),
        Some(ended) = tasks.join_next() => {
            ended.context("a relay task failed")?;
            anyhow::bail!("a relay listener stopped")
        }
    }
}

async fn serve_route(
    route: Arc<DnsRoute>,
    listener: TcpListener,
    resolver: Arc<TokioResolver>,
    source: Ipv4Addr,
    debug: bool,
) {
    let turn = Arc::new(AtomicUsize::new(0));
    loop {
        let (mut client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(port = route.port, error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (route, resolver, turn) = (route.clone(), resolver.clone(), turn.clone());
        tokio::spawn(async move {
            let addrs = match &route.target {
                DnsTarget::Ip(ip) => vec![IpAddr::V4(*ip)],
                DnsTarget::Host(host) => match lookup(&resolver, host).await {
                    Ok((addrs, _)) => {
                        // Each connection starts at the next address, so new connections
                        // spread over all of them; the others are fallbacks.
                        let first = turn.fetch_add(1, Ordering::Relaxed) % addrs.len();
                        let mut addrs: Vec<IpAddr> = addrs.into_iter().map(IpAddr::V4).collect();
                        addrs.rotate_left(first);
                        addrs
                    }
                    Err(err) => {
                        tracing::warn!(%peer, name = %host, error = %err, "resolution failed; connection closed");
                        return;
                    }
                },
            };
            let started = std::time::Instant::now();
            let mut upstream = match outbound::connect(
                &addrs,
                route.remote_port,
                source,
                Duration::from_secs(10),
            )
            .await
            {
                Ok(upstream) => upstream,
                Err(err) => {
                    tracing::warn!(%peer, port = route.port, error = %err, "connecting upstream failed; connection closed");
                    return;
                }
            };
            let _ = client.set_nodelay(true);
            let remote = upstream.peer_addr().ok();
            if debug {
                tracing::info!(
                    client = %peer,
                    port = route.port,
                    remote = %remote.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                    "connection"
                );
            }
            let result = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            if debug {
                let (sent, received) = result.as_ref().map_or((0, 0), |&(s, r)| (s, r));
                tracing::info!(
                    client = %peer,
                    port = route.port,
                    sent,
                    received,
                    seconds = started.elapsed().as_secs(),
                    error = %result.err().map_or_else(|| "-".to_owned(), |e| e.to_string()),
                    "connection closed"
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy_config::parse_dns_routes;

    #[test]
    fn names_become_flagged_rules_and_addresses_stay_fixed() {
        let routes = parse_dns_routes("80 203.0.113.10\n8080 app.example.com 80").unwrap();
        let rules = rules(&routes);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].0.port, 80);
        assert!(!rules[0].1.by_name());
        assert_eq!(rules[0].1.remote_ip, [203, 0, 113, 10]);
        assert_eq!((rules[1].0.port, rules[1].1.remote_port), (8080, 80));
        assert!(rules[1].1.by_name() && !rules[1].1.is_local());
        assert_eq!(rules[1].1.rule_id, 2);
    }
}
