//! Network set-up of the egress interface through rtnetlink: the macvlan (when asked to create
//! it), EGRESS_SOURCE on it, link up, a host route to the gateway and the default route via
//! the gateway on that interface (cluster routes stay on the pod interface), IPv4 forwarding,
//! and gratuitous ARP for EGRESS_SOURCE.
//!
//! [`NetworkPlan::apply`] first resolves everything it needs without changing anything, then
//! makes the changes with replace semantics, so running it again after a pod restart leaves
//! the same state.

use std::{
    io,
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
    time::Duration,
};

use etherparse::{ArpEthIpv4Packet, ArpOperation};
use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkMacVlan, LinkUnspec, RouteMessageBuilder,
    packet_route::{
        address::AddressAttribute,
        link::{LinkAttribute, LinkMessage, MacVlanMode},
        route::RouteScope,
    },
};

use crate::config::EgressSource;

/// Errors of the network set-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening a netlink socket: {0}")]
    Connect(io::Error),
    #[error("egress interface {0} does not exist (pass --macvlan-parent to create it)")]
    NoEgressInterface(String),
    #[error("macvlan parent interface {0} does not exist")]
    NoParent(String),
    #[error("interface {0} has no Ethernet address")]
    NoMac(String),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("interface {0} does not exist")]
    NoInterface(String),
    #[error("interface {0} has no IPv4 address")]
    NoIpv4(String),
    #[error("enabling IPv4 forwarding: {0}")]
    Forwarding(io::Error),
    #[error("sending gratuitous ARP on {iface}: {source}")]
    Arp { iface: String, source: io::Error },
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

/// What the egress side of the pod needs.
#[derive(Clone, Debug)]
pub struct NetworkPlan {
    /// The interface that holds EGRESS_SOURCE (`macvlan0`).
    pub egress_interface: String,
    /// Create the egress interface as a macvlan on this parent when it does not exist.
    pub macvlan_parent: Option<String>,
    pub macvlan_mode: MacvlanMode,
    pub source: EgressSource,
    pub gateway: Ipv4Addr,
    /// The alias given to a macvlan created here, which marks it as this instance's.
    pub owner: String,
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
        let mac = link_mac(&link).ok_or_else(|| Error::NoMac(iface.to_owned()))?;
        if created_macvlan {
            netlink(
                handle
                    .link()
                    .set(
                        LinkUnspec::new_with_index(index)
                            .append_extra_attribute(LinkAttribute::IfAlias(self.owner.clone()))
                            .build(),
                    )
                    .execute()
                    .await,
                || format!("marking {iface} as {}", self.owner),
            )?;
        }

        let source = self.source;
        netlink(
            handle
                .address()
                .add(index, source.ip.into(), source.prefix)
                .replace()
                .execute()
                .await,
            || format!("adding {source} to {iface}"),
        )?;
        netlink(
            handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await,
            || format!("setting {iface} up"),
        )?;
        let gateway = self.gateway;
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
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(Error::Forwarding)?;
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
    /// already gone is skipped, so teardown can be repeated. IPv4 forwarding stays on: other
    /// users of the namespace may rely on it.
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
        let alias = link.attributes.iter().find_map(|attr| match attr {
            LinkAttribute::IfAlias(alias) => Some(alias.as_str()),
            _ => None,
        });
        if alias == Some(self.owner.as_str()) {
            netlink(handle.link().del(index).execute().await, || {
                format!("deleting {iface}")
            })?;
            removed.link = true;
            return Ok(removed);
        }
        let gateway = self.gateway;
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
        let mut addresses = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut mine = Vec::new();
        while let Some(msg) = netlink(addresses.try_next().await, || {
            format!("listing the addresses of {iface}")
        })? {
            let ours = msg.attributes.iter().any(|attr| {
                matches!(attr, AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip)) if *ip == self.source.ip)
            });
            if ours {
                mine.push(msg);
            }
        }
        for msg in mine {
            netlink(handle.address().del(msg).execute().await, || {
                format!("removing {} from {iface}", self.source)
            })?;
            removed.address = true;
        }
        Ok(removed)
    }
}

/// What the data plane needs to know about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceFacts {
    pub index: u32,
    pub mtu: u32,
    /// Its IPv4 addresses, primary first.
    pub ipv4: Vec<Ipv4Addr>,
}

/// Reads an interface's index, MTU and IPv4 addresses in the current network namespace,
/// changing nothing.
pub async fn interface_facts(name: &str) -> Result<InterfaceFacts, Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
    let connection = tokio::spawn(connection);
    let result = facts_with(&handle, name).await;
    connection.abort();
    result
}

async fn facts_with(handle: &Handle, name: &str) -> Result<InterfaceFacts, Error> {
    let link = link_by_name(handle, name)
        .await?
        .ok_or_else(|| Error::NoInterface(name.to_owned()))?;
    let index = link.header.index;
    let mtu = link
        .attributes
        .iter()
        .find_map(|attr| match attr {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })
        .unwrap_or(1500);
    let mut ipv4 = Vec::new();
    let mut addresses = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = netlink(addresses.try_next().await, || {
        format!("listing the addresses of {name}")
    })? {
        for attr in &msg.attributes {
            if let AddressAttribute::Local(IpAddr::V4(ip))
            | AddressAttribute::Address(IpAddr::V4(ip)) = attr
            {
                if !ipv4.contains(ip) {
                    ipv4.push(*ip);
                }
            }
        }
    }
    Ok(InterfaceFacts { index, mtu, ipv4 })
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, Error> {
    match handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        // The kernel answers -ENODEV for an unknown name.
        Err(rtnetlink::Error::NetlinkError(err)) if err.raw_code() == -libc::ENODEV => Ok(None),
        Err(source) => Err(Error::Netlink {
            what: format!("looking up {name}"),
            source,
        }),
    }
}

fn link_mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Address(addr) => addr.as_slice().try_into().ok(),
        _ => None,
    })
}

fn netlink<T>(
    result: Result<T, rtnetlink::Error>,
    what: impl FnOnce() -> String,
) -> Result<T, Error> {
    result.map_err(|source| Error::Netlink {
        what: what(),
        source,
    })
}

/// Announces `ip` at `mac` on interface `ifindex` (named `iface` in errors) so the upstream
/// switch and neighbours learn it at once, e.g. after a failover: an unsolicited ARP reply
/// now and a gratuitous ARP request `request_after` later, as OpenShift's router does with
/// `arping -A` and `arping -U`.
pub async fn announce(
    iface: &str,
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv4Addr,
    request_after: Duration,
) -> Result<(), Error> {
    let arp_error = |source| Error::Arp {
        iface: iface.to_owned(),
        source,
    };
    send_gratuitous_arp(ifindex, mac, ip, ArpOperation::REPLY).map_err(arp_error)?;
    tokio::time::sleep(request_after).await;
    send_gratuitous_arp(ifindex, mac, ip, ArpOperation::REQUEST).map_err(arp_error)
}

/// Sends one broadcast ARP packet whose sender and target are both `ip`.
fn send_gratuitous_arp(
    ifindex: u32,
    mac: [u8; 6],
    ip: Ipv4Addr,
    operation: ArpOperation,
) -> io::Result<()> {
    let arp = ArpEthIpv4Packet {
        operation,
        sender_mac: mac,
        sender_ipv4: ip.octets(),
        // A reply names our own MAC as target; a gratuitous request leaves it zero (RFC 5227).
        target_mac: if operation == ArpOperation::REPLY {
            mac
        } else {
            [0; 6]
        },
        target_ipv4: ip.octets(),
    }
    .to_bytes();
    let proto = (libc::ETH_P_ARP as u16).to_be();
    // SOCK_DGRAM: the kernel builds the Ethernet header from the sockaddr_ll below.
    // SAFETY: plain syscalls with valid arguments; the fd is closed on every path.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(proto),
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let sent = libc::sendto(
            fd,
            arp.as_ptr().cast(),
            arp.len(),
            0,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let result = if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        };
        libc::close(fd);
        result
    }
}
