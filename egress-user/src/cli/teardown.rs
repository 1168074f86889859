//! `egress-router teardown`.

use anyhow::Result;
use clap::Args;
use egress_user::{
    config::fields::{optional_gateways, optional_sources},
    instance::teardown::Teardown,
    network::plan::MacvlanMode,
};

use crate::cli::args::{EgressInterface, Gateway, Pins, PodInterface, Source, runtime};

/// `teardown`'s options: the instance, and (unless the running data plane names them)
/// EGRESS_SOURCE and EGRESS_GATEWAY to remove from an egress interface it did not create.
#[derive(Args)]
pub(crate) struct TeardownArgs {
    #[command(flatten)]
    pub(crate) pins: Pins,
    #[command(flatten)]
    pub(crate) pod: PodInterface,
    #[command(flatten)]
    pub(crate) egress: EgressInterface,
    #[command(flatten)]
    pub(crate) source: Source,
    #[command(flatten)]
    pub(crate) gateway: Gateway,
}

pub(crate) fn execute(args: &TeardownArgs) -> Result<()> {
    let pin_dir = args.pins.dir();
    let instance = &args.pins.instance;
    let teardown = Teardown {
        instance,
        pod_interface: &args.pod.pod_interface,
        egress_interface: &args.egress.egress_interface,
        pin_dir: &pin_dir,
        // Only a macvlan's creation reads its mode.
        macvlan_mode: MacvlanMode::Private,
        source: optional_sources(args.source.egress_source.as_deref())?,
        gateway: optional_gateways(args.gateway.egress_gateway.as_deref())?,
    };
    let done = runtime()?.block_on(teardown.run())?;
    tracing::info!(
        %instance,
        programs = done.programs,
        pins = done.pins,
        link = done.network.link,
        address = done.network.address,
        routes = done.network.routes,
        "teardown done"
    );
    Ok(())
}
