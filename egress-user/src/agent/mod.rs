//! The agent: the loop that runs an [`crate::instance`] ([`run`]) and its Prometheus
//! [`metrics`] and health endpoint.

pub mod metrics;
pub mod run;
