//! The proxy modes in the netns lab, deployed as OpenShift deploys them (an init container
//! for the network, a main container for the proxy): the HTTP proxy, its rule checks and
//! how it serves, the DNS proxy in the data plane and as an unprivileged relay, both over
//! both families. Their variables' validation is in the `deploy` tests.
//!
//! | module | what it proves |
//! |---|---|
//! | `http` | the HTTP proxy allows, denies, tunnels and sends from EGRESS_SOURCE |
//! | `http_rules` | the rule check decides what is actually sent |
//! | `http_hosts` | numeric hosts are the IPv4 addresses they stand for, answered at once |
//! | `http_serving` | slow clients, connections and tunnels bounded; threads, bad requests |
//! | `http_dual_stack` | the HTTP proxy over both families |
//! | `dns` | the DNS proxy follows the records, in the data plane and as a relay |
//! | `dns_dual_stack` | the DNS proxy keeps the client's family |

mod dns;
mod dns_dual_stack;
mod http;
mod http_dual_stack;
mod http_hosts;
mod http_rules;
mod http_serving;
