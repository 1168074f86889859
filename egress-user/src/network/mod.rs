//! The pod's network, through rtnetlink: [`interface`] lookups (which change nothing),
//! the egress interface's set-up and teardown ([`plan`]), claiming EGRESS_SOURCE (the
//! [`mac`] and the conflict [`probe`], [`claim`]), and the ARP [`announce`]ment.
//!
//! Vocabulary: the *pod interface* (`eth0`) is where clients' packets arrive and where the
//! pod IP lives; the *egress interface* (`macvlan0`) holds EGRESS_SOURCE; a macvlan's
//! *parent* is the node's interface it is created on.
//!
//! | module | concern |
//! |---|---|
//! | [`interface`] | interface lookups, which change nothing |
//! | [`plan`] | the egress interface's set-up and teardown |
//! | [`plan6`] | its IPv6 half |
//! | [`mac`] | the stable MAC |
//! | [`claim`] | claiming EGRESS_SOURCE: no other live host holds it |
//! | [`probe`] | the ARP probe before EGRESS_SOURCE is claimed |
//! | [`probe6`] | duplicate address detection for its IPv6 address |
//! | [`packet`] | one AF_PACKET socket for the frames the router sends and hears itself |
//! | [`announce`] | gratuitous ARP and unsolicited neighbour advertisements |
//! | [`check`] | `egress-router check` |
//! | [`neighbours`] | `check`'s questions to the egress network, per family |
//! | [`verdict`] | `check`'s report |
//! | [`route`] | the interface a route leads to (node mode) |
//! | [`error`] | the errors of the set-up and lookups |

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
