//! The interface the node's routes send an address out of (`ip route get`), changing
//! nothing: how the node agent finds a router pod's host-side interface, the way routed
//! CNIs wire pods (a /32 route to the pod's IP through its veth).

use std::net::Ipv4Addr;

use futures_util::TryStreamExt as _;
use rtnetlink::{RouteMessageBuilder, packet_route::route::RouteAttribute};

use crate::network::{error::Error, interface::netlink};

/// The index of the interface the current namespace routes `ip` out of, or `None` when
/// it has no route to it.
pub async fn route_interface(ip: Ipv4Addr) -> Result<Option<u32>, Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
    let connection = tokio::spawn(connection);
    let query = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip, 32)
        .build();
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
