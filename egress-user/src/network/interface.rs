//! Looking interfaces up, changing nothing: index and name (libc), and what the data plane
//! and the proxies need to know of one (index, MTU, IPv4 addresses) through rtnetlink.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle,
    packet_route::{
        address::AddressAttribute,
        link::{LinkAttribute, LinkMessage},
    },
};

use crate::{config::fields::Sources, network::error::Error};

/// The index of interface `name` in the current network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c_name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The name of an interface index in the current network namespace.
#[must_use]
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// What the data plane needs to know about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceFacts {
    pub index: u32,
    pub mtu: u32,
    /// Its IPv4 addresses, primary first.
    pub ipv4: Vec<Ipv4Addr>,
    /// Its global IPv6 addresses (no link-local ones), in the kernel's order.
    pub ipv6: Vec<Ipv6Addr>,
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
    let mtu = link_mtu(&link);
    let (mut ipv4, mut ipv6) = (Vec::new(), Vec::new());
    let mut addresses = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = netlink(addresses.try_next().await, || {
        format!("listing the addresses of {name}")
    })? {
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(IpAddr::V4(ip))
                | AddressAttribute::Address(IpAddr::V4(ip))
                    if !ipv4.contains(ip) =>
                {
                    ipv4.push(*ip);
                }
                AddressAttribute::Address(IpAddr::V6(ip))
                    if !ip.is_unicast_link_local() && !ipv6.contains(ip) =>
                {
                    ipv6.push(*ip);
                }
                _ => {}
            }
        }
    }
    Ok(InterfaceFacts {
        index,
        mtu,
        ipv4,
        ipv6,
    })
}

/// The names of every link in the current network namespace (from rtnetlink: `/sys`
/// may be the mount of another namespace).
pub async fn link_names() -> Result<Vec<String>, Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
    let connection = tokio::spawn(connection);
    let mut links = handle.link().get().execute();
    let mut names = Vec::new();
    let result = loop {
        match links.try_next().await {
            Ok(Some(link)) => names.extend(link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name.clone()),
                _ => None,
            })),
            Ok(None) => break Ok(names),
            Err(source) => {
                break Err(Error::Netlink {
                    what: "listing the links".to_owned(),
                    source,
                });
            }
        }
    };
    connection.abort();
    result
}

/// What the node agent needs to know of a link: index, MTU, MAC address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    pub index: u32,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
}

/// Reads a link's index, MTU and MAC address in the current network namespace.
pub async fn link_facts(name: &str) -> Result<LinkFacts, Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
    let connection = tokio::spawn(connection);
    let link = link_by_name(&handle, name).await;
    connection.abort();
    let link = link?.ok_or_else(|| Error::NoInterface(name.to_owned()))?;
    let mtu = link_mtu(&link);
    Ok(LinkFacts {
        index: link.header.index,
        mtu,
        mac: link_mac(&link),
    })
}

pub(crate) async fn link_by_name(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, Error> {
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

/// A link's MTU (1500 where the kernel does not say).
fn link_mtu(link: &LinkMessage) -> u32 {
    link.attributes
        .iter()
        .find_map(|attr| match attr {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })
        .unwrap_or(1500)
}

pub(crate) fn link_mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Address(addr) => addr.as_slice().try_into().ok(),
        _ => None,
    })
}

pub(crate) fn netlink<T>(
    result: Result<T, rtnetlink::Error>,
    what: impl FnOnce() -> String,
) -> Result<T, Error> {
    result.map_err(|source| Error::Netlink {
        what: what(),
        source,
    })
}

/// EGRESS_SOURCE of both families for a proxy's main container (OpenShift sets the
/// variable on the init container only): the variable if given, else the first IPv4 and
/// the first global IPv6 address of the egress interface, which the init container put
/// there.
pub async fn egress_sources(
    variable: Option<&str>,
    egress_interface: &str,
) -> anyhow::Result<crate::proxy::outbound::Sources> {
    if let Some(value) = variable.map(str::trim).filter(|v| !v.is_empty()) {
        let sources: Sources = value.parse()?;
        return Ok(crate::proxy::outbound::Sources {
            v4: sources.v4.map(|s| s.ip),
            v6: sources.v6.map(|s| s.ip),
        });
    }
    let facts = interface_facts(egress_interface).await.with_context(|| {
        format!(
            "EGRESS_SOURCE is not set and cannot be read from {egress_interface}; set it, \
             or run the init container (EGRESS_ROUTER_MODE=http-proxy or dns-proxy) first"
        )
    })?;
    let sources = crate::proxy::outbound::Sources {
        v4: facts.ipv4.first().copied(),
        v6: facts.ipv6.first().copied(),
    };
    anyhow::ensure!(
        sources.v4.is_some() || sources.v6.is_some(),
        "EGRESS_SOURCE is not set and {egress_interface} has no address; set it, or run the \
         init container first"
    );
    Ok(sources)
}

/// The pod interface's IPv4 address and its global IPv6 address (at least one of them):
/// where the proxies listen, the IPv4 one first.
pub async fn pod_ips(pod_interface: &str) -> anyhow::Result<Vec<IpAddr>> {
    let facts = interface_facts(pod_interface)
        .await
        .with_context(|| format!("reading the pod interface {pod_interface}"))?;
    let ips: Vec<IpAddr> = facts
        .ipv4
        .first()
        .map(|&ip| IpAddr::V4(ip))
        .into_iter()
        .chain(facts.ipv6.first().map(|&ip| IpAddr::V6(ip)))
        .collect();
    anyhow::ensure!(
        !ips.is_empty(),
        "the pod interface {pod_interface} has no address"
    );
    Ok(ips)
}

/// The operational state the kernel reports for a link.
pub(crate) fn operstate(link: &LinkMessage) -> Option<rtnetlink::packet_route::link::State> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::OperState(state) => Some(*state),
        _ => None,
    })
}
