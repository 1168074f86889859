//! Finding a running data plane without the process that set it up: from the programs
//! attached to the interfaces (TCX, queried by hook) and from there its maps by ID, or from
//! the pins of an instance. This is what lets an agent adopt the data plane an init
//! container left behind, and lets `status`, `conntrack` and `stats` work with no agent.

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::programs::{ProgramInfo, loaded_programs};
use egress_common::maps;

use crate::{
    dataplane::{
        maps::MapSet,
        programs::{self, Program},
        tcx,
    },
    network::interface::ifindex,
};

/// Errors of the discovery.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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

/// One egress-router program attached to an interface.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AttachedProgram {
    /// The program's name.
    pub name: String,
    /// How it is attached: `tcx`.
    pub hook: &'static str,
    pub interface: String,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    pub id: u32,
    /// The program tag (hash of its instructions), as bpftool prints it.
    pub tag: String,
}

/// Where the maps of a running data plane were found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// From the program attached to the pod interface, by ID.
    Attached { program_id: u32 },
    /// From the pins of the instance.
    Pins(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Attached { program_id } => {
                write!(
                    f,
                    "maps of program {program_id} attached to the pod interface"
                )
            }
            Self::Pins(dir) => write!(f, "pins in {}", dir.display()),
        }
    }
}

/// The egress-router programs attached with TCX to the interfaces, in [`programs::all`]
/// order. An interface that does not exist has none.
pub fn attached_programs(
    pod_interface: &str,
    egress_interface: &str,
) -> Result<Vec<AttachedProgram>, Error> {
    let mut found = Vec::new();
    for program in programs::all() {
        let iface = program.interface(pod_interface, egress_interface);
        let Some(index) = ifindex(iface) else {
            continue;
        };
        if let Some(info) = tcx_attached(index, &program)? {
            found.push(AttachedProgram {
                name: info.name_as_str().unwrap_or(program.name).to_owned(),
                hook: "tcx",
                interface: iface.to_owned(),
                direction: program.direction(),
                id: info.id(),
                tag: format!("{:016x}", info.tag()),
            });
        }
    }
    Ok(found)
}

/// The maps of the program attached to the pod interface's ingress, if there is one.
pub fn maps_of_attached(pod_interface: &str) -> Result<Option<(MapSet, u32)>, Error> {
    match map_ids_of_attached(pod_interface)? {
        Some((ids, program_id)) => Ok(Some((MapSet::from_ids(&ids)?, program_id))),
        None => Ok(None),
    }
}

/// The map IDs of the programs attached to the pod interface's ingress (the IPv4 one's,
/// and the IPv6 one's where it has one), and the IPv4 program's ID.
pub fn map_ids_of_attached(pod_interface: &str) -> Result<Option<(Vec<u32>, u32)>, Error> {
    let programs = attached_programs(pod_interface, "")?;
    let mut at_pod = programs
        .iter()
        .filter(|p| p.interface == pod_interface && p.direction == "ingress");
    let Some(pod) = at_pod.next() else {
        return Ok(None);
    };
    let mut ids = Vec::new();
    for program in std::iter::once(pod).chain(at_pod) {
        let info = program_info(program.id)?;
        let used = info
            .map_ids()
            .map_err(|source| Error::Program {
                id: program.id,
                source,
            })?
            .unwrap_or_default();
        ids.extend(
            used.into_iter()
                .filter(|id| !ids.contains(id))
                .collect::<Vec<_>>(),
        );
    }
    Ok(Some((ids, pod.id)))
}

/// The program attached with TCX (no link) at `program`'s hook of interface `ifindex`
/// under its name or its former name, if any.
pub fn tcx_attached(ifindex: u32, program: &Program) -> Result<Option<ProgramInfo>, Error> {
    for id in tcx::query(ifindex, program.attach_type).map_err(Error::Tcx)? {
        match program_info(id) {
            Ok(info) if info.name_as_str().is_some_and(|n| program.is_named(n)) => {
                return Ok(Some(info));
            }
            Ok(_) | Err(Error::ProgramGone(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(None)
}

fn program_info(id: u32) -> Result<ProgramInfo, Error> {
    for info in loaded_programs() {
        let info = match info {
            Ok(info) => info,
            // Another program unloaded between its id and its fd (another data plane's
            // teardown on this machine): not the one wanted, or gone itself.
            Err(aya::programs::ProgramError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                continue;
            }
            Err(source) => return Err(Error::Program { id, source }),
        };
        if info.id() == id {
            return Ok(info);
        }
    }
    Err(Error::ProgramGone(id))
}

/// Opens the maps of the running data plane: those of the program attached to the pod
/// interface (the live ones), else the pins of the instance.
pub fn open(pod_interface: &str, pin_dir: &Path) -> Result<Option<(MapSet, Source)>, Error> {
    if let Some((set, program_id)) = maps_of_attached(pod_interface)? {
        return Ok(Some((set, Source::Attached { program_id })));
    }
    if pin_dir.join(maps::CONFIG).exists() {
        return Ok(Some((
            MapSet::from_pins(pin_dir)?,
            Source::Pins(pin_dir.to_owned()),
        )));
    }
    Ok(None)
}

/// Detaches the egress-router programs from both interfaces; returns how many there were.
pub fn detach_all(pod_interface: &str, egress_interface: &str) -> Result<usize, Error> {
    let mut detached = 0;
    for program in programs::all() {
        let iface = program.interface(pod_interface, egress_interface);
        if detach(iface, &program)? {
            detached += 1;
        }
    }
    Ok(detached)
}

/// Detaches `program` from interface `iface` if it is attached there; returns whether it
/// was.
pub fn detach(iface: &str, program: &Program) -> Result<bool, Error> {
    let Some(index) = ifindex(iface) else {
        return Ok(false);
    };
    let Some(info) = tcx_attached(index, program)? else {
        return Ok(false);
    };
    let detach_error = |source| Error::Detach {
        name: program.name,
        iface: iface.to_owned(),
        source,
    };
    let fd = tcx::prog_fd(info.id()).map_err(detach_error)?;
    tcx::detach(index, program.attach_type, fd.as_fd()).map_err(detach_error)?;
    Ok(true)
}
