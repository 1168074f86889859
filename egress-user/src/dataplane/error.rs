//! The errors of the data-plane operations ([`crate::dataplane::load`]).

use std::{io, path::PathBuf};

use crate::dataplane::discover;

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
        source: Box<discover::Error>,
    },
    #[error(transparent)]
    Maps(#[from] crate::dataplane::maps::Error),
    #[error("map {name}: {source}")]
    ObjectMap {
        name: &'static str,
        source: aya::maps::MapError,
    },
}
