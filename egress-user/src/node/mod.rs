//! Node mode (`egress-router node`): one privileged agent per node, in the node's network
//! namespace, runs the redirect data plane for every egress router instance whose router
//! pod is on the node, with no macvlan and no MAC of its own: translated packets leave
//! the node's uplink with the uplink's MAC, and the uplink's XDP program answers ARP and
//! neighbour solicitations for the egress addresses, which are never added to the node's stack.
//!
//! | module | concern |
//! |---|---|
//! | [`registration`] | what a router pod hands the agent through the spool directory |
//! | [`agent`] | the node agent: the loop that serves what the spool says |
//! | `instances` | one instance served, changed or dropped; gateways resolved again |
//! | [`configs`] | an instance as the node's maps hold it (both families) |
//! | [`metrics`] | the node agent's `/metrics` (per instance) and `/healthz` |
//! | [`statics`] | instances configured by the agent's own files (OpenShift's `EgressRouter` resource among them), which registrations name |
//! | [`status`] | `node-status`, every instance as the pinned maps have it |
//! | [`teardown`] | `node-teardown`, what the agent left, removed |
//!
//! In node mode the program table's roles ([`crate::dataplane::programs::Role`]) are a
//! router pod's host-side interface and the node's uplink, and an instance's
//! configuration names them with [`egress_common::RouterConfig::host_ifindex`] and
//! [`egress_common::RouterConfig::uplink_ifindex`]. What the node agent shares with the pod
//! agent is in [`crate::agent`].
//!
//! The data plane's side is [`crate::dataplane::node`] (the maps) and the node entries of
//! [`crate::dataplane::programs`] and, in the BPF object, `egress_common::node`.

pub mod agent;
pub mod configs;
mod instances;
pub mod metrics;
pub mod registration;
pub mod statics;
pub mod status;
pub mod teardown;
