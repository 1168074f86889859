//! Loading the embedded BPF object, attaching its programs, pinning and reading its maps.
//!
//! Programs are attached through netlink as classic `cls_bpf` filters on a `clsact` qdisc, so
//! the interface owns them: they keep forwarding after this process (e.g. an init container,
//! whose bpffs dies with it) is gone. TCX links would be detached with the last fd or pin.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, PerCpuArray},
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, NlOptions, TcAttachOptions},
    },
};
use egress_common::{DropReason, PacketCount, Stat, drop_stat_index, maps, programs};

/// Errors of the data-plane operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating pin directory {path}: {source}")]
    PinDir { path: PathBuf, source: io::Error },
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
    #[error("adding the clsact qdisc to {iface}: {source}")]
    Clsact {
        iface: String,
        source: aya::programs::tc::TcError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
}

/// The loaded data plane: programs and maps of one egress-router instance.
pub struct Dataplane {
    ebpf: Ebpf,
}

impl Dataplane {
    /// Loads the embedded object. With `pin_dir` (a directory on a bpffs), every map is pinned
    /// there by name, and maps already pinned there are reused instead of created.
    pub fn load(pin_dir: Option<&Path>) -> Result<Self, Error> {
        let mut loader = EbpfLoader::new();
        let stats_pin;
        if let Some(dir) = pin_dir {
            std::fs::create_dir_all(dir).map_err(|source| Error::PinDir {
                path: dir.to_owned(),
                source,
            })?;
            stats_pin = dir.join(maps::STATS);
            loader.map_pin_path(maps::STATS, stats_pin.as_path());
        }
        let mut ebpf = loader.load(crate::EBPF_OBJECT)?;
        let prog = pod_ingress(&mut ebpf)?;
        prog.load().map_err(|source| Error::Program {
            name: programs::POD_INGRESS,
            source,
        })?;
        Ok(Self { ebpf })
    }

    /// The pod-interface ingress program (e.g. for BPF_PROG_TEST_RUN).
    pub fn pod_ingress(&mut self) -> Result<&mut SchedClassifier, Error> {
        pod_ingress(&mut self.ebpf)
    }

    /// Attaches the pod-interface ingress program to `iface` in the current network namespace
    /// as a `cls_bpf` filter owned by the interface: it stays attached when this process exits.
    pub fn attach_pod_ingress(&mut self, iface: &str) -> Result<(), Error> {
        add_clsact(iface)?;
        let prog = pod_ingress(&mut self.ebpf)?;
        let program_error = |source| Error::Program {
            name: programs::POD_INGRESS,
            source,
        };
        let id = prog
            .attach_with_options(
                iface,
                TcAttachType::Ingress,
                TcAttachOptions::Netlink(NlOptions::default()),
            )
            .map_err(program_error)?;
        // aya detaches a link when it is dropped; the interface is meant to own this filter.
        let link = prog.take_link(id).map_err(program_error)?;
        std::mem::forget(link);
        Ok(())
    }

    /// Reads the counters of this data plane.
    pub fn stats(&self) -> Result<Stats, Error> {
        let map = self
            .ebpf
            .map(maps::STATS)
            .ok_or(Error::MissingMap(maps::STATS))?;
        let array = PerCpuArray::<_, PacketCount>::try_from(map).map_err(map_error)?;
        Stats::read(&array)
    }
}

/// Reads the counters of a running data plane from its pinned maps in `pin_dir`.
pub fn pinned_stats(pin_dir: &Path) -> Result<Stats, Error> {
    let data = MapData::from_pin(pin_dir.join(maps::STATS)).map_err(map_error)?;
    let map = Map::from_map_data(data).map_err(map_error)?;
    let array = PerCpuArray::<_, PacketCount>::try_from(map).map_err(map_error)?;
    Stats::read(&array)
}

fn map_error(source: aya::maps::MapError) -> Error {
    Error::Map {
        name: maps::STATS,
        source,
    }
}

fn pod_ingress(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    let name = programs::POD_INGRESS;
    ebpf.program_mut(name)
        .ok_or(Error::MissingProgram(name))?
        .try_into()
        .map_err(|source| Error::Program { name, source })
}

fn add_clsact(iface: &str) -> Result<(), Error> {
    match tc::qdisc_add_clsact(iface) {
        Ok(()) => Ok(()),
        // Already there: a previous run, or another tc user. Filters are added beside it.
        Err(tc::TcError::NetlinkError(ref err)) if err.raw_os_error() == Some(libc::EEXIST) => {
            Ok(())
        }
        Err(source) => Err(Error::Clsact {
            iface: iface.to_owned(),
            source,
        }),
    }
}

/// Counters of the data plane, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Path counters, in [`Stat::ALL`] order.
    pub paths: Vec<(Stat, PacketCount)>,
    /// Drop counters, in [`DropReason::ALL`] order.
    pub drops: Vec<(DropReason, PacketCount)>,
}

impl Stats {
    fn read<T: std::borrow::Borrow<MapData>>(
        array: &PerCpuArray<T, PacketCount>,
    ) -> Result<Self, Error> {
        let sum = |index: u32| -> Result<PacketCount, Error> {
            let values = array.get(&index, 0).map_err(map_error)?;
            Ok(values
                .iter()
                .fold(PacketCount::default(), |acc, v| acc.add(*v)))
        };
        let paths = Stat::ALL
            .iter()
            .map(|&stat| Ok((stat, sum(stat as u32)?)))
            .collect::<Result<_, Error>>()?;
        let drops = DropReason::ALL
            .iter()
            .map(|&reason| Ok((reason, sum(drop_stat_index(reason))?)))
            .collect::<Result<_, Error>>()?;
        Ok(Self { paths, drops })
    }

    /// The counter of one path.
    #[must_use]
    pub fn path(&self, stat: Stat) -> PacketCount {
        self.paths
            .iter()
            .find(|(s, _)| *s == stat)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (stat, count) in &self.paths {
            writeln!(
                f,
                "{:<24} {:>12} packets {:>14} bytes",
                stat.name(),
                count.packets,
                count.bytes
            )?;
        }
        for (reason, count) in &self.drops {
            writeln!(
                f,
                "drop:{:<19} {:>12} packets {:>14} bytes",
                reason.name(),
                count.packets,
                count.bytes
            )?;
        }
        Ok(())
    }
}
