//! The data plane's view of an instance ([`RouterConfig`], [`RouterConfig6`]) as the
//! set-up writes it: addresses, interfaces, the translated port range, the MSS clamps,
//! the IPv6 next hop, and the port-choice key.

use std::net::{Ipv4Addr, Ipv6Addr};

use egress_common::{DEFAULT_NAT_PORTS, RouterConfig, RouterConfig6, config_flags};

use crate::{config::fields::Egress6, network::interface::InterfaceFacts};

/// The translated source ports: the larger free side of the pod's ephemeral range
/// (`net.ipv4.ip_local_port_range`, from which its own sockets on EGRESS_SOURCE take
/// ports), so a translated flow never takes a 5-tuple one of them may take.
#[must_use]
pub fn nat_ports(ephemeral: (u16, u16)) -> (u16, u16) {
    let (lo, hi) = ephemeral;
    let below = (1024, lo.saturating_sub(1));
    let above = (hi.saturating_add(1), u16::MAX);
    let size = |(a, b): (u16, u16)| if b >= a { u32::from(b - a) + 1 } else { 0 };
    let best = if size(below) >= size(above) {
        below
    } else {
        above
    };
    // Nothing free of it (a range over everything): the default, as the kernel's.
    if size(best) < 1024 {
        DEFAULT_NAT_PORTS
    } else {
        best
    }
}

/// The pod's ephemeral port range, read in its network namespace.
fn ephemeral_ports() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<u16>);
            Some((parts.next()?.ok()?, parts.next()?.ok()?))
        })
        .unwrap_or((32768, 60999))
}

/// The data plane's view of the instance, without a fallback.
pub(crate) fn router_config(
    source: Ipv4Addr,
    pod_ip: Ipv4Addr,
    pod: &InterfaceFacts,
    egress: &InterfaceFacts,
    debug: bool,
) -> RouterConfig {
    let nat_ports = nat_ports(ephemeral_ports());
    let mtu = pod.mtu.min(egress.mtu);
    RouterConfig {
        pod_ip: pod_ip.octets(),
        egress_source: source.octets(),
        fallback_ip: [0; 4],
        pod_ifindex: pod.index,
        egress_ifindex: egress.index,
        flags: if debug { config_flags::DEBUG } else { 0 },
        nat_port_min: nat_ports.0,
        nat_port_max: nat_ports.1,
        mss_clamp: u16::try_from(mtu.saturating_sub(40)).unwrap_or(u16::MAX),
        instance: 0,
        _pad: 0,
        nat_secret: 0,
    }
}

/// The data plane's view of the IPv6 half, without a fallback.
pub(crate) fn router_config6(
    v6: &Egress6,
    pod_ip: Ipv6Addr,
    pod: &InterfaceFacts,
    egress: &InterfaceFacts,
) -> RouterConfig6 {
    let mtu = pod.mtu.min(egress.mtu);
    let mask = RouterConfig6::mask(v6.source.prefix);
    let source = v6.source.ip.octets();
    RouterConfig6 {
        pod_ip: pod_ip.octets(),
        egress_source: source,
        fallback_ip: [0; 16],
        flags: 0,
        // The IPv6 header is 20 bytes longer than IPv4's.
        mss_clamp: u16::try_from(mtu.saturating_sub(60)).unwrap_or(u16::MAX),
        _pad: 0,
        // Without a gateway (a proxy's main container that found the network set up), the
        // kernel looks the route up.
        next_hop: if v6.gateway.is_unspecified() {
            [0; 5]
        } else {
            RouterConfig6::next_hop_via(v6.gateway.octets())
        },
        subnet: RouterConfig6::words(std::array::from_fn(|i| source[i] & mask[i])),
        subnet_mask: RouterConfig6::words(mask),
        _pad2: 0,
    }
}

/// A random, non-zero key for the translated-port choice.
pub(crate) fn nat_secret() -> u32 {
    let mut bytes = [0u8; 4];
    // SAFETY: writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let random = if n == 4 {
        u32::from_ne_bytes(bytes)
    } else {
        // No entropy source: still distinct per process and start.
        std::process::id() ^ crate::conntrack::monotonic_ns() as u32
    };
    random.max(1)
}

#[cfg(test)]
mod tests {
    use super::nat_ports;

    #[test]
    fn nat_ports_stay_out_of_the_ephemeral_range() {
        assert_eq!(nat_ports((32768, 60999)), (1024, 32767));
        assert_eq!(nat_ports((1024, 40000)), (40001, 65535));
        assert_eq!(nat_ports((10000, 20000)), (20001, 65535));
        assert_eq!(
            nat_ports((1024, 65535)),
            (1024, 65535),
            "nothing free: the default"
        );
    }
}
