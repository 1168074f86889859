//! `egress-router node-teardown`: removes what a node agent left on the node, once the
//! agent is gone (its DaemonSet deleted): `node_forward` from every interface that has it,
//! `node_reply` from the uplink, the XDP link's pin (and with it the program, unless a
//! running agent still holds it), the managed neighbour entries of the gateways, and the
//! node's pins. What is not there is nothing to remove.

use std::{net::Ipv4Addr, path::Path};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::{
    dataplane::{
        bpffs::remove_pins,
        discover,
        maps::MapSet,
        node::{NODE_FORWARD, NODE_REPLY},
    },
    network::{
        interface::{ifindex, link_names},
        route::forget_neighbour,
    },
};

/// What a teardown removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Removed {
    /// Interfaces `node_forward` was detached from.
    pub pod_interfaces: Vec<String>,
    /// Whether `node_reply` was on the uplink.
    pub uplink_program: bool,
    /// Gateways whose neighbour entries went.
    pub gateways: Vec<Ipv4Addr>,
    /// Pins removed (the XDP link's among them).
    pub pins: usize,
}

/// Removes the node data plane of `pin_dir` from this namespace, `uplink` its uplink.
pub async fn teardown(uplink: &str, pin_dir: &Path) -> Result<Removed> {
    let mut removed = Removed::default();
    // The gateways, from the maps while they are there.
    if let Ok(maps) = MapSet::from_node_pins(pin_dir) {
        for config in maps.node_instances()? {
            let hop = maps.node_hop(config.instance)?;
            let gateway = Ipv4Addr::from(hop.next_hop[1].to_ne_bytes());
            if !removed.gateways.contains(&gateway) {
                removed.gateways.push(gateway);
            }
        }
    }
    // Every interface, not only those the maps name: an instance dropped while the agent
    // was down leaves its program too.
    let mut names = link_names().await?;
    names.sort();
    for name in names {
        if discover::detach(&name, &NODE_FORWARD)? {
            removed.pod_interfaces.push(name);
        }
    }
    removed.uplink_program = discover::detach(uplink, &NODE_REPLY)?;
    if let Some(index) = ifindex(uplink) {
        for gateway in &removed.gateways {
            forget_neighbour(index, *gateway).await?;
        }
    }
    removed.pins = remove_pins(pin_dir)
        .with_context(|| format!("removing the pins in {}", pin_dir.display()))?;
    Ok(removed)
}
