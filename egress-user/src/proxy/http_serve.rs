//! Serving the HTTP proxy: one single-threaded runtime per CPU it may use, each on its own
//! `SO_REUSEPORT` listener, so a connection and its upstream connection never change
//! threads.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use tokio::net::TcpListener;

use crate::{
    config::http_proxy::HttpRules,
    proxy::{
        http::{Proxy, serve},
        outbound,
    },
};

/// What one client may hold of the proxy.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// To send a request's headers, or to start the next request on a kept connection.
    pub header_timeout: Duration,
    /// Client connections served at once (one more is closed at once), CONNECT tunnels
    /// included for as long as they last.
    pub max_connections: usize,
    /// A CONNECT tunnel with no byte either way for this long is closed (`None`: never).
    pub tunnel_idle: Option<Duration>,
}

/// Serves `rules` on every address of `listen` (the pod's, one per family) with `threads`
/// serving threads, connecting out from `sources`, within `limits`, until `shutdown`
/// completes or a serving thread fails.
pub async fn run(
    listen: &[SocketAddr],
    threads: usize,
    rules: HttpRules,
    sources: outbound::Sources,
    resolv_conf: PathBuf,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    // Each thread gets one listener of every address.
    let mut listeners: Vec<Vec<std::net::TcpListener>> =
        (0..threads.max(1)).map(|_| Vec::new()).collect();
    for addr in listen {
        for (thread, listener) in listeners.iter_mut().zip(bind(*addr, threads).await?) {
            thread.push(listener);
        }
    }
    let own: Vec<std::net::IpAddr> = listen
        .iter()
        .map(SocketAddr::ip)
        .chain(sources.iter())
        .collect();
    tracing::info!(
        listen = ?listen,
        %sources,
        rules = rules.0.len(),
        threads,
        header_timeout_s = limits.header_timeout.as_secs_f64(),
        max_connections = limits.max_connections,
        tunnel_idle_timeout_s = limits.tunnel_idle.map_or(0, |d| d.as_secs()),
        "HTTP proxy serving"
    );
    // The serving threads end with the process; a std thread reports if they fail (a
    // blocking task would hold the runtime's shutdown).
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (failed, serving) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = serve_threads(listeners, move || {
            Ok(Proxy {
                rules: rules.clone(),
                sources,
                own: own.clone(),
                header_timeout: limits.header_timeout,
                tunnel_idle: limits.tunnel_idle,
                connections: connections.clone(),
                resolver: outbound::resolver(&resolv_conf)?,
                connect_timeout: Duration::from_secs(10),
            })
        });
        let _ = failed.send(result);
    });
    tokio::select! {
        () = shutdown => {
            tracing::info!("HTTP proxy terminating");
            Ok(())
        }
        ended = serving => ended.context("the serving threads")?,
    }
}

/// Binds `count` listeners on `addr` with SO_REUSEPORT, so that the kernel spreads new
/// connections over the serving threads. Returned as std listeners (non-blocking), for
/// each thread's own runtime.
async fn bind(addr: SocketAddr, count: usize) -> Result<Vec<std::net::TcpListener>> {
    (0..count.max(1))
        .map(|_| {
            let socket = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.set_reuseaddr(true)?;
            socket.set_reuseport(true)?;
            socket.bind(addr)?;
            socket.listen(4096)?.into_std()
        })
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("listening on {addr}"))
}

/// Serves on every listener, one thread with its own single-threaded runtime per set of
/// listeners (one per address): a client connection, its upstream connection and their
/// tasks stay on one thread, with no cross-thread wake-ups (a work-stealing runtime
/// measured ~20 % slower here). Returns only if a thread fails.
fn serve_threads(
    listeners: Vec<Vec<std::net::TcpListener>>,
    proxy: impl Fn() -> Result<Proxy> + Send + Sync + 'static,
) -> Result<()> {
    let proxy = Arc::new(proxy);
    let threads: Vec<std::thread::JoinHandle<Result<()>>> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, mine)| {
            let proxy = proxy.clone();
            std::thread::Builder::new()
                .name(format!("http-proxy-{i}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("starting a serving thread's runtime")?;
                    runtime.block_on(async {
                        let proxy = Arc::new(proxy()?);
                        let serving = mine
                            .into_iter()
                            .map(|listener| {
                                let proxy = proxy.clone();
                                async move {
                                    let listener = TcpListener::from_std(listener)?;
                                    serve(listener, proxy, std::future::pending()).await
                                }
                            })
                            .collect::<Vec<_>>();
                        futures_util::future::try_join_all(serving).await.map(drop)
                    })
                })
                .context("starting a serving thread")
        })
        .collect::<Result<_>>()?;
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a serving thread panicked"))??;
    }
    Ok(())
}
