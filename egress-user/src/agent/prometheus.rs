//! The Prometheus side shared by the pod agent's metrics and the node agent's: the text
//! exposition's families, the data plane's path and drop counters, and a small HTTP/1
//! server for `/metrics` and `/healthz` over hyper, bounded in connections and in the time
//! a client may take to send its request.

use std::{fmt::Write as _, sync::Arc};

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

/// Serves `/metrics` (the exposition `metrics` renders) and `/healthz` (200 while
/// `health` says so, 503 with its reason otherwise) on `listener`.
pub async fn serve_endpoints<M, H>(listener: tokio::net::TcpListener, metrics: M, health: H)
where
    M: Fn() -> Result<String, String> + Send + Sync + 'static,
    H: Fn() -> Result<(), String> + Send + Sync + 'static,
{
    serve(listener, move |path| match path {
        "/metrics" => match metrics() {
            Ok(body) => (StatusCode::OK, EXPOSITION, body),
            Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("{err}\n")),
        },
        "/healthz" => match health() {
            Ok(()) => (StatusCode::OK, PLAIN, "ok\n".to_owned()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, PLAIN, format!("{why}\n")),
        },
        _ => not_found(),
    })
    .await;
}

/// Scrapers and probes served at once; one more is closed at once.
const MAX_CONNECTIONS: usize = 64;
/// How long a scraper may take to send a request's headers (or to start its next one).
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `answer` (by path) on `listener` until the task is dropped, within
/// [`MAX_CONNECTIONS`] and [`HEADER_TIMEOUT`].
pub async fn serve<F>(listener: tokio::net::TcpListener, answer: F)
where
    F: Fn(&str) -> Reply + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %crate::error_chain(&err), "metrics: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: connection closed, {MAX_CONNECTIONS} served already");
            continue;
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let _permit = permit;
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
            if let Err(err) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %crate::error_chain(&err), "metrics: connection ended with an error");
            }
        });
    }
}
