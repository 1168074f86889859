//! `egress-router http-proxy`: the main container of an HTTP proxy pod.

use std::net::SocketAddr;

use anyhow::Result;
use egress_user::{
    agent::signals::Signals,
    config::http_proxy::HttpRules,
    network::interface::{egress_sources, pod_ips},
    proxy::{
        http_serve::{self, Limits},
        outbound,
    },
};

use crate::cli::{Cli, runtime};

pub(crate) fn execute(cli: &Cli, port: u16, threads: Option<u16>, limits: Limits) -> Result<()> {
    let args = &cli.router;
    // Validate everything before listening.
    let rules = HttpRules::parse(args.http_proxy_destination.as_deref().unwrap_or(""))?;
    outbound::resolver(&args.resolv_conf)?;
    runtime()?.block_on(async {
        let signals = Signals::install()?;
        let sources = egress_sources(args.egress_source.as_deref(), &cli.egress_interface).await?;
        let listen: Vec<SocketAddr> = pod_ips(&cli.pod_interface)
            .await?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect();
        let threads = threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            usize::from,
        );
        http_serve::run(
            &listen,
            threads,
            rules,
            sources,
            args.resolv_conf.clone(),
            limits,
            signals.terminated(),
        )
        .await
    })
}
