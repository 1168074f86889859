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
    dns_proxy, http_proxy, inspect, metrics,
    network::{MacvlanMode, NetworkPlan},
    outbound,
    proxy_config::HttpRules,
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
    /// The HTTP proxy's access rules, one per line: `*`, `!RULE`, an address or CIDR,
    /// `*.DOMAIN` or a HOST; first match wins.
    #[arg(long, env = "EGRESS_HTTP_PROXY_DESTINATION", global = true)]
    http_proxy_destination: Option<String>,
    /// The DNS proxy's ports, one per line: `PORT HOST [RPORT]` or `PORT IPv4 [RPORT]`.
    #[arg(long, env = "EGRESS_DNS_PROXY_DESTINATION", global = true)]
    dns_proxy_destination: Option<String>,
    /// Non-empty: the DNS proxy logs every connection.
    #[arg(long, env = "EGRESS_DNS_PROXY_DEBUG", global = true)]
    dns_proxy_debug: Option<String>,
    /// The resolver configuration of the proxy modes: the pod's nameservers.
    #[arg(long, default_value = "/etc/resolv.conf", global = true)]
    resolv_conf: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Do what EGRESS_ROUTER_MODE says (the default).
    Run,
    /// The HTTP proxy of an http-proxy pod's main container (EGRESS_HTTP_PROXY_DESTINATION):
    /// forward requests and CONNECT tunnels, on the pod IP, out from EGRESS_SOURCE.
    HttpProxy {
        /// The port on the pod IP.
        #[arg(long, default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// Serving threads (default: the CPUs this process may use, its cgroup's quota
        /// included).
        #[arg(long, env = "EGRESS_HTTP_PROXY_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
        threads: Option<u16>,
    },
    /// The DNS proxy of a dns-proxy pod's main container (EGRESS_DNS_PROXY_DESTINATION): in
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
    let command = match cli.command.take() {
        Some(command) => command,
        None => implicit_command(&cli.router)?,
    };
    match command {
        Command::Run => run_mode(&cli),
        Command::HttpProxy { port, threads } => http_proxy(&cli, port, threads),
        Command::DnsProxy => dns_proxy(&cli),
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
        (true, false) => Ok(Command::HttpProxy {
            port: 8080,
            threads: None,
        }),
        (false, true) => Ok(Command::DnsProxy),
        (false, false) => Ok(Command::Run),
    }
}

fn http_proxy(cli: &Cli, port: u16, threads: Option<u16>) -> Result<()> {
    let args = &cli.router;
    // Validate everything before listening.
    let rules = HttpRules::parse(args.http_proxy_destination.as_deref().unwrap_or(""))?;
    let resolv_conf = args.resolv_conf.clone();
    outbound::resolver(&resolv_conf)?;
    runtime()?.block_on(async {
        let signals = agent::Signals::install()?;
        let source =
            outbound::egress_source(args.egress_source.as_deref(), &cli.egress_interface).await?;
        let addr = std::net::SocketAddr::from((outbound::pod_ip(&cli.pod_interface).await?, port));
        let threads = threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            usize::from,
        );
        let listeners = http_proxy::bind(addr, threads).await?;
        tracing::info!(
            listen = %addr,
            %source,
            rules = rules.0.len(),
            threads,
            "HTTP proxy serving"
        );
        // The serving threads end with the process; a std thread reports if they fail (a
        // blocking task would hold the runtime's shutdown).
        let (failed, serving) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let result = http_proxy::serve_threads(listeners, move || {
                Ok(http_proxy::Proxy {
                    rules: rules.clone(),
                    source,
                    resolver: outbound::resolver(&resolv_conf)?,
                    connect_timeout: Duration::from_secs(10),
                })
            });
            let _ = failed.send(result);
        });
        tokio::select! {
            () = signals.terminated() => {
                tracing::info!("HTTP proxy terminating");
                Ok(())
            }
            ended = serving => ended.context("the serving threads")?,
        }
    })
}

fn dns_proxy(cli: &Cli) -> Result<()> {
    let args = &cli.router;
    // Validate everything before touching anything.
    let routes = egress_user::proxy_config::parse_dns_routes(
        args.dns_proxy_destination.as_deref().unwrap_or(""),
    )?;
    let debug = args
        .dns_proxy_debug
        .as_deref()
        .is_some_and(|d| !d.is_empty());
    let (given_source, given_gateway) = optional_source_and_gateway(args)?;
    let local_tcp_ports = metrics_ports(args.metrics_address);
    if let Some(route) = routes.iter().find(|r| local_tcp_ports.contains(&r.port)) {
        bail!(
            "EGRESS_DNS_PROXY_DESTINATION: port {} is also the agent's metrics port; choose \
             another --metrics-address port",
            route.port
        );
    }
    let resolver = outbound::resolver(&args.resolv_conf)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let signals = agent::Signals::install()?;
        let source = match given_source {
            Some(source) => source,
            None => EgressSource {
                ip: outbound::egress_source(None, &cli.egress_interface).await?,
                prefix: 32,
            },
        };
        if !dns_proxy::may_use_bpf() {
            tracing::info!(
                "serving EGRESS_DNS_PROXY_DESTINATION with the userspace relay: this process \
                 lacks CAP_NET_ADMIN and CAP_BPF (or CAP_SYS_ADMIN), which the data plane needs"
            );
            let listener_ip = outbound::pod_ip(&cli.pod_interface).await?;
            tracing::info!(routes = routes.len(), pod_ip = %listener_ip, source = %source.ip, "DNS proxy relay serving");
            dns_proxy::relay(
                routes,
                resolver,
                listener_ip,
                source.ip,
                debug,
                signals.terminated(),
            )
            .await?;
            tracing::info!("DNS proxy relay terminating");
            return Ok(());
        }
        // Network set-up only when this container has everything for it (one-container
        // deployments); OpenShift's init container has done it otherwise.
        let mut opts = redirect_options(
            cli,
            args.debug.as_deref().is_some_and(|d| !d.is_empty()),
            local_tcp_ports.clone(),
        );
        opts.network = given_source.is_some() && given_gateway.is_some();
        let config = Config {
            mode: Mode::DnsProxy,
            source,
            gateway: given_gateway.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            destinations: Default::default(),
        };
        let wanted = redirect::with_local(dns_proxy::rules(&routes), &local_tcp_ports);
        let mut names = dns_proxy::Names::new(resolver, &routes, debug);
        let mut report = redirect::setup_with_rules(&config, &opts, wanted).await?;
        names.refresh(report.dataplane.maps_mut(), true).await;
        tracing::info!(
            routes = routes.len(),
            source = %source.ip,
            network = opts.network,
            "DNS proxy mode set up in the data plane"
        );
        let agent_opts = agent_options(cli, Raw::default(), None, local_tcp_ports);
        agent::run(report, config, agent_opts, signals, Some(names)).await
    })
}

/// EGRESS_SOURCE and EGRESS_GATEWAY where a command may do without them (teardown, the
/// DNS proxy's main container): `None` when unset or empty, OpenShift's error when invalid.
fn optional_source_and_gateway(
    args: &RouterArgs,
) -> Result<(Option<EgressSource>, Option<std::net::Ipv4Addr>)> {
    let given = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let source = given(&args.egress_source)
        .map(|s| s.parse::<EgressSource>())
        .transpose()?;
    let gateway = given(&args.egress_gateway)
        .map(|s| {
            s.parse()
                .map_err(|_| egress_user::config::ConfigError::Gateway)
        })
        .transpose()?;
    Ok((source, gateway))
}

fn metrics_ports(listen: metrics::Listen) -> Vec<u16> {
    match listen {
        metrics::Listen::Off => vec![],
        metrics::Listen::PodIp(port) => vec![port],
        metrics::Listen::At(addr) => vec![addr.port()],
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
        rules: inspect::rules(
            &maps.rules()?,
            &maps.rule_stats()?,
            config.as_ref(),
            Some(&maps.rule_addrs()?),
        ),
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
    let (source, gateway) = optional_source_and_gateway(args)?;
    let source = source.or_else(|| running_source.map(|ip| EgressSource { ip, prefix: 32 }));
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
    let local_tcp_ports = metrics_ports(args.metrics_address);
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
    let debug = args.debug.as_deref().is_some_and(|d| !d.is_empty());
    match config.mode {
        Mode::HttpProxy | Mode::DnsProxy => {
            let opts = redirect_options(cli, debug, vec![]);
            runtime()?.block_on(async {
                let created = redirect::setup_network(&config, &opts).await?;
                tracing::info!(
                    mode = config.mode.name(),
                    egress_interface = %opts.egress_interface,
                    source = %config.source,
                    gateway = %config.gateway,
                    created_macvlan = created,
                    "network set up; the proxy runs in the main container"
                );
                Ok(())
            })
        }
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
            let opts = redirect_options(cli, debug, local_tcp_ports.clone());
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
                let agent_opts = agent_options(cli, raw, args.config_file.clone(), local_tcp_ports);
                agent::run(report, config, agent_opts, signals, None).await
            })
        }
    }
}

fn agent_options(
    cli: &Cli,
    raw: Raw,
    config_file: Option<PathBuf>,
    local_tcp_ports: Vec<u16>,
) -> agent::Options {
    let args = &cli.router;
    agent::Options {
        raw,
        config_file,
        config_poll: Duration::from_secs(1),
        metrics: args.metrics_address,
        gc_max_interval: Duration::from_secs_f64(args.gc_max_interval),
        instance: cli.instance.clone(),
        pod_interface: cli.pod_interface.clone(),
        egress_interface: cli.egress_interface.clone(),
        local_tcp_ports,
    }
}

fn redirect_options(cli: &Cli, debug: bool, local_tcp_ports: Vec<u16>) -> redirect::Options {
    let args = &cli.router;
    redirect::Options {
        pod_interface: cli.pod_interface.clone(),
        egress_interface: cli.egress_interface.clone(),
        macvlan_parent: args.macvlan_parent.clone(),
        macvlan_mode: args.macvlan_mode,
        bpffs_root: cli.bpffs.clone(),
        instance: cli.instance.clone(),
        conntrack_flows: args.conntrack_size,
        debug,
        arp_request_after: Duration::from_millis(500),
        local_tcp_ports,
        network: true,
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
