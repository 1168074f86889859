//! `egress-router dns-proxy`: the main container of a DNS proxy pod. In the data plane when
//! the process may load BPF programs (an instance whose rule source is the names), else the
//! userspace relay.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result};
use clap::Args;
use egress_user::{
    agent::signals::Signals,
    config::{
        dns_proxy::{check_dns_families, check_dns_local_ports, parse_dns_routes},
        fields::{
            Egress, Egress4, Egress6, EgressSource, check_pairs, optional_gateways,
            optional_sources,
        },
        mode::Mode,
    },
    instance::{
        Instance,
        names::{Names, may_use_bpf},
    },
    kernel::Plane,
    network::interface::{egress_sources, pod_ips},
    pod_agent::run::{prepare, run as run_agent},
    proxy::{outbound, relay},
};

use crate::cli::args::{
    AgentArgs, AttachKind, ConntrackArgs, EgressInterface, Gateway, Instance as Parts,
    NetworkSetup, Pins, PodInterface, Resolver, Source, is_set,
};

/// The DNS proxy's own variables.
#[derive(Args)]
pub(crate) struct DnsProxyOptions {
    /// The DNS proxy's ports, one per line: `PORT HOST [RPORT]` or `PORT IPv4 [RPORT]`.
    #[arg(long, env = "EGRESS_DNS_PROXY_DESTINATION")]
    pub(crate) dns_proxy_destination: Option<String>,
    /// Connections the DNS proxy's userspace relay serves at once; one more is closed at
    /// once.
    #[arg(long, env = "EGRESS_DNS_PROXY_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) dns_proxy_max_connections: u32,
    /// Non-empty: the DNS proxy logs every connection.
    #[arg(long, env = "EGRESS_DNS_PROXY_DEBUG")]
    pub(crate) dns_proxy_debug: Option<String>,
}

/// `dns-proxy`'s options: its own, and those of the data plane it runs in (set up here
/// when EGRESS_SOURCE and EGRESS_GATEWAY are both given).
#[derive(Args)]
pub(crate) struct DnsProxyArgs {
    #[command(flatten)]
    pub(crate) dns: DnsProxyOptions,
    #[command(flatten)]
    pub(crate) resolver: Resolver,
    #[command(flatten)]
    pub(crate) source: Source,
    #[command(flatten)]
    pub(crate) gateway: Gateway,
    #[command(flatten)]
    pub(crate) pins: Pins,
    #[command(flatten)]
    pub(crate) pod: PodInterface,
    #[command(flatten)]
    pub(crate) egress: EgressInterface,
    #[command(flatten)]
    pub(crate) network: NetworkSetup,
    #[command(flatten)]
    pub(crate) conntrack: ConntrackArgs,
    #[command(flatten)]
    pub(crate) agent: AgentArgs,
    #[command(flatten)]
    pub(crate) kernel: AttachKind,
}

pub(crate) fn execute(args: &DnsProxyArgs, log_debug: bool) -> Result<()> {
    // Validate everything before touching anything.
    let routes = parse_dns_routes(args.dns.dns_proxy_destination.as_deref().unwrap_or(""))?;
    let debug = is_set(args.dns.dns_proxy_debug.as_deref());
    let egress_source = args.source.egress_source.as_deref();
    let given_sources = optional_sources(egress_source)?;
    let given_gateways = optional_gateways(args.gateway.egress_gateway.as_deref())?;
    // Both given: a one-container deployment that sets the network up itself.
    let network = given_sources.zip(given_gateways);
    if let Some((sources, gateways)) = &network {
        check_pairs(sources, gateways)?;
    }
    let local_tcp_ports = args.agent.reserved_in(Mode::Legacy);
    check_dns_local_ports(&routes, &local_tcp_ports)?;
    let parts = Parts {
        pins: &args.pins,
        pod: &args.pod,
        egress: &args.egress,
        network: &args.network,
        agent: &args.agent,
        conntrack: args.conntrack.validate()?,
        debug: log_debug,
    };
    let resolver = outbound::resolver(&args.resolver.resolv_conf)?;
    let (pod_interface, egress_interface) =
        (&args.pod.pod_interface, &args.egress.egress_interface);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let signals = Signals::install()?;
        // EGRESS_SOURCE, or what the init container put on the egress interface.
        let sources = egress_sources(egress_source, egress_interface).await?;
        check_dns_families(&routes, sources.v4.is_some(), sources.v6.is_some())?;
        if !may_use_bpf() {
            tracing::info!(
                "serving EGRESS_DNS_PROXY_DESTINATION with the userspace relay: this process \
                 lacks CAP_NET_ADMIN and CAP_BPF (or CAP_SYS_ADMIN), which the data plane needs"
            );
            let listen = pod_ips(pod_interface).await?;
            tracing::info!(routes = routes.len(), pod_ips = ?listen, source = %sources, "DNS proxy relay serving");
            relay::relay(
                routes,
                resolver,
                (&listen, sources),
                args.dns.dns_proxy_max_connections as usize,
                debug,
                signals.terminated(),
            )
            .await?;
            tracing::info!("DNS proxy relay terminating");
            return Ok(());
        }
        // The prefixes and gateways of the variables when the network is set up here;
        // otherwise the addresses alone (OpenShift's init container has done the rest).
        let (given_sources, given_gateways) = network.unzip();
        let egress = Egress {
            v4: sources.v4.map(|ip| Egress4 {
                source: EgressSource {
                    ip,
                    prefix: given_sources.and_then(|s| s.v4).map_or(32, |s| s.prefix),
                },
                gateway: given_gateways
                    .and_then(|g| g.v4)
                    .unwrap_or(Ipv4Addr::UNSPECIFIED),
            }),
            v6: sources.v6.map(|ip| Egress6 {
                source: EgressSource {
                    ip,
                    prefix: given_sources.and_then(|s| s.v6).map_or(128, |s| s.prefix),
                },
                gateway: given_gateways
                    .and_then(|g| g.v6)
                    .unwrap_or(Ipv6Addr::UNSPECIFIED),
            }),
        };
        let settings = parts.settings(local_tcp_ports);
        args.kernel.ready(Plane::Pod)?;
        let prepared = prepare(&parts.agent_options(), args.agent.take_over).await?;
        let mut names = Names::new(
            resolver,
            &routes,
            (egress.v4.is_some(), egress.v6.is_some()),
            debug,
        );
        let mut instance =
            Instance::start(&settings, &egress, network.is_some(), names.rules()).await?;
        instance.log_started(&settings);
        names.refresh(&mut instance, true).await;
        tracing::info!(
            routes = routes.len(),
            source = %sources,
            network = network.is_some(),
            "DNS proxy mode set up in the data plane"
        );
        run_agent(instance, names, parts.agent_options(), signals, prepared).await
    })
}
