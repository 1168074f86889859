//! `egress-router`: sets up the egress-router data plane and inspects it.
//!
//! Without a subcommand it does what `EGRESS_ROUTER_MODE` says, like OpenShift's egress
//! router image: every variable also has a flag.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use egress_user::{
    config::{Config, Mode, Raw},
    dataplane::{self, Dataplane},
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

fn run(cli: Cli) -> Result<()> {
    let pin_dir = cli.bpffs.join(&cli.instance);
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run_mode(&cli.router),
        Command::Attach { interface } => {
            let mut dp = Dataplane::load(Some(&pin_dir)).context("loading the data plane")?;
            dp.attach_pod_ingress(&interface)
                .with_context(|| format!("attaching to {interface}"))?;
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

fn run_mode(args: &RouterArgs) -> Result<()> {
    // Validate everything before touching anything.
    let config = Config::from_raw(&Raw {
        source: args.egress_source.clone(),
        gateway: args.egress_gateway.clone(),
        destination: args.egress_destination.clone(),
        mode: args.mode.clone(),
    })?;
    match config.mode {
        Mode::UnitTest => {
            print!(
                "{}",
                config.plan(&args.pod_interface, &args.egress_interface)
            );
            Ok(())
        }
        mode => bail!(
            "EGRESS_ROUTER_MODE {}: the configuration is valid, but this build does not set up \
             that mode yet",
            mode.name()
        ),
    }
}
