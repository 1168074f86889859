//! `egress-router node-teardown`: removes what a node agent left on the node, once the
//! agent is gone (its DaemonSet deleted): `node_forward` from every interface that has it,
//! `node_reply` from the uplink, the XDP link's pin (and with it the program, unless a
//! running agent still holds it), the managed neighbour entries of the gateways, and the
//! node's pins. What is not there is nothing to remove.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{Context as _, Result};
use egress_common::config_flags;
use serde::Serialize;

use crate::{
    dataplane::{
        attach,
        bpffs::remove_pins,
        maps::MapSet,
        programs::{Interfaces, Mode},
    },
    network::{
        interface::{ifindex, ifname, link_names},
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
    pub gateways: Vec<IpAddr>,
    /// Pins removed (the XDP link's among them).
    pub pins: usize,
}

/// Removes the node data plane of `pin_dir` from this namespace, `uplink` its uplink.
pub async fn teardown(uplink: &str, pin_dir: &Path) -> Result<Removed> {
    let mut removed = Removed::default();
    // The clsact qdiscs the agent made: the uplink's, and its instances' host sides.
    let mut made_clsact = Vec::new();
    // The gateways, from the maps while they are there.
    if let Ok(maps) = MapSet::from_node_pins(pin_dir) {
        if maps.node_uplink()?.flags as u32 & config_flags::CLSACT_EGRESS_SIDE != 0 {
            made_clsact.push(uplink.to_owned());
        }
        for config in maps.node_instances()? {
            if config.flags & config_flags::CLSACT_POD_SIDE != 0
                && let Some(name) = ifname(config.host_ifindex())
            {
                made_clsact.push(name);
            }
            let hop = maps.node_hop(config.instance)?;
            let config6 = maps.node_config6(config.instance)?;
            let v4 = Ipv4Addr::from(hop.next_hop[1].to_ne_bytes());
            let v6 = Ipv6Addr::from(config6.next_hop_addr());
            let gateways = [
                (!v4.is_unspecified()).then_some(IpAddr::V4(v4)),
                (!v6.is_unspecified()).then_some(IpAddr::V6(v6)),
            ];
            for gateway in gateways.into_iter().flatten() {
                if !removed.gateways.contains(&gateway) {
                    removed.gateways.push(gateway);
                }
            }
        }
    }
    // Every interface, not only those the maps name: an instance dropped while the agent
    // was down leaves its program too.
    let mut names = link_names().await?;
    names.sort();
    for name in names {
        if attach::detach_all(Mode::Node, &Interfaces::host(&name))? > 0 {
            removed.pod_interfaces.push(name);
        }
    }
    // The uplink's TC programs; its XDP link goes with the pins.
    removed.uplink_program = attach::detach_all(Mode::Node, &Interfaces::uplink(uplink))? > 0;
    for name in &made_clsact {
        attach::release_clsact(name, true)?;
    }
    if let Some(index) = ifindex(uplink) {
        for gateway in &removed.gateways {
            forget_neighbour(index, *gateway).await?;
        }
    }
    removed.pins = remove_pins(pin_dir)
        .with_context(|| format!("removing the pins in {}", pin_dir.display()))?;
    Ok(removed)
}
