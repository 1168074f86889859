//! Finding a running data plane without the process that set it up: from the programs
//! attached to the interfaces (queried by hook, [`crate::dataplane::attach`]) and from
//! there its maps by ID, or from the pins of an instance. This is what lets an agent adopt the data plane an init
//! container left behind, and lets `status`, `conntrack` and `stats` work with no agent.

use std::path::{Path, PathBuf};

use egress_common::maps;

pub use crate::dataplane::error::DiscoverError as Error;
use crate::{
    dataplane::{
        attach::{self, program_info},
        maps::MapSet,
        programs::{self, Interfaces, Mode},
    },
    network::interface::ifindex,
};

/// One egress-router program attached to an interface.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AttachedProgram {
    /// The program's name.
    pub name: String,
    /// How it is attached ([`attach::Kind::name`]): `tcx`.
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

/// The programs of `mode` attached to the interfaces of `interfaces`, in the table's
/// order ([`programs::PROGRAMS`]). An interface that does not exist has none.
pub fn attached_programs(
    mode: Mode,
    interfaces: &Interfaces<'_>,
) -> Result<Vec<AttachedProgram>, Error> {
    let mut found = Vec::new();
    for program in programs::of(mode) {
        let Some((iface, index)) = program
            .interface(interfaces)
            .and_then(|iface| Some((iface, ifindex(iface)?)))
        else {
            continue;
        };
        if let Some(attach::Attachment { kind, info }) = attach::attached(index, program)? {
            found.push(AttachedProgram {
                name: info.name_as_str().unwrap_or(program.name).to_owned(),
                hook: kind.name(),
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
    let at_pod_interface = Interfaces {
        pod: Some(pod_interface),
        ..Interfaces::default()
    };
    let programs = attached_programs(Mode::Pod, &at_pod_interface)?;
    let mut at_pod = programs
        .iter()
        .filter(|p| p.interface == pod_interface && p.direction == "ingress");
    let Some(pod) = at_pod.next() else {
        return Ok(None);
    };
    let mut ids = Vec::new();
    let programs: Vec<&AttachedProgram> = std::iter::once(pod).chain(at_pod).collect();
    collect_map_ids(&programs, &mut ids)?;
    // The egress interface's programs use a map the pod interface's do not (`CLAIM`),
    // taken from them (the interface found in the configuration); nothing else, and no
    // failure there fails the rest: the claim is optional.
    if let Some(claim) = egress_interface(&ids).and_then(|egress| claim_map_id(&egress))
        && !ids.contains(&claim)
    {
        ids.push(claim);
    }
    Ok(Some((ids, pod.id)))
}

/// The ID of the `CLAIM` map of the program attached to `egress`'s ingress, if any.
fn claim_map_id(egress: &str) -> Option<u32> {
    let at_egress = Interfaces {
        egress: Some(egress),
        ..Interfaces::default()
    };
    let programs = attached_programs(Mode::Pod, &at_egress).ok()?;
    let program = programs
        .iter()
        .find(|p| p.interface == egress && p.direction == "ingress")?;
    let used = program_info(program.id).ok()?.map_ids().ok()??;
    used.into_iter().find(|id| {
        aya::maps::MapInfo::from_id(*id)
            .ok()
            .is_some_and(|info| info.name_as_str() == Some(maps::CLAIM))
    })
}

/// Adds the IDs of the maps `programs` use to `ids`, each once.
fn collect_map_ids(programs: &[&AttachedProgram], ids: &mut Vec<u32>) -> Result<(), Error> {
    for program in programs {
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
    Ok(())
}

/// The egress interface's name, from the configuration among the maps `ids`.
fn egress_interface(ids: &[u32]) -> Option<String> {
    let set = MapSet::compatible_from_ids(ids).ok()?.0;
    let config = set.config().ok()??;
    crate::network::interface::ifname(config.egress_ifindex)
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
