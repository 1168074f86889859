//! The default command: what `EGRESS_ROUTER_MODE` says. `init` and `legacy` set up the
//! redirect data plane (legacy then runs the agent), `unit-test` prints the plan, and
//! `http-proxy` and `dns-proxy` set up the network and a data plane without rules (it guards
//! the egress interface) for a proxy pod's main container.

use std::time::Duration;

use anyhow::{Result, bail};
use egress_user::{
    agent::signals::Signals,
    config::{mode::Mode, redirect::Raw, source::ConfigSource},
    dataplane::rules::RuleSet,
    instance::{Instance, source::Destinations},
    pod_agent::run::{prepare, run as run_agent},
};

use crate::cli::{Cli, runtime};

/// How often the agent reads `--config-file` for changes.
const CONFIG_POLL: Duration = Duration::from_secs(1);

pub(crate) fn execute(cli: &Cli) -> Result<()> {
    let args = &cli.router;
    // Validate everything before touching anything; the configuration is read once here,
    // and the agent starts from exactly what was read.
    let raw = Raw {
        source: args.egress_source.clone(),
        gateway: args.egress_gateway.clone(),
        destination: None,
        mode: args.mode.clone(),
    };
    let source = ConfigSource::new(args.egress_destination.clone(), args.config_file.clone());
    // The mode first, as OpenShift checks it: only the agent (legacy) has ports of its own.
    let mode: Mode = args.mode.as_deref().unwrap_or("").trim().parse()?;
    let local_tcp_ports = if mode == Mode::Legacy {
        args.local_tcp_ports()
    } else {
        vec![]
    };
    let destinations = Destinations::load(raw, source, local_tcp_ports.clone(), CONFIG_POLL)?;
    if args.conntrack_size == 0 {
        bail!("--conntrack-size (EGRESS_ROUTER_CONNTRACK_SIZE) must be at least 1");
    }
    if !(args.gc_max_interval.is_finite() && args.gc_max_interval >= 0.1) {
        bail!("--gc-max-interval must be at least 0.1 seconds");
    }
    let config = destinations.config().clone();
    let settings = cli.settings(local_tcp_ports);
    match config.mode {
        Mode::UnitTest => {
            print!("{}", config.plan(&cli.pod_interface, &cli.egress_interface));
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
                Mode::Legacy => Some(prepare(&cli.agent_options(), args.take_over).await?),
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
                cli.agent_options(),
                signals,
                prepared,
            )
            .await
        }),
    }
}
