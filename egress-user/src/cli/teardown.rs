//! `egress-router teardown`.

use anyhow::Result;
use egress_user::{
    config::fields::{optional_gateways, optional_sources},
    instance::teardown::Teardown,
};

use crate::cli::{Cli, runtime};

pub(crate) fn execute(cli: &Cli) -> Result<()> {
    let args = &cli.router;
    let pin_dir = cli.pin_dir();
    let teardown = Teardown {
        instance: &cli.instance,
        pod_interface: &cli.pod_interface,
        egress_interface: &cli.egress_interface,
        pin_dir: &pin_dir,
        macvlan_mode: args.macvlan_mode,
        source: optional_sources(args.egress_source.as_deref())?,
        gateway: optional_gateways(args.egress_gateway.as_deref())?,
    };
    let done = runtime()?.block_on(teardown.run())?;
    tracing::info!(
        instance = %cli.instance,
        programs = done.programs,
        pins = done.pins,
        link = done.network.link,
        address = done.network.address,
        routes = done.network.routes,
        "teardown done"
    );
    Ok(())
}
