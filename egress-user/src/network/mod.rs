//! The pod's network, through rtnetlink.
//!
//! | module | concern |
//! |---|---|
//! | [`interface`] | interface lookups, which change nothing |
//! | [`plan`] | the egress interface's set-up and teardown |
//! | [`plan6`] | its IPv6 half |
//! | [`mac`] | the stable MAC of an egress interface |
//! | [`claim`] | claiming EGRESS_SOURCE: no other live host holds it |
//! | [`probe`] | the ARP probe (RFC 5227) |
//! | [`probe6`] | duplicate address detection for IPv6 |
//! | [`packet`] | an AF_PACKET socket for the frames the router sends and hears itself |
//! | [`announce`] | gratuitous ARP and unsolicited neighbour advertisements |
//! | [`route`] | node mode's questions to the node's routing, and gateways kept resolved |
//! | [`check`] | `egress-router check`, the egress network's preflight |
//! | [`error`] | the errors of the set-up and lookups |
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
pub mod packet;
pub mod plan;
pub mod plan6;
pub mod probe;
pub mod probe6;
pub mod route;
