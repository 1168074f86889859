//! `egress-router stats`: the data plane's counters.

use anyhow::Result;
use egress_user::inspect::running_maps;

use crate::cli::Cli;

pub(crate) fn execute(cli: &Cli) -> Result<()> {
    let (maps, _) = running_maps(&cli.pod_interface, &cli.pin_dir())?;
    print!("{}", maps.stats()?);
    Ok(())
}
