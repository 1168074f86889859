//! The data plane: the embedded BPF object, its programs and maps.
//!
//! - [`programs`]: the programs and their hooks, the table every walk goes through.
//! - [`load`]: load the object (the verifier runs here) and attach with TCX.
//! - [`tcx`]: the raw TCX attach, detach and query syscalls.
//! - [`discover`]: the data plane running in the namespace, found without its process.
//! - [`handover`]: a new load taking over a running data plane's maps.
//! - [`ipv6`]: the IPv6 configuration and conntrack of an instance with IPv6.
//! - [`bpffs`]: where pins live.
//! - [`maps`], [`layout`]: reading and writing the maps, and which maps a build can reuse.
//! - [`family`]: the address families' maps.
//! - [`flows`]: the conntrack table row by row.
//! - [`migrate`]: conntrack flows carried across a change of the entry layout.
//! - [`rules`]: the rules map as it should be, and the plan that gets it there.
//! - [`stats`]: the counters, summed over CPUs.
//! - [`node`]: node mode's programs, attachments and each instance's share of the maps.

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
