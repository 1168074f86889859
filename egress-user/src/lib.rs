//! egress-router user space: the library behind the `egress-router` binary. One folder per
//! concern:
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | the variables and flags, validated before anything changes |
//! | [`network`] | interface lookups, the egress interface's set-up, ARP announcements |
//! | [`dataplane`] | the BPF object: load, attach, discover, hand over, maps, rules |
//! | [`instance`] | a running instance: set-up, rule sources, teardown |
//! | [`agent`] | the loop that runs an instance, metrics and health |
//! | [`conntrack`] | GC, flow views, the data plane's clock |
//! | [`inspect`] | `status` |
//! | [`proxy`] | the HTTP proxy and the DNS relay in user space |
//!
//! The BPF object is built by `build.rs` and embedded here, so the binary is self-contained.

pub mod agent;
pub mod config;
pub mod conntrack;
pub mod dataplane;
pub mod inspect;
pub mod instance;
pub mod network;
pub mod proxy;

/// The egress-router BPF object (ELF with BTF), built from `egress-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress"));
