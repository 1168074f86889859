//! `egress-router check`: the egress network's preflight (egress_user::network::check).
//! Exit status: 0 ok, 1 something to check from is missing, 2 link down, 3 EGRESS_SOURCE in
//! use, 4 MAC filtered, 5 gateway unreachable.

use std::net::IpAddr;

use anyhow::{Context as _, Result};
use egress_user::{
    config::{
        fields::{optional_gateway, optional_source},
        redirect::Destinations,
    },
    network::{
        check::{CheckInput, check},
        mac::stable_mac,
    },
};

use crate::cli::{Cli, runtime};

pub(crate) fn execute(cli: &Cli, json: bool) -> Result<()> {
    let args = &cli.router;
    let source = optional_source(args.egress_source.as_deref())?
        .context("EGRESS_SOURCE unspecified: check needs the address to claim")?;
    let gateway = optional_gateway(args.egress_gateway.as_deref())?
        .context("EGRESS_GATEWAY unspecified: check needs the gateway to ask")?;
    let remotes = match args.egress_destination.as_deref().map(str::trim) {
        Some(text) if !text.is_empty() => {
            let destinations: Destinations = text.parse()?;
            // EGRESS_SOURCE is IPv4 (optional_source refuses IPv6 so far), so only IPv4
            // remotes can be routed.
            destinations
                .remotes()
                .filter_map(|ip| match ip {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let input = CheckInput {
        egress_interface: cli.egress_interface.clone(),
        pod_interface: cli.pod_interface.clone(),
        macvlan_parent: args.macvlan_parent.clone(),
        source,
        gateway,
        mac: (!args.keep_mac).then(|| stable_mac(source.ip.into())),
        remotes,
    };
    let report = runtime()?.block_on(check(&input))?;
    if json {
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
