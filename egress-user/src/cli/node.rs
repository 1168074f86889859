//! `egress-router node` (the node agent of a DaemonSet) and `egress-router node-register`
//! (a router pod's init container in node mode: validates the variables and hands the
//! instance to the agent through the spool).

use std::{net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use egress_user::{
    agent::signals::Signals,
    config::{agents::NodeListen, redirect::Raw},
    dataplane::bpffs::prepare_bpffs,
    kernel::Plane,
    network::interface::pod_ips,
    node::{
        agent::{NodeAgent, NodeOptions},
        registration::Registration,
    },
};

use crate::cli::args::{
    AttachKind, BpffsRoot, ConntrackArgs, Destination, Gateway, Json, PodInterface, Source, runtime,
};

/// The pin directory of the node agent below the bpffs root.
const NODE_PINS: &str = "node";

/// The spool: where router pods register and the node agent reads (a hostPath; a router
/// pod mounts its own directory of it).
#[derive(Args)]
pub(crate) struct Spool {
    /// The spool directory: router pods write their registrations there, the node agent
    /// reads them.
    #[arg(
        long,
        env = "EGRESS_ROUTER_SPOOL",
        default_value = "/run/egress-router/spool"
    )]
    pub(crate) spool: PathBuf,
}

/// The node agent's options.
#[derive(Args)]
pub(crate) struct NodeArgs {
    /// The node's interface toward the egress network: translated packets leave through
    /// it with its MAC, and its XDP program answers ARP for the egress addresses.
    #[arg(long, env = "EGRESS_ROUTER_UPLINK")]
    pub(crate) uplink: String,
    #[command(flatten)]
    pub(crate) spool: Spool,
    /// Static instances: a directory (a ConfigMap) of OpenShift EgressRouter resources or
    /// files of variables, which a router pod's registration may name (`node-register
    /// --config-name`).
    #[arg(long, env = "EGRESS_ROUTER_INSTANCES")]
    pub(crate) instances: Option<PathBuf>,
    /// Cloud mode: the cloud routes the egress addresses to the node's NIC (secondary
    /// IPs), so nothing answers ARP for them.
    #[arg(long, env = "EGRESS_ROUTER_NO_ARP", value_parser = clap::builder::FalseyValueParser::new())]
    pub(crate) no_arp: bool,
    /// Where `/metrics` (per instance) and `/healthz` listen: ADDRESS:PORT (the node's IP,
    /// with hostNetwork), or off.
    #[arg(
        long = "node-metrics-address",
        env = "EGRESS_ROUTER_NODE_METRICS_ADDRESS",
        default_value = "off"
    )]
    pub(crate) metrics: NodeListen,
    /// Serve IPv6 too: the node's IPv6 conntrack tables are sized as the IPv4 ones (without
    /// it they take no memory, and a registration with an IPv6 EGRESS_SOURCE is refused).
    #[arg(long, env = "EGRESS_ROUTER_NODE_IPV6", value_parser = clap::builder::FalseyValueParser::new())]
    pub(crate) ipv6: bool,
    /// How often the spool is read, in milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub(crate) rescan_ms: u64,
    #[command(flatten)]
    pub(crate) root: BpffsRoot,
    #[command(flatten)]
    pub(crate) conntrack: ConntrackArgs,
    #[command(flatten)]
    pub(crate) kernel: AttachKind,
}

pub(crate) fn execute(args: &NodeArgs) -> Result<()> {
    let conntrack = args.conntrack.validate()?;
    if !conntrack.client_cidrs.is_empty() {
        tracing::warn!(
            "--client-cidrs (EGRESS_ROUTER_CLIENT_CIDRS) is not applied in node mode yet: \
             the node's pods are its clients"
        );
    }
    let kernel = args.kernel.ready(Plane::Node)?;
    let bpffs = &args.root.bpffs;
    let pin_dir = match prepare_bpffs(bpffs) {
        Ok(()) => Some(bpffs.join(NODE_PINS)),
        Err(reason) => {
            tracing::warn!(%reason, "no persistent bpffs: the data plane lives as long as this agent");
            None
        }
    };
    let opts = NodeOptions {
        uplink: args.uplink.clone(),
        spool: args.spool.spool.clone(),
        instances: args.instances.clone(),
        pin_dir,
        conntrack_flows: conntrack.flows,
        arp: !args.no_arp,
        ipv6: args.ipv6,
        rescan: Duration::from_millis(args.rescan_ms),
        gc_max_interval: conntrack.gc_max_interval,
        max_flows_per_source: conntrack.max_flows_per_source,
        managed_neighbours: kernel.usable("managed_neighbours"),
    };
    let NodeListen(listen) = args.metrics;
    runtime()?.block_on(async {
        let signals = Signals::install()?;
        // Bound before anything changes: a port in use fails with nothing done.
        let metrics = match listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the metrics listener on {addr}"))?,
            ),
            None => None,
        };
        let agent = NodeAgent::start(opts).await?;
        tracing::info!(uplink = %args.uplink, spool = %args.spool.spool.display(), "node agent serving");
        agent.run(signals.terminated(), metrics).await
    })
}

/// `node-register`'s options.
#[derive(Args)]
pub(crate) struct RegisterArgs {
    #[command(flatten)]
    pub(crate) spool: Spool,
    /// The pod's IP (the downward API's status.podIP); default: the pod interface's first
    /// IPv4 address.
    #[arg(long, env = "POD_IP")]
    pub(crate) pod_ip: Option<IpAddr>,
    /// A dual-stack pod's IPs (the downward API's status.podIPs, comma-separated), for
    /// its IPv6 address; default: the pod interface's first global IPv6 address.
    #[arg(long, env = "POD_IPS", value_delimiter = ',')]
    pub(crate) pod_ips: Vec<IpAddr>,
    /// Stay (a router pod's main container): write the registration again whenever it is
    /// gone from the spool, and withdraw it at SIGTERM or SIGINT, so the agent drops the
    /// instance as the pod stops rather than when its interface goes.
    #[arg(long)]
    pub(crate) stay: bool,
    /// The instance is configured by the node agent's static instance NAME (an
    /// EgressRouter resource, say) instead of EGRESS_SOURCE, EGRESS_GATEWAY and
    /// EGRESS_DESTINATION, which must then be unset.
    #[arg(long, env = "EGRESS_ROUTER_CONFIG_NAME")]
    pub(crate) config_name: Option<String>,
    #[command(flatten)]
    pub(crate) source: Source,
    #[command(flatten)]
    pub(crate) gateway: Gateway,
    #[command(flatten)]
    pub(crate) destination: Destination,
    // The interface whose addresses are the pod's IPs when POD_IP or POD_IPS is not given.
    #[command(flatten)]
    pub(crate) pod: PodInterface,
}

/// How often a staying registration checks that its file is there.
const STAY_CHECK: Duration = Duration::from_secs(1);

pub(crate) fn register(args: &RegisterArgs) -> Result<()> {
    let raw = Raw {
        source: args.source.egress_source.clone(),
        gateway: args.gateway.egress_gateway.clone(),
        destination: args.destination.egress_destination.clone(),
        mode: None,
    };
    let pod_interface = &args.pod.pod_interface;
    let on_interface = match (args.pod_ip, args.pod_ips.is_empty()) {
        (Some(_), false) => Vec::new(),
        _ => runtime()?.block_on(pod_ips(pod_interface))?,
    };
    let pod_ip = match args.pod_ip {
        Some(ip) => ip,
        None => on_interface
            .iter()
            .copied()
            .find(IpAddr::is_ipv4)
            .with_context(|| format!("{pod_interface} has no IPv4 address"))?,
    };
    let IpAddr::V4(pod_ip) = pod_ip else {
        bail!(
            "POD_IP {pod_ip}: node mode needs the router pod's IPv4 address (IPv6-only pods: not yet)"
        );
    };
    let pod_ip6 = args
        .pod_ips
        .iter()
        .chain(&on_interface)
        .find_map(|ip| match ip {
            IpAddr::V6(ip) => Some(*ip),
            IpAddr::V4(_) => None,
        });
    let registration = match &args.config_name {
        Some(name) => {
            if raw.source.is_some() || raw.gateway.is_some() || raw.destination.is_some() {
                bail!(
                    "--config-name {name}: the node agent's static instance configures this one; \
                     unset EGRESS_SOURCE, EGRESS_GATEWAY and EGRESS_DESTINATION"
                );
            }
            let mut registration = Registration::of_static(pod_ip, name);
            registration.pod_ip6 = pod_ip6;
            registration
        }
        None => {
            let mut registration = Registration::new(pod_ip, &raw);
            registration.pod_ip6 = pod_ip6;
            registration.validate()?;
            registration
        }
    };
    let path = registration.write(&args.spool.spool)?;
    println!("registered with the node agent: {}", path.display());
    if !args.stay {
        return Ok(());
    }
    runtime()?.block_on(async {
        let stop = Signals::install()?.terminated();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(STAY_CHECK) => {}
            }
            if !path.exists() {
                registration.write(&args.spool.spool)?;
                tracing::info!(file = %path.display(), "registration written again");
            }
        }
        match std::fs::remove_file(&path) {
            Ok(()) => println!("registration withdrawn: {}", path.display()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).context("withdrawing the registration"),
        }
        Ok(())
    })
}

/// `node-status`'s options.
#[derive(Args)]
pub(crate) struct NodeStatusArgs {
    #[command(flatten)]
    pub(crate) root: BpffsRoot,
    #[command(flatten)]
    pub(crate) json: Json,
}

/// `node-status`: the node's instances from its pins.
pub(crate) fn status(args: &NodeStatusArgs) -> Result<()> {
    let dir = args.root.bpffs.join(NODE_PINS);
    let maps = egress_user::dataplane::maps::MapSet::from_node_pins(&dir)
        .with_context(|| format!("no node data plane pinned in {}", dir.display()))?;
    let instances = egress_user::node::status::instances(&maps)?;
    if args.json.json {
        println!("{}", serde_json::to_string_pretty(&instances)?);
    } else {
        print!("{}", egress_user::node::status::text(&instances));
    }
    Ok(())
}

/// `node-teardown`'s options.
#[derive(Args)]
pub(crate) struct NodeTeardownArgs {
    /// The node's interface toward the egress network that the node agent served.
    #[arg(long, env = "EGRESS_ROUTER_UPLINK")]
    pub(crate) uplink: String,
    #[command(flatten)]
    pub(crate) root: BpffsRoot,
}

/// `node-teardown`: removes what a node agent left (run once the agent is gone).
pub(crate) fn teardown(args: &NodeTeardownArgs) -> Result<()> {
    let dir = args.root.bpffs.join(NODE_PINS);
    let removed = runtime()?.block_on(egress_user::node::teardown::teardown(&args.uplink, &dir))?;
    println!("{}", serde_json::to_string(&removed)?);
    Ok(())
}
