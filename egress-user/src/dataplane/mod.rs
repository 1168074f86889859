//! The data plane: the embedded BPF object, its programs and maps.
//!
//! | module | concern |
//! |---|---|
//! | [`programs`] | the programs and their hooks, the table every walk goes through |
//! | [`load`] | load the object (the verifier runs here) and attach with TCX |
//! | [`tcx`] | the raw TCX attach, detach and query syscalls |
//! | [`discover`] | the data plane running in the namespace, found without its process |
//! | [`handover`] | a new load taking over a running data plane's maps |
//! | [`ipv6`] | the IPv6 programs, configuration and conntrack of an instance with IPv6 |
//! | [`bpffs`] | where pins live |
//! | [`maps`] | reading and writing the maps |
//! | [`layout`] | the layout of each map, and which maps a build can reuse |
//! | [`family`] | the address families' maps |
//! | [`flows`] | the conntrack table row by row |
//! | [`batch`] | a whole hash map read in batches (`BPF_MAP_LOOKUP_BATCH`) |
//! | [`migrate`] | conntrack flows carried across a change of the entry layout |
//! | [`rules`] | the rules map as it should be, and the plan that gets it there |
//! | [`configure`] | the rules plan and the configuration written into the maps (both families) |
//! | [`stats`] | the counters, summed over CPUs |
//! | [`node`] | node mode's programs, attachments and each instance's share of the maps |
//! | [`error`] | the errors of the data-plane operations |

pub mod batch;
pub mod bpffs;
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
pub mod tcx;
