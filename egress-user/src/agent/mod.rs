//! What the pod agent ([`crate::pod_agent`]) and the node agent ([`crate::node::agent`])
//! share, so that neither imports the other.
//!
//! | module | concern |
//! |---|---|
//! | [`prometheus`] | the `/metrics` and `/healthz` HTTP server, and the exposition's families |
//! | [`signals`] | the signals an agent acts on, installed before its set-up |
//! | [`gc`] | the conntrack GC as an agent runs it: a pass when due, the flow limit, the log |

pub mod gc;
pub mod prometheus;
pub mod signals;
