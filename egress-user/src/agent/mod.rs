//! The agent: the loop that runs an [`crate::instance`] ([`run`]), its Prometheus
//! [`metrics`] and health endpoint (served with [`prometheus`], which the node agent shares),
//! and the [`lock`] that keeps it one per instance.
//!
//! | module | concern |
//! |---|---|
//! | [`run`] | the loop that runs an instance (it knows no modes) |
//! | [`metrics`] | its Prometheus metrics and health |
//! | [`prometheus`] | the Prometheus side the node agent shares |
//! | [`lock`] | the one-agent-per-instance lock |

pub mod lock;
pub mod metrics;
pub mod prometheus;
pub mod run;
