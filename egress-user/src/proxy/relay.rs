//! The DNS proxy's userspace relay, for a main container without the capabilities the
//! data plane needs (OpenShift runs it unprivileged): one tokio task per connection,
//! outbound from EGRESS_SOURCE, new connections spread over the name's addresses in turn.
//! As the data plane does, it keeps the client's family: a client over IPv6 (at the pod's
//! IPv6 address) is relayed to the name's AAAA records from EGRESS_SOURCE's IPv6 address,
//! one over IPv4 to its A records.
//! Bounded: at most `max_connections` at once (one more is closed at once), and TCP
//! keepalive on both sides closes a connection whose peer vanished. No idle timeout:
//! HAProxy's one-minute idle timeout is a known pain of OpenShift's image, and a quiet
//! connection with live peers costs two sockets and a task.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use hickory_resolver::TokioResolver;
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    config::dns_proxy::{DnsRoute, DnsTarget},
    proxy::{
        outbound::{self, Sources, destinations_of, resolve},
        pipe,
    },
};

/// The userspace relay: listens on each of `pod_ips` on every port of a route that serves
/// its family (EGRESS_SOURCE having an address of that family), and relays each
/// connection from `sources` until either side closes (no idle timeout),
/// `max_connections` at once over all routes.
pub async fn relay(
    routes: Vec<DnsRoute>,
    resolver: TokioResolver,
    (pod_ips, sources): (&[IpAddr], Sources),
    max_connections: usize,
    debug: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    // Every port bound before any is served: all or nothing.
    let mut listeners = Vec::new();
    for route in &routes {
        for &pod_ip in pod_ips {
            if !route.target.serves(pod_ip.is_ipv6()) || sources.for_addr(pod_ip).is_none() {
                continue;
            }
            let addr = SocketAddr::new(pod_ip, route.port);
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            listeners.push((route.clone(), listener));
        }
    }
    let resolver = Arc::new(resolver);
    let own: Arc<[IpAddr]> = pod_ips.iter().copied().chain(sources.iter()).collect();
    let connections = Arc::new(Semaphore::new(max_connections));
    let mut tasks = tokio::task::JoinSet::new();
    for (route, listener) in listeners {
        tasks.spawn(serve_route(
            Arc::new(route),
            listener,
            resolver.clone(),
            (sources, own.clone()),
            connections.clone(),
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

/// Serves one route on one of the pod's addresses (its family is the connections');
/// `addresses` are EGRESS_SOURCE and the pod's own addresses.
async fn serve_route(
    route: Arc<DnsRoute>,
    listener: TcpListener,
    resolver: Arc<TokioResolver>,
    addresses: (Sources, Arc<[IpAddr]>),
    connections: Arc<Semaphore>,
    debug: bool,
) {
    let (sources, own) = addresses;
    let v6 = listener.local_addr().is_ok_and(|a| a.is_ipv6());
    let turn = Arc::new(AtomicUsize::new(0));
    loop {
        let (mut client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(port = route.port, error = %crate::error_chain(&err), "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, port = route.port, "connection closed: --dns-proxy-max-connections reached");
            drop(client);
            continue;
        };
        let (route, resolver, turn, own) =
            (route.clone(), resolver.clone(), turn.clone(), own.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let addrs = match &route.target {
                DnsTarget::Ip(ip) => vec![*ip],
                DnsTarget::Host(host) => match resolve(&resolver, host, v6).await {
                    Ok((addrs, _)) => {
                        // Never back into the pod: a name that resolves to the pod IP would
                        // chain connections through the relay without end.
                        let mut addrs = destinations_of(&addrs, &own, v6);
                        if addrs.is_empty() {
                            tracing::warn!(%peer, name = %host, "the name resolves only to addresses of the router pod itself (or none it may reach); connection closed");
                            return;
                        }
                        // Each connection starts at the next address, so new connections
                        // spread over all of them; the others are fallbacks.
                        let first = turn.fetch_add(1, Ordering::Relaxed) % addrs.len();
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
                &sources,
                Duration::from_secs(10),
            )
            .await
            {
                Ok(upstream) => upstream,
                Err(err) => {
                    tracing::warn!(%peer, port = route.port, error = %crate::error_chain(&err), "connecting upstream failed; connection closed");
                    return;
                }
            };
            let _ = client.set_nodelay(true);
            pipe::keepalive(&client);
            pipe::keepalive(&upstream);
            let remote = upstream.peer_addr().ok();
            if debug {
                tracing::info!(
                    client = %peer,
                    port = route.port,
                    remote = %remote.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                    "connection"
                );
            }
            let result = pipe::pipe(&mut client, &mut upstream, None).await;
            if debug {
                let (sent, received) = result.as_ref().map_or((0, 0), |&(s, r)| (s, r));
                tracing::info!(
                    client = %peer,
                    port = route.port,
                    sent,
                    received,
                    seconds = started.elapsed().as_secs(),
                    error = %result.err().map_or_else(|| "-".to_owned(), |e| crate::error_chain(&e).to_string()),
                    "connection closed"
                );
            }
        });
    }
}
