//! The shared libraries of the entry programs (cilium's `bpf/lib`): parsing, conntrack, NAT,
//! the path's limits, forwarding, configuration and counters. They hold no entry program;
//! IPv4 and IPv6 twins sit side by side (`parse`/`parse6`, `icmp`/`icmp6`, `path`/`path6`).
//!
//! | module | concern |
//! |---|---|
//! | `parse` | bounds-checked header access (TC and XDP), the IPv4 header |
//! | `parse6` | the IPv6 header and its extension headers |
//! | `flow` | one parse of a packet's flow: key, ports or echo id, TCP segment |
//! | `frag` | ports of fragmented datagrams in flight, for their later fragments |
//! | `tcp` | the TCP segment conntrack tracks, RST/FIN acceptance, the MSS clamp |
//! | `conntrack` | the flow table's logic: lookup states, refresh, promotion, the pod's own flows |
//! | `ctmaps` | the conntrack maps of each address family, and the tables' operations |
//! | `tuple` | a new flow's translated tuple: claim, takeover, commit |
//! | `nat` | source-port allocation and the rewrite of a tracked packet |
//! | `rules` | where a new flow goes: rule, name, fallback |
//! | `icmp` | ICMP errors about tracked flows |
//! | `icmp6` | ICMPv6 errors about tracked flows (Packet Too Big above all) |
//! | `path` | the path's limits over IPv4: Time Exceeded, Fragmentation Needed |
//! | `path6` | the path's limits over IPv6: Time Exceeded, Packet Too Big |
//! | `budget` | the rate limit of the ICMP errors the router sends itself |
//! | `fib` | forwarding with `bpf_redirect_neigh` |
//! | `claim` | ARP for EGRESS_SOURCE on the egress interface: probes answered, rivals recorded |
//! | `config` | the instance configuration maps |
//! | `metrics` | verdicts and per-CPU counters (per instance in node mode) |

pub(crate) mod budget;
pub(crate) mod claim;
pub(crate) mod config;
pub(crate) mod conntrack;
pub(crate) mod ctmaps;
pub(crate) mod fib;
pub(crate) mod flow;
pub(crate) mod frag;
pub(crate) mod icmp;
pub(crate) mod icmp6;
pub(crate) mod metrics;
pub(crate) mod nat;
pub(crate) mod parse;
pub(crate) mod parse6;
pub(crate) mod path;
pub(crate) mod path6;
pub(crate) mod rules;
pub(crate) mod tcp;
pub(crate) mod tuple;
