//! `egress-router status`: interfaces, attached programs, rules with their counters.

use anyhow::Result;
use clap::Args;
use egress_user::inspect::Status;

use crate::cli::args::{EgressInterface, Json, Pins, PodInterface};

/// `status`'s options.
#[derive(Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) pins: Pins,
    #[command(flatten)]
    pub(crate) pod: PodInterface,
    #[command(flatten)]
    pub(crate) egress: EgressInterface,
    #[command(flatten)]
    pub(crate) json: Json,
}

pub(crate) fn execute(args: &StatusArgs) -> Result<()> {
    let status = Status::read(
        &args.pins.instance,
        &args.pod.pod_interface,
        &args.egress.egress_interface,
        &args.pins.dir(),
    )?;
    if args.json.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{status}");
    }
    Ok(())
}
