//! The proxies of the proxy pods' main containers, in user space.
//!
//! | module | concern |
//! |---|---|
//! | [`http`] | the HTTP proxy (`egress-router http-proxy`), a forward proxy on hyper |
//! | [`http_serve`] | serving it: one runtime and `SO_REUSEPORT` listener per CPU |
//! | [`headers`] | hop-by-hop headers, which a proxy must not forward |
//! | [`refusal`] | what the HTTP proxy answers when it does not forward |
//! | [`relay`] | the DNS proxy's userspace relay, for a container that may not load BPF programs (the DNS proxy otherwise runs in the data plane, see [`crate::instance::names`]) |
//! | [`outbound`] | the pod's resolver, name resolution with TTLs, and connections from EGRESS_SOURCE |
//! | [`pipe`] | bytes both ways for tunnels and the relay, with an idle limit and keepalive |

pub mod headers;
pub mod http;
pub mod http_serve;
pub mod outbound;
pub mod pipe;
pub mod refusal;
pub mod relay;
