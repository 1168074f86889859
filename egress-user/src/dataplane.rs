//! Loading the embedded BPF object, attaching its programs, pinning and reading its maps.
//!
//! Programs are attached with TCX without a link ([`crate::tcx`]), so the interface owns them:
//! they keep forwarding after this process (e.g. an init container, whose bpffs dies with it)
//! is gone. (A TCX link, aya's default, is detached with its last fd or pin.) Releases before
//! TCX attached `cls_bpf` filters (priority 1, handle 0xe6); an attach replaces them.

use std::{
    collections::BTreeMap,
    io,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::MapInfo,
    programs::{
        SchedClassifier, TcAttachType,
        links::Link as _,
        tc::{self, SchedClassifierLink, TcHandle},
    },
};
use egress_common::{
    DEFAULT_CONNTRACK_FLOWS, FlowEntry, FlowKey, PacketCount, RouterConfig, RuleKey, RuleTarget,
    maps, programs,
};

use crate::maps::MapSet;
pub use crate::maps::Stats;

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
    #[error("interface {0} does not exist")]
    NoInterface(String),
    #[error("attaching {name} to {iface}: {source}")]
    Attach {
        name: &'static str,
        iface: String,
        source: io::Error,
    },
    #[error("removing the cls_bpf filter of an earlier release from {iface}: {source}")]
    LegacyFilter {
        iface: String,
        source: aya::programs::ProgramError,
    },
    #[error("finding the programs attached to {iface}: {source}")]
    Attached {
        iface: String,
        source: Box<crate::running::Error>,
    },
    #[error(transparent)]
    Maps(#[from] crate::maps::Error),
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
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Conntrack capacity in flows (two entries each), for a conntrack map created now.
    pub conntrack_flows: u32,
    /// A directory on a bpffs: every map is pinned there by name, and maps already pinned
    /// there are used instead of new ones (this is how state survives a restart).
    pub pin_dir: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            conntrack_flows: DEFAULT_CONNTRACK_FLOWS,
            pin_dir: None,
        }
    }
}

/// What a load did with maps pinned by an earlier run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reuse {
    /// Maps taken over from the pins.
    pub reused: Vec<&'static str>,
    /// Pinned maps this build cannot use (their layout changed), replaced by new ones.
    pub replaced: Vec<(&'static str, String)>,
}

/// The loaded data plane: programs and maps of one egress-router instance.
pub struct Dataplane {
    ebpf: Ebpf,
    maps: MapSet,
    reuse: Reuse,
}

impl Dataplane {
    /// Loads the embedded object and all its programs (the verifier runs here), touching
    /// nothing else on the system.
    pub fn load(opts: &LoadOptions) -> Result<Self, Error> {
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(maps::CONNTRACK, opts.conntrack_flows.saturating_mul(2));
        let mut reuse = Reuse::default();
        if let Some(dir) = &opts.pin_dir {
            std::fs::create_dir_all(dir).map_err(|source| Error::PinDir {
                path: dir.clone(),
                source,
            })?;
            for name in maps::ALL {
                let path = dir.join(name);
                if let Ok(info) = MapInfo::from_pin(&path) {
                    match crate::maps::check_layout(name, &info) {
                        Ok(()) => reuse.reused.push(name),
                        Err(err) => {
                            std::fs::remove_file(&path).map_err(|source| Error::PinDir {
                                path: path.clone(),
                                source,
                            })?;
                            reuse.replaced.push((name, err.to_string()));
                        }
                    }
                }
                loader.map_pin_path(name, path);
            }
        }
        let mut ebpf = loader.load(crate::EBPF_OBJECT)?;
        for (name, ..) in PROGRAMS {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|source| Error::Program { name, source })?;
        }
        let mut set = BTreeMap::new();
        for name in maps::ALL {
            set.insert(name, ebpf.take_map(name).ok_or(Error::MissingMap(name))?);
        }
        Ok(Self {
            ebpf,
            maps: MapSet::new(set),
            reuse,
        })
    }

    /// What the load took over from pins of an earlier run.
    #[must_use]
    pub fn reuse(&self) -> &Reuse {
        &self.reuse
    }

    /// The maps.
    #[must_use]
    pub fn maps(&self) -> &MapSet {
        &self.maps
    }

    /// The maps, for writing.
    pub fn maps_mut(&mut self) -> &mut MapSet {
        &mut self.maps
    }

    /// A program by name (e.g. for BPF_PROG_TEST_RUN).
    pub fn program(&mut self, name: &'static str) -> Result<&mut SchedClassifier, Error> {
        classifier(&mut self.ebpf, name)
    }

    /// The pod-interface ingress program.
    pub fn pod_ingress(&mut self) -> Result<&mut SchedClassifier, Error> {
        self.program(programs::POD_INGRESS)
    }

    /// Reconciles the rules by difference, then writes the instance configuration, which is
    /// what arms the programs (see [`MapSet::configure`]).
    pub fn configure(
        &mut self,
        config: &RouterConfig,
        rules: &[(RuleKey, RuleTarget)],
    ) -> Result<Vec<(RuleKey, RuleTarget)>, Error> {
        Ok(self.maps.configure(config, rules)?)
    }

    /// Attaches every program to its interface in the current network namespace with TCX,
    /// owned by the interfaces: they stay when this process exits. A program of an earlier
    /// run at the same place is replaced atomically (a `cls_bpf` filter of a release before
    /// TCX is removed once the new program runs).
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
        let index =
            crate::running::ifindex(iface).ok_or_else(|| Error::NoInterface(iface.to_owned()))?;
        let attach_error = |source| Error::Attach {
            name,
            iface: iface.to_owned(),
            source,
        };
        let previous = crate::running::tcx_attached(index, attach_type, name).map_err(|e| {
            Error::Attached {
                iface: iface.to_owned(),
                source: Box::new(e),
            }
        })?;
        let previous = previous
            .map(crate::tcx::prog_fd)
            .transpose()
            .map_err(attach_error)?;
        let prog = classifier(&mut self.ebpf, name)?;
        let fd = prog
            .fd()
            .map_err(|source| Error::Program { name, source })?
            .as_fd();
        // An earlier run's program: swapped in place, no gap.
        crate::tcx::attach(index, attach_type, fd, previous.as_ref().map(|f| f.as_fd()))
            .map_err(attach_error)?;
        remove_legacy_filter(iface, attach_type, priority)
    }

    /// Starts reading the programs' aya-log events (emitted only with the DEBUG flag in the
    /// configuration); call [`aya_log::EbpfLogger::flush`] when its fd is readable.
    pub fn logger(&mut self) -> Result<aya_log::EbpfLogger<TracingLog>, aya_log::Error> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, TracingLog)
    }

    /// Reads the counters of this data plane.
    pub fn stats(&self) -> Result<Stats, Error> {
        Ok(self.maps.stats()?)
    }

    /// The conntrack table, both directions of every flow.
    pub fn conntrack(&self) -> Result<Vec<(FlowKey, FlowEntry)>, Error> {
        Ok(self.maps.conntrack()?)
    }

    /// Per-rule counters summed over CPUs, indexed by rule id (0 = fallback).
    pub fn rule_stats(&self) -> Result<Vec<PacketCount>, Error> {
        Ok(self.maps.rule_stats()?)
    }
}

/// Forwards the data plane's log events to `tracing`, one event each.
pub struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        tracing::debug!(target: "egress_router::bpf", "{}", record.args());
    }

    fn flush(&self) {}
}

/// Reads the counters of a running data plane from its pinned maps in `pin_dir`.
pub fn pinned_stats(pin_dir: &Path) -> Result<Stats, Error> {
    Ok(MapSet::from_pins(pin_dir)?.stats()?)
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

/// Removes the `cls_bpf` filter an earlier release attached at this place, if any. Our TCX
/// program runs before the filter and always returns a verdict, so the filter no longer
/// sees packets; removing it leaves no gap.
fn remove_legacy_filter(
    iface: &str,
    attach_type: TcAttachType,
    priority: u16,
) -> Result<(), Error> {
    let link = match SchedClassifierLink::attached(
        iface,
        attach_type,
        priority,
        TcHandle::new(0, FILTER_HANDLE),
        None,
    ) {
        Ok(link) => link,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => {
            return Err(Error::LegacyFilter {
                iface: iface.to_owned(),
                source: tc::TcError::IoError(err).into(),
            });
        }
    };
    match link.detach() {
        Ok(()) => Ok(()),
        // No such filter, or no clsact qdisc at all: nothing to remove.
        Err(aya::programs::ProgramError::NetlinkError(err))
            if matches!(err.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) =>
        {
            Ok(())
        }
        Err(source) => Err(Error::LegacyFilter {
            iface: iface.to_owned(),
            source,
        }),
    }
}
