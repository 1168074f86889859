//! `egress-router check`: a preflight of the egress network, from the pod (the init
//! container, or `oc exec`) or from the node. Is the egress interface's link up, is
//! EGRESS_SOURCE free, does the gateway answer ARP (IPv6: neighbour discovery) from the
//! MAC the router will use, and when it does not, does it answer from the node's own MAC
//! (then the hypervisor or cloud filters unknown MACs, and the fix for each platform is
//! printed); for each family EGRESS_SOURCE has. Everything it changes
//! to ask (the interface's MAC and state; a temporary macvlan when checking from the node)
//! is put back.
//!
//! | module | concern |
//! |---|---|
//! | `ask` | the questions asked for each family: is the address free, who answers for the gateway |
//! | [`neighbours`] | asking the egress network about an address (ARP, neighbour discovery) |
//! | [`verdict`] | what it reports: each finding, the verdict, the fixes per platform |

use std::net::IpAddr;

use crate::{
    config::fields::Egress,
    network::{
        check::{
            neighbours::on_link,
            verdict::{Finding, Report, Status, Verdict, fixes},
        },
        error::Error,
        interface::{interface_facts, link_by_name, link_mac, netlink, operstate},
        mac::mac_text,
    },
};

mod ask;
pub mod neighbours;
pub mod verdict;
use rtnetlink::{
    Handle, LinkMacVlan, LinkMessageBuilder, LinkUnspec,
    packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, MacVlanMode, State},
};

/// What to check.
#[derive(Clone, Debug)]
pub struct CheckInput {
    pub egress_interface: String,
    pub pod_interface: String,
    /// Where a macvlan would be created (`--macvlan-parent`): from the node, the check
    /// creates a temporary one there when the egress interface does not exist.
    pub macvlan_parent: Option<String>,
    /// EGRESS_SOURCE and EGRESS_GATEWAY: each family is checked.
    pub egress: Egress,
    /// The MAC the router will give the egress interface (the stable one), or None for
    /// its own.
    pub mac: Option<[u8; 6]>,
    /// The rules' remotes and the fallbacks.
    pub remotes: Vec<IpAddr>,
}

impl CheckInput {
    /// Each family's (source, prefix, gateway), IPv4 first.
    fn halves(&self) -> Vec<(IpAddr, u8, IpAddr)> {
        let v4 = self
            .egress
            .v4
            .map(|h| (h.source.ip.into(), h.source.prefix, h.gateway.into()));
        let v6 = self
            .egress
            .v6
            .map(|h| (h.source.ip.into(), h.source.prefix, h.gateway.into()));
        v4.into_iter().chain(v6).collect()
    }
}

/// Runs every check in the current network namespace.
pub async fn check(input: &CheckInput) -> Result<Report, Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
    let connection = tokio::spawn(connection);
    let result = Checker {
        input,
        handle: &handle,
        findings: Vec::new(),
    }
    .run()
    .await;
    connection.abort();
    result
}

struct Checker<'a> {
    input: &'a CheckInput,
    handle: &'a Handle,
    findings: Vec<Finding>,
}

/// The interface the checks ask from, and what to put back.
struct Asking {
    index: u32,
    name: String,
    own_mac: [u8; 6],
    was_up: bool,
    /// A macvlan made for the check, deleted after.
    temporary: bool,
    /// The parent, when it is in this namespace: its index and MAC.
    parent: Option<(u32, [u8; 6])>,
}

const TEMPORARY: &str = "egress-check0";

impl Checker<'_> {
    fn note(&mut self, check: &'static str, status: Status, detail: String) {
        self.findings.push(Finding {
            check,
            status,
            detail,
        });
    }

    fn report(self, verdict: Verdict, fixes: Vec<String>) -> Report {
        Report {
            verdict,
            findings: self.findings,
            fixes,
        }
    }

    async fn run(mut self) -> Result<Report, Error> {
        let input = self.input;
        let Some(asking) = self.interface().await? else {
            return Ok(self.report(Verdict::Setup, Vec::new()));
        };
        let link = link_by_name(self.handle, &asking.name)
            .await?
            .ok_or_else(|| Error::NoInterface(asking.name.clone()))?;
        if operstate(&link) == Some(State::LowerLayerDown) {
            self.note(
                "link",
                Status::Fail,
                format!("{}'s parent (the node's NIC) is down", asking.name),
            );
            self.restore(&asking).await?;
            return Ok(self.report(Verdict::LinkDown, Vec::new()));
        }
        self.note(
            "link",
            Status::Ok,
            format!("{} is on a parent that is up", asking.name),
        );
        self.mtu(&link).await;
        self.destinations();

        // Ask as the router will: with its MAC, the link up.
        let mac = input.mac.unwrap_or(asking.own_mac);
        let verdict = self.ask_around(&asking, mac).await;
        self.restore(&asking).await?;
        let verdict = verdict?;
        let fixes = match verdict {
            Verdict::MacFiltered | Verdict::GatewayUnreachable => {
                fixes(input.egress.mac_address(), mac)
            }
            _ => Vec::new(),
        };
        Ok(self.report(verdict, fixes))
    }

    /// The egress interface, or a temporary macvlan on the parent when checking from the
    /// node.
    async fn interface(&mut self) -> Result<Option<Asking>, Error> {
        let input = self.input;
        let (link, temporary) = match link_by_name(self.handle, &input.egress_interface).await? {
            Some(link) => (link, false),
            None => {
                let parent = match &input.macvlan_parent {
                    Some(parent) => link_by_name(self.handle, parent).await?,
                    None => None,
                };
                let Some(parent) = parent else {
                    self.note(
                        "interface",
                        Status::Fail,
                        format!(
                            "{} does not exist, and no --macvlan-parent here to try from",
                            input.egress_interface
                        ),
                    );
                    return Ok(None);
                };
                let msg =
                    LinkMacVlan::new(TEMPORARY, parent.header.index, MacVlanMode::Private).build();
                netlink(self.handle.link().add(msg).execute().await, || {
                    format!("creating {TEMPORARY}")
                })?;
                let link = link_by_name(self.handle, TEMPORARY)
                    .await?
                    .ok_or_else(|| Error::NoInterface(TEMPORARY.to_owned()))?;
                (link, true)
            }
        };
        let name = if temporary {
            TEMPORARY.to_owned()
        } else {
            input.egress_interface.clone()
        };
        let own_mac = link_mac(&link).ok_or_else(|| Error::NoMac(name.clone()))?;
        // The parent is reachable from here only when it is in this namespace (from the
        // node); in the pod it is in the node's.
        let in_other_ns = link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::LinkNetNsId(_)));
        let parent_index = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Link(index) => Some(*index),
            _ => None,
        });
        let parent = match parent_index {
            Some(index) if !in_other_ns => {
                let mut links = self.handle.link().get().match_index(index).execute();
                match futures_util::TryStreamExt::try_next(&mut links).await {
                    Ok(Some(parent)) => link_mac(&parent).map(|mac| (index, mac)),
                    _ => None,
                }
            }
            _ => None,
        };
        self.note(
            "interface",
            Status::Ok,
            if temporary {
                format!(
                    "{} missing; asking from a temporary macvlan on {}",
                    input.egress_interface,
                    input.macvlan_parent.as_deref().unwrap_or("?")
                )
            } else {
                format!("{name} ({})", mac_text(own_mac))
            },
        );
        Ok(Some(Asking {
            index: link.header.index,
            name,
            own_mac,
            was_up: link.header.flags.contains(LinkFlags::Up),
            temporary,
            parent,
        }))
    }

    async fn mtu(&mut self, link: &LinkMessage) {
        let mtu = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(1500);
        match interface_facts(&self.input.pod_interface).await {
            Ok(pod) if pod.mtu > mtu => self.note(
                "mtu",
                Status::Ok,
                format!(
                    "pod {} > egress {mtu}: TCP MSS clamped to {}, larger packets answered \
                     with Fragmentation Needed",
                    pod.mtu,
                    mtu.saturating_sub(40)
                ),
            ),
            Ok(pod) => self.note("mtu", Status::Ok, format!("pod {}, egress {mtu}", pod.mtu)),
            // From the node: no pod interface here.
            Err(_) => self.note("mtu", Status::Ok, format!("egress {mtu}")),
        }
    }

    fn destinations(&mut self) {
        let input = self.input;
        if input.remotes.is_empty() {
            return;
        }
        let halves = input.halves();
        let on_link: Vec<String> = input
            .remotes
            .iter()
            .filter(|ip| {
                halves
                    .iter()
                    .any(|&(source, prefix, _)| on_link(**ip, source, prefix))
            })
            .map(ToString::to_string)
            .collect();
        let gateways: Vec<String> = halves.iter().map(|(_, _, g)| g.to_string()).collect();
        let gateways = gateways.join(" and ");
        if on_link.is_empty() {
            self.note(
                "destinations",
                Status::Ok,
                format!("{} remotes, all routed via {gateways}", input.remotes.len()),
            );
        } else {
            let subnets: Vec<String> = halves
                .iter()
                .map(|(source, prefix, _)| format!("{source}/{prefix}"))
                .collect();
            self.note(
                "destinations",
                Status::Warn,
                format!(
                    "{} on EGRESS_SOURCE's subnet {}: reached directly on the egress \
                     network, not via {gateways}",
                    on_link.join(", "),
                    subnets.join(" or ")
                ),
            );
        }
    }

    async fn set(
        &self,
        index: u32,
        change: impl FnOnce(LinkMessageBuilder<LinkUnspec>) -> LinkMessageBuilder<LinkUnspec>,
        name: &str,
    ) -> Result<(), Error> {
        let msg = change(LinkUnspec::new_with_index(index)).build();
        netlink(self.handle.link().set(msg).execute().await, || {
            format!("changing {name} for the check")
        })
    }

    /// Puts back what the checks changed.
    async fn restore(&self, asking: &Asking) -> Result<(), Error> {
        if asking.temporary {
            return netlink(self.handle.link().del(asking.index).execute().await, || {
                format!("deleting {TEMPORARY}")
            });
        }
        let own = asking.own_mac;
        self.set(asking.index, |m| m.address(own.to_vec()), &asking.name)
            .await?;
        if !asking.was_up {
            self.set(asking.index, |m| m.down(), &asking.name).await?;
        }
        Ok(())
    }
}
