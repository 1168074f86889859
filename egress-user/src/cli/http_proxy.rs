//! `egress-router http-proxy`: the main container of an HTTP proxy pod.

use std::{net::SocketAddr, time::Duration};

use anyhow::Result;
use clap::{Args, Parser};
use egress_user::{
    agent::signals::Signals,
    config::http_proxy::HttpRules,
    network::interface::{egress_sources, pod_ips},
    proxy::{
        http_serve::{self, Limits},
        outbound,
    },
};

use crate::cli::args::{EgressInterface, PodInterface, Resolver, Source, runtime};

/// The HTTP proxy's serving options. Also parsed alone, from the environment, when the
/// entrypoint rule picks the proxy without a subcommand, so both ways read the same
/// variables, defaults and ranges.
#[derive(Parser)]
#[command(name = "egress-router http-proxy")]
pub(crate) struct HttpProxyOptions {
    /// The port on the pod IP.
    #[arg(long, default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: u16,
    /// Serving threads (default: the CPUs this process may use, its cgroup's quota
    /// included).
    #[arg(long, env = "EGRESS_HTTP_PROXY_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) threads: Option<u16>,
    /// Seconds a client may take to send a request's headers, or to start its next
    /// request on a kept-alive connection.
    #[arg(long, env = "EGRESS_HTTP_PROXY_HEADER_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) header_timeout: u64,
    /// Client connections served at once; one more is closed at once.
    #[arg(long, env = "EGRESS_HTTP_PROXY_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_connections: u32,
    /// Seconds a CONNECT tunnel may go without a byte either way before it is closed
    /// (squid's read_timeout); 0: never.
    #[arg(
        long,
        env = "EGRESS_HTTP_PROXY_TUNNEL_IDLE_TIMEOUT",
        default_value_t = 900
    )]
    pub(crate) tunnel_idle_timeout: u64,
}

/// The HTTP proxy's access rules.
#[derive(Args)]
pub(crate) struct HttpProxyRules {
    /// The HTTP proxy's access rules, one per line: `*`, `!RULE`, an address or CIDR,
    /// `*.DOMAIN` or a HOST; first match wins.
    #[arg(long, env = "EGRESS_HTTP_PROXY_DESTINATION")]
    pub(crate) http_proxy_destination: Option<String>,
}

/// `http-proxy`'s options.
#[derive(Args)]
pub(crate) struct HttpProxyArgs {
    #[command(flatten)]
    pub(crate) options: HttpProxyOptions,
    #[command(flatten)]
    pub(crate) rules: HttpProxyRules,
    #[command(flatten)]
    pub(crate) resolver: Resolver,
    // EGRESS_SOURCE, or (unset) the addresses the init container put on the egress
    // interface: what the proxy sends from.
    #[command(flatten)]
    pub(crate) source: Source,
    #[command(flatten)]
    pub(crate) pod: PodInterface,
    #[command(flatten)]
    pub(crate) egress: EgressInterface,
}

pub(crate) fn execute(args: &HttpProxyArgs) -> Result<()> {
    let options = &args.options;
    let limits = Limits {
        header_timeout: Duration::from_secs(options.header_timeout),
        max_connections: options.max_connections as usize,
        tunnel_idle: (options.tunnel_idle_timeout > 0)
            .then(|| Duration::from_secs(options.tunnel_idle_timeout)),
    };
    // Validate everything before listening.
    let rules = HttpRules::parse(args.rules.http_proxy_destination.as_deref().unwrap_or(""))?;
    let resolv_conf = &args.resolver.resolv_conf;
    outbound::resolver(resolv_conf)?;
    runtime()?.block_on(async {
        let signals = Signals::install()?;
        let sources = egress_sources(
            args.source.egress_source.as_deref(),
            &args.egress.egress_interface,
        )
        .await?;
        let listen: Vec<SocketAddr> = pod_ips(&args.pod.pod_interface)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, options.port))
            .collect();
        let threads = options.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            usize::from,
        );
        http_serve::run(
            &listen,
            threads,
            rules,
            sources,
            resolv_conf.clone(),
            limits,
            signals.terminated(),
        )
        .await
    })
}
