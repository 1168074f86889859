//! `egress-router`: sets up the egress-router data plane and inspects it.
//!
//! Without a subcommand it does what `EGRESS_ROUTER_MODE` says, like OpenShift's egress
//! router image: every variable also has a flag.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use egress_user::{
    agent,
    config::{Config, EgressSource, Mode, Raw},
    dataplane::{Dataplane, LoadOptions},
    inspect, metrics,
    network::{MacvlanMode, NetworkPlan},
    redirect, running,
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
    /// The pod interface, where clients' packets arrive.
    #[arg(long, default_value = "eth0", global = true)]
    pod_interface: String,
    /// The egress interface that holds EGRESS_SOURCE.
    #[arg(long, default_value = "macvlan0", global = true)]
    egress_interface: String,
    /// Log format: readable text, or one JSON object per line for log pipelines.
    #[arg(long, env = "EGRESS_ROUTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The OpenShift egress router variables, and the agent's options.
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
    /// A file whose content is the EGRESS_DESTINATION value (a ConfigMap key mounted as a
    /// file). It replaces the variable, and the agent applies changes to it live.
    #[arg(long, env = "EGRESS_ROUTER_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    /// Where the agent serves /metrics and /healthz: `:PORT` on the pod IP, ADDRESS:PORT,
    /// or `off`.
    #[arg(long, env = "EGRESS_ROUTER_METRICS_ADDRESS", default_value = ":9469")]
    metrics_address: metrics::Listen,
    /// Longest interval between conntrack GC passes, in seconds (shorter as the table fills).
    #[arg(long, default_value_t = 30.0)]
    gc_max_interval: f64,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli);
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

fn init_logs(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let debug = cli.router.debug.as_deref().is_some_and(|d| !d.is_empty());
    let filter = EnvFilter::try_from_env("EGRESS_ROUTER_LOG")
        .unwrap_or_else(|_| EnvFilter::new(if debug { "debug" } else { "info" }));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(mut cli: Cli) -> Result<()> {
    let pin_dir = cli.bpffs.join(&cli.instance);
    match cli.command.take().unwrap_or(Command::Run) {
        Command::Run => run_mode(&cli),
        Command::Attach { interface } => {
            redirect::prepare_bpffs(&cli.bpffs).map_err(anyhow::Error::msg)?;
            let mut dp = Dataplane::load(&LoadOptions {
                pin_dir: Some(pin_dir.clone()),
                ..LoadOptions::default()
            })
            .context("loading the data plane")?;
            dp.attach_pod_ingress(&interface)
                .with_context(|| format!("attaching to {interface}"))?;
            println!(
                "attached to {interface}; maps pinned in {}",
                pin_dir.display()
            );
            Ok(())
        }
        Command::Status { json } => runtime()?.block_on(status(&cli, &pin_dir, json)),
        Command::Conntrack { json } => runtime()?.block_on(async {
            let (maps, _) = open_running(&cli, &pin_dir).await?;
            let flows = inspect::flows(&maps.conntrack()?, inspect::monotonic_ns());
            if json {
                println!("{}", serde_json::to_string_pretty(&flows)?);
            } else {
                print!("{}", inspect::flows_text(&flows));
            }
            Ok(())
        }),
        Command::Stats => runtime()?.block_on(async {
            let (maps, _) = open_running(&cli, &pin_dir).await?;
            print!("{}", maps.stats()?);
            Ok(())
        }),
        Command::Teardown => runtime()?.block_on(teardown(&cli, &pin_dir)),
    }
}

async fn open_running(
    cli: &Cli,
    pin_dir: &std::path::Path,
) -> Result<(egress_user::maps::MapSet, running::Source)> {
    running::open(&cli.pod_interface, pin_dir)
        .await?
        .with_context(|| {
            format!(
                "no egress-router data plane: nothing attached to {} and no pins in {}",
                cli.pod_interface,
                pin_dir.display()
            )
        })
}

async fn status(cli: &Cli, pin_dir: &std::path::Path, json: bool) -> Result<()> {
    let (maps, source) = open_running(cli, pin_dir).await?;
    let config = maps.config()?;
    let programs = running::attached_programs(&cli.pod_interface, &cli.egress_interface).await?;
    let status = inspect::Status {
        instance: cli.instance.clone(),
        source: source.to_string(),
        pin_dir: pin_dir
            .join(egress_common::maps::CONFIG)
            .exists()
            .then(|| pin_dir.to_owned()),
        pod_interface: config.and_then(|c| inspect::ifname(c.pod_ifindex)),
        egress_interface: config.and_then(|c| inspect::ifname(c.egress_ifindex)),
        pod_ip: config.map(|c| c.pod_ip.into()),
        egress_source: config.map(|c| c.egress_source.into()),
        programs,
        rules: inspect::rules(&maps.rules()?, &maps.rule_stats()?, config.as_ref()),
        conntrack_entries: maps.conntrack()?.len(),
        conntrack_capacity: maps.info(egress_common::maps::CONNTRACK)?.max_entries(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{status}");
    }
    Ok(())
}

async fn teardown(cli: &Cli, pin_dir: &std::path::Path) -> Result<()> {
    let args = &cli.router;
    // What to remove is decided before anything is removed: the source from the variable
    // or, failing that, from the running data plane.
    let running = running::open(&cli.pod_interface, pin_dir)
        .await
        .ok()
        .flatten();
    let running_source = running
        .as_ref()
        .and_then(|(maps, _)| maps.config().ok().flatten())
        .map(|c| std::net::Ipv4Addr::from(c.egress_source));
    let source: Option<EgressSource> = match args.egress_source.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Some(
            s.parse()
                .map_err(|_| egress_user::config::ConfigError::Source)?,
        ),
        _ => running_source.map(|ip| EgressSource { ip, prefix: 32 }),
    };
    let gateway: Option<std::net::Ipv4Addr> = match args.egress_gateway.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Some(
            s.parse()
                .map_err(|_| egress_user::config::ConfigError::Gateway)?,
        ),
        _ => None,
    };
    drop(running);

    let detached = running::detach_all(&cli.pod_interface, &cli.egress_interface).await?;
    let mut pins = 0;
    if pin_dir.is_dir() {
        for entry in
            std::fs::read_dir(pin_dir).with_context(|| format!("listing {}", pin_dir.display()))?
        {
            let path = entry?.path();
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            pins += 1;
        }
        std::fs::remove_dir(pin_dir).with_context(|| format!("removing {}", pin_dir.display()))?;
    }
    let removed = match source {
        Some(source) => {
            let plan = NetworkPlan {
                egress_interface: cli.egress_interface.clone(),
                macvlan_parent: None,
                macvlan_mode: args.macvlan_mode,
                source,
                gateway: gateway.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                owner: redirect::owner_alias(&cli.instance),
            };
            plan.teardown().await?
        }
        None => {
            tracing::warn!(
                "EGRESS_SOURCE unknown (not set, no running data plane): network left as it is"
            );
            Default::default()
        }
    };
    tracing::info!(
        instance = %cli.instance,
        programs = detached,
        pins,
        link = removed.link,
        address = removed.address,
        routes = removed.routes,
        "teardown done"
    );
    Ok(())
}

fn run_mode(cli: &Cli) -> Result<()> {
    let args = &cli.router;
    let local_tcp_ports: Vec<u16> = match args.metrics_address {
        metrics::Listen::Off => vec![],
        metrics::Listen::PodIp(port) => vec![port],
        metrics::Listen::At(addr) => vec![addr.port()],
    };
    // Validate everything before touching anything.
    let raw = Raw {
        source: args.egress_source.clone(),
        gateway: args.egress_gateway.clone(),
        destination: args.egress_destination.clone(),
        mode: args.mode.clone(),
    };
    let file = args
        .config_file
        .as_deref()
        .map(agent::read_config_file)
        .transpose()?;
    let config = Config::from_raw(&Raw {
        destination: file.or_else(|| raw.destination.clone()),
        ..raw.clone()
    })?;
    if args.conntrack_size == 0 {
        bail!("--conntrack-size (EGRESS_ROUTER_CONNTRACK_SIZE) must be at least 1");
    }
    if !(args.gc_max_interval.is_finite() && args.gc_max_interval >= 0.1) {
        bail!("--gc-max-interval must be at least 0.1 seconds");
    }
    match config.mode {
        Mode::UnitTest => {
            print!("{}", config.plan(&cli.pod_interface, &cli.egress_interface));
            Ok(())
        }
        Mode::Init | Mode::Legacy => {
            let local_tcp_ports = if config.mode == Mode::Legacy {
                agent::check_local_ports(&config, &local_tcp_ports)?;
                local_tcp_ports
            } else {
                vec![]
            };
            let debug = args.debug.as_deref().is_some_and(|d| !d.is_empty());
            let opts = redirect::Options {
                pod_interface: cli.pod_interface.clone(),
                egress_interface: cli.egress_interface.clone(),
                macvlan_parent: args.macvlan_parent.clone(),
                macvlan_mode: args.macvlan_mode,
                bpffs_root: cli.bpffs.clone(),
                instance: cli.instance.clone(),
                conntrack_flows: args.conntrack_size,
                debug,
                arp_request_after: Duration::from_millis(500),
                local_tcp_ports: local_tcp_ports.clone(),
            };
            runtime()?.block_on(async {
                // Handlers first: a SIGTERM during set-up ends legacy mode right after it.
                let signals = agent::Signals::install()?;
                let report = redirect::setup(&config, &opts).await?;
                log_setup(&config, &opts, &report);
                if config.mode == Mode::Init {
                    if debug {
                        tracing::info!(
                            "init mode exits, so per-packet events are not read; run in legacy \
                             mode to see them"
                        );
                    }
                    return Ok(());
                }
                let agent_opts = agent::Options {
                    raw,
                    config_file: args.config_file.clone(),
                    config_poll: Duration::from_secs(1),
                    metrics: args.metrics_address,
                    gc_max_interval: Duration::from_secs_f64(args.gc_max_interval),
                    instance: cli.instance.clone(),
                    pod_interface: cli.pod_interface.clone(),
                    egress_interface: cli.egress_interface.clone(),
                    local_tcp_ports,
                };
                agent::run(report, config, agent_opts, signals).await
            })
        }
        mode => bail!(
            "EGRESS_ROUTER_MODE {}: the configuration is valid, but this build does not set up \
             that mode yet",
            mode.name()
        ),
    }
}

fn log_setup(config: &Config, opts: &redirect::Options, report: &redirect::Report) {
    let flows = report
        .dataplane
        .conntrack()
        .map(|t| t.len() / 2)
        .unwrap_or_default();
    match &report.adopted {
        Some(source) => tracing::info!(%source, flows, "adopted the running data plane"),
        None => tracing::info!("started a new data plane"),
    }
    if let Some(why) = &report.adopt_warning {
        tracing::warn!(reason = %why, "could not take over the running data plane's state");
    }
    tracing::info!(
        rules = config.destinations.rules.len(),
        fallback = config.destinations.fallback.map(|ip| ip.to_string()),
        pod_interface = %opts.pod_interface,
        egress_interface = %opts.egress_interface,
        gateway = %config.gateway,
        "redirect mode set up"
    );
    match (&report.pin_dir, &report.pin_warning) {
        (Some(dir), _) => tracing::info!(dir = %dir.display(), "maps pinned"),
        (None, Some(why)) => {
            tracing::warn!(reason = %why, "maps not pinned; the data plane works without pins")
        }
        (None, None) => {}
    }
}
