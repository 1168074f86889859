//! `egress-router`: sets up the egress-router data plane and inspects it.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use egress_user::dataplane::{self, Dataplane};

#[derive(Parser)]
#[command(
    version,
    about = "Dedicated, allow-listable egress IP for pods, in eBPF"
)]
struct Cli {
    /// Root of the per-instance pin directories (must be on a bpffs).
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
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the data plane, attach it to the pod interface and pin its maps, then exit.
    /// The attachment belongs to the interface and outlives this process.
    Init {
        /// The pod interface, where clients' packets arrive.
        #[arg(long, default_value = "eth0")]
        pod_interface: String,
    },
    /// Print the data plane's packet counters and drops by reason.
    Stats,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let pin_dir = cli.bpffs.join(&cli.instance);
    match cli.command {
        Command::Init { pod_interface } => {
            let mut dp = Dataplane::load(Some(&pin_dir)).context("loading the data plane")?;
            dp.attach_pod_ingress(&pod_interface)
                .with_context(|| format!("attaching to {pod_interface}"))?;
            println!(
                "attached to {pod_interface}; maps pinned in {}",
                pin_dir.display()
            );
        }
        Command::Stats => {
            let stats = dataplane::pinned_stats(&pin_dir)
                .with_context(|| format!("reading the maps pinned in {}", pin_dir.display()))?;
            print!("{stats}");
        }
    }
    Ok(())
}
