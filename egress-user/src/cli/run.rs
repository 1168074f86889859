//! The default command: what `EGRESS_ROUTER_MODE` says. `init` and `legacy` set up the
//! redirect data plane (legacy then runs the agent), `unit-test` prints the plan, and
//! `http-proxy` and `dns-proxy` set up the network and a data plane without rules (it guards
//! the egress interface) for a proxy pod's main container.

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use clap::Args;
use egress_user::{
    agent::signals::Signals,
    config::{mode::Mode, redirect::Raw, source::ConfigSource},
    dataplane::rules::RuleSet,
    instance::{Instance, source::Destinations},
    kernel::Plane,
    pod_agent::run::{prepare, run as run_agent},
};

use crate::cli::args::{
    AgentArgs, AttachKind, ConntrackArgs, Destination, EgressInterface, Gateway, Instance as Parts,
    NetworkSetup, Pins, PodInterface, Source, runtime,
};

/// How often the agent reads `--config-file` for changes.
const CONFIG_POLL: Duration = Duration::from_secs(1);

/// `run`'s options: the OpenShift variables of the redirect modes and everything the set-up
/// and the agent read.
#[derive(Args)]
pub(crate) struct RunArgs {
    /// init, legacy (default), unit-test; or http-proxy, dns-proxy: the init container of a
    /// proxy pod (network only).
    #[arg(long = "mode", env = "EGRESS_ROUTER_MODE")]
    pub(crate) mode: Option<String>,
    #[command(flatten)]
    pub(crate) source: Source,
    #[command(flatten)]
    pub(crate) gateway: Gateway,
    #[command(flatten)]
    pub(crate) destination: Destination,
    /// A file whose content is the EGRESS_DESTINATION value (a ConfigMap key mounted as a
    /// file). It replaces the variable, and the agent applies changes to it live.
    #[arg(long, env = "EGRESS_ROUTER_CONFIG_FILE")]
    pub(crate) config_file: Option<PathBuf>,
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

pub(crate) fn execute(args: &RunArgs, debug: bool) -> Result<()> {
    // Validate everything before touching anything, unit-test exactly as legacy: the
    // configuration is read once here, and the agent starts from exactly what was read.
    let raw = Raw {
        source: args.source.egress_source.clone(),
        gateway: args.gateway.egress_gateway.clone(),
        destination: None,
        mode: args.mode.clone(),
    };
    let source = ConfigSource::new(
        args.destination.egress_destination.clone(),
        args.config_file.clone(),
    );
    // The mode first, as OpenShift checks it: the agent's ports are reserved where it runs.
    let mode: Mode = args.mode.as_deref().unwrap_or("").trim().parse()?;
    let local_tcp_ports = args.agent.reserved_in(mode);
    let destinations = Destinations::load(raw, source, local_tcp_ports.clone(), CONFIG_POLL)?;
    let parts = Parts {
        pins: &args.pins,
        pod: &args.pod,
        egress: &args.egress,
        network: &args.network,
        agent: &args.agent,
        conntrack: args.conntrack.validate()?,
        debug,
    };
    let config = destinations.config().clone();
    let settings = parts.settings(local_tcp_ports);
    // The kernel, before anything changes: every mode but the plan loads the data plane.
    if config.mode != Mode::UnitTest {
        args.kernel.ready(Plane::Pod)?;
    }
    match config.mode {
        Mode::UnitTest => {
            print!(
                "{}",
                config.plan(&args.pod.pod_interface, &args.egress.egress_interface)
            );
            Ok(())
        }
        Mode::HttpProxyInit | Mode::DnsProxyInit => runtime()?.block_on(async {
            let egress = config.egress();
            // The network, and the data plane with no rule: it translates nothing, and its
            // egress-interface programs keep the egress network out of the pod (only replies
            // to the proxies' own connections come in), whatever the main container may do.
            let instance = Instance::start(&settings, &egress, true, RuleSet::default()).await?;
            instance.log_started(&settings);
            tracing::info!(
                mode = config.mode.name(),
                egress_interface = %settings.egress_interface,
                source = %config.source,
                gateway = %config.gateway,
                created_macvlan = instance.created_macvlan(),
                "network and egress guard set up; the proxy runs in the main container"
            );
            Ok(())
        }),
        Mode::Init | Mode::Legacy => runtime()?.block_on(async {
            let egress = config.egress();
            // Handlers first: a SIGTERM during set-up ends legacy mode right after it.
            let signals = Signals::install()?;
            // What can fail for the agent fails before the set-up changes anything.
            let prepared = match config.mode {
                Mode::Legacy => Some(prepare(&parts.agent_options(), args.agent.take_over).await?),
                _ => None,
            };
            let instance = Instance::start(&settings, &egress, true, destinations.rules()).await?;
            instance.log_started(&settings);
            tracing::info!(
                gateway = %config.gateway,
                mode = config.mode.name(),
                "redirect mode set up"
            );
            let Some(prepared) = prepared else {
                if settings.debug {
                    tracing::info!(
                        "init mode exits, so per-packet events are not read; run in legacy \
                         mode to see them"
                    );
                }
                return Ok(());
            };
            run_agent(
                instance,
                destinations,
                parts.agent_options(),
                signals,
                prepared,
            )
            .await
        }),
    }
}
