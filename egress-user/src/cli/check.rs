//! `egress-router check`: the egress network's preflight (egress_user::network::check).
//! Exit status: 0 ok, 1 something to check from is missing, 2 link down, 3 EGRESS_SOURCE in
//! use, 4 MAC filtered, 5 gateway unreachable.

use anyhow::{Context as _, Result};
use clap::Args;
use egress_user::{
    config::{
        fields::{
            Egress, Egress4, Egress6, Gateways, Sources, check_pairs, optional_gateways,
            optional_sources,
        },
        redirect::Destinations,
    },
    network::{
        check::{CheckInput, check},
        mac::stable_mac,
    },
};

use crate::cli::args::{
    Destination, EgressInterface, Gateway, Json, KeepMac, MacvlanParent, PodInterface, Source,
    runtime,
};

/// `check`'s options: the variables it asks about, and where it asks from.
#[derive(Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub(crate) source: Source,
    #[command(flatten)]
    pub(crate) gateway: Gateway,
    #[command(flatten)]
    pub(crate) destination: Destination,
    #[command(flatten)]
    pub(crate) pod: PodInterface,
    #[command(flatten)]
    pub(crate) egress: EgressInterface,
    #[command(flatten)]
    pub(crate) parent: MacvlanParent,
    #[command(flatten)]
    pub(crate) keep_mac: KeepMac,
    #[command(flatten)]
    pub(crate) json: Json,
}

pub(crate) fn execute(args: &CheckArgs) -> Result<()> {
    let sources: Sources = optional_sources(args.source.egress_source.as_deref())?
        .context("EGRESS_SOURCE unspecified: check needs the address to claim")?;
    let gateways: Gateways = optional_gateways(args.gateway.egress_gateway.as_deref())?
        .context("EGRESS_GATEWAY unspecified: check needs the gateway to ask")?;
    check_pairs(&sources, &gateways)?;
    let egress = Egress {
        v4: sources
            .v4
            .zip(gateways.v4)
            .map(|(source, gateway)| Egress4 { source, gateway }),
        v6: sources
            .v6
            .zip(gateways.v6)
            .map(|(source, gateway)| Egress6 { source, gateway }),
    };
    let remotes = match args
        .destination
        .egress_destination
        .as_deref()
        .map(str::trim)
    {
        Some(text) if !text.is_empty() => {
            let destinations: Destinations = text.parse()?;
            // Only the families EGRESS_SOURCE has can be routed.
            destinations
                .remotes()
                .filter(|ip| {
                    if ip.is_ipv6() {
                        egress.v6.is_some()
                    } else {
                        egress.v4.is_some()
                    }
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let input = CheckInput {
        egress_interface: args.egress.egress_interface.clone(),
        pod_interface: args.pod.pod_interface.clone(),
        macvlan_parent: args.parent.macvlan_parent.clone(),
        egress,
        mac: (!args.keep_mac.keep_mac).then(|| stable_mac(egress.mac_address())),
        remotes,
    };
    let report = runtime()?.block_on(check(&input))?;
    if args.json.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    let code = report.verdict.exit_code();
    if code != 0 {
        std::process::exit(i32::from(code));
    }
    Ok(())
}
