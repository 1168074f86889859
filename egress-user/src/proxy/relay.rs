//! The DNS proxy's userspace relay, for a main container without the capabilities the
//! data plane needs (OpenShift runs it unprivileged): one tokio task per connection,
//! outbound from EGRESS_SOURCE, new connections spread over the name's addresses in turn.
//! Bounded: at most `max_connections` at once (one more is closed at once), and TCP
//! keepalive on both sides closes a connection whose peer vanished. No idle timeout:
//! HAProxy's one-minute idle timeout is a known pain of OpenShift's image, and a quiet
//! connection with live peers costs two sockets and a task.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
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
        outbound::{self, resolve_ipv4},
        pipe,
    },
};

/// The userspace relay: listens on `pod_ip` on every route's port, and relays each
/// connection from `source` until either side closes (no idle timeout), `max_connections`
/// at once over all routes.
pub async fn relay(
    routes: Vec<DnsRoute>,
    resolver: TokioResolver,
    (pod_ip, source): (Ipv4Addr, Ipv4Addr),
    max_connections: usize,
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
    let own: Arc<[IpAddr]> = Arc::new([IpAddr::V4(pod_ip), IpAddr::V4(source)]);
    let connections = Arc::new(Semaphore::new(max_connections));
    let mut tasks = tokio::task::JoinSet::new();
    for (route, listener) in routes.into_iter().zip(listeners) {
        tasks.spawn(serve_route(
            Arc::new(route),
            listener,
            resolver.clone(),
            (source, own.clone()),
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

/// Serves one route; `addresses` are EGRESS_SOURCE and the pod's own addresses.
async fn serve_route(
    route: Arc<DnsRoute>,
    listener: TcpListener,
    resolver: Arc<TokioResolver>,
    addresses: (Ipv4Addr, Arc<[IpAddr]>),
    connections: Arc<Semaphore>,
    debug: bool,
) {
    let (source, own) = addresses;
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
                DnsTarget::Ip(ip) => vec![IpAddr::V4(*ip)],
                DnsTarget::Host(host) => match resolve_ipv4(&resolver, host).await {
                    Ok((addrs, _)) => {
                        // Never back into the pod: a name that resolves to the pod IP would
                        // chain connections through the relay without end.
                        let mut addrs =
                            outbound::destinations_v4(addrs.into_iter().map(IpAddr::V4), &own);
                        if addrs.is_empty() {
                            tracing::warn!(%peer, name = %host, "the name resolves only to addresses of the router pod itself (or none it may reach); connection closed");
                            return;
                        }
                        // Each connection starts at the next address, so new connections
                        // spread over all of them; the others are fallbacks.
                        let first = turn.fetch_add(1, Ordering::Relaxed) % addrs.len();
                        addrs.rotate_left(first);
                        addrs.into_iter().map(IpAddr::V4).collect()
                    }
                    Err(err) => {
                        tracing::warn!(%peer, name = %host, error = %err, "resolution failed; connection closed");
                        return;
                    }
                },
            };
            let started = std::time::Instant::now();
            let sources = outbound::Sources {
                v4: Some(source),
                v6: None,
            };
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
                    tracing::warn!(%peer, port = route.port, error = %err, "connecting upstream failed; connection closed");
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
                    error = %result.err().map_or_else(|| "-".to_owned(), |e| e.to_string()),
                    "connection closed"
                );
            }
        });
    }
}
