//! Finding a running data plane without the process that set it up: from the programs
//! attached to the interfaces (TCX, queried by hook; `cls_bpf` filters of a release before
//! TCX, through rtnetlink) and from there its maps by ID,
//! or from the pins of an instance. This is what lets an agent adopt the data plane an init
//! container left behind, and lets `status`, `conntrack` and `stats` work with no agent.

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::programs::{
    ProgramInfo, TcAttachType,
    links::Link as _,
    loaded_programs,
    tc::{SchedClassifierLink, TcHandle},
};
use egress_common::maps;
use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::tc::{TcAttribute, TcFilterBpfOption, TcOption};

use crate::{
    dataplane::{FILTER_HANDLE, PROGRAMS, Side},
    maps::MapSet,
};

/// Errors of the discovery.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("interface {0} does not exist")]
    NoInterface(String),
    #[error("listing the tc filters of {iface}: {source}")]
    Filters {
        iface: String,
        source: rtnetlink::Error,
    },
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
    TcxDetach {
        name: &'static str,
        iface: String,
        source: std::io::Error,
    },
    #[error("removing the filter of {name} from {iface}: {source}")]
    Detach {
        name: &'static str,
        iface: String,
        source: aya::programs::ProgramError,
    },
    #[error(transparent)]
    Maps(#[from] crate::maps::Error),
}

/// One egress-router program attached to an interface.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AttachedProgram {
    /// The program's name.
    pub name: String,
    /// `tcx`, or `cls_bpf` for a filter of a release before TCX.
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

/// The egress-router programs on the interfaces, in [`PROGRAMS`] order: attached with TCX
/// (by name), and `cls_bpf` filters (priority 1, handle 0xe6) of a release before TCX. An
/// interface that does not exist has none.
pub async fn attached_programs(
    pod_interface: &str,
    egress_interface: &str,
) -> Result<Vec<AttachedProgram>, Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
    let connection = tokio::spawn(connection);
    let result = async {
        let mut found = Vec::new();
        for (name, side, attach_type, priority) in PROGRAMS {
            let iface = match side {
                Side::Pod => pod_interface,
                Side::Egress => egress_interface,
            };
            let Some(index) = ifindex(iface) else {
                continue;
            };
            let direction = direction(attach_type);
            if let Some(id) = tcx_attached(index, attach_type, name)? {
                let info = program_info(id)?;
                found.push(AttachedProgram {
                    name: name.to_owned(),
                    hook: "tcx",
                    interface: iface.to_owned(),
                    direction,
                    id,
                    tag: format!("{:016x}", info.tag()),
                });
            }
            let request = handle.traffic_filter(index as i32).get();
            let request = match attach_type {
                TcAttachType::Ingress => request.ingress(),
                _ => request.egress(),
            };
            let filters: Vec<_> =
                request
                    .execute()
                    .try_collect()
                    .await
                    .map_err(|source| Error::Filters {
                        iface: iface.to_owned(),
                        source,
                    })?;
            for msg in filters {
                if msg.header.handle.minor != FILTER_HANDLE
                    || (msg.header.info >> 16) as u16 != priority
                {
                    continue;
                }
                let mut id = None;
                let mut name = String::new();
                let mut tag = String::new();
                for attr in &msg.attributes {
                    let TcAttribute::Options(options) = attr else {
                        continue;
                    };
                    for option in options {
                        match option {
                            TcOption::Bpf(TcFilterBpfOption::ProgId(i)) => id = Some(*i),
                            TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => name.clone_from(n),
                            TcOption::Bpf(TcFilterBpfOption::ProgTag(t)) => {
                                tag = t.iter().map(|b| format!("{b:02x}")).collect();
                            }
                            _ => {}
                        }
                    }
                }
                if let Some(id) = id {
                    found.push(AttachedProgram {
                        name,
                        hook: "cls_bpf",
                        interface: iface.to_owned(),
                        direction,
                        id,
                        tag,
                    });
                }
            }
        }
        Ok(found)
    }
    .await;
    connection.abort();
    result
}

/// `ingress` or `egress`, as [`AttachedProgram::direction`] says.
fn direction(attach_type: TcAttachType) -> &'static str {
    if attach_type == TcAttachType::Ingress {
        "ingress"
    } else {
        "egress"
    }
}

/// The index of interface `name` in the current network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c_name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The maps of the program attached to the pod interface's ingress, if there is one.
pub async fn maps_of_attached(pod_interface: &str) -> Result<Option<(MapSet, u32)>, Error> {
    match map_ids_of_attached(pod_interface).await? {
        Some((ids, program_id)) => Ok(Some((MapSet::from_ids(&ids)?, program_id))),
        None => Ok(None),
    }
}

/// The map IDs of the program attached to the pod interface's ingress, and its ID.
pub async fn map_ids_of_attached(pod_interface: &str) -> Result<Option<(Vec<u32>, u32)>, Error> {
    let programs = attached_programs(pod_interface, "").await?;
    let Some(pod) = programs
        .iter()
        .find(|p| p.interface == pod_interface && p.direction == "ingress")
    else {
        return Ok(None);
    };
    let info = program_info(pod.id)?;
    let ids = info
        .map_ids()
        .map_err(|source| Error::Program { id: pod.id, source })?
        .unwrap_or_default();
    Ok(Some((ids, pod.id)))
}

/// The ID of the program named `name` attached with TCX (no link) to the hook, if any.
pub fn tcx_attached(
    ifindex: u32,
    attach_type: TcAttachType,
    name: &str,
) -> Result<Option<u32>, Error> {
    for id in crate::tcx::query(ifindex, attach_type).map_err(Error::Tcx)? {
        match program_info(id) {
            Ok(info) if info.name_as_str() == Some(name) => return Ok(Some(id)),
            Ok(_) | Err(Error::ProgramGone(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(None)
}

fn program_info(id: u32) -> Result<ProgramInfo, Error> {
    for info in loaded_programs() {
        let info = info.map_err(|source| Error::Program { id, source })?;
        if info.id() == id {
            return Ok(info);
        }
    }
    Err(Error::ProgramGone(id))
}

/// Opens the maps of the running data plane: those of the program attached to the pod
/// interface (the live ones), else the pins of the instance.
pub async fn open(pod_interface: &str, pin_dir: &Path) -> Result<Option<(MapSet, Source)>, Error> {
    if let Some((set, program_id)) = maps_of_attached(pod_interface).await? {
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

/// Removes the egress-router programs (TCX, and `cls_bpf` filters of a release before TCX)
/// from both interfaces; returns how many were there.
pub async fn detach_all(pod_interface: &str, egress_interface: &str) -> Result<usize, Error> {
    let attached = attached_programs(pod_interface, egress_interface).await?;
    for (name, side, attach_type, priority) in PROGRAMS {
        let iface = match side {
            Side::Pod => pod_interface,
            Side::Egress => egress_interface,
        };
        let direction = direction(attach_type);
        for program in attached
            .iter()
            .filter(|p| p.interface == iface && p.direction == direction)
        {
            let detach_error = |source| Error::TcxDetach {
                name,
                iface: iface.to_owned(),
                source,
            };
            if program.hook == "tcx" {
                let index = ifindex(iface).ok_or_else(|| Error::NoInterface(iface.to_owned()))?;
                let fd = crate::tcx::prog_fd(program.id).map_err(detach_error)?;
                crate::tcx::detach(index, attach_type, fd.as_fd()).map_err(detach_error)?;
                continue;
            }
            let link = SchedClassifierLink::attached(
                iface,
                attach_type,
                priority,
                TcHandle::new(0, FILTER_HANDLE),
                None,
            )
            .map_err(|err| Error::Detach {
                name,
                iface: iface.to_owned(),
                source: aya::programs::tc::TcError::IoError(err).into(),
            })?;
            link.detach().map_err(|source| Error::Detach {
                name,
                iface: iface.to_owned(),
                source,
            })?;
        }
    }
    Ok(attached.len())
}
