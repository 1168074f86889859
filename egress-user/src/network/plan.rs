//! Network set-up of the egress interface through rtnetlink: the macvlan (when asked to create
//! it), EGRESS_SOURCE on it (and its IPv6 half, [`crate::network::plan6`]), link up, a host route to the gateway and the default route via
//! the gateway on that interface (cluster routes stay on the pod interface), and IPv4
//! forwarding off (the pod must not route between the two networks); and its teardown.
//!
//! [`NetworkPlan::apply`] first resolves everything it needs without changing anything, then
//! makes the changes with replace semantics, so running it again after a pod restart leaves
//! the same state.

use std::{
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
};

use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkMacVlan, LinkUnspec, RouteMessageBuilder,
    packet_route::{
        address::AddressAttribute,
        link::{LinkAttribute, MacVlanMode},
        route::RouteScope,
    },
};

use crate::{
    config::fields::{Egress4, Egress6},
    network::{
        error::Error,
        interface::{link_by_name, link_mac, netlink},
        mac::{mac_text, parse_mac},
        plan6,
    },
};

fn link_alias(link: &rtnetlink::packet_route::link::LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::IfAlias(alias) => Some(alias.as_str()),
        _ => None,
    })
}

/// Mode of a macvlan created by egress-router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacvlanMode {
    /// No traffic between macvlans of the same parent (what openshift-sdn uses).
    Private,
    Vepa,
    Bridge,
    Passthru,
}

impl FromStr for MacvlanMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "private" => Ok(Self::Private),
            "vepa" => Ok(Self::Vepa),
            "bridge" => Ok(Self::Bridge),
            "passthru" => Ok(Self::Passthru),
            other => Err(format!(
                "unknown macvlan mode '{other}' (private, vepa, bridge or passthru)"
            )),
        }
    }
}

impl From<MacvlanMode> for MacVlanMode {
    fn from(mode: MacvlanMode) -> Self {
        match mode {
            MacvlanMode::Private => Self::Private,
            MacvlanMode::Vepa => Self::Vepa,
            MacvlanMode::Bridge => Self::Bridge,
            MacvlanMode::Passthru => Self::Passthrough,
        }
    }
}

/// The alias egress-router gives an interface it creates, so that teardown removes only
/// what this instance added.
#[must_use]
pub fn owner_alias(instance: &str) -> String {
    format!("egress-router:{instance}")
}

/// What the egress side of the pod needs.
#[derive(Clone, Debug)]
pub struct NetworkPlan {
    /// The interface that holds EGRESS_SOURCE (`macvlan0`).
    pub egress_interface: String,
    /// Create the egress interface as a macvlan on this parent when it does not exist.
    pub macvlan_parent: Option<String>,
    pub macvlan_mode: MacvlanMode,
    /// EGRESS_SOURCE's IPv4 address and the IPv4 gateway, if it has one.
    pub v4: Option<Egress4>,
    /// EGRESS_SOURCE's IPv6 address and the IPv6 gateway, if it has one
    /// ([`crate::network::plan6`]).
    pub v6: Option<Egress6>,
    /// The alias given to a macvlan created here, which marks it as this instance's.
    pub owner: String,
    /// The MAC the egress interface takes ([`crate::network::claim::stable_mac`]), or None
    /// to keep its own.
    pub mac: Option<[u8; 6]>,
}

/// The alias of an egress interface this instance did not create but gave its stable MAC:
/// the owner and the interface's own MAC, which teardown gives back.
fn mac_alias(owner: &str, original: [u8; 6]) -> String {
    format!("{owner} mac {}", mac_text(original))
}

/// What [`NetworkPlan::teardown`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// The egress interface, created by this instance (its address and routes went with it).
    pub link: bool,
    /// EGRESS_SOURCE on an egress interface this instance did not create.
    pub address: bool,
    /// Routes via EGRESS_GATEWAY on an egress interface this instance did not create.
    pub routes: usize,
    /// The interface's own MAC, given back (it had taken the stable MAC).
    pub mac: bool,
}

/// What [`NetworkPlan::apply`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub egress_ifindex: u32,
    pub egress_mac: [u8; 6],
    /// Whether the macvlan was created by this run.
    pub created_macvlan: bool,
}

impl NetworkPlan {
    /// Applies the plan in the current network namespace (of the calling thread).
    pub async fn apply(&self) -> Result<Applied, Error> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
        let connection = tokio::spawn(connection);
        let result = self.apply_with(&handle).await;
        connection.abort();
        result
    }

    async fn apply_with(&self, handle: &Handle) -> Result<Applied, Error> {
        let iface = self.egress_interface.as_str();
        // Resolve first: nothing changes unless every interface needed is there.
        if self.v6.is_some() {
            plan6::check_kernel()?;
        }
        let existing = link_by_name(handle, iface).await?;
        let parent = match (&existing, &self.macvlan_parent) {
            (Some(_), _) => None,
            (None, Some(parent)) => Some(
                link_by_name(handle, parent)
                    .await?
                    .ok_or_else(|| Error::NoParent(parent.clone()))?,
            ),
            (None, None) => return Err(Error::NoEgressInterface(iface.to_owned())),
        };

        let created_macvlan = parent.is_some();
        let link = match (existing, parent) {
            (Some(link), _) => link,
            (None, Some(parent)) => {
                let msg =
                    LinkMacVlan::new(iface, parent.header.index, self.macvlan_mode.into()).build();
                netlink(handle.link().add(msg).execute().await, || {
                    format!("creating macvlan {iface}")
                })?;
                link_by_name(handle, iface)
                    .await?
                    .ok_or_else(|| Error::NoEgressInterface(iface.to_owned()))?
            }
            (None, None) => unreachable!("returned above"),
        };
        let index = link.header.index;
        let own_mac = link_mac(&link).ok_or_else(|| Error::NoMac(iface.to_owned()))?;
        let alias = link_alias(&link);
        // A created macvlan is marked as ours; one of the cluster's that takes the stable
        // MAC keeps its own MAC in the alias, for teardown (unless a run before us did).
        let mark = if created_macvlan {
            Some(self.owner.clone())
        } else {
            match self.mac {
                Some(mac)
                    if mac != own_mac && !alias.is_some_and(|a| a.starts_with(&self.owner)) =>
                {
                    Some(mac_alias(&self.owner, own_mac))
                }
                _ => None,
            }
        };
        if let Some(mark) = mark {
            netlink(
                handle
                    .link()
                    .set(
                        LinkUnspec::new_with_index(index)
                            .append_extra_attribute(LinkAttribute::IfAlias(mark.clone()))
                            .build(),
                    )
                    .execute()
                    .await,
                || format!("marking {iface} as {mark}"),
            )?;
        }
        let mac = match self.mac {
            Some(mac) if mac != own_mac => {
                netlink(
                    handle
                        .link()
                        .set(
                            LinkUnspec::new_with_index(index)
                                .address(mac.to_vec())
                                .build(),
                        )
                        .execute()
                        .await,
                    || format!("giving {iface} the MAC {}", mac_text(mac)),
                )?;
                mac
            }
            _ => own_mac,
        };

        if let Some(Egress4 { source, .. }) = self.v4 {
            netlink(
                handle
                    .address()
                    .add(index, source.ip.into(), source.prefix)
                    .replace()
                    .execute()
                    .await,
                || format!("adding {source} to {iface}"),
            )?;
        }
        if let Some(v6) = &self.v6 {
            plan6::prepare(iface)?;
            plan6::add_address(handle, iface, index, v6).await?;
        }
        netlink(
            handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await,
            || format!("setting {iface} up"),
        )?;
        if let Some(Egress4 { gateway, .. }) = self.v4 {
            let host_route = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(gateway, 32)
                .output_interface(index)
                .scope(RouteScope::Link)
                .build();
            netlink(
                handle.route().add(host_route).replace().execute().await,
                || format!("adding the route to {gateway} on {iface}"),
            )?;
            let default_route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(index)
                .build();
            netlink(
                handle.route().add(default_route).replace().execute().await,
                || format!("setting the default route via {gateway} on {iface}"),
            )?;
        }
        // The data plane forwards by itself (bpf_redirect_neigh); kernel forwarding would
        // route between the pod network and the egress network. An earlier release turned
        // it on in this namespace: off again.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").map_err(Error::Forwarding)?;
        if let Some(v6) = &self.v6 {
            plan6::add_routes(handle, iface, index, v6).await?;
        }
        Ok(Applied {
            egress_ifindex: index,
            egress_mac: mac,
            created_macvlan,
        })
    }
}

impl NetworkPlan {
    /// Removes what [`NetworkPlan::apply`] added: the egress interface if this instance
    /// created it (its alias says so), else EGRESS_SOURCE and the two routes on it. What is
    /// already gone is skipped, so teardown can be repeated. IPv4 forwarding stays off.
    pub async fn teardown(&self) -> Result<Removed, Error> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
        let connection = tokio::spawn(connection);
        let result = self.teardown_with(&handle).await;
        connection.abort();
        result
    }

    async fn teardown_with(&self, handle: &Handle) -> Result<Removed, Error> {
        let iface = self.egress_interface.as_str();
        let mut removed = Removed::default();
        let Some(link) = link_by_name(handle, iface).await? else {
            return Ok(removed);
        };
        let index = link.header.index;
        let alias = link_alias(&link);
        if alias == Some(self.owner.as_str()) {
            netlink(handle.link().del(index).execute().await, || {
                format!("deleting {iface}")
            })?;
            removed.link = true;
            return Ok(removed);
        }
        if let Some(v6) = &self.v6 {
            removed.routes += plan6::remove_routes(handle, iface, index, v6.gateway).await?;
        }
        if let Some(Egress4 { gateway, .. }) = self.v4 {
            let routes = [
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gateway)
                    .output_interface(index)
                    .build(),
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(gateway, 32)
                    .output_interface(index)
                    .scope(RouteScope::Link)
                    .build(),
            ];
            for route in routes {
                match handle.route().del(route).execute().await {
                    Ok(()) => removed.routes += 1,
                    Err(rtnetlink::Error::NetlinkError(err)) if err.raw_code() == -libc::ESRCH => {}
                    Err(source) => {
                        return Err(Error::Netlink {
                            what: format!("removing a route via {gateway} from {iface}"),
                            source,
                        });
                    }
                }
            }
        }
        let mut addresses = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut mine = Vec::new();
        while let Some(msg) = netlink(addresses.try_next().await, || {
            format!("listing the addresses of {iface}")
        })? {
            let v4 = self.v4.map(|v4| IpAddr::V4(v4.source.ip));
            let v6 = self.v6.map(|v6| IpAddr::V6(v6.source.ip));
            let ours = msg.attributes.iter().any(|attr| {
                matches!(attr, AddressAttribute::Local(ip) | AddressAttribute::Address(ip) if Some(*ip) == v4 || Some(*ip) == v6)
            });
            if ours {
                mine.push(msg);
            }
        }
        for msg in mine {
            netlink(handle.address().del(msg).execute().await, || {
                format!("removing EGRESS_SOURCE from {iface}")
            })?;
            removed.address = true;
        }

        // The interface's own MAC back, and its alias cleared.
        let original = alias
            .and_then(|a| a.strip_prefix(&format!("{} mac ", self.owner)))
            .and_then(parse_mac);
        if let Some(original) = original {
            netlink(
                handle
                    .link()
                    .set(
                        LinkUnspec::new_with_index(index)
                            .address(original.to_vec())
                            .append_extra_attribute(LinkAttribute::IfAlias(String::new()))
                            .build(),
                    )
                    .execute()
                    .await,
                || format!("giving {iface} its MAC {} back", mac_text(original)),
            )?;
            removed.mac = true;
        }
        Ok(removed)
    }
}
