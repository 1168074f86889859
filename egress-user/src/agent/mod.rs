//! The agent: the loop that runs an [`crate::instance`] ([`run`]), its Prometheus
//! [`metrics`] and health endpoint, and the [`lock`] that keeps it one per instance.

pub mod lock;
pub mod metrics;
pub mod run;
