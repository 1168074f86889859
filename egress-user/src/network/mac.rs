//! Ethernet addresses: the stable MAC of an egress interface, and the text form.

use std::net::IpAddr;

/// The egress interface's MAC for EGRESS_SOURCE `ip`: `02:45:` and the four octets of an
/// IPv4 address, `02:36:` and the last four of an IPv6 one (an instance with IPv6 alone;
/// `02`: locally administered, unicast; `45`: "E", `36`: "6"). Every replacement of a
/// router pod, on any node, takes the same MAC, so switches, the gateway's neighbour cache
/// and RHOSP's allowed-address pairs stay right across a failover.
#[must_use]
pub const fn stable_mac(ip: IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            [0x02, 0x45, a, b, c, d]
        }
        IpAddr::V6(ip) => {
            let o = ip.octets();
            [0x02, 0x36, o[12], o[13], o[14], o[15]]
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
#[must_use]
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `aa:bb:cc:dd:ee:ff` as six bytes.
#[must_use]
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stable_mac_is_local_unicast_and_names_the_address() {
        let mac = stable_mac(IpAddr::from([198, 51, 100, 99]));
        assert_eq!(mac_text(mac), "02:45:c6:33:64:63");
        let mac6 = stable_mac("2001:db8:e::c633:6463".parse().unwrap());
        assert_eq!(mac_text(mac6), "02:36:c6:33:64:63");
        assert_eq!(mac6[0] & 0b11, 0b10);
        assert_eq!(mac[0] & 0b11, 0b10, "locally administered, not multicast");
        assert_eq!(parse_mac("02:45:c6:33:64:63"), Some(mac));
        assert_eq!(parse_mac("02:45:c6:33:64"), None);
    }
}
