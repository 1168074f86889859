//! `egress-router status`: interfaces, attached programs, rules with their counters.

use anyhow::Result;
use egress_user::inspect::Status;

use crate::cli::Cli;

pub(crate) fn execute(cli: &Cli, json: bool) -> Result<()> {
    let status = Status::read(
        &cli.instance,
        &cli.pod_interface,
        &cli.egress_interface,
        &cli.pin_dir(),
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{status}");
    }
    Ok(())
}
