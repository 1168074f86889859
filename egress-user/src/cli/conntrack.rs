//! `egress-router conntrack`: the tracked connections.

use anyhow::Result;
use clap::Args;
use egress_user::{
    conntrack::{flows, flows_text, monotonic_ns},
    inspect::running_maps,
};

use crate::cli::args::{Json, Pins, PodInterface};

/// The options of `conntrack` and `stats`: which instance's maps to read.
#[derive(Args)]
pub(crate) struct RunningArgs {
    #[command(flatten)]
    pub(crate) pins: Pins,
    // The maps of the programs attached there when nothing is pinned.
    #[command(flatten)]
    pub(crate) pod: PodInterface,
}

/// `conntrack`'s options.
#[derive(Args)]
pub(crate) struct ConntrackArgs {
    #[command(flatten)]
    pub(crate) running: RunningArgs,
    #[command(flatten)]
    pub(crate) json: Json,
}

pub(crate) fn execute(args: &ConntrackArgs) -> Result<()> {
    let running = &args.running;
    let (maps, _) = running_maps(&running.pod.pod_interface, &running.pins.dir())?;
    let now = monotonic_ns();
    // IPv4 flows, then IPv6 ones (none without IPv6).
    let mut flows = flows(&maps.conntrack()?, now);
    flows.extend(egress_user::conntrack::flows(&maps.conntrack6()?, now));
    if args.json.json {
        println!("{}", serde_json::to_string_pretty(&flows)?);
    } else {
        print!("{}", flows_text(&flows));
    }
    Ok(())
}
