//! The proxies of the proxy pods' main containers, in user space.
//!
//! | module | concern |
//! |---|---|
//! | [`http`] | the HTTP proxy (`egress-router http-proxy`) |
//! | [`http_serve`] | its serving threads |
//! | [`host`] | a request's host: a numeric IPv4 form (`0xcb00711a`, `3405803802`) is the address it stands for |
//! | [`headers`] | the hop-by-hop headers it does not forward |
//! | [`refusal`] | what it answers when it does not forward |
//! | [`relay`] | the DNS proxy's userspace relay, for a container that may not load BPF programs (the DNS proxy otherwise runs in the data plane, see [`crate::instance::names`]) |
//! | [`outbound`] | the pod's resolver, name resolution with TTLs (always as absolute names), and connections from EGRESS_SOURCE |
//! | [`pipe`] | bytes both ways for tunnels and the relay, with an idle limit and keepalive |

pub mod headers;
pub mod host;
pub mod http;
pub mod http_serve;
pub mod outbound;
pub mod pipe;
pub mod refusal;
pub mod relay;
