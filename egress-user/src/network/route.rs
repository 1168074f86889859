//! Node mode's questions to the node's routing: the interface the node's routes send an
//! address out of (`ip route get`, changing nothing), which is how the agent finds a router
//! pod's host-side interface (routed CNIs wire pods with a /32 route through the pod's
//! veth); and the next hops the data plane sends to, kept resolved.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt as _;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::{
        neighbour::{NeighbourAttribute, NeighbourExtFlags, NeighbourState},
        route::RouteAttribute,
    },
};

use crate::network::{error::Error, interface::netlink};

/// The index of the interface the current namespace routes `ip` out of, or `None` when
/// it has no route to it.
pub async fn route_interface(ip: IpAddr) -> Result<Option<u32>, Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
    let connection = tokio::spawn(connection);
    let query = match ip {
        IpAddr::V4(ip) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(ip, 32)
            .build(),
        IpAddr::V6(ip) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(ip, 128)
            .build(),
    };
    let answer = handle.route().get(query).execute().try_next().await;
    connection.abort();
    let route = match answer {
        Ok(route) => route,
        // No route: the kernel answers -ENETUNREACH (or -EHOSTUNREACH for a blackhole).
        Err(rtnetlink::Error::NetlinkError(err))
            if matches!(-err.raw_code(), libc::ENETUNREACH | libc::EHOSTUNREACH) =>
        {
            return Ok(None);
        }
        other => netlink(other, || format!("looking up the route to {ip}"))?,
    };
    Ok(route.and_then(|route| {
        route.attributes.iter().find_map(|attr| match attr {
            RouteAttribute::Oif(index) => Some(*index),
            _ => None,
        })
    }))
}

/// Has the kernel keep `ip`'s neighbour entry on interface `index` resolved: a *managed*
/// entry (Linux 5.16), which the kernel resolves now and probes again before it goes
/// stale, as Cilium does for its next hops. Node mode sends with `bpf_redirect_neigh` to
/// each instance's EGRESS_GATEWAY, a next hop the node's own traffic may never use: without
/// a resolved entry, the first packets toward it were lost (a new instance's, and a
/// failover's). An entry already there keeps its address.
pub async fn keep_resolved(index: u32, ip: IpAddr) -> Result<(), Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
    let connection = tokio::spawn(connection);
    let managed = |state, replace: bool| {
        let mut request = handle.neighbours().add(index, ip).state(state);
        if replace {
            request = request.replace();
        }
        request
            .message_mut()
            .attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        request.execute()
    };
    let code = |result: &Result<(), rtnetlink::Error>| match result {
        Err(rtnetlink::Error::NetlinkError(err)) => -err.raw_code(),
        _ => 0,
    };
    // New: resolved now. There: made managed, keeping its address while it has one.
    let mut result = managed(NeighbourState::None, false).await;
    if code(&result) == libc::EEXIST {
        result = managed(NeighbourState::Stale, true).await;
    }
    if code(&result) == libc::EINVAL {
        result = managed(NeighbourState::None, true).await;
    }
    connection.abort();
    netlink(result, || format!("keeping the neighbour {ip} resolved"))
}

/// Where the kernel has no managed neighbours (before Linux 5.16), what keeps a gateway
/// resolved instead: asks the kernel to resolve `ip` on interface `index` now, as a packet
/// using the entry would (`NTF_USE`), creating the entry if it is not there. The node agent
/// repeats it every [`REFRESH`], well within the time an entry stays reachable (15-45 s).
pub async fn use_neighbour(index: u32, ip: IpAddr) -> Result<(), Error> {
    use rtnetlink::packet_route::neighbour::NeighbourFlags;
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
    let connection = tokio::spawn(connection);
    let mut request = handle.neighbours().add(index, ip).replace();
    request.message_mut().header.flags = NeighbourFlags::Use;
    let result = request.execute().await;
    connection.abort();
    netlink(result, || format!("resolving the neighbour {ip}"))
}

/// How often [`use_neighbour`] is repeated for each gateway where the kernel cannot keep it
/// resolved itself.
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// Removes `ip`'s neighbour entry on interface `index` (what [`keep_resolved`] made
/// managed); an entry that is not there is nothing to remove.
pub async fn forget_neighbour(index: u32, ip: IpAddr) -> Result<(), Error> {
    use rtnetlink::packet_route::{AddressFamily, neighbour::NeighbourAddress};
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
    let connection = tokio::spawn(connection);
    let mut message = rtnetlink::packet_route::neighbour::NeighbourMessage::default();
    let (family, address) = match ip {
        IpAddr::V4(ip) => (AddressFamily::Inet, NeighbourAddress::Inet(ip)),
        IpAddr::V6(ip) => (AddressFamily::Inet6, NeighbourAddress::Inet6(ip)),
    };
    message.header.family = family;
    message.header.ifindex = index;
    message
        .attributes
        .push(NeighbourAttribute::Destination(address));
    let result = handle.neighbours().del(message).execute().await;
    connection.abort();
    match result {
        Err(rtnetlink::Error::NetlinkError(err)) if -err.raw_code() == libc::ENOENT => Ok(()),
        other => netlink(other, || format!("removing the neighbour {ip}")),
    }
}
