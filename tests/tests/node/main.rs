//! Node mode end to end (`egress-router node` and `node-register`) in the node lab
//! (`egress_tests::nodelab`, `nodelab6`): one agent per node serves the router pods that
//! register through the spool, from the node's uplink. IPv4 unmarked, IPv6 with a `6`
//! suffix.
//!
//! | module | what it proves |
//! |---|---|
//! | `serve` | a client pod's traffic leaves from EGRESS_SOURCE, not through the pod |
//! | `serve6` | a client pod's traffic leaves from EGRESS_SOURCE, not through the pod |
//! | `instances` | instances come, go, move, restart, are torn down; registrations checked |
//! | `owner` | an address another host holds is not served until it is free |
//! | `counts` | the per-client flow limit; each instance's own counters |

mod counts;
mod instances;
mod owner;
mod serve;
mod serve6;
