//! `egress-router dns-proxy`: the main container of a DNS proxy pod. In the data plane when
//! the process may load BPF programs (an instance whose rule source is the names), else the
//! userspace relay.

use anyhow::{Context as _, Result};
use egress_user::{
    agent::run::{Signals, prepare, run as run_agent},
    config::{
        dns_proxy::{check_dns_local_ports, parse_dns_routes},
        fields::{Egress, EgressSource, optional_gateway, optional_source},
    },
    instance::{
        Instance,
        names::{Names, may_use_bpf},
    },
    network::interface::{egress_source, pod_ip},
    proxy::{outbound, relay},
};

use crate::cli::Cli;

pub(crate) fn execute(cli: &Cli) -> Result<()> {
    let args = &cli.router;
    // Validate everything before touching anything.
    let routes = parse_dns_routes(args.dns_proxy_destination.as_deref().unwrap_or(""))?;
    let debug = args.dns_proxy_debug();
    let given_source = optional_source(args.egress_source.as_deref())?;
    let given_gateway = optional_gateway(args.egress_gateway.as_deref())?;
    let local_tcp_ports = args.local_tcp_ports();
    check_dns_local_ports(&routes, &local_tcp_ports)?;
    let resolver = outbound::resolver(&args.resolv_conf)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let signals = Signals::install()?;
        let source = match given_source {
            Some(source) => source,
            None => EgressSource {
                ip: egress_source(None, &cli.egress_interface).await?,
                prefix: 32,
            },
        };
        if !may_use_bpf() {
            tracing::info!(
                "serving EGRESS_DNS_PROXY_DESTINATION with the userspace relay: this process \
                 lacks CAP_NET_ADMIN and CAP_BPF (or CAP_SYS_ADMIN), which the data plane needs"
            );
            let listener_ip = pod_ip(&cli.pod_interface).await?;
            tracing::info!(routes = routes.len(), pod_ip = %listener_ip, source = %source.ip, "DNS proxy relay serving");
            relay::relay(
                routes,
                resolver,
                (listener_ip, source.ip),
                args.dns_proxy_max_connections as usize,
                debug,
                signals.terminated(),
            )
            .await?;
            tracing::info!("DNS proxy relay terminating");
            return Ok(());
        }
        // The network is set up only when this container has everything for it
        // (one-container deployments); OpenShift's init container has done it otherwise.
        let gateway = given_source.and(given_gateway);
        let settings = cli.settings(local_tcp_ports);
        let prepared = prepare(&cli.agent_options(), args.take_over).await?;
        let mut names = Names::new(resolver, &routes, debug);
        let egress = Egress {
            source,
            gateway: gateway.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            v6: None,
        };
        let mut instance =
            Instance::start(&settings, &egress, gateway.is_some(), names.rules()).await?;
        instance.log_started(&settings);
        names.refresh(&mut instance, true).await;
        tracing::info!(
            routes = routes.len(),
            source = %source.ip,
            network = gateway.is_some(),
            "DNS proxy mode set up in the data plane"
        );
        run_agent(instance, names, cli.agent_options(), signals, prepared).await
    })
}
