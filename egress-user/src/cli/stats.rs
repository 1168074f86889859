//! `egress-router stats`: the data plane's counters.

use anyhow::Result;
use egress_user::inspect::running_maps;

use crate::cli::conntrack::RunningArgs;

pub(crate) fn execute(args: &RunningArgs) -> Result<()> {
    let (maps, _) = running_maps(&args.pod.pod_interface, &args.pins.dir())?;
    print!("{}", maps.stats()?);
    Ok(())
}
