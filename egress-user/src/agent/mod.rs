//! The agent: the loop that runs an [`crate::instance`] ([`run`]), its Prometheus
//! [`metrics`] and health endpoint (served with [`prometheus`], which the node agent shares),
//! and the [`lock`] that keeps it one per instance.

pub mod lock;
pub mod metrics;
pub mod prometheus;
pub mod run;
