//! The two address families as the maps tell them apart: each has its own conntrack
//! tables, limit table and names' addresses, and the code over them is generic.

use egress_common::{Addr, maps};

/// An address family's conntrack maps (and names' addresses): `[u8; 4]` (IPv4) or
/// `[u8; 16]` (IPv6).
pub trait CtFamily: Addr + Ord + aya::Pod {
    /// IPv6, not IPv4.
    const IPV6: bool;
    /// Answered flows.
    const REPLIED: &'static str;
    /// Flows waiting for their first answer.
    const UNREPLIED: &'static str;
    /// Clients over their flow limit.
    const LIMITED: &'static str;
    /// The addresses of rules that send to a name.
    const RULE_ADDRS: &'static str;
    /// The address, for people.
    fn ip(self) -> std::net::IpAddr;
}

impl CtFamily for [u8; 4] {
    const IPV6: bool = false;
    const REPLIED: &'static str = maps::CONNTRACK;
    const UNREPLIED: &'static str = maps::CT_UNREPLIED;
    const LIMITED: &'static str = maps::CT_LIMITED;
    const RULE_ADDRS: &'static str = maps::RULE_ADDRS;
    fn ip(self) -> std::net::IpAddr {
        self.into()
    }
}

impl CtFamily for [u8; 16] {
    const IPV6: bool = true;
    const REPLIED: &'static str = maps::CONNTRACK6;
    const UNREPLIED: &'static str = maps::CT_UNREPLIED6;
    const LIMITED: &'static str = maps::CT_LIMITED6;
    const RULE_ADDRS: &'static str = maps::RULE_ADDRS6;
    fn ip(self) -> std::net::IpAddr {
        self.into()
    }
}
