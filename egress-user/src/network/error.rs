//! Errors of the network set-up and lookups. Each message says what failed; its cause is
//! the error's `source()`, printed by [`crate::error_chain`].

use std::io;

/// Errors of the network set-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening a netlink socket")]
    Connect(#[source] io::Error),
    #[error("egress interface {0} does not exist (pass --macvlan-parent to create it)")]
    NoEgressInterface(String),
    #[error("macvlan parent interface {0} does not exist")]
    NoParent(String),
    #[error("interface {0} has no Ethernet address")]
    NoMac(String),
    #[error("{what}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("interface {0} does not exist")]
    NoInterface(String),
    #[error("interface {0} has no IPv4 address")]
    NoIpv4(String),
    #[error("turning IPv4 forwarding off")]
    Forwarding(#[source] io::Error),
    #[error("interface {0} has no global IPv6 address, but EGRESS_SOURCE has an IPv6 one")]
    NoIpv6(String),
    #[error(
        "EGRESS_SOURCE has an IPv6 address, but this kernel has IPv6 off (booted with \
         ipv6.disable=1?): {0} is missing"
    )]
    NoKernelIpv6(String),
    #[error("writing {path}")]
    Sysctl { path: String, source: io::Error },
    #[error("sending a neighbour advertisement on {iface}")]
    Ndisc { iface: String, source: io::Error },
    #[error("ARP on {iface}")]
    Arp { iface: String, source: io::Error },
    #[error(
        "EGRESS_SOURCE {ip} is in use: {mac} answered for it on {iface}{who}. Another egress \
         router (a predecessor still running), a host or a gateway with proxy ARP holds it; \
         not claiming it a second time. Stop the other holder, or set \
         EGRESS_ROUTER_FORCE_SOURCE=1 (--force-source) to claim it anyway"
    )]
    SourceInUse {
        ip: std::net::IpAddr,
        mac: String,
        iface: String,
        /// Who the holder is, when it said (`, as ...`), else empty.
        who: String,
    },
}
