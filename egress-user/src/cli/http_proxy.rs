//! `egress-router http-proxy`: the main container of an HTTP proxy pod.

use std::net::SocketAddr;

use anyhow::Result;
use egress_user::{
    agent::run::Signals,
    config::http_proxy::HttpRules,
    network::interface::{egress_source, pod_ip},
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
        let source = egress_source(args.egress_source.as_deref(), &cli.egress_interface).await?;
        let listen = SocketAddr::from((pod_ip(&cli.pod_interface).await?, port));
        let threads = threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            usize::from,
        );
        http_serve::run(
            listen,
            threads,
            rules,
            source,
            args.resolv_conf.clone(),
            limits,
            signals.terminated(),
        )
        .await
    })
}
