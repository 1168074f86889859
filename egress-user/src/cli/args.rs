//! The option groups the subcommands are made of, one concern each (where an instance's
//! pins are, its interfaces, the OpenShift variables, how the egress interface is set up,
//! conntrack, the agent, the proxies' resolver). A subcommand flattens the groups it reads
//! and no other, so its `--help` lists what applies to it; the mode-less form
//! ([`crate::cli::Modeless`]) has every group its implicit commands read. Values are
//! validated in `egress_user::config`, not here.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum, builder::FalseyValueParser};
use egress_user::{
    config::{
        agents::{Conntrack, Listen},
        error::ConfigError,
        mode::Mode,
    },
    dataplane::attach::Choice,
    instance::setup::Settings,
    kernel::{Plane, Report},
    network::plan::MacvlanMode,
    pod_agent::run::Options as AgentOptions,
};

/// The help heading of the logging options.
const LOGGING: &str = "Logging (every command)";

/// Logging, for every command (accepted anywhere on the command line).
#[derive(Args)]
pub(crate) struct Logging {
    /// Log format: readable text, or one JSON object per line for log pipelines.
    #[arg(long, env = "EGRESS_ROUTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true, help_heading = LOGGING)]
    pub(crate) log_format: LogFormat,
    /// Non-empty: verbose logs, including per-packet events.
    #[arg(long, env = "EGRESS_ROUTER_DEBUG", global = true, help_heading = LOGGING)]
    pub(crate) debug: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

impl Logging {
    /// EGRESS_ROUTER_DEBUG: set and not empty.
    pub(crate) fn debug(&self) -> bool {
        is_set(self.debug.as_deref())
    }
}

/// A flag variable: set and not empty.
pub(crate) fn is_set(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

/// How the TC programs attach, for the commands that attach them.
#[derive(Args)]
pub(crate) struct AttachKind {
    /// How the TC programs attach: `auto` (TCX where the kernel has it, Linux 6.6, else a
    /// clsact qdisc with cls_bpf filters), `tcx`, or `tc`.
    #[arg(long = "attach", env = "EGRESS_ROUTER_ATTACH", default_value = "auto", value_parser = parse_attach)]
    pub(crate) attach: Choice,
}

fn parse_attach(value: &str) -> Result<Choice, String> {
    value.parse()
}

impl AttachKind {
    /// The kernel checks of `plane`'s data plane, before anything changes (see
    /// [`egress_user::kernel::ready`]).
    pub(crate) fn ready(&self, plane: Plane) -> Result<Report> {
        Ok(egress_user::kernel::ready(plane, self.attach)?)
    }
}

/// The bpffs root (the node agent's pins are in `node` below it).
#[derive(Args)]
pub(crate) struct BpffsRoot {
    /// Root of the per-instance pin directories (mounted as bpffs if it is not one).
    #[arg(long, env = "EGRESS_ROUTER_BPFFS", default_value = egress_common::DEFAULT_BPFFS_ROOT)]
    pub(crate) bpffs: PathBuf,
}

/// Where an instance's pins are.
#[derive(Args)]
pub(crate) struct Pins {
    #[command(flatten)]
    pub(crate) root: BpffsRoot,
    /// Instance name: the pin directory below the bpffs root.
    #[arg(long, env = "EGRESS_ROUTER_INSTANCE", default_value = "default")]
    pub(crate) instance: String,
}

impl Pins {
    /// The instance's pin directory.
    pub(crate) fn dir(&self) -> PathBuf {
        self.root.bpffs.join(&self.instance)
    }
}

#[derive(Args)]
pub(crate) struct PodInterface {
    /// The pod interface, where clients' packets arrive.
    #[arg(long, default_value = "eth0")]
    pub(crate) pod_interface: String,
}

#[derive(Args)]
pub(crate) struct EgressInterface {
    /// The egress interface that holds EGRESS_SOURCE.
    #[arg(long, default_value = "macvlan0")]
    pub(crate) egress_interface: String,
}

#[derive(Args)]
pub(crate) struct Source {
    /// The dedicated source address: A.B.C.D (added as /32) or A.B.C.D/N.
    #[arg(long, env = "EGRESS_SOURCE")]
    pub(crate) egress_source: Option<String>,
}

#[derive(Args)]
pub(crate) struct Gateway {
    /// The gateway of the egress network.
    #[arg(long, env = "EGRESS_GATEWAY")]
    pub(crate) egress_gateway: Option<String>,
}

#[derive(Args)]
pub(crate) struct Destination {
    /// Redirect rules, one per line: `PORT PROTO IP [REMOTEPORT]`, or a last bare `IP`.
    #[arg(long, env = "EGRESS_DESTINATION")]
    pub(crate) egress_destination: Option<String>,
}

#[derive(Args)]
pub(crate) struct MacvlanParent {
    /// Create the egress interface as a macvlan on this interface when it does not exist.
    #[arg(long, env = "EGRESS_ROUTER_MACVLAN_PARENT")]
    pub(crate) macvlan_parent: Option<String>,
}

#[derive(Args)]
pub(crate) struct MacvlanModeArg {
    /// Mode of a macvlan created with --macvlan-parent: private (as openshift-sdn), vepa,
    /// bridge or passthru.
    #[arg(long, env = "EGRESS_ROUTER_MACVLAN_MODE", default_value = "private")]
    pub(crate) macvlan_mode: MacvlanMode,
}

#[derive(Args)]
pub(crate) struct KeepMac {
    /// Keep the egress interface's own MAC instead of the one derived from EGRESS_SOURCE
    /// (02:45 and the address's four octets), which every replacement pod takes too.
    #[arg(long, env = "EGRESS_ROUTER_KEEP_MAC", value_parser = FalseyValueParser::new())]
    pub(crate) keep_mac: bool,
}

/// How the set-up makes and claims the egress interface.
#[derive(Args)]
pub(crate) struct NetworkSetup {
    #[command(flatten)]
    pub(crate) parent: MacvlanParent,
    #[command(flatten)]
    pub(crate) mode: MacvlanModeArg,
    #[command(flatten)]
    pub(crate) keep_mac: KeepMac,
    /// Claim EGRESS_SOURCE even when another host answers ARP for it (by default the
    /// set-up refuses, changing nothing: two routers with one address split its traffic).
    #[arg(long, env = "EGRESS_ROUTER_FORCE_SOURCE", value_parser = FalseyValueParser::new())]
    pub(crate) force_source: bool,
}

/// The conntrack options of both agents (validated by
/// [`egress_user::config::agents::Conntrack`]).
#[derive(Args)]
pub(crate) struct ConntrackArgs {
    /// Conntrack capacity in flows (the table holds two entries per flow).
    #[arg(long, env = "EGRESS_ROUTER_CONNTRACK_SIZE", default_value_t = egress_common::DEFAULT_CONNTRACK_FLOWS)]
    pub(crate) conntrack_size: u32,
    /// Longest interval between conntrack GC passes, in seconds (shorter as the table
    /// fills): 0.1 to 86400.
    #[arg(long, env = "EGRESS_ROUTER_GC_MAX_INTERVAL", default_value_t = 30.0)]
    pub(crate) gc_max_interval: f64,
    /// Flows one client address may hold (answered and not yet answered); a client over it
    /// gets no new flow until it holds fewer. Default: a quarter of --conntrack-size, and at
    /// most a quarter of the translated ports a remote offers (7936); 0: no limit. Counted
    /// by the agent's GC.
    #[arg(long, env = "EGRESS_ROUTER_MAX_FLOWS_PER_SOURCE")]
    pub(crate) max_flows_per_source: Option<u32>,
    /// The networks client pods come from (the cluster's pod network, e.g. 10.128.0.0/14;
    /// comma-separated, IPv4 and IPv6): a new flow from any other source is dropped
    /// (bad_source). Default: any address that can be a client (not the egress side,
    /// loopback, multicast, the pod's own). Pod mode.
    #[arg(long, env = "EGRESS_ROUTER_CLIENT_CIDRS")]
    pub(crate) client_cidrs: Option<String>,
}

impl ConntrackArgs {
    pub(crate) fn validate(&self) -> Result<Conntrack, ConfigError> {
        Conntrack::new(
            self.conntrack_size,
            self.gc_max_interval,
            self.max_flows_per_source,
            self.client_cidrs.as_deref(),
        )
    }
}

/// The pod agent's options (legacy mode, and the DNS proxy in the data plane).
#[derive(Args)]
pub(crate) struct AgentArgs {
    /// Where the agent serves /metrics and /healthz: `:PORT` on the pod IP, ADDRESS:PORT,
    /// or `off`.
    #[arg(long, env = "EGRESS_ROUTER_METRICS_ADDRESS", default_value = ":9469")]
    pub(crate) metrics_address: Listen,
    /// Where the agent also serves /healthz alone, for the probes: `:PORT` on the pod IP,
    /// ADDRESS:PORT, or `off`. A listener of its own, which scrapers and slow clients of
    /// /metrics do not share.
    #[arg(long, env = "EGRESS_ROUTER_HEALTH_ADDRESS", default_value = "off")]
    pub(crate) health_address: Listen,
    /// When another agent runs for the instance: stop it (SIGTERM; the data plane stays)
    /// and take its place, instead of refusing to start.
    #[arg(long, env = "EGRESS_ROUTER_TAKE_OVER", value_parser = FalseyValueParser::new())]
    pub(crate) take_over: bool,
}

impl AgentArgs {
    /// The agent's TCP ports (metrics, health) that the rules of `mode` may not take.
    pub(crate) fn reserved_in(&self, mode: Mode) -> Vec<u16> {
        let mut ports = self.metrics_address.reserved_in(mode);
        ports.extend(self.health_address.reserved_in(mode));
        ports
    }
}

#[derive(Args)]
pub(crate) struct Resolver {
    /// The resolver configuration of the proxy modes: the pod's nameservers.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub(crate) resolv_conf: PathBuf,
}

#[derive(Args)]
pub(crate) struct Json {
    /// Print JSON, for scripts, instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What an instance that sets up a data plane is made of: the groups `run` and `dns-proxy`
/// share.
pub(crate) struct Instance<'a> {
    pub(crate) pins: &'a Pins,
    pub(crate) pod: &'a PodInterface,
    pub(crate) egress: &'a EgressInterface,
    pub(crate) network: &'a NetworkSetup,
    pub(crate) agent: &'a AgentArgs,
    pub(crate) conntrack: Conntrack,
    pub(crate) debug: bool,
}

impl Instance<'_> {
    /// The instance settings, with the agent's ports `local_tcp_ports`.
    pub(crate) fn settings(&self, local_tcp_ports: Vec<u16>) -> Settings {
        Settings {
            pod_interface: self.pod.pod_interface.clone(),
            egress_interface: self.egress.egress_interface.clone(),
            macvlan_parent: self.network.parent.macvlan_parent.clone(),
            macvlan_mode: self.network.mode.macvlan_mode,
            bpffs_root: self.pins.root.bpffs.clone(),
            instance: self.pins.instance.clone(),
            conntrack_flows: self.conntrack.flows,
            client_cidrs: self.conntrack.client_cidrs.clone(),
            debug: self.debug,
            arp_request_after: Duration::from_millis(500),
            local_tcp_ports,
            stable_mac: !self.network.keep_mac.keep_mac,
            force_source: self.network.force_source,
        }
    }

    /// How the agent runs.
    pub(crate) fn agent_options(&self) -> AgentOptions {
        AgentOptions {
            metrics: self.agent.metrics_address,
            health: self.agent.health_address,
            gc_max_interval: self.conntrack.gc_max_interval,
            max_flows_per_source: self.conntrack.max_flows_per_source,
            instance: self.pins.instance.clone(),
            pod_interface: self.pod.pod_interface.clone(),
            egress_interface: self.egress.egress_interface.clone(),
        }
    }
}

/// A single-threaded runtime for a command.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
