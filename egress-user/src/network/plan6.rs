//! The IPv6 half of the egress interface's set-up ([`crate::network::plan`]): EGRESS_SOURCE's
//! IPv6 address without duplicate address detection (the router announces it itself), a
//! host route to the IPv6 gateway and the IPv6 default route via it, router advertisements
//! and address autoconfiguration off on the interface (a host on the egress network must not
//! give the pod addresses or routes), and IPv6 forwarding off; and its teardown.

use std::{net::Ipv6Addr, path::Path};

use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags},
};

use crate::{
    config::fields::Egress6,
    network::{error::Error, interface::netlink},
};

/// Where the kernel's IPv6 settings are; missing when IPv6 is off in the kernel.
const CONF: &str = "/proc/sys/net/ipv6/conf";

/// Checks, changing nothing, that the kernel can take the IPv6 half.
pub(crate) fn check_kernel() -> Result<(), Error> {
    if Path::new(CONF).exists() {
        Ok(())
    } else {
        Err(Error::NoKernelIpv6(CONF.to_owned()))
    }
}

fn sysctl(iface: &str, key: &str, value: &str) -> Result<(), Error> {
    let path = format!("{CONF}/{iface}/{key}");
    std::fs::write(&path, value).map_err(|source| Error::Sysctl { path, source })
}

/// Before the address: IPv6 on for the interface (a pod may have it off), and nothing
/// the egress network says configures it.
pub(crate) fn prepare(iface: &str) -> Result<(), Error> {
    sysctl(iface, "accept_ra", "0")?;
    sysctl(iface, "autoconf", "0")?;
    sysctl(iface, "disable_ipv6", "0")
}

/// EGRESS_SOURCE's IPv6 address on interface `index`, replacing an earlier run's.
pub(crate) async fn add_address(
    handle: &Handle,
    iface: &str,
    index: u32,
    v6: &Egress6,
) -> Result<(), Error> {
    let source = v6.source;
    let mut request = handle
        .address()
        .add(index, source.ip.into(), source.prefix)
        .replace();
    // No DAD: the address is usable at once (a tentative address cannot be a source), and
    // the router announces it with an unsolicited neighbour advertisement.
    let message = request.message_mut();
    message.header.flags = AddressHeaderFlags::Nodad;
    message
        .attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    netlink(request.execute().await, || {
        format!("adding {source} to {iface}")
    })
}

/// The two routes via the IPv6 gateway on interface `index`: to it, and the default.
fn routes(index: u32, gateway: Ipv6Addr) -> [rtnetlink::packet_route::route::RouteMessage; 2] {
    [
        RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build(),
        RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(gateway, 128)
            .output_interface(index)
            .build(),
    ]
}

/// The routes, and IPv6 forwarding off (the data plane forwards by itself).
pub(crate) async fn add_routes(
    handle: &Handle,
    iface: &str,
    index: u32,
    v6: &Egress6,
) -> Result<(), Error> {
    let gateway = v6.gateway;
    // The route to the gateway first: the default route needs it reachable.
    for route in routes(index, gateway).into_iter().rev() {
        netlink(handle.route().add(route).replace().execute().await, || {
            format!("adding a route via {gateway} on {iface}")
        })?;
    }
    sysctl("all", "forwarding", "0")
}

/// Removes the routes [`add_routes`] made on an interface this instance did not create
/// (the default route via any gateway when `v6.gateway` is unspecified, i.e. unknown);
/// returns how many it removed. The address goes with the IPv4 one's removal.
pub(crate) async fn remove_routes(
    handle: &Handle,
    iface: &str,
    index: u32,
    gateway: Ipv6Addr,
) -> Result<usize, Error> {
    let routes = if gateway.is_unspecified() {
        vec![
            RouteMessageBuilder::<Ipv6Addr>::new()
                .output_interface(index)
                .build(),
        ]
    } else {
        routes(index, gateway).to_vec()
    };
    let mut removed = 0;
    for route in routes {
        match handle.route().del(route).execute().await {
            Ok(()) => removed += 1,
            Err(rtnetlink::Error::NetlinkError(err)) if err.raw_code() == -libc::ESRCH => {}
            Err(source) => {
                return Err(Error::Netlink {
                    what: format!("removing an IPv6 route via {gateway} from {iface}"),
                    source,
                });
            }
        }
    }
    Ok(removed)
}
