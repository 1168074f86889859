//! egress-router user space: loading and attaching the data plane, reading its state.
//!
//! The BPF object is built by `build.rs` and embedded here, so the binary is self-contained.

pub mod agent;
pub mod config;
pub mod dataplane;
pub mod dns_proxy;
pub mod http_proxy;
pub mod inspect;
pub mod maps;
pub mod metrics;
pub mod network;
pub mod outbound;
pub mod proxy_config;
pub mod redirect;
pub mod running;
pub mod tcx;

/// The egress-router BPF object (ELF with BTF), built from `egress-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress"));
