//! The client networks of an instance: where new flows may come from
//! (`--client-cidrs`), less where no client can be.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{config::fields::Egress, dataplane::clients::ClientNet};

/// The client networks of an instance: `--client-cidrs` (else every address), less the
/// prefixes where no client can be: the egress side (EGRESS_SOURCE and its subnet as
/// given, EGRESS_GATEWAY), the pod's own addresses, and the addresses no packet comes from (unspecified, loopback,
/// multicast, IPv4 broadcast).
pub(crate) fn client_nets(
    cidrs: &[(IpAddr, u8)],
    egress: &Egress,
    pod_ips: &[IpAddr],
) -> Vec<ClientNet> {
    let allow = |(addr, prefix): (IpAddr, u8)| ClientNet {
        addr,
        prefix,
        allow: true,
    };
    let deny = |addr: IpAddr, prefix: u8| ClientNet {
        addr,
        prefix,
        allow: false,
    };
    let mut nets: Vec<ClientNet> = if cidrs.is_empty() {
        vec![
            allow((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
            allow((IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)),
        ]
    } else {
        cidrs.iter().copied().map(allow).collect()
    };
    nets.extend([
        deny(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8),
        deny(IpAddr::V4(Ipv4Addr::LOCALHOST), 8),
        deny(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0)), 4),
        deny(IpAddr::V4(Ipv4Addr::BROADCAST), 32),
        deny(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128),
        deny(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        deny(IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)), 8),
    ]);
    if let Some(v4) = egress.v4 {
        nets.push(deny(IpAddr::V4(v4.source.ip), v4.source.prefix));
        nets.push(deny(IpAddr::V4(v4.source.ip), 32));
        nets.push(deny(IpAddr::V4(v4.gateway), 32));
    }
    if let Some(v6) = egress.v6 {
        nets.push(deny(IpAddr::V6(v6.source.ip), v6.source.prefix));
        nets.push(deny(IpAddr::V6(v6.source.ip), 128));
        nets.push(deny(IpAddr::V6(v6.gateway), 128));
    }
    for ip in pod_ips {
        nets.push(deny(*ip, if ip.is_ipv4() { 32 } else { 128 }));
    }
    // A client network the admin named wins over a default denial of the same prefix.
    let mut out: Vec<ClientNet> = Vec::new();
    for net in nets {
        if !out
            .iter()
            .any(|n| n.addr == net.addr && n.prefix == net.prefix)
        {
            out.push(net);
        }
    }
    out
}
