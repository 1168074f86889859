//! The errors of the data-plane operations: loading and attaching ([`Error`]), and
//! finding what is attached ([`DiscoverError`], [`crate::dataplane::discover`]'s).

use std::{io, path::PathBuf};

/// Errors of the data-plane operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the loading task failed: {0}")]
    Task(String),
    #[error("creating pin directory {path}: {source}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error("pinning map {name} at {path}: {source}")]
    Pin {
        name: &'static str,
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("loading the BPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {0} is missing from the BPF object")]
    MissingProgram(&'static str),
    #[error("map {0} is missing from the BPF object")]
    MissingMap(&'static str),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("interface {0} does not exist")]
    NoInterface(String),
    #[error("attaching {name} to {iface}: {source}")]
    Attach {
        name: &'static str,
        iface: String,
        source: io::Error,
    },
    #[error("finding the programs attached to {iface}: {source}")]
    Attached {
        iface: String,
        source: Box<DiscoverError>,
    },
    #[error(transparent)]
    Maps(#[from] crate::dataplane::maps::Error),
    #[error("map {name}: {source}")]
    ObjectMap {
        name: &'static str,
        source: aya::maps::MapError,
    },
}

/// Errors of finding (and detaching) what is attached, and of opening a running data
/// plane's maps.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("program {id}: {source}")]
    Program {
        id: u32,
        source: aya::programs::ProgramError,
    },
    #[error("program {0} is no longer loaded")]
    ProgramGone(u32),
    #[error("querying the TCX programs: {0}")]
    Tcx(std::io::Error),
    #[error("detaching {name} from {iface}: {source}")]
    Detach {
        name: &'static str,
        iface: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Maps(#[from] crate::dataplane::maps::Error),
}
