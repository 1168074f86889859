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
//! | [`kernel`] | what the running kernel offers, probed: `features` |
//! | [`proxy`] | the HTTP proxy and the DNS relay in user space |
//!
//! The BPF object is built by `build.rs` and embedded here, so the binary is self-contained.

pub mod agent;
pub mod config;
pub mod conntrack;
pub mod dataplane;
pub mod inspect;
pub mod instance;
pub mod kernel;
pub mod network;
pub mod node;
pub mod pod_agent;
pub mod proxy;

/// The egress-router BPF object (ELF with BTF), built from `egress-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress"));

/// An error and its causes, "what failed: why: root cause": the one way an error is
/// printed, by the CLI's exit and by every log line that reports one (`error =
/// %error_chain(&err)`). Every error here says what failed and leaves its cause to
/// [`source`](std::error::Error::source) (aya's rule), so a plain walk of the sources names
/// each clause once. An `anyhow::Error` is printed the same way: `error_chain(&*err)`.
#[must_use]
pub fn error_chain<'a>(err: &'a (dyn std::error::Error + 'static)) -> ErrorChain<'a> {
    ErrorChain(err)
}

/// [`error_chain`]'s result: `Display` writes the error, then each source after ": ".
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl std::fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use aya::{maps::MapError, sys::SyscallError};

    use crate::{
        dataplane::{error::Error as LoadError, maps::Error as MapsError},
        error_chain,
        instance::setup::Error as SetupError,
    };

    fn refused(call: &'static str) -> MapsError {
        MapsError::Map {
            name: "RULES",
            source: MapError::SyscallError(SyscallError {
                call,
                io_error: std::io::Error::from_raw_os_error(libc::EPERM),
            }),
        }
    }

    #[test]
    fn the_chain_names_each_clause_once_with_or_without_anyhow() {
        let err = SetupError::Dataplane(LoadError::Maps(refused("bpf_map_update_elem")));
        let text = "data plane: map RULES: `bpf_map_update_elem` failed: Operation not \
                    permitted (os error 1)";
        assert_eq!(error_chain(&err).to_string(), text);
        // The CLI's exit: anyhow's context on top, the same walk.
        let any = anyhow::Error::from(err).context("applying the configuration");
        let chained = error_chain(&*any).to_string();
        assert_eq!(chained, format!("applying the configuration: {text}"));
        assert_eq!(chained, format!("{any:#}"));
    }

    #[test]
    fn a_failed_undo_is_named_beside_the_failure_not_as_its_cause() {
        let err = MapsError::Restore {
            error: Box::new(refused("bpf_map_update_elem")),
            restore: Box::new(refused("bpf_map_delete_elem")),
        };
        assert_eq!(
            error_chain(&err).to_string(),
            "the rules were not written, and writing the previous ones back failed too (map \
             RULES: `bpf_map_delete_elem` failed: Operation not permitted (os error 1)): map \
             RULES: `bpf_map_update_elem` failed: Operation not permitted (os error 1)"
        );
    }
}
