//! The errors of the data-plane operations: loading and attaching ([`Error`]), and
//! finding what is attached ([`DiscoverError`], [`crate::dataplane::discover`]'s). Each
//! message says what failed; its cause is the error's `source()`, printed by
//! [`crate::error_chain`].

use std::{io, path::PathBuf};

/// Errors of the data-plane operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the loading task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("creating pin directory {path}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error("removing pin {path}")]
    Unpin { path: PathBuf, source: io::Error },
    #[error("pinning the link of {name} at {path}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("loading the BPF object")]
    Load(#[from] aya::EbpfError),
    #[error("program {0} is missing from the BPF object")]
    MissingProgram(&'static str),
    #[error("map {0} is missing from the BPF object")]
    MissingMap(&'static str),
    #[error("program {name}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    /// An interface lookup's error ([`crate::network::error::Error::NoInterface`]).
    #[error(transparent)]
    Network(#[from] crate::network::error::Error),
    #[error("attaching {name} to {iface}")]
    Attach {
        name: &'static str,
        iface: String,
        source: io::Error,
    },
    #[error("attaching {name} to {iface} as a tc filter")]
    AttachTc {
        name: &'static str,
        iface: String,
        #[source]
        source: crate::dataplane::attach::tc::Error,
    },
    #[error(
        "--attach tcx (EGRESS_ROUTER_ATTACH): this kernel has no TCX (Linux 6.6); `auto` or \
         `tc` attach through a clsact qdisc instead"
    )]
    NoTcx,
    #[error("reading the qdiscs of {iface}")]
    Qdiscs {
        iface: String,
        #[source]
        source: crate::dataplane::attach::tc::Error,
    },
    #[error("finding the programs attached to {iface}")]
    Attached {
        iface: String,
        source: Box<DiscoverError>,
    },
    #[error(transparent)]
    Maps(#[from] crate::dataplane::maps::Error),
}

/// Errors of finding (and detaching) what is attached, and of opening a running data
/// plane's maps.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("reading program {id}")]
    Program {
        id: u32,
        source: aya::programs::ProgramError,
    },
    #[error("program {0} is no longer loaded")]
    ProgramGone(u32),
    #[error("querying the TCX programs")]
    Tcx(#[source] std::io::Error),
    #[error("detaching {name} from {iface}")]
    Detach {
        name: &'static str,
        iface: String,
        source: std::io::Error,
    },
    #[error("{what} on interface {ifindex}")]
    Tc {
        what: &'static str,
        ifindex: u32,
        #[source]
        source: crate::dataplane::attach::tc::Error,
    },
    #[error(transparent)]
    Maps(#[from] crate::dataplane::maps::Error),
}
