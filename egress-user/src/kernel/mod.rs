//! What the running kernel offers: every kernel feature the data plane and the agents use,
//! found by probing the kernel (never from its version string), whether it is there, and
//! what is used in its place when it is not. Every mode checks this list before it changes
//! anything, and refuses to start when a feature without a fallback is missing.
//!
//! | module | concern |
//! |---|---|
//! | [`features`] | the list: each feature, who needs it, since when, and its fallback |
//! | [`probe`] | the probes that ask the kernel directly (program and map types, helpers, syscalls) |
//! | [`scratch`] | the probes that need interfaces: run in a network namespace of their own |

pub mod features;
pub mod probe;
pub mod scratch;

pub use features::{Feature, Found, Plane, Report, Status};
