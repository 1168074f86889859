//! `egress-router conntrack`: the tracked connections.

use anyhow::Result;
use egress_user::{
    conntrack::{flows, flows_text, monotonic_ns},
    inspect::running_maps,
};

use crate::cli::Cli;

pub(crate) fn execute(cli: &Cli, json: bool) -> Result<()> {
    let (maps, _) = running_maps(&cli.pod_interface, &cli.pin_dir())?;
    let flows = flows(&maps.conntrack()?, monotonic_ns());
    if json {
        println!("{}", serde_json::to_string_pretty(&flows)?);
    } else {
        print!("{}", flows_text(&flows));
    }
    Ok(())
}
