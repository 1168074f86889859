//! Configuration: the OpenShift egress router variables (or their flags) -> validated
//! values. Nothing here touches the system, so every error is reported before anything
//! changes.
//!
//! | module | concern |
//! |---|---|
//! | [`agents`] | the options both agents take (conntrack, GC, flow limit, metrics address), validated once |
//! | [`error`] | the messages (OpenShift's texts) |
//! | [`fields`] | what every variable shares: EGRESS_SOURCE, EGRESS_GATEWAY, ports, names, the line grammar (both families) |
//! | [`mode`] | what the router is to do, `EGRESS_ROUTER_MODE` |
//! | [`redirect`] | `EGRESS_DESTINATION` and the redirect modes' whole configuration |
//! | [`http_proxy`] | the HTTP proxy's variable |
//! | [`dns_proxy`] | the DNS proxy's variable |
//! | [`source`] | where `EGRESS_DESTINATION` comes from (variable or file), loaded once per start and once per reload |
//! | `dual_stack` | the tests of the dual-stack forms |

pub mod agents;
pub mod dns_proxy;
#[cfg(test)]
mod dual_stack;
pub mod error;
pub mod fields;
pub mod http_proxy;
pub mod mode;
pub mod redirect;
pub mod source;
