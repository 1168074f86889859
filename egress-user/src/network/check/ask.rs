//! The questions `check` asks on the egress network, for each family EGRESS_SOURCE has:
//! is the address free, does the gateway answer from the router's MAC, and, for a silent
//! gateway, from the parent's.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use crate::network::{
    check::{
        neighbours::{answer, holder},
        verdict::{Status, Verdict},
    },
    error::Error,
    interface::interface_facts,
    mac::mac_text,
};

use super::{Asking, Checker};

/// How the egress network is asked about an address of `ip`'s family.
fn asked_with(ip: IpAddr) -> &'static str {
    if ip.is_ipv6() {
        "neighbour discovery"
    } else {
        "ARP"
    }
}

/// The unspecified address of `ip`'s family.
fn unspecified(ip: IpAddr) -> IpAddr {
    if ip.is_ipv6() {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    }
}

impl Checker<'_> {
    /// Each family's EGRESS_SOURCE free, then each gateway from `mac`, then the silent
    /// ones from the parent's MAC.
    pub(super) async fn ask_around(
        &mut self,
        asking: &Asking,
        mac: [u8; 6],
    ) -> Result<Verdict, Error> {
        let input = self.input;
        if mac != asking.own_mac {
            self.set(asking.index, |m| m.address(mac.to_vec()), &asking.name)
                .await?;
        }
        if !asking.was_up {
            self.set(asking.index, |m| m.up(), &asking.name).await?;
        }
        let facts = interface_facts(&asking.name).await.ok();
        let index = asking.index;
        let arp_error = |source| Error::Arp {
            iface: asking.name.clone(),
            source,
        };
        // The sender of each family's question: EGRESS_SOURCE when the interface holds it.
        let mut senders = Vec::new();
        for (ip, _, _) in input.halves() {
            let ours = facts.as_ref().is_some_and(|f| match ip {
                IpAddr::V4(v4) => f.ipv4.contains(&v4),
                IpAddr::V6(v6) => f.ipv6.contains(&v6),
            });
            if ours {
                self.note(
                    "egress source",
                    Status::Ok,
                    format!("{ip} is this interface's"),
                );
                senders.push(ip);
                continue;
            }
            if let Some(holder) = holder(index, mac, ip).await.map_err(arp_error)? {
                self.note(
                    "egress source",
                    Status::Fail,
                    format!("{ip} is in use: {} answered for it", mac_text(holder.mac)),
                );
                return Ok(Verdict::SourceInUse);
            }
            let probe = if ip.is_ipv6() {
                "duplicate address detection"
            } else {
                "an ARP probe"
            };
            self.note(
                "egress source",
                Status::Ok,
                format!("{ip} is free (nobody answered {probe})"),
            );
            senders.push(unspecified(ip));
        }
        let ask = (3, Duration::from_millis(300));
        let mut silent = Vec::new();
        for ((_, _, gateway), sender) in input.halves().into_iter().zip(senders) {
            let how = asked_with(gateway);
            match answer(index, mac, sender, gateway, ask)
                .await
                .map_err(arp_error)?
            {
                Some(gw) => self.note(
                    "gateway",
                    Status::Ok,
                    format!(
                        "{gateway} answers {how} from {} (its MAC {})",
                        mac_text(mac),
                        mac_text(gw)
                    ),
                ),
                None => {
                    self.note(
                        "gateway",
                        Status::Fail,
                        format!("{gateway} does not answer {how} from {}", mac_text(mac)),
                    );
                    silent.push(gateway);
                }
            }
        }
        if silent.is_empty() {
            return Ok(Verdict::Ok);
        }
        let Some((parent, parent_mac)) = asking.parent else {
            self.note(
                "mac filter",
                Status::Warn,
                "the parent is not in this namespace; to tell a MAC filter from a \
                 gateway that is down, run `egress-router check --macvlan-parent <NIC>` on \
                 the node"
                    .to_owned(),
            );
            return Ok(Verdict::GatewayUnreachable);
        };
        let mut verdict = Verdict::GatewayUnreachable;
        for gateway in silent {
            let from_parent = answer(parent, parent_mac, unspecified(gateway), gateway, ask)
                .await
                .map_err(arp_error)?;
            if let Some(gw) = from_parent {
                self.note(
                    "mac filter",
                    Status::Fail,
                    format!(
                        "{gateway} answers the node's own MAC {} (its MAC {}) but not {}: the \
                         hypervisor or cloud drops frames from MACs it does not know",
                        mac_text(parent_mac),
                        mac_text(gw),
                        mac_text(mac)
                    ),
                );
                verdict = Verdict::MacFiltered;
            } else {
                self.note(
                    "mac filter",
                    Status::Ok,
                    format!(
                        "{gateway} does not answer the node's own MAC {} either: the gateway \
                         is down or not on this network",
                        mac_text(parent_mac)
                    ),
                );
            }
        }
        Ok(verdict)
    }
}
