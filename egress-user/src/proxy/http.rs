//! The HTTP proxy (`egress-router http-proxy`, the main container of an HTTP proxy pod): a
//! forward proxy on hyper. Serving threads: [`crate::proxy::http_serve`].
//!
//! - Listens on the pod IP only (never on EGRESS_SOURCE), port 8080 by default.
//! - Plain HTTP requests in absolute form are forwarded; CONNECT opens a tunnel to any port.
//!   A numeric host (`0xcb00711a`, `3405803802`) is the IPv4 address it stands for ([`host`]).
//! - `EGRESS_HTTP_PROXY_DESTINATION` decides, first match wins ([`HttpRules::decide`]). A
//!   rule by address or CIDR is checked against the addresses the name resolves to, and an
//!   allow by such a rule connects only to the addresses inside it, so the decision and the
//!   connection agree.
//! - Outbound connections leave from EGRESS_SOURCE ([`outbound::connect`]).
//! - Denied: 403 with the rule that denied. Upstream failures: 502. One access-log line per
//!   request (target `access`), for tunnels when they close.
//!
//! Each client connection keeps its upstream connection open for the next request to the
//! same host and port, so keep-alive clients cost one upstream connection, not one per
//! request.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use hickory_resolver::TokioResolver;
use http_body_util::BodyExt as _;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    client::conn::http1::SendRequest,
    header::{self, HeaderValue},
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::{
    config::http_proxy::{HttpMatch, HttpRule, HttpRules, Verdict},
    error_chain,
    proxy::{
        headers::{connection_has, strip_hop_by_hop},
        host, outbound, pipe,
        refusal::{Body, Refusal, denied, empty, refusal_response, upstream_err},
    },
};

/// How the proxy runs.
pub struct Proxy {
    pub rules: HttpRules,
    /// EGRESS_SOURCE: outbound connections are bound to its address of their family.
    pub sources: outbound::Sources,
    /// The pod's own addresses (the pod IP, EGRESS_SOURCE): never destinations.
    pub own: Vec<IpAddr>,
    pub resolver: TokioResolver,
    /// Per address tried.
    pub connect_timeout: Duration,
    /// How long a client may take to send a request's headers, and to start the next
    /// request on a kept-alive connection (slow or silent clients cannot hold connections).
    pub header_timeout: Duration,
    /// Client connections served at once, over all serving threads; one more is closed at
    /// once. A CONNECT tunnel takes its connection's permit along for as long as it lasts.
    pub connections: Arc<tokio::sync::Semaphore>,
    /// A CONNECT tunnel idle (no byte either way) for this long is closed.
    pub tunnel_idle: Option<Duration>,
}

/// A connection's place under `--max-connections`, which a CONNECT tunnel takes over.
type Slot = Arc<Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>;

/// Serves proxy clients accepted on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pass, and let clients retry.
                    tracing::warn!(error = %error_chain(&err), "accepting a proxy connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // At the limit, the connection is closed at once: a client learns it and may retry,
        // and nothing of the proxy waits on it.
        let Ok(permit) = proxy.connections.clone().try_acquire_owned() else {
            tracing::debug!(%client, "connection closed: --max-connections reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            // Released when the connection ends, unless a tunnel took it over.
            let slot: Slot = Arc::new(Mutex::new(Some(permit)));
            let kept: Arc<Mutex<Option<Kept>>> = Arc::default();
            let header_timeout = proxy.header_timeout;
            let service = service_fn(move |req| {
                let (proxy, kept, slot) = (proxy.clone(), kept.clone(), slot.clone());
                async move { Ok::<_, Infallible>(proxy.handle(req, client, &kept, &slot).await) }
            });
            // One flattened write per message: cheaper than writev for small messages
            // (measured with the bench's HTTP load).
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .writev(false)
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%client, error = %error_chain(&err), "proxy connection ended with an error");
            }
        });
    }
}

/// The upstream connection a client connection keeps for its next request.
struct Kept {
    host: String,
    port: u16,
    addr: IpAddr,
    sender: SendRequest<Incoming>,
}

impl Proxy {
    async fn handle(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        kept: &Mutex<Option<Kept>>,
        slot: &Slot,
    ) -> Response<Body> {
        let started = Instant::now();
        let method = req.method().clone();
        let target = req.uri().clone();
        let result = if method == Method::CONNECT {
            self.tunnel(req, client, started, slot).await
        } else {
            self.forward(req, kept).await
        };
        let (response, rule, upstream) = match result {
            Ok(Handled::Tunnel) => return empty(StatusCode::OK),
            Ok(Handled::Forwarded {
                response,
                rule,
                upstream,
            }) => (response, Some(rule), Some(upstream)),
            Err((refusal, rule)) => (refusal_response(&refusal, &target.to_string()), rule, None),
        };
        tracing::info!(
            target: "access",
            %client,
            %method,
            url = %target,
            status = response.status().as_u16(),
            rule = %rule.as_deref().unwrap_or("-"),
            upstream = %upstream.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            ms = started.elapsed().as_millis() as u64,
            "request"
        );
        response
    }

    /// Forwards a request in absolute form over the kept or a new upstream connection.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        kept: &Mutex<Option<Kept>>,
    ) -> Result<Handled, (Refusal, Option<String>)> {
        let uri = req.uri().clone();
        if uri.scheme_str() != Some("http") {
            let why = if uri.scheme().is_none() {
                "not a proxy request: the request line must hold an absolute http:// URL"
            } else {
                "only http:// URLs are forwarded; use CONNECT for https"
            };
            return Err((Refusal::BadRequest(why), None));
        }
        let host = host::canonical(uri.host().unwrap_or_default())?;
        let port = uri.port_u16().unwrap_or(80);

        // Reuse the kept connection if it goes to the same place and is still usable.
        let mut reuse = take_kept(kept, &host, port);
        if let Some(k) = reuse.as_mut()
            && k.sender.ready().await.is_err()
        {
            reuse = None;
        }
        let (mut sender, addr, rule) = match reuse {
            Some(k) => match self.rules.decide(&host, &[k.addr]) {
                Verdict::Allow(rule) => (k.sender, k.addr, rule.line.clone()),
                verdict => return Err(denied(verdict)),
            },
            None => {
                let (stream, rule) = self.open(&host, port).await?;
                let addr = stream.peer_addr().map(|a| a.ip()).map_err(upstream_err)?;
                let (sender, conn) = hyper::client::conn::http1::Builder::new()
                    .writev(false)
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(upstream_err)?;
                tokio::spawn(async move {
                    if let Err(err) = conn.await {
                        tracing::debug!(error = %error_chain(&err), "upstream connection ended with an error");
                    }
                });
                (sender, addr, rule)
            }
        };

        // Origin form upstream, hop-by-hop headers dropped, Host from the URL.
        let mut origin = hyper::http::uri::Parts::default();
        origin.path_and_query = Some(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")),
        );
        *req.uri_mut() = hyper::Uri::from_parts(origin).map_err(|_| {
            (
                Refusal::BadRequest("the URL's path is invalid"),
                Some(rule.clone()),
            )
        })?;
        // Whether the client closes after this request (HTTP/1.0 does unless it asks not to).
        let close = connection_has(req.headers(), "close")
            || (req.version() == hyper::Version::HTTP_10
                && !connection_has(req.headers(), "keep-alive"));
        *req.version_mut() = hyper::Version::HTTP_11;
        strip_hop_by_hop(req.headers_mut());
        // The URL's authority replaces whatever Host the client sent (RFC 9112 section
        // 3.2.2), so the server is asked for the site the rules allowed, not another virtual
        // host behind the same address.
        let authority = match uri.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let value = HeaderValue::from_str(&authority).map_err(|_| {
            (
                Refusal::BadRequest("the URL's host is invalid"),
                Some(rule.clone()),
            )
        })?;
        req.headers_mut().insert(header::HOST, value);
        // A client that closes after this request: the upstream connection will not be
        // kept either, so ask the server to close it. The server then holds the TIME_WAIT,
        // not EGRESS_SOURCE, whose ports would otherwise run out under Connection: close.
        if close {
            req.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }

        let response = match sender.send_request(req).await {
            Ok(response) => response,
            Err(err) => return Err((Refusal::Upstream(error_chain(&err).to_string()), Some(rule))),
        };
        let (mut parts, body) = response.into_parts();
        // HTTP/1.0 closes unless it says keep-alive; a body without a length then ends
        // with the connection.
        let upstream_close = connection_has(&parts.headers, "close")
            || (parts.version == hyper::Version::HTTP_10
                && !connection_has(&parts.headers, "keep-alive"));
        strip_hop_by_hop(&mut parts.headers);
        // A proxy sends its own HTTP version (RFC 9110 section 6.2): as HTTP/1.1 a body
        // whose end was the upstream's close goes to the client chunked, so the client
        // learns where it ends without waiting for a close of its own connection.
        parts.version = hyper::Version::HTTP_11;
        if !close && !upstream_close {
            *kept
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Kept {
                host,
                port,
                addr,
                sender,
            });
        }
        Ok(Handled::Forwarded {
            response: Response::from_parts(parts, body.boxed()),
            rule,
            upstream: SocketAddr::new(addr, port),
        })
    }

    /// CONNECT: decides and connects, then answers 200 and relays bytes both ways once
    /// hyper hands the connection over. The tunnel keeps the connection's place under
    /// `--max-connections`, and ends after `--tunnel-idle-timeout` without a byte.
    async fn tunnel(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        started: Instant,
        slot: &Slot,
    ) -> Result<Handled, (Refusal, Option<String>)> {
        let Some(authority) = req.uri().authority().cloned() else {
            return Err((
                Refusal::BadRequest("CONNECT needs a host:port target"),
                None,
            ));
        };
        let host = host::canonical(authority.host())?;
        let port = authority.port_u16().unwrap_or(443);
        let (mut upstream, rule) = self.open(&host, port).await?;
        pipe::keepalive(&upstream);
        let peer = upstream.peer_addr().ok();
        let permit = slot.lock().ok().and_then(|mut slot| slot.take());
        let idle = self.tunnel_idle;
        tokio::spawn(async move {
            let _permit = permit;
            let outcome = match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    let mut upgraded = TokioIo::new(upgraded);
                    pipe::pipe(&mut upgraded, &mut upstream, idle)
                        .await
                        .map_err(|err| error_chain(&err).to_string())
                }
                Err(err) => Err(error_chain(&err).to_string()),
            };
            let (sent, received) = outcome.as_ref().map_or((0, 0), |&(s, r)| (s, r));
            tracing::info!(
                target: "access",
                %client,
                method = %Method::CONNECT,
                url = %authority,
                status = 200,
                rule = %rule,
                upstream = %peer.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                ms = started.elapsed().as_millis() as u64,
                sent,
                received,
                error = %outcome.err().as_deref().unwrap_or("-"),
                "request"
            );
        });
        Ok(Handled::Tunnel)
    }

    /// Decides on `host` and, if allowed, connects to it from EGRESS_SOURCE. Names are
    /// resolved only when a rule by address needs it or the connection does.
    async fn open(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(tokio::net::TcpStream, String), (Refusal, Option<String>)> {
        let literal: Option<IpAddr> = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok();
        let needs_addrs = self
            .rules
            .0
            .iter()
            .any(|r| matches!(r.matches, HttpMatch::Net(_)));
        let mut addrs: Option<Vec<IpAddr>> = literal.map(|ip| vec![ip]);
        let mut resolve_error = None;
        if addrs.is_none() && needs_addrs {
            match self.resolve(host).await {
                Ok(found) => addrs = Some(found),
                Err(err) => resolve_error = Some(err),
            }
        }
        let rule: &HttpRule = match self.rules.decide(host, addrs.as_deref().unwrap_or(&[])) {
            Verdict::Allow(rule) => rule,
            verdict => return Err(denied(verdict)),
        };
        let line = rule.line.clone();
        let addrs = match (addrs, resolve_error) {
            (Some(addrs), _) => addrs,
            (None, Some(err)) => return Err((Refusal::Upstream(err), Some(line))),
            (None, None) => self
                .resolve(host)
                .await
                .map_err(|err| (Refusal::Upstream(err), Some(line.clone())))?,
        };
        // An allow by address or CIDR connects only inside it; never back into the pod,
        // and only where EGRESS_SOURCE can go (the families it has an address of).
        let addrs: Vec<IpAddr> = match &rule.matches {
            HttpMatch::Net(net) => addrs
                .into_iter()
                .filter(|a| net.contains(&a.to_canonical()))
                .collect(),
            _ => addrs,
        };
        let addrs = outbound::destinations(addrs, &self.own, &self.sources);
        if addrs.is_empty() {
            return Err((
                Refusal::Forbidden(format!(
                    "{host} has no address the router may connect to (not the router pod \
                     itself, loopback, multicast or broadcast; of a family EGRESS_SOURCE \
                     has: {})",
                    self.sources
                )),
                Some(line),
            ));
        }
        let stream = outbound::connect(&addrs, port, &self.sources, self.connect_timeout)
            .await
            .map_err(|err| {
                (
                    Refusal::Upstream(format!(
                        "connecting to {host} port {port}: {}",
                        error_chain(&err)
                    )),
                    Some(line.clone()),
                )
            })?;
        Ok((stream, line))
    }

    /// The addresses of the name `host` (as an absolute name), IPv4 first.
    async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        let lookup = self
            .resolver
            .lookup_ip(outbound::absolute(host))
            .await
            .map_err(|err| format!("resolving {host}: {}", error_chain(&err)))?;
        let mut addrs: Vec<IpAddr> = lookup.iter().collect();
        addrs.sort_by_key(IpAddr::is_ipv6);
        if addrs.is_empty() {
            return Err(format!("resolving {host}: no address"));
        }
        Ok(addrs)
    }
}

enum Handled {
    Tunnel,
    Forwarded {
        response: Response<Body>,
        rule: String,
        upstream: SocketAddr,
    },
}

fn take_kept(kept: &Mutex<Option<Kept>>, host: &str, port: u16) -> Option<Kept> {
    let mut slot = kept
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let k = slot.take()?;
    (k.host == host && k.port == port && !k.sender.is_closed()).then_some(k)
}
