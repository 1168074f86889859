//! The Prometheus side shared by the pod agent's metrics and the node agent's: the text
//! exposition's families, the data plane's path and drop counters, and a small HTTP/1
//! server for `/metrics` and `/healthz` over hyper, bounded in connections (all of them and
//! per source address, so that one client cannot take the others' places) and in the time
//! a client may take to send its request and to be done. `/healthz` alone can also have a
//! listener of its own ([`serve_health`]), which no scraper or slow client shares.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::Full;
use hyper::{Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::dataplane::stats::Stats;

/// Content type of the exposition (text format 0.0.4).
pub const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of everything else.
pub const PLAIN: &str = "text/plain; charset=utf-8";

/// An answer: status, content type, body.
pub type Reply = (StatusCode, &'static str, String);

/// The answer to a path nobody serves.
#[must_use]
pub fn not_found() -> Reply {
    (
        StatusCode::NOT_FOUND,
        PLAIN,
        "try /metrics or /healthz\n".to_owned(),
    )
}

/// A metric family's HELP and TYPE lines.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A metric with one unlabelled sample.
pub fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The data plane's counters: packets and bytes per path, drops per reason.
pub fn counters(out: &mut String, stats: &Stats) {
    family(
        out,
        "egress_router_packets_total",
        "counter",
        "Packets per data-plane path.",
    );
    for (stat, count) in &stats.paths {
        let _ = writeln!(
            out,
            "egress_router_packets_total{{path=\"{}\"}} {}",
            stat.name(),
            count.packets
        );
    }
    family(
        out,
        "egress_router_bytes_total",
        "counter",
        "Bytes per data-plane path.",
    );
    for (stat, count) in &stats.paths {
        let _ = writeln!(
            out,
            "egress_router_bytes_total{{path=\"{}\"}} {}",
            stat.name(),
            count.bytes
        );
    }
    family(
        out,
        "egress_router_drops_total",
        "counter",
        "Packets dropped, by reason.",
    );
    for (reason, count) in &stats.drops {
        let _ = writeln!(
            out,
            "egress_router_drops_total{{reason=\"{}\"}} {}",
            reason.name(),
            count.packets
        );
    }
}

/// How a listener bounds its clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; one more is closed at once.
    pub connections: usize,
    /// Connections served at once from one source address; one more is closed at once.
    pub per_source: usize,
    /// How long a client may take to send a request's headers (or to start its next one).
    pub header_timeout: Duration,
    /// How long a connection may last in all, whatever it does.
    pub lifetime: Duration,
    /// Whether a connection may carry more than one request.
    pub keep_alive: bool,
}

/// `/metrics` and `/healthz` together: scrapers keep their connection between scrapes.
pub const ENDPOINTS: Limits = Limits {
    connections: 64,
    per_source: 4,
    header_timeout: Duration::from_secs(10),
    lifetime: Duration::from_secs(120),
    keep_alive: true,
};

/// `/healthz` alone: a probe sends its request at once and reads a few bytes, one request
/// per connection; so each connection lasts a moment, and many fit.
pub const HEALTH: Limits = Limits {
    connections: 256,
    per_source: 4,
    header_timeout: Duration::from_secs(2),
    lifetime: Duration::from_secs(5),
    keep_alive: false,
};

/// The answer of `/healthz`: 200 while `health` says so, 503 with its reason otherwise.
fn healthz(health: &impl Fn() -> Result<(), String>) -> Reply {
    match health() {
        Ok(()) => (StatusCode::OK, PLAIN, "ok\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{why}\n")),
    }
}

/// Serves `/metrics` (the exposition `metrics` renders) and `/healthz` (200 while
/// `health` says so, 503 with its reason otherwise) on `listener`, within [`ENDPOINTS`].
pub async fn serve_endpoints<M, H>(listener: tokio::net::TcpListener, metrics: M, health: H)
where
    M: Fn() -> Result<String, String> + Send + Sync + 'static,
    H: Fn() -> Result<(), String> + Send + Sync + 'static,
{
    serve(listener, ENDPOINTS, move |path| match path {
        "/metrics" => match metrics() {
            Ok(body) => (StatusCode::OK, EXPOSITION, body),
            Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("{err}\n")),
        },
        "/healthz" => healthz(&health),
        _ => not_found(),
    })
    .await;
}

/// Serves `/healthz` alone on `listener`, within [`HEALTH`]: the liveness and readiness
/// probes' own listener, which scrapers and clients of `/metrics` do not share.
pub async fn serve_health<H>(listener: tokio::net::TcpListener, health: H)
where
    H: Fn() -> Result<(), String> + Send + Sync + 'static,
{
    serve(listener, HEALTH, move |path| match path {
        "/healthz" => healthz(&health),
        _ => (StatusCode::NOT_FOUND, PLAIN, "try /healthz\n".to_owned()),
    })
    .await;
}

/// The connections each source address holds.
#[derive(Default)]
struct Sources(Mutex<HashMap<IpAddr, usize>>);

/// One connection of a source, counted until it is dropped.
struct Held {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Sources {
    /// A place for one more connection of `ip`, unless it holds `max` already.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Held> {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = held.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Held {
            sources: self.clone(),
            ip,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self
            .sources
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// Serves `answer` (by path) on `listener` until the task is dropped, within `limits`.
pub async fn serve<F>(listener: tokio::net::TcpListener, limits: Limits, answer: F)
where
    F: Fn(&str) -> Reply + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let sources = Arc::new(Sources::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %crate::error_chain(&err), "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // An IPv4 client of a dual-stack socket is the same client as over IPv4.
        let Some(held) = sources.take(peer.ip().to_canonical(), limits.per_source) else {
            tracing::debug!(%peer, "metrics: connection closed, {} of this source served already", limits.per_source);
            continue;
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: connection closed, {} served already", limits.connections);
            continue;
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let _held = (permit, held);
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (status, content_type, body) = answer(req.uri().path());
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                *resp.status_mut() = status;
                resp.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(content_type),
                );
                std::future::ready(Ok::<_, std::convert::Infallible>(resp))
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(limits.keep_alive)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(limits.lifetime, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %crate::error_chain(&err), "metrics: connection ended with an error");
                }
                Err(_) => {
                    tracing::debug!(%peer, "metrics: connection closed after {:?}", limits.lifetime)
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_its_share_and_gets_it_back() {
        let sources = Arc::new(Sources::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held: Vec<Held> = (0..4).map(|_| sources.take(a, 4).unwrap()).collect();
        assert!(
            sources.take(a, 4).is_none(),
            "a fifth connection of one source"
        );
        let other = sources.take(b, 4);
        assert!(other.is_some(), "another source has its own share");
        drop(held);
        drop(other);
        assert!(sources.0.lock().unwrap().is_empty(), "nothing left behind");
        assert!(sources.take(a, 4).is_some());
    }
}
