//! Asking the egress network about an address, in either family, for `check`: is it free
//! (the ARP probe, or IPv6 duplicate address detection), and who answers for it (an ARP
//! request, or a neighbour solicitation from `::`: the holder of an IPv6 address defends
//! it with an advertisement to all nodes, so the gateway's MAC comes back without the
//! asking interface having any IPv6 address, and without the gateway learning one).
//! Blocking socket work, run off the async runtime.

use std::{io, net::IpAddr, time::Duration};

use crate::network::{
    probe::{Holder, Probe, ask, new_claim, probe},
    probe6::probe6,
};

/// The first other host that holds `ip`, probing from `mac` on interface `index`.
pub async fn holder(index: u32, mac: [u8; 6], ip: IpAddr) -> io::Result<Option<Holder>> {
    blocking(move || match ip {
        IpAddr::V4(ip) => probe(index, mac, ip, Probe::default(), new_claim()),
        IpAddr::V6(ip) => probe6(index, mac, ip, Probe::default(), new_claim()),
    })
    .await
}

/// The MAC of `target` as it answers `mac` on interface `index` (IPv4: `sender` is the
/// ARP request's sender address, unspecified when the interface does not hold one yet),
/// asked `tries` times `wait` apart.
pub async fn answer(
    index: u32,
    mac: [u8; 6],
    sender: IpAddr,
    target: IpAddr,
    (tries, wait): (u32, Duration),
) -> io::Result<Option<[u8; 6]>> {
    blocking(move || match (target, sender) {
        (IpAddr::V4(target), IpAddr::V4(sender)) => ask(index, mac, sender, target, tries, wait),
        (IpAddr::V4(target), IpAddr::V6(_)) => ask(
            index,
            mac,
            std::net::Ipv4Addr::UNSPECIFIED,
            target,
            tries,
            wait,
        ),
        (IpAddr::V6(target), _) => {
            let how = Probe {
                probes: tries,
                interval: wait,
                wait,
            };
            Ok(probe6(index, mac, target, how, new_claim())?.map(|h| h.mac))
        }
    })
    .await
}

/// Whether `ip` is on the subnet of `source`/`prefix` (of its family; never across
/// families).
#[must_use]
pub fn on_link(ip: IpAddr, source: IpAddr, prefix: u8) -> bool {
    match (ip, source) {
        (IpAddr::V4(ip), IpAddr::V4(source)) if prefix < 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(source) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(source)) if prefix < 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(source) & mask
        }
        _ => false,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::on_link;

    #[test]
    fn on_link_is_per_family_and_prefix() {
        let ip = |s: &str| s.parse().unwrap();
        assert!(on_link(ip("198.51.100.7"), ip("198.51.100.99"), 24));
        assert!(!on_link(ip("203.0.113.10"), ip("198.51.100.99"), 24));
        assert!(!on_link(ip("198.51.100.99"), ip("198.51.100.99"), 32));
        assert!(on_link(ip("2001:db8:e::7"), ip("2001:db8:e::99"), 64));
        assert!(!on_link(ip("2001:db8:f::10"), ip("2001:db8:e::99"), 64));
        assert!(!on_link(ip("2001:db8:e::7"), ip("2001:db8:e::99"), 128));
        assert!(!on_link(ip("198.51.100.7"), ip("2001:db8:e::99"), 1));
        // A /1 of either family.
        assert!(on_link(ip("10.0.0.1"), ip("100.0.0.1"), 1));
        assert!(on_link(ip("2001:db8::1"), ip("3fff::1"), 1));
    }
}
