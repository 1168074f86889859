//! The pod agent: the loop that runs an [`crate::instance`] in its router pod ([`run`]),
//! its Prometheus [`metrics`] and health endpoint, and the [`lock`] that keeps it one per
//! instance. What it shares with the node agent is in [`crate::agent`].
//!
//! | module | concern |
//! |---|---|
//! | [`run`] | the loop: rule sources, signals, the conntrack GC, debug events |
//! | [`metrics`] | its `/metrics` and `/healthz` |
//! | [`lock`] | one agent per instance: an abstract Unix socket |

pub mod lock;
pub mod metrics;
pub mod run;
