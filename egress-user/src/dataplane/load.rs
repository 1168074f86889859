//! Loading the embedded BPF object (the verifier runs here), pinning its maps, and attaching
//! its programs.
//!
//! Programs are attached with TCX without a link ([`crate::dataplane::tcx`]), so the
//! interface owns them: they keep forwarding after this process (e.g. an init container,
//! whose bpffs dies with it) is gone. (A TCX link, aya's default, is detached with its last
//! fd or pin.)

use std::{collections::BTreeMap, os::fd::AsFd as _, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapInfo},
    programs::{SchedClassifier, Xdp},
};
use egress_common::{
    DEFAULT_CONNTRACK_FLOWS, NODE_INSTANCES_MAX, RULE_STATS_LEN, RULES_CAPACITY, maps, programs,
};

pub use crate::dataplane::error::Error;
use crate::{
    dataplane::{
        discover,
        layout::{LayoutError, check_family, check_layout, size_ipv6_maps, unreplied_entries},
        maps::MapSet,
        migrate::Migration,
        programs::{PROGRAMS, PROGRAMS6, Program},
        tcx,
    },
    network::interface::ifindex,
};

/// How to load the object.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Conntrack capacity in flows (two entries each), for a conntrack map created now.
    pub conntrack_flows: u32,
    /// A directory on a bpffs: every map is pinned there by name, and maps already pinned
    /// there are used instead of new ones (this is how state survives a restart).
    pub pin_dir: Option<PathBuf>,
    /// Whether the instance has IPv6: its programs are loaded and its maps sized.
    pub ipv6: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            conntrack_flows: DEFAULT_CONNTRACK_FLOWS,
            pin_dir: None,
            ipv6: false,
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
    /// Entries copied from a pinned map of an earlier layout into its replacement (the
    /// conntrack flows of an earlier release), by map.
    pub migrated: Vec<(&'static str, u64)>,
    /// IPv6 maps replaced because the instance gained or lost IPv6
    /// ([`crate::dataplane::layout::check_family`]).
    pub resized: Vec<&'static str>,
}

/// The sweep program and its maps for one family: state, doomed list, census.
type SweepParts<'a> = (
    &'a mut SchedClassifier,
    &'a mut Map,
    &'a mut Map,
    &'a mut Map,
);

/// The loaded data plane: programs and maps of one egress-router instance.
pub struct Dataplane {
    ebpf: Ebpf,
    maps: MapSet,
    /// The GC sweep's own maps: [`maps::CT_SWEEP`], then [`maps::CT_DOOMED`] and
    /// [`maps::CT_CENSUS`], then their IPv6 counterparts.
    sweep_maps: [Map; 5],
    reuse: Reuse,
    migration: Option<Migration>,
}

impl Dataplane {
    /// Loads the embedded object and all its programs (the verifier runs here), touching
    /// nothing else on the system.
    pub fn load(opts: &LoadOptions) -> Result<Self, Error> {
        Self::load_as(opts, false)
    }

    /// [`Dataplane::load`] for a node agent ([`crate::node`]): the node programs instead of
    /// the pod's, a configuration for each instance, and the node's maps, pinned with the
    /// others.
    pub fn load_node(opts: &LoadOptions) -> Result<Self, Error> {
        Self::load_as(opts, true)
    }

    fn load_as(opts: &LoadOptions, node: bool) -> Result<Self, Error> {
        let node_maps: &[&'static str] = if node { &maps::NODE } else { &[] };
        let mut loader = EbpfLoader::new();
        if node {
            loader.map_max_entries(maps::CONFIG, NODE_INSTANCES_MAX + 1);
            loader.map_max_entries(maps::CONFIG6, NODE_INSTANCES_MAX + 1);
        }
        loader.map_max_entries(maps::CONNTRACK, opts.conntrack_flows.saturating_mul(2));
        loader.map_max_entries(maps::CT_UNREPLIED, unreplied_entries(opts.conntrack_flows));
        size_ipv6_maps(&mut loader, opts.conntrack_flows, opts.ipv6);
        let mut reuse = Reuse::default();
        let mut migration = None;
        if let Some(dir) = &opts.pin_dir {
            std::fs::create_dir_all(dir).map_err(|source| Error::PinDir {
                path: dir.clone(),
                source,
            })?;
            for &name in maps::ALL.iter().chain(&maps::ALL6).chain(node_maps) {
                let path = dir.join(name);
                if let Ok(info) = MapInfo::from_pin(&path) {
                    // A rules map or rule counters smaller than this build's (an earlier
                    // release's, without room for the agent's own ports or the IPv6
                    // fallback) are rebuilt like maps of another layout: the rules come
                    // from the configuration anyway, and the counters start again.
                    let fits = check_layout(name, &info).and_then(|()| {
                        let needed = match name {
                            maps::RULES => RULES_CAPACITY,
                            maps::RULE_STATS => RULE_STATS_LEN,
                            maps::CONFIG | maps::CONFIG6 if node => NODE_INSTANCES_MAX + 1,
                            _ => 0,
                        };
                        if info.max_entries() < needed {
                            return Err(LayoutError::Capacity {
                                name,
                                found: info.max_entries(),
                                expected: needed,
                            });
                        }
                        check_family(name, &info, opts.ipv6)
                    });
                    match fits {
                        Ok(()) => reuse.reused.push(name),
                        Err(err) => {
                            if name == maps::CONNTRACK {
                                // Kept open to copy its flows over once the new one exists.
                                migration = Migration::from_pin(&path);
                                if let Some(entries) = migration.as_ref().map(Migration::capacity) {
                                    loader.map_max_entries(name, entries);
                                }
                            }
                            std::fs::remove_file(&path).map_err(|source| Error::PinDir {
                                path: path.clone(),
                                source,
                            })?;
                            if matches!(err, LayoutError::Family { .. }) {
                                // The instance gained or lost IPv6: expected, not a loss.
                                reuse.resized.push(name);
                            } else {
                                reuse.replaced.push((name, err.to_string()));
                            }
                        }
                    }
                }
                loader.map_pin_path(name, path);
            }
        }
        let held = SignalsHeld::new();
        let mut ebpf = loader.load(crate::EBPF_OBJECT)?;
        let tc: &[&'static str] = if node {
            &super::node::NODE_TC
        } else {
            &PROGRAMS.map(|p| p.name)
        };
        for &name in tc {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|source| Error::Program { name, source })?;
        }
        if node {
            let name = programs::NODE_XDP;
            xdp(&mut ebpf)?
                .load()
                .map_err(|source| Error::Program { name, source })?;
        }
        drop(held);
        let mut set = BTreeMap::new();
        for &name in maps::ALL.iter().chain(&maps::ALL6).chain(node_maps) {
            set.insert(name, ebpf.take_map(name).ok_or(Error::MissingMap(name))?);
        }
        let mut maps = MapSet::new(set);
        let mut take = |name| ebpf.take_map(name).ok_or(Error::MissingMap(name));
        let sweep_maps = [
            take(maps::CT_SWEEP)?,
            take(maps::CT_DOOMED)?,
            take(maps::CT_CENSUS)?,
            take(maps::CT_DOOMED6)?,
            take(maps::CT_CENSUS6)?,
        ];
        if let Some(migration) = &migration {
            let copied = migration.copy(&mut maps)?;
            reuse.migrated.push((maps::CONNTRACK, copied));
        }
        let mut dataplane = Self {
            ebpf,
            maps,
            sweep_maps,
            reuse,
            migration,
        };
        if opts.ipv6 && !node {
            let held = SignalsHeld::new();
            for Program { name, .. } in PROGRAMS6 {
                classifier(&mut dataplane.ebpf, name)?
                    .load()
                    .map_err(|source| Error::Program { name, source })?;
            }
            drop(held);
        }
        Ok(dataplane)
    }

    /// Ends a migration of conntrack flows from an earlier layout (see
    /// [`crate::dataplane::migrate`]), once the new programs have replaced the earlier
    /// ones: copies the flows created in between and lets the earlier table go. Returns
    /// how many were copied now, if a migration was under way.
    pub fn finish_migration(&mut self) -> Result<Option<u64>, Error> {
        let Some(migration) = self.migration.take() else {
            return Ok(None);
        };
        let copied = migration.copy(&mut self.maps)?;
        if let Some((_, total)) = self.reuse.migrated.first_mut() {
            *total += copied;
        }
        Ok(Some(copied))
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

    /// The conntrack GC's sweep program, loaded on first use (it is never attached, and
    /// a data plane that is not an agent's has no use for it), and the maps only the sweep
    /// uses: its state, and the doomed list and census of one family (`ipv6` or not).
    pub(crate) fn sweep(&mut self, ipv6: bool) -> Result<SweepParts<'_>, Error> {
        let prog = classifier(&mut self.ebpf, programs::CT_SWEEP)?;
        if prog.fd().is_err() {
            let held = SignalsHeld::new();
            prog.load().map_err(|source| Error::Program {
                name: programs::CT_SWEEP,
                source,
            })?;
            drop(held);
        }
        let [state, doomed, census, doomed6, census6] = &mut self.sweep_maps;
        Ok(if ipv6 {
            (prog, state, doomed6, census6)
        } else {
            (prog, state, doomed, census)
        })
    }

    /// The pod-interface ingress program.
    pub fn pod_ingress(&mut self) -> Result<&mut SchedClassifier, Error> {
        self.program(PROGRAMS[0].name)
    }

    /// Attaches every program to its interface in the current network namespace with TCX,
    /// owned by the interfaces: they stay when this process exits. A program of an earlier
    /// run at the same place is replaced atomically. The IPv6 programs (with `ipv6`) go
    /// after the IPv4 ones, which hand IPv6 on to them; without `ipv6`, an earlier run's
    /// are detached.
    pub fn attach(
        &mut self,
        pod_interface: &str,
        egress_interface: &str,
        ipv6: bool,
    ) -> Result<(), Error> {
        for program in PROGRAMS {
            self.attach_program(&program, program.interface(pod_interface, egress_interface))?;
        }
        for program in PROGRAMS6 {
            let iface = program.interface(pod_interface, egress_interface);
            if ipv6 {
                self.attach_program(&program, iface)?;
            } else {
                discover::detach(iface, &program).map_err(|e| Error::Attached {
                    iface: iface.to_owned(),
                    source: Box::new(e),
                })?;
            }
        }
        Ok(())
    }

    /// Attaches only the pod-interface ingress program (the low-level `attach` command).
    pub fn attach_pod_ingress(&mut self, iface: &str) -> Result<(), Error> {
        self.attach_program(&PROGRAMS[0], iface)
    }

    /// The object itself, for what this module does not wrap (node mode's XDP link).
    pub(crate) fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub(crate) fn attach_program(&mut self, program: &Program, iface: &str) -> Result<(), Error> {
        let name = program.name;
        let index = ifindex(iface).ok_or_else(|| Error::NoInterface(iface.to_owned()))?;
        let attach_error = |source| Error::Attach {
            name,
            iface: iface.to_owned(),
            source,
        };
        let previous = discover::tcx_attached(index, program).map_err(|e| Error::Attached {
            iface: iface.to_owned(),
            source: Box::new(e),
        })?;
        let previous = previous
            .map(|info| tcx::prog_fd(info.id()))
            .transpose()
            .map_err(attach_error)?;
        let prog = classifier(&mut self.ebpf, name)?;
        let fd = prog
            .fd()
            .map_err(|source| Error::Program { name, source })?
            .as_fd();
        // An earlier run's program: swapped in place, no gap.
        tcx::attach(
            index,
            program.attach_type,
            fd,
            previous.as_ref().map(|f| f.as_fd()),
        )
        .map_err(attach_error)
    }

    /// Starts reading the programs' aya-log events (emitted only with the DEBUG flag in the
    /// configuration); call [`aya_log::EbpfLogger::flush`] when its fd is readable.
    pub fn logger(&mut self) -> Result<aya_log::EbpfLogger<TracingLog>, aya_log::Error> {
        aya_log::EbpfLogger::init_with_logger(&mut self.ebpf, TracingLog)
    }
}

/// Holds SIGTERM, SIGINT and SIGHUP back on this thread while it lives (they are delivered
/// when it drops). The verifier aborts a program load with EAGAIN when a signal is pending,
/// and aya answers any first failure by loading again with the verifier's log on, in
/// buffers ten times larger each time the log does not fit: a SIGTERM during the load of a
/// large program cost seconds (the agent acts on it right after the set-up).
struct SignalsHeld(Option<libc::sigset_t>);

impl SignalsHeld {
    fn new() -> Self {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use; the masks
        // are this thread's.
        unsafe {
            let mut held: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut held);
            for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut held, signal);
            }
            let mut before: libc::sigset_t = std::mem::zeroed();
            if libc::pthread_sigmask(libc::SIG_BLOCK, &held, &mut before) == 0 {
                Self(Some(before))
            } else {
                Self(None)
            }
        }
    }
}

impl Drop for SignalsHeld {
    fn drop(&mut self) {
        if let Some(before) = &self.0 {
            // SAFETY: restores the mask saved above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, before, std::ptr::null_mut()) };
        }
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

/// Node mode's XDP program of `ebpf`.
pub(crate) fn xdp(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    xdp_named(ebpf, programs::NODE_XDP)
}

fn xdp_named<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, Error> {
    ebpf.program_mut(name)
        .ok_or(Error::MissingProgram(name))?
        .try_into()
        .map_err(|source| Error::Program { name, source })
}

pub(crate) fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, Error> {
    ebpf.program_mut(name)
        .ok_or(Error::MissingProgram(name))?
        .try_into()
        .map_err(|source| Error::Program { name, source })
}
