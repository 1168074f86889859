//! The pod's network, through rtnetlink: [`interface`] lookups (which change nothing),
//! the egress interface's set-up and teardown ([`plan`]), claiming EGRESS_SOURCE (the
//! [`mac`] and the conflict [`probe`], [`claim`]), and the ARP [`announce`]ment.
//!
//! Vocabulary: the *pod interface* (`eth0`) is where clients' packets arrive and where the
//! pod IP lives; the *egress interface* (`macvlan0`) holds EGRESS_SOURCE; a macvlan's
//! *parent* is the node's interface it is created on.

pub mod announce;
pub mod check;
pub mod claim;
pub mod error;
pub mod interface;
pub mod mac;
pub mod neighbours;
pub mod packet;
pub mod plan;
pub mod plan6;
pub mod probe;
pub mod probe6;
pub mod route;
pub mod verdict;
