//! The node lab's IPv6 half, for dual-stack node mode: [`NodeLab::enable_ipv6`] gives the
//! node, the pods, the gateway and the server addresses of 2001:db8::/32 beside the IPv4
//! ones, wired as routed CNIs wire IPv6 (Calico's way: each pod's address as /128 routed
//! to its host-side veth, which holds the pods' default gateway, the link-local fe80::1).
//!
//! ```text
//!  client pod i  eth0 2001:db8:2::(100+i)/128 ---- cli<i>  fe80::1 (node ns, /128 route)
//!  router pod i  eth0 2001:db8:2::(10+i)/128  ---- pod<i>  fe80::1 (node ns, /128 route)
//!  node ns: uplink 2001:db8:e::2/64 ---- lan0 2001:db8:e::1 (gateway ns)
//!                                        wan0 2001:db8:f::1 ---- eth0 2001:db8:f::10 (server)
//! ```
//!
//! Instance i's EGRESS_SOURCE6 is 2001:db8:e::(100+i), answered by the node agent's XDP
//! program (neighbour discovery) with the uplink's MAC.

use std::net::Ipv6Addr;

use anyhow::Result;

use crate::{
    lab::GATEWAY_IP,
    lab6::{GATEWAY_IP6, GATEWAY_WAN_IP6, SERVER_IP6, addr6},
    netns::Netns,
    nodelab::{NodeLab, egress_source},
};

/// The node's own IPv6 address on the uplink.
pub const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xe, 0, 0, 0, 0, 2);
/// The link-local address of every host-side veth: the pods' default gateway.
const HOST_SIDE: &str = "fe80::1";

/// Router pod `i`'s IPv6 address.
#[must_use]
pub fn router_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x10 + i as u16)
}

/// Client pod `i`'s IPv6 address.
#[must_use]
pub fn client_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x100 + i as u16)
}

/// Instance `i`'s EGRESS_SOURCE6.
#[must_use]
pub fn egress_source6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xe, 0, 0, 0, 0, 0x100 + i as u16)
}

impl NodeLab {
    /// The lab's IPv6 addresses and routes (see the module's picture); one node only.
    pub fn enable_ipv6(&self) -> Result<()> {
        anyhow::ensure!(self.node_b.is_none(), "the IPv6 half has one node");
        addr6(&self.gateway, "lan0", GATEWAY_IP6)?;
        addr6(&self.gateway, "wan0", GATEWAY_WAN_IP6)?;
        addr6(&self.server, "eth0", SERVER_IP6)?;
        let default = ["-6", "route", "add", "default", "via"];
        self.server
            .ip(&[&default[..], &[&GATEWAY_WAN_IP6.to_string()]].concat())?;
        self.gateway.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        addr6(&self.node, "uplink", NODE_IP6)?;
        self.node
            .ip(&[&default[..], &[&GATEWAY_IP6.to_string()]].concat())?;
        self.node.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        for (i, router) in self.routers.iter().enumerate() {
            wire_pod6(&self.node, router, &format!("pod{i}"), router_ip6(i))?;
        }
        for (i, client) in self.clients.iter().enumerate() {
            wire_pod6(&self.node, client, &format!("cli{i}"), client_ip6(i))?;
        }
        Ok(())
    }
}

impl NodeLab {
    /// Registers router pod `i` as a dual-stack instance: EGRESS_SOURCE and EGRESS_GATEWAY
    /// of both families (instance i's addresses), EGRESS_DESTINATION `destination`. Its
    /// IPv6 address is what `node-register` finds on its `eth0`, unless `pod_ips` gives
    /// POD_IPS.
    pub fn register_dual(
        &self,
        i: usize,
        destination: &str,
        pod_ips: Option<&str>,
    ) -> Result<String> {
        let mut cmd = self.routers[i].command(crate::egress_router_bin());
        cmd.arg("node-register")
            .arg("--spool")
            .arg(self.spool_of(i))
            .env(
                "EGRESS_SOURCE",
                format!("{}/24,{}/64", egress_source(i), egress_source6(i)),
            )
            .env("EGRESS_GATEWAY", format!("{GATEWAY_IP},{GATEWAY_IP6}"))
            .env("EGRESS_DESTINATION", destination);
        if let Some(ips) = pod_ips {
            cmd.env("POD_IPS", ips);
        }
        let out = crate::netns::run_bounded(&mut cmd, std::time::Duration::from_secs(10))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(out.status.success(), "node-register failed: {text}");
        Ok(text)
    }
}

/// Pod `ns` at `ip`/128, its host side `host` on `node` at fe80::1 with the /128 route.
fn wire_pod6(node: &Netns, ns: &Netns, host: &str, ip: Ipv6Addr) -> Result<()> {
    for (ns, dev) in [(node, host), (ns, "eth0")] {
        ns.sysctl(&format!("net.ipv6.conf.{dev}.accept_dad"), "0")?;
        ns.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "0")?;
    }
    let link_local = format!("{HOST_SIDE}/64");
    node.ip(&["-6", "addr", "add", &link_local, "dev", host, "nodad"])?;
    node.ip(&["-6", "route", "add", &format!("{ip}/128"), "dev", host])?;
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{ip}/128"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    ns.ip(&[
        "-6", "route", "add", "default", "via", HOST_SIDE, "dev", "eth0",
    ])
}
