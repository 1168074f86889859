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
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
    },
};
use egress_common::{
    DEFAULT_CONNTRACK_FLOWS, DropReason, FlowEntry, FlowKey, PacketCount, RouterConfig, RuleKey,
    RuleTarget, Stat, drop_stat_index, maps, programs,
};

/// Errors of the data-plane operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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

/// The programs of the object, where they attach, and the tc priority that keeps them first
/// and lets a new version replace an old one in place.
pub const PROGRAMS: [(&str, Side, TcAttachType, u16); 3] = [
    (programs::POD_INGRESS, Side::Pod, TcAttachType::Ingress, 1),
    (
        programs::UPLINK_INGRESS,
        Side::Egress,
        TcAttachType::Ingress,
        1,
    ),
    (
        programs::UPLINK_EGRESS,
        Side::Egress,
        TcAttachType::Egress,
        1,
    ),
];

/// The tc filter handle of every egress-router program ("e6" for egress).
pub const FILTER_HANDLE: u16 = 0xe6;

/// Which interface a program belongs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The pod interface (`eth0`).
    Pod,
    /// The egress interface (`macvlan0`).
    Egress,
}

/// How to load the object.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Conntrack capacity in flows (two entries each).
    pub conntrack_flows: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            conntrack_flows: DEFAULT_CONNTRACK_FLOWS,
        }
    }
}

/// The loaded data plane: programs and maps of one egress-router instance.
pub struct Dataplane {
    ebpf: Ebpf,
}

impl Dataplane {
    /// Loads the embedded object and all its programs (the verifier runs here), touching
    /// nothing else on the system.
    pub fn load(opts: &LoadOptions) -> Result<Self, Error> {
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(maps::CONNTRACK, opts.conntrack_flows.saturating_mul(2));
        let mut ebpf = loader.load(crate::EBPF_OBJECT)?;
        for (name, ..) in PROGRAMS {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|source| Error::Program { name, source })?;
        }
        Ok(Self { ebpf })
    }

    /// A program by name (e.g. for BPF_PROG_TEST_RUN).
    pub fn program(&mut self, name: &'static str) -> Result<&mut SchedClassifier, Error> {
        classifier(&mut self.ebpf, name)
    }

    /// The pod-interface ingress program.
    pub fn pod_ingress(&mut self) -> Result<&mut SchedClassifier, Error> {
        self.program(programs::POD_INGRESS)
    }

    /// Writes the rules (removing rules that are no longer there), then the instance
    /// configuration, which is what arms the programs.
    pub fn configure(
        &mut self,
        config: &RouterConfig,
        rules: &[(RuleKey, RuleTarget)],
    ) -> Result<(), Error> {
        let map_err = |name| move |source| Error::Map { name, source };
        {
            let map = self
                .ebpf
                .map_mut(maps::RULES)
                .ok_or(Error::MissingMap(maps::RULES))?;
            let mut table = aya::maps::HashMap::<_, RuleKey, RuleTarget>::try_from(map)
                .map_err(map_err(maps::RULES))?;
            let stale: Vec<RuleKey> = table
                .keys()
                .filter_map(Result::ok)
                .filter(|key| !rules.iter().any(|(k, _)| k == key))
                .collect();
            for (key, target) in rules {
                table.insert(key, target, 0).map_err(map_err(maps::RULES))?;
            }
            for key in stale {
                table.remove(&key).map_err(map_err(maps::RULES))?;
            }
        }
        let map = self
            .ebpf
            .map_mut(maps::CONFIG)
            .ok_or(Error::MissingMap(maps::CONFIG))?;
        let mut array =
            aya::maps::Array::<_, RouterConfig>::try_from(map).map_err(map_err(maps::CONFIG))?;
        array.set(0, config, 0).map_err(map_err(maps::CONFIG))?;
        Ok(())
    }

    /// Attaches every program to its interface in the current network namespace, as
    /// `cls_bpf` filters owned by the interfaces: they stay when this process exits. A filter
    /// of an earlier run at the same place is replaced atomically.
    pub fn attach(&mut self, pod_interface: &str, egress_interface: &str) -> Result<(), Error> {
        for (name, side, attach_type, priority) in PROGRAMS {
            let iface = match side {
                Side::Pod => pod_interface,
                Side::Egress => egress_interface,
            };
            self.attach_program(name, iface, attach_type, priority)?;
        }
        Ok(())
    }

    /// Attaches only the pod-interface ingress program (the low-level `attach` command).
    pub fn attach_pod_ingress(&mut self, iface: &str) -> Result<(), Error> {
        let (name, _, attach_type, priority) = PROGRAMS[0];
        self.attach_program(name, iface, attach_type, priority)
    }

    fn attach_program(
        &mut self,
        name: &'static str,
        iface: &str,
        attach_type: TcAttachType,
        priority: u16,
    ) -> Result<(), Error> {
        add_clsact(iface)?;
        let prog = classifier(&mut self.ebpf, name)?;
        let program_error = |source| Error::Program { name, source };
        let handle = TcHandle::new(0, FILTER_HANDLE);
        let options = NlOptions {
            priority,
            handle,
            ..NlOptions::default()
        };
        let id =
            match prog.attach_with_options(iface, attach_type, TcAttachOptions::Netlink(options)) {
                Ok(id) => id,
                Err(aya::programs::ProgramError::TcError(tc::TcError::NetlinkError(err)))
                    if err.raw_os_error() == Some(libc::EEXIST) =>
                {
                    // An earlier run's filter: swap the program in place, no gap.
                    let link =
                        SchedClassifierLink::attached(iface, attach_type, priority, handle, None)
                            .map_err(|err| program_error(tc::TcError::IoError(err).into()))?;
                    prog.attach_to_link(link).map_err(program_error)?
                }
                Err(source) => return Err(program_error(source)),
            };
        // aya detaches a link when it is dropped; the interface is meant to own this filter.
        let link = prog.take_link(id).map_err(program_error)?;
        std::mem::forget(link);
        Ok(())
    }

    /// Pins every map by name in `dir` (a directory on a bpffs), replacing pins of an
    /// earlier run.
    pub fn pin(&mut self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::PinDir {
            path: dir.to_owned(),
            source,
        })?;
        for name in maps::ALL {
            let map = self.ebpf.map(name).ok_or(Error::MissingMap(name))?;
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::PinDir { path, source }),
            }
            map.pin(&path)
                .map_err(|source| Error::Pin { name, path, source })?;
        }
        Ok(())
    }

    /// Starts reading the programs' aya-log events (emitted only with the DEBUG flag in the
    /// configuration); call [`aya_log::EbpfLogger::flush`] when its fd is readable.
    pub fn logger(&mut self) -> Result<aya_log::EbpfLogger<StderrLog>, aya_log::Error> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, StderrLog)
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

    /// The conntrack table, both directions of every flow.
    pub fn conntrack(&self) -> Result<Vec<(FlowKey, FlowEntry)>, Error> {
        let map = self
            .ebpf
            .map(maps::CONNTRACK)
            .ok_or(Error::MissingMap(maps::CONNTRACK))?;
        let table =
            aya::maps::HashMap::<_, FlowKey, FlowEntry>::try_from(map).map_err(|source| {
                Error::Map {
                    name: maps::CONNTRACK,
                    source,
                }
            })?;
        table
            .iter()
            .map(|item| {
                item.map_err(|source| Error::Map {
                    name: maps::CONNTRACK,
                    source,
                })
            })
            .collect()
    }

    /// Per-rule counters summed over CPUs, indexed by rule id (0 = fallback).
    pub fn rule_stats(&self) -> Result<Vec<PacketCount>, Error> {
        let map = self
            .ebpf
            .map(maps::RULE_STATS)
            .ok_or(Error::MissingMap(maps::RULE_STATS))?;
        let err = |source| Error::Map {
            name: maps::RULE_STATS,
            source,
        };
        let array = PerCpuArray::<_, PacketCount>::try_from(map).map_err(err)?;
        (0..array.len())
            .map(|i| {
                let values = array.get(&i, 0).map_err(err)?;
                Ok(values
                    .iter()
                    .fold(PacketCount::default(), |acc, v| acc.add(*v)))
            })
            .collect()
    }
}

/// Writes the data plane's log events to stderr, one line each.
pub struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        eprintln!("egress-router: bpf {}: {}", record.level(), record.args());
    }

    fn flush(&self) {}
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

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, Error> {
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

    /// The drop counter of one reason.
    #[must_use]
    pub fn drop(&self, reason: DropReason) -> PacketCount {
        self.drops
            .iter()
            .find(|(r, _)| *r == reason)
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
