//! Claiming EGRESS_SOURCE on the egress network: the check, before anything changes, that
//! no other live host holds the address (either of its addresses).

use std::net::IpAddr;

use egress_common::ClaimId;
use rtnetlink::{
    Handle, LinkUnspec,
    packet_route::link::{LinkFlags, LinkMessage},
};

use crate::network::{
    error::Error,
    interface::{interface_facts, link_by_name, link_mac, netlink},
    mac::mac_text,
    plan::NetworkPlan,
    probe::{Holder, Probe, probe},
    probe6::probe6,
};

impl NetworkPlan {
    /// Fails if another host answers for EGRESS_SOURCE on the egress network (RFC 5227 ARP
    /// probe; for its IPv6 address, RFC 4862 duplicate address detection), changing nothing: the probe goes out of the egress interface (with the MAC
    /// the router will use, brought up for it if it is down; both put back after), or,
    /// when the interface is still to be created, out of its parent. An interface that already holds the address is ours (a
    /// restart) and is not probed. Nothing to probe from (no interface, parent down) is not
    /// a conflict: the set-up then says what is missing.
    ///
    /// The probes carry `claim`, this router's, by which another egress-router with the
    /// same MAC tells them from its own, and two probing at once agree on the older.
    pub async fn check_source_free(&self, how: Probe, claim: ClaimId) -> Result<(), Error> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
        let connection = tokio::spawn(connection);
        let result = self.check_with(&handle, how, claim).await;
        connection.abort();
        result
    }

    async fn check_with(&self, handle: &Handle, how: Probe, claim: ClaimId) -> Result<(), Error> {
        let iface = self.egress_interface.as_str();
        // The addresses to probe for: each family's, unless the interface holds it already.
        let mut v4 = self.v4.map(|v4| v4.source.ip);
        let mut v6 = self.v6.map(|v6| v6.source.ip);
        let (link, from) = match link_by_name(handle, iface).await? {
            Some(link) => {
                let facts = interface_facts(iface).await?;
                v4 = v4.filter(|ip| !facts.ipv4.contains(ip));
                v6 = v6.filter(|ip| !facts.ipv6.contains(ip));
                if v4.is_none() && v6.is_none() {
                    return Ok(());
                }
                (link, iface.to_owned())
            }
            None => {
                let Some(parent) = &self.macvlan_parent else {
                    return Ok(());
                };
                match link_by_name(handle, parent).await? {
                    Some(link) if is_up(&link) => (link, parent.clone()),
                    _ => return Ok(()),
                }
            }
        };
        let index = link.header.index;
        let own = link_mac(&link).ok_or_else(|| Error::NoMac(from.clone()))?;
        if from == iface
            && self.mac.is_some()
            && let Some(mode) = shared_mac_blind(&link)
        {
            tracing::warn!(
                iface,
                mode,
                "the egress interface is a macvlan in {mode} mode: it does not receive broadcasts \
                 from the wire sent from its own MAC, so another router with this EGRESS_SOURCE \
                 and the same stable MAC cannot be found (use mode private, as the manifests do, \
                 or --keep-mac)"
            );
        }
        // From the egress interface, probe with the MAC the router will use: port security
        // that allows only that MAC would drop a probe from another, and the probe would
        // hear nothing. (The parent's own MAC passes anyway.)
        let mac = match self.mac {
            Some(mac) if from == iface => mac,
            _ => own,
        };
        let was_up = is_up(&link);
        if mac != own {
            set_mac(handle, index, mac, &from).await?;
        }
        if !was_up {
            set_up(handle, index, true, &from).await?;
        }
        // Both families at once: the set-up waits for one probe's length, not two.
        let probe4 = v4.map(|ip| {
            tokio::task::spawn_blocking(move || {
                probe(index, mac, ip, how, claim).map(|h| h.map(|h| (IpAddr::V4(ip), h)))
            })
        });
        let probe6 = v6.map(|ip| {
            let from = from.clone();
            tokio::task::spawn_blocking(move || match probe6(index, mac, ip, how, claim) {
                Ok(holder) => Ok(holder.map(|h| (IpAddr::V6(ip), h))),
                // A running data plane of an instance without IPv6 drops IPv6 leaving the
                // egress interface (ENOBUFS here): when an instance gains IPv6, its probe
                // cannot go out. Claimed without it, as --force-source would.
                Err(err) => {
                    tracing::warn!(
                        iface = %from,
                        error = %crate::error_chain(&err),
                        "the IPv6 duplicate address detection could not be sent; {ip} claimed without it"
                    );
                    Ok(None)
                }
            })
        });
        let mut found = Ok(None);
        for task in [probe4, probe6].into_iter().flatten() {
            let result = task.await.map_err(|err| Error::Arp {
                iface: from.clone(),
                source: std::io::Error::other(err),
            })?;
            if let Ok(None) = found {
                found = result;
            }
        }
        if !was_up {
            set_up(handle, index, false, &from).await?;
        }
        if mac != own {
            set_mac(handle, index, own, &from).await?;
        }
        match found.map_err(|source| Error::Arp {
            iface: from.clone(),
            source,
        })? {
            Some((ip, holder)) => Err(Error::SourceInUse {
                ip,
                mac: mac_text(holder.mac),
                iface: from,
                who: who(&holder, claim),
            }),
            None => Ok(()),
        }
    }
}

/// What a holder said of itself, for the refusal: `, as another egress-router ...`, or
/// nothing.
#[must_use]
pub fn who(holder: &Holder, ours: ClaimId) -> String {
    let Some(theirs) = holder.claim else {
        return String::new();
    };
    let age = ours.claimed_at_ms.saturating_sub(theirs.claimed_at_ms);
    let age = format!("{}.{:03} s", age / 1000, age % 1000);
    if holder.probing {
        format!(
            ", as another egress-router claiming it at this moment (its claim is {age} older \
             than ours: it goes on, this one yields)"
        )
    } else {
        format!(", as another egress-router that holds it (claimed {age} before ours)")
    }
}

/// Sets interface `iface` down, if it exists: a router that stepped down sends nothing
/// more from the MAC it shares with the holder (not even IPv6 neighbour discovery).
pub async fn set_down(iface: &str) -> Result<(), Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
    let connection = tokio::spawn(connection);
    let result = match link_by_name(&handle, iface).await {
        Ok(Some(link)) => set_up(&handle, link.header.index, false, iface).await,
        Ok(None) => Ok(()),
        Err(err) => Err(err),
    };
    connection.abort();
    result
}

/// The mode of a macvlan that cannot hear another router with its own MAC: `bridge` and
/// `vepa` skip, for broadcasts from the wire, the macvlan whose MAC sent them.
fn shared_mac_blind(link: &LinkMessage) -> Option<&'static str> {
    use rtnetlink::packet_route::link::{
        InfoData, InfoMacVlan, LinkAttribute, LinkInfo, MacVlanMode,
    };
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::Data(InfoData::MacVlan(data)) => data.iter().find_map(|d| match d {
                InfoMacVlan::Mode(MacVlanMode::Bridge) => Some("bridge"),
                InfoMacVlan::Mode(MacVlanMode::Vepa) => Some("vepa"),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    })
}

fn is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up)
}

async fn set_mac(handle: &Handle, index: u32, mac: [u8; 6], iface: &str) -> Result<(), Error> {
    let msg = LinkUnspec::new_with_index(index)
        .address(mac.to_vec())
        .build();
    netlink(handle.link().set(msg).execute().await, || {
        format!("giving {iface} the MAC {} for the probe", mac_text(mac))
    })
}

async fn set_up(handle: &Handle, index: u32, up: bool, iface: &str) -> Result<(), Error> {
    let msg = if up {
        LinkUnspec::new_with_index(index).up().build()
    } else {
        LinkUnspec::new_with_index(index).down().build()
    };
    netlink(handle.link().set(msg).execute().await, || {
        format!("setting {iface} {}", if up { "up" } else { "down" })
    })
}
