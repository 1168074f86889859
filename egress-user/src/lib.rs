//! egress-router user space: the library behind the `egress-router` binary. One folder per
//! concern:
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | the variables and flags, validated before anything changes |
//! | [`network`] | interface lookups, the egress interface's set-up, ARP announcements |
//! | [`dataplane`] | the BPF object: load, attach, discover, hand over, maps, rules |
//! | [`instance`] | a running instance: set-up, rule sources, teardown |
//! | [`node`] | node mode: one agent (the node agent) serves every instance of a node |
//! | [`pod_agent`] | the pod agent: the loop that runs an instance in its router pod, metrics and health |
//! | [`agent`] | what both agents share: the HTTP endpoints, signals, the conntrack GC loop |
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
pub mod node;
pub mod pod_agent;
pub mod proxy;

/// The egress-router BPF object (ELF with BTF), built from `egress-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress"));

/// An error with its causes, "outer: cause: root cause", for logs (tracing's `%err` shows
/// only the outermost message, which for a map write is "`bpf_map_update_elem` failed"
/// without the errno). A cause whose text the message already contains is not repeated.
#[must_use]
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_chain_names_every_cause_once() {
        let io = std::io::Error::from_raw_os_error(libc::EPERM);
        let err = crate::dataplane::maps::Error::Map {
            name: "RULES",
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_delete_elem",
                io_error: io,
            }),
        };
        assert_eq!(
            super::error_chain(&err),
            "map RULES: `bpf_map_delete_elem` failed: Operation not permitted (os error 1)"
        );
    }
}
