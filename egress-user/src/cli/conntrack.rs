//! `egress-router conntrack`: the tracked connections.

use anyhow::Result;
use egress_user::{
    conntrack::{flows, flows_text, monotonic_ns},
    inspect::running_maps,
};

use crate::cli::Cli;

pub(crate) fn execute(cli: &Cli, json: bool) -> Result<()> {
    let (maps, _) = running_maps(&cli.pod_interface, &cli.pin_dir())?;
    let now = monotonic_ns();
    // IPv4 flows, then IPv6 ones (none without IPv6).
    let mut flows = flows(&maps.conntrack()?, now);
    flows.extend(egress_user::conntrack::flows(&maps.conntrack6()?, now));
    if json {
        println!("{}", serde_json::to_string_pretty(&flows)?);
    } else {
        print!("{}", flows_text(&flows));
    }
    Ok(())
}
