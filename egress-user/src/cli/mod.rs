//! The command line: clap definitions, the entrypoint rule, and dispatch to one file per
//! subcommand. Every variable of OpenShift's image is also a flag.

mod attach;
mod check;
mod conntrack;
mod dns_proxy;
mod http_proxy;
mod node;
mod run;
mod stats;
mod status;
mod teardown;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum, builder::FalseyValueParser};
use egress_user::{
    config::error::ConfigError,
    instance::setup::Settings,
    network::plan::MacvlanMode,
    pod_agent::{metrics::Listen, run::Options as AgentOptions},
    proxy::http_serve::Limits,
};

#[derive(Parser)]
#[command(
    version,
    about = "Dedicated, allow-listable egress IP for pods, in eBPF"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) router: RouterArgs,
    /// Root of the per-instance pin directories (mounted as bpffs if it is not one).
    #[arg(long, env = "EGRESS_ROUTER_BPFFS", default_value = egress_common::DEFAULT_BPFFS_ROOT, global = true)]
    pub(crate) bpffs: PathBuf,
    /// Instance name: the pin directory below the bpffs root.
    #[arg(
        long,
        env = "EGRESS_ROUTER_INSTANCE",
        default_value = "default",
        global = true
    )]
    pub(crate) instance: String,
    /// The pod interface, where clients' packets arrive.
    #[arg(long, default_value = "eth0", global = true)]
    pub(crate) pod_interface: String,
    /// The egress interface that holds EGRESS_SOURCE.
    #[arg(long, default_value = "macvlan0", global = true)]
    pub(crate) egress_interface: String,
    /// Log format: readable text, or one JSON object per line for log pipelines.
    #[arg(long, env = "EGRESS_ROUTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// The OpenShift egress router variables, and the agent's options.
#[derive(Args)]
pub(crate) struct RouterArgs {
    /// The dedicated source address: A.B.C.D (added as /32) or A.B.C.D/N.
    #[arg(long, env = "EGRESS_SOURCE")]
    pub(crate) egress_source: Option<String>,
    /// The gateway of the egress network.
    #[arg(long, env = "EGRESS_GATEWAY")]
    pub(crate) egress_gateway: Option<String>,
    /// Redirect rules, one per line: `PORT PROTO IP [REMOTEPORT]`, or a last bare `IP`.
    #[arg(long, env = "EGRESS_DESTINATION")]
    pub(crate) egress_destination: Option<String>,
    /// init, legacy (default), unit-test; or http-proxy, dns-proxy: the init container of a
    /// proxy pod (network only).
    #[arg(long = "mode", env = "EGRESS_ROUTER_MODE")]
    pub(crate) mode: Option<String>,
    /// Non-empty: verbose logs, including per-packet events.
    #[arg(long, env = "EGRESS_ROUTER_DEBUG")]
    pub(crate) debug: Option<String>,
    /// Create the egress interface as a macvlan on this interface when it does not exist.
    #[arg(long, env = "EGRESS_ROUTER_MACVLAN_PARENT")]
    pub(crate) macvlan_parent: Option<String>,
    /// Mode of a macvlan created with --macvlan-parent: private (as openshift-sdn), vepa,
    /// bridge or passthru.
    #[arg(long, env = "EGRESS_ROUTER_MACVLAN_MODE", default_value = "private")]
    pub(crate) macvlan_mode: MacvlanMode,
    /// Conntrack capacity in flows (the table holds two entries per flow).
    #[arg(long, env = "EGRESS_ROUTER_CONNTRACK_SIZE", default_value_t = egress_common::DEFAULT_CONNTRACK_FLOWS, global = true)]
    pub(crate) conntrack_size: u32,
    /// A file whose content is the EGRESS_DESTINATION value (a ConfigMap key mounted as a
    /// file). It replaces the variable, and the agent applies changes to it live.
    #[arg(long, env = "EGRESS_ROUTER_CONFIG_FILE")]
    pub(crate) config_file: Option<PathBuf>,
    /// Where the agent serves /metrics and /healthz: `:PORT` on the pod IP, ADDRESS:PORT,
    /// or `off`.
    #[arg(long, env = "EGRESS_ROUTER_METRICS_ADDRESS", default_value = ":9469")]
    pub(crate) metrics_address: Listen,
    /// When another agent runs for the instance: stop it (SIGTERM; the data plane stays)
    /// and take its place, instead of refusing to start.
    #[arg(long, env = "EGRESS_ROUTER_TAKE_OVER", value_parser = FalseyValueParser::new())]
    pub(crate) take_over: bool,
    /// Keep the egress interface's own MAC instead of the one derived from EGRESS_SOURCE
    /// (02:45 and the address's four octets), which every replacement pod takes too.
    #[arg(long, env = "EGRESS_ROUTER_KEEP_MAC", value_parser = FalseyValueParser::new())]
    pub(crate) keep_mac: bool,
    /// Claim EGRESS_SOURCE even when another host answers ARP for it (by default the
    /// set-up refuses, changing nothing: two routers with one address split its traffic).
    #[arg(long, env = "EGRESS_ROUTER_FORCE_SOURCE", value_parser = FalseyValueParser::new())]
    pub(crate) force_source: bool,
    /// Longest interval between conntrack GC passes, in seconds (shorter as the table fills).
    #[arg(
        long,
        env = "EGRESS_ROUTER_GC_MAX_INTERVAL",
        default_value_t = 30.0,
        global = true
    )]
    pub(crate) gc_max_interval: f64,
    /// Flows one client address may hold (answered and not yet answered); a client over it
    /// gets no new flow until it holds fewer. Default: a quarter of --conntrack-size; 0: no
    /// limit. Counted by the agent's GC.
    #[arg(long, env = "EGRESS_ROUTER_MAX_FLOWS_PER_SOURCE", global = true)]
    pub(crate) max_flows_per_source: Option<u32>,
    /// The HTTP proxy's access rules, one per line: `*`, `!RULE`, an address or CIDR,
    /// `*.DOMAIN` or a HOST; first match wins.
    #[arg(long, env = "EGRESS_HTTP_PROXY_DESTINATION", global = true)]
    pub(crate) http_proxy_destination: Option<String>,
    /// The DNS proxy's ports, one per line: `PORT HOST [RPORT]` or `PORT IPv4 [RPORT]`.
    #[arg(long, env = "EGRESS_DNS_PROXY_DESTINATION", global = true)]
    pub(crate) dns_proxy_destination: Option<String>,
    /// Connections the DNS proxy's userspace relay serves at once; one more is closed at
    /// once.
    #[arg(long, env = "EGRESS_DNS_PROXY_MAX_CONNECTIONS", default_value_t = 4096, global = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) dns_proxy_max_connections: u32,
    /// Non-empty: the DNS proxy logs every connection.
    #[arg(long, env = "EGRESS_DNS_PROXY_DEBUG", global = true)]
    pub(crate) dns_proxy_debug: Option<String>,
    /// The resolver configuration of the proxy modes: the pod's nameservers.
    #[arg(long, default_value = "/etc/resolv.conf", global = true)]
    pub(crate) resolv_conf: PathBuf,
}

/// The HTTP proxy's options. Also parsed alone, from the environment, when the
/// entrypoint rule picks the proxy without a subcommand, so both ways read the same
/// variables, defaults and ranges.
#[derive(Parser)]
#[command(name = "egress-router http-proxy")]
pub(crate) struct HttpProxyArgs {
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

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Do what EGRESS_ROUTER_MODE says (the default).
    Run,
    /// The HTTP proxy of an HTTP proxy pod's main container (EGRESS_HTTP_PROXY_DESTINATION):
    /// forward requests and CONNECT tunnels, on the pod IP, out from EGRESS_SOURCE.
    HttpProxy(HttpProxyArgs),
    /// The DNS proxy of a DNS proxy pod's main container (EGRESS_DNS_PROXY_DESTINATION): in
    /// the data plane when the process may update BPF maps, else a userspace relay.
    DnsProxy,
    /// Low level: load the data plane and attach it to an interface's ingress without
    /// changing the network, pin its maps, and exit. The attachment belongs to the interface.
    Attach {
        /// The interface to attach to.
        #[arg(long, default_value = "eth0")]
        interface: String,
    },
    /// The running instance: interfaces, attached programs, rules with their counters.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The tracked connections: original and translated tuples, state, age.
    Conntrack {
        #[arg(long)]
        json: bool,
    },
    /// The data plane's packet counters, drops by reason and allocation retries.
    Stats,
    /// Remove what this instance added: programs, pins, the egress interface it created (or
    /// EGRESS_SOURCE and its routes on one it did not).
    Teardown,
    /// Preflight of the egress network: link, EGRESS_SOURCE free, the gateway answering the
    /// router's MAC (else: MAC filtering, and the fix per platform). Changes nothing that
    /// stays. Exit status: 0 ok, 1 setup missing, 2 link down, 3 EGRESS_SOURCE in use, 4 MAC
    /// filtered, 5 gateway unreachable.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// The node agent (a DaemonSet, hostNetwork): serves every instance whose router pod
    /// registered in the spool, from the node's uplink, with no macvlan.
    Node(node::NodeArgs),
    /// A router pod's init container in node mode: validate the variables and register the
    /// instance with the node agent.
    NodeRegister(node::RegisterArgs),
    /// The instances the node agent serves (from the node's pins under --bpffs): pod,
    /// host-side interface, EGRESS_SOURCE and gateway, rules with their counters, flows.
    /// `--instance node stats` and `--instance node conntrack` show the node's counters
    /// and flows.
    NodeStatus {
        #[arg(long)]
        json: bool,
    },
    /// Remove what the node agent left on the node (once its DaemonSet is gone): its
    /// programs on the pods' interfaces and the uplink, the XDP link, the gateways'
    /// managed neighbour entries, the node's pins. Prints what went, as JSON.
    NodeTeardown {
        #[arg(long, env = "EGRESS_ROUTER_UPLINK")]
        uplink: String,
    },
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli);
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Configuration errors are printed bare: OpenShift's texts, for scripts and docs.
            match err.downcast_ref::<ConfigError>() {
                Some(config) => eprintln!("{config}"),
                None => eprintln!("egress-router: {err:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logs(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("EGRESS_ROUTER_LOG")
        .unwrap_or_else(|_| EnvFilter::new(if cli.router.debug() { "debug" } else { "info" }));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn dispatch(mut cli: Cli) -> Result<()> {
    let command = match cli.command.take() {
        Some(command) => command,
        None => implicit_command(&cli.router)?,
    };
    match command {
        Command::Run => run::execute(&cli),
        Command::HttpProxy(args) => http_proxy::execute(
            &cli,
            args.port,
            args.threads,
            Limits {
                header_timeout: Duration::from_secs(args.header_timeout),
                max_connections: args.max_connections as usize,
                tunnel_idle: (args.tunnel_idle_timeout > 0)
                    .then(|| Duration::from_secs(args.tunnel_idle_timeout)),
            },
        ),
        Command::DnsProxy => dns_proxy::execute(&cli),
        Command::Attach { interface } => attach::execute(&cli, &interface),
        Command::Status { json } => status::execute(&cli, json),
        Command::Conntrack { json } => conntrack::execute(&cli, json),
        Command::Stats => stats::execute(&cli),
        Command::Teardown => teardown::execute(&cli),
        Command::Check { json } => check::execute(&cli, json),
        Command::Node(args) => node::execute(&cli, &args),
        Command::NodeRegister(args) => node::register(&cli, &args),
        Command::NodeStatus { json } => node::status(&cli, json),
        Command::NodeTeardown { uplink } => node::teardown(&cli, &uplink),
    }
}

/// What to do without a subcommand: the entrypoint rule that lets one image serve both
/// containers of OpenShift's proxy Deployments.
///
/// 1. `EGRESS_ROUTER_MODE` set and not empty: that mode (the init container).
/// 2. Else `EGRESS_HTTP_PROXY_DESTINATION` present: `http-proxy` (the main container).
/// 3. Else `EGRESS_DNS_PROXY_DESTINATION` present: `dns-proxy`.
/// 4. Else the default mode, legacy.
fn implicit_command(args: &RouterArgs) -> Result<Command> {
    if args.mode.as_deref().is_some_and(|m| !m.trim().is_empty()) {
        return Ok(Command::Run);
    }
    // Present counts, even empty: an empty value then gets the proxy's own error.
    let present =
        |name: &str, value: &Option<String>| value.is_some() || std::env::var_os(name).is_some();
    let http = present(
        "EGRESS_HTTP_PROXY_DESTINATION",
        &args.http_proxy_destination,
    );
    let dns = present("EGRESS_DNS_PROXY_DESTINATION", &args.dns_proxy_destination);
    match (http, dns) {
        (true, true) => bail!(
            "EGRESS_HTTP_PROXY_DESTINATION and EGRESS_DNS_PROXY_DESTINATION are both set and \
             EGRESS_ROUTER_MODE is not: run `egress-router http-proxy` or `egress-router \
             dns-proxy`, or set EGRESS_ROUTER_MODE"
        ),
        (true, false) => Ok(Command::HttpProxy(
            HttpProxyArgs::try_parse_from(["egress-router http-proxy"])
                .map_err(|err| anyhow::anyhow!("{}", err.render()))?,
        )),
        (false, true) => Ok(Command::DnsProxy),
        (false, false) => Ok(Command::Run),
    }
}

/// A flag variable: set and not empty.
fn is_set(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

impl RouterArgs {
    /// EGRESS_ROUTER_DEBUG.
    pub(crate) fn debug(&self) -> bool {
        is_set(self.debug.as_deref())
    }

    /// EGRESS_DNS_PROXY_DEBUG.
    pub(crate) fn dns_proxy_debug(&self) -> bool {
        is_set(self.dns_proxy_debug.as_deref())
    }

    /// The agent's own TCP ports on the pod IP.
    pub(crate) fn local_tcp_ports(&self) -> Vec<u16> {
        match self.metrics_address {
            Listen::Off => vec![],
            Listen::PodIp(port) => vec![port],
            Listen::At(addr) => vec![addr.port()],
        }
    }
}

impl Cli {
    /// The instance's pin directory.
    pub(crate) fn pin_dir(&self) -> PathBuf {
        self.bpffs.join(&self.instance)
    }

    /// The instance settings, with the agent's ports `local_tcp_ports`.
    pub(crate) fn settings(&self, local_tcp_ports: Vec<u16>) -> Settings {
        let args = &self.router;
        Settings {
            pod_interface: self.pod_interface.clone(),
            egress_interface: self.egress_interface.clone(),
            macvlan_parent: args.macvlan_parent.clone(),
            macvlan_mode: args.macvlan_mode,
            bpffs_root: self.bpffs.clone(),
            instance: self.instance.clone(),
            conntrack_flows: args.conntrack_size,
            debug: args.debug(),
            arp_request_after: Duration::from_millis(500),
            local_tcp_ports,
            stable_mac: !args.keep_mac,
            force_source: args.force_source,
        }
    }

    /// How the agent runs.
    pub(crate) fn agent_options(&self) -> AgentOptions {
        AgentOptions {
            metrics: self.router.metrics_address,
            gc_max_interval: Duration::from_secs_f64(self.router.gc_max_interval),
            max_flows_per_source: self.router.max_flows_per_source,
            instance: self.instance.clone(),
            pod_interface: self.pod_interface.clone(),
            egress_interface: self.egress_interface.clone(),
        }
    }
}

/// A single-threaded runtime for a command.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
