//! The data plane: the embedded BPF object, its programs and maps.
//!
//! | module | concern |
//! |---|---|
//! | [`programs`] | the programs of both modes and where they run: the table every walk goes through |
//! | [`load`] | load the object for a pod or a node (the verifier runs here), and attach |
//! | [`attach`] | every attach, detach and query of a program at its hook (TCX, the XDP link) |
//! | [`discover`] | the data plane running in the namespace, found without its process |
//! | [`handover`] | a new load taking over a running data plane's maps |
//! | [`error`] | the errors of loading, attaching and discovering |
//! | [`ipv6`] | the IPv6 configuration and conntrack of an instance with IPv6 |
//! | [`bpffs`] | where pins live |
//! | [`maps`] | reading and writing the maps |
//! | [`layout`] | which maps a build can reuse, and their sizes |
//! | [`batch`] | a whole hash map read with `BPF_MAP_LOOKUP_BATCH` |
//! | [`claim`] | this router's claim of EGRESS_SOURCE and the last rival the data plane saw |
//! | [`clients`] | the client networks: the prefixes whose addresses may open flows |
//! | [`configure`] | an instance's configuration and rules written to its maps, undone on failure |
//! | [`family`] | the address families' maps |
//! | [`flows`] | the conntrack table row by row |
//! | [`migrate`] | conntrack flows carried across a change of the entry layout |
//! | [`rules`] | the rules map as it should be, and the plan that gets it there |
//! | [`stats`] | the counters, summed over CPUs |
//! | [`node`] | node mode's share of the maps: each instance's configuration, rules and lookups |

pub mod attach;
pub mod batch;
pub mod bpffs;
pub mod claim;
pub mod clients;
pub mod configure;
pub mod discover;
pub mod error;
pub mod family;
pub mod flows;
pub mod handover;
pub mod ipv6;
pub mod layout;
pub mod load;
pub mod maps;
pub mod migrate;
pub mod node;
pub mod programs;
pub mod rules;
pub mod stats;
