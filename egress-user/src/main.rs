//! `egress-router`: sets up the egress-router data plane and inspects it.
//!
//! Without a subcommand it does what `EGRESS_ROUTER_MODE` says, like OpenShift's egress
//! router image: every variable also has a flag.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use egress_user::{
    config::{Config, Mode, Raw},
    dataplane::{self, Dataplane, LoadOptions},
    network::MacvlanMode,
    redirect,
};

#[derive(Parser)]
#[command(
    version,
    about = "Dedicated, allow-listable egress IP for pods, in eBPF"
)]
struct Cli {
    #[command(flatten)]
    router: RouterArgs,
    /// Root of the per-instance pin directories (mounted as bpffs if it is not one).
    #[arg(long, env = "EGRESS_ROUTER_BPFFS", default_value = egress_common::DEFAULT_BPFFS_ROOT, global = true)]
    bpffs: PathBuf,
    /// Instance name: the pin directory below the bpffs root.
    #[arg(
        long,
        env = "EGRESS_ROUTER_INSTANCE",
        default_value = "default",
        global = true
    )]
    instance: String,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The OpenShift egress router variables, and the interfaces.
#[derive(Args)]
struct RouterArgs {
    /// The dedicated source address: A.B.C.D (added as /32) or A.B.C.D/N.
    #[arg(long, env = "EGRESS_SOURCE")]
    egress_source: Option<String>,
    /// The gateway of the egress network.
    #[arg(long, env = "EGRESS_GATEWAY")]
    egress_gateway: Option<String>,
    /// Redirect rules, one per line: `PORT PROTO IP [REMOTEPORT]`, or a last bare `IP`.
    #[arg(long, env = "EGRESS_DESTINATION")]
    egress_destination: Option<String>,
    /// init, legacy (default), unit-test, http-proxy or dns-proxy.
    #[arg(long = "mode", env = "EGRESS_ROUTER_MODE")]
    mode: Option<String>,
    /// Non-empty: verbose logs, including per-packet events.
    #[arg(long, env = "EGRESS_ROUTER_DEBUG")]
    debug: Option<String>,
    /// The pod interface, where clients' packets arrive.
    #[arg(long, default_value = "eth0")]
    pod_interface: String,
    /// The egress interface that holds EGRESS_SOURCE.
    #[arg(long, default_value = "macvlan0")]
    egress_interface: String,
    /// Create the egress interface as a macvlan on this interface when it does not exist.
    #[arg(long, env = "EGRESS_ROUTER_MACVLAN_PARENT")]
    macvlan_parent: Option<String>,
    /// Mode of a macvlan created with --macvlan-parent: private (as openshift-sdn), vepa,
    /// bridge or passthru.
    #[arg(long, default_value = "private")]
    macvlan_mode: MacvlanMode,
    /// Conntrack capacity in flows (the table holds two entries per flow).
    #[arg(long, env = "EGRESS_ROUTER_CONNTRACK_SIZE", default_value_t = egress_common::DEFAULT_CONNTRACK_FLOWS)]
    conntrack_size: u32,
}

#[derive(Subcommand)]
enum Command {
    /// Do what EGRESS_ROUTER_MODE says (the default).
    Run,
    /// Low level: load the data plane and attach it to an interface's ingress without
    /// changing the network, pin its maps, and exit. The attachment belongs to the interface.
    Attach {
        /// The interface to attach to.
        #[arg(long, default_value = "eth0")]
        interface: String,
    },
    /// Print the data plane's packet counters and drops by reason.
    Stats,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Configuration errors are printed bare: OpenShift's texts, for scripts and docs.
            match err.downcast_ref::<egress_user::config::ConfigError>() {
                Some(config) => eprintln!("{config}"),
                None => eprintln!("egress-router: {err:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn run(mut cli: Cli) -> Result<()> {
    let pin_dir = cli.bpffs.join(&cli.instance);
    match cli.command.take().unwrap_or(Command::Run) {
        Command::Run => run_mode(&cli),
        Command::Attach { interface } => {
            let mut dp =
                Dataplane::load(&LoadOptions::default()).context("loading the data plane")?;
            dp.attach_pod_ingress(&interface)
                .with_context(|| format!("attaching to {interface}"))?;
            dp.pin(&pin_dir)
                .with_context(|| format!("pinning in {}", pin_dir.display()))?;
            println!(
                "attached to {interface}; maps pinned in {}",
                pin_dir.display()
            );
            Ok(())
        }
        Command::Stats => {
            let stats = dataplane::pinned_stats(&pin_dir)
                .with_context(|| format!("reading the maps pinned in {}", pin_dir.display()))?;
            print!("{stats}");
            Ok(())
        }
    }
}

fn run_mode(cli: &Cli) -> Result<()> {
    let args = &cli.router;
    // Validate everything before touching anything.
    let config = Config::from_raw(&Raw {
        source: args.egress_source.clone(),
        gateway: args.egress_gateway.clone(),
        destination: args.egress_destination.clone(),
        mode: args.mode.clone(),
    })?;
    if args.conntrack_size == 0 {
        bail!("--conntrack-size (EGRESS_ROUTER_CONNTRACK_SIZE) must be at least 1");
    }
    match config.mode {
        Mode::UnitTest => {
            print!(
                "{}",
                config.plan(&args.pod_interface, &args.egress_interface)
            );
            Ok(())
        }
        Mode::Init | Mode::Legacy => {
            let opts = redirect::Options {
                pod_interface: args.pod_interface.clone(),
                egress_interface: args.egress_interface.clone(),
                macvlan_parent: args.macvlan_parent.clone(),
                macvlan_mode: args.macvlan_mode,
                bpffs_root: cli.bpffs.clone(),
                instance: cli.instance.clone(),
                conntrack_flows: args.conntrack_size,
                debug: args.debug.as_deref().is_some_and(|d| !d.is_empty()),
                arp_request_after: Duration::from_millis(500),
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(async {
                // Handlers first: a SIGTERM during set-up ends legacy mode right after it.
                let termination = Termination::install()?;
                let report = redirect::setup(&config, &opts).await?;
                eprintln!(
                    "egress-router: redirect mode set up: {} rules{}, {} -> {} via {}",
                    config.destinations.rules.len(),
                    if config.destinations.fallback.is_some() {
                        " and a fallback"
                    } else {
                        ""
                    },
                    opts.pod_interface,
                    opts.egress_interface,
                    config.gateway,
                );
                match (&report.pin_dir, &report.pin_warning) {
                    (Some(dir), _) => eprintln!("egress-router: maps pinned in {}", dir.display()),
                    (None, Some(why)) => eprintln!(
                        "egress-router: maps not pinned ({why}); the data plane works without pins"
                    ),
                    (None, None) => {}
                }
                if config.mode == Mode::Legacy {
                    let mut report = report;
                    let logger = if opts.debug {
                        Some(report.dataplane.logger().context("reading the data plane's log events")?)
                    } else {
                        None
                    };
                    match logger {
                        Some(logger) => {
                            // SAFETY: the logger owns its ring buffer fd and keeps it
                            // open, unchanged, for as long as the AsyncFd holds it.
                            let mut fd = unsafe {
                                tokio::io::unix::AsyncFd::register_with_interest(
                                    logger,
                                    tokio::io::Interest::READABLE,
                                )
                            }
                            .map_err(|err| err.into_parts().1)
                            .context("polling the data plane's log events")?;
                            let pump = async {
                                loop {
                                    // Woken by the ring buffer, and at least once a second in
                                    // case a wake-up was coalesced away.
                                    match tokio::time::timeout(
                                        Duration::from_secs(1),
                                        fd.readable_mut(),
                                    )
                                    .await
                                    {
                                        Ok(guard) => {
                                            let mut guard = guard?;
                                            guard.get_inner_mut().flush();
                                            guard.clear_ready();
                                        }
                                        Err(_elapsed) => fd.get_mut().flush(),
                                    }
                                }
                                #[expect(unreachable_code, reason = "gives the block its type")]
                                Ok::<(), std::io::Error>(())
                            };
                            tokio::select! {
                                () = termination.wait() => {},
                                result = pump => result.context("reading the data plane's log events")?,
                            }
                            // Events that arrived after the last wake-up.
                            fd.get_mut().flush();
                        }
                        None => termination.wait().await,
                    }
                    eprintln!("egress-router: terminating; the data plane stays attached");
                    drop(report);
                } else {
                    if opts.debug {
                        eprintln!(
                            "egress-router: init mode exits, so per-packet events are not read; \
                             run in legacy mode to see them"
                        );
                    }
                    drop(report);
                }
                Ok(())
            })
        }
        mode => bail!(
            "EGRESS_ROUTER_MODE {}: the configuration is valid, but this build does not set up \
             that mode yet",
            mode.name()
        ),
    }
}

/// SIGTERM (what Kubernetes sends) and SIGINT, caught from the start.
struct Termination {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Termination {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
