//! The lab's IPv6 half, for dual-stack tests: [`Lab::enable_ipv6`] turns IPv6 on in the
//! namespaces of the path (client, router pod interface, gateway, server) and gives them
//! addresses of the IPv6 documentation prefix 2001:db8::/32 beside the IPv4 ones. The
//! router's egress interface is left to egress-router, as the IPv4 side is. Namespaces of
//! other tests keep IPv6 off ([`crate::netns::Netns::new`]).
//!
//! ```text
//!  client eth0 2001:db8:2::2 ----- router eth0 2001:db8:2::1 (pod interface)
//!                                  macvlan0 (EGRESS_SOURCE6 2001:db8:e::100, by egress-router)
//!  gateway lan0 2001:db8:e::1, wan0 2001:db8:f::1 ----- server eth0 2001:db8:f::10
//! ```

use std::net::Ipv6Addr;

use anyhow::Result;

use crate::{
    lab::{EGRESS_SOURCE, GATEWAY_IP, Lab},
    netns::Netns,
};

/// The client pod's IPv6 address.
pub const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
/// The router pod's IPv6 address on the pod interface.
pub const ROUTER_POD_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
/// The gateway on the node network (EGRESS_GATEWAY's IPv6 half).
pub const GATEWAY_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xe, 0, 0, 0, 0, 1);
/// EGRESS_SOURCE's IPv6 half.
pub const EGRESS_SOURCE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xe, 0, 0, 0, 0, 0x100);
/// The gateway towards the server.
pub const GATEWAY_WAN_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 1);
/// The remote server's IPv6 address.
pub const SERVER_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 0x10);

/// `EGRESS_SOURCE` and `EGRESS_GATEWAY` of a dual-stack instance in the lab.
#[must_use]
pub fn dual_stack_env() -> [String; 2] {
    [
        format!("{EGRESS_SOURCE}/24,{EGRESS_SOURCE6}/64"),
        format!("{GATEWAY_IP},{GATEWAY_IP6}"),
    ]
}

/// Turns IPv6 on for `dev` in `ns` and gives it `ip`/64, usable at once: no DAD, for it
/// nor for the link-local address IPv6 brings (whose local route would otherwise appear
/// a moment later, in the middle of a test that compares the namespace's state).
pub(crate) fn addr6(ns: &Netns, dev: &str, ip: Ipv6Addr) -> Result<()> {
    ns.sysctl(&format!("net.ipv6.conf.{dev}.accept_dad"), "0")?;
    ns.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "0")?;
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{ip}/64"),
        "dev",
        dev,
        "nodad",
    ])
}

impl Lab {
    /// Another IPv6 address for the server (`ip`, in 2001:db8:f::/64), usable at once.
    pub fn add_server_ip6(&self, ip: &str) -> Result<()> {
        self.server.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{ip}/64"),
            "dev",
            "eth0",
            "nodad",
        ])
    }

    /// The lab's IPv6 addresses and routes (see the module's picture).
    pub fn enable_ipv6(&self) -> Result<()> {
        addr6(&self.client, "eth0", CLIENT_IP6)?;
        addr6(&self.router, "eth0", ROUTER_POD_IP6)?;
        addr6(&self.gateway, "lan0", GATEWAY_IP6)?;
        addr6(&self.gateway, "wan0", GATEWAY_WAN_IP6)?;
        addr6(&self.server, "eth0", SERVER_IP6)?;
        self.server.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &GATEWAY_WAN_IP6.to_string(),
        ])?;
        self.gateway.sysctl("net.ipv6.conf.all.forwarding", "1")
    }
}
