//! Loading the embedded BPF object for a pod or a node (the verifier runs here), pinning
//! its maps, and attaching its programs: both walk the program table
//! ([`crate::dataplane::programs`]) for the data plane's mode, and every attach goes
//! through [`crate::dataplane::attach`].

use std::{collections::BTreeMap, path::PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapInfo},
    programs::{SchedClassifier, Xdp},
};
use egress_common::{
    DEFAULT_CONNTRACK_FLOWS, NODE_INSTANCES_MAX, RULE_STATS_LEN, RULES_CAPACITY, maps, programs,
};

pub use crate::dataplane::error::Error;
use crate::dataplane::{
    attach,
    layout::{LayoutError, check_family, check_layout, size_ipv6_maps, unreplied_entries},
    maps::MapSet,
    migrate::Migration,
    programs::{self as table, Hook, Interfaces, Mode},
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

/// The loaded data plane: programs and maps of one egress-router instance, or of a node's
/// instances.
pub struct Dataplane {
    ebpf: Ebpf,
    mode: Mode,
    /// Where its maps are pinned (and node mode's XDP link).
    pin_dir: Option<PathBuf>,
    maps: MapSet,
    /// The GC sweep's own maps: [`maps::CT_SWEEP`], then [`maps::CT_DOOMED`] and
    /// [`maps::CT_CENSUS`], then their IPv6 counterparts.
    sweep_maps: [Map; 5],
    reuse: Reuse,
    migration: Option<Migration>,
}

impl Dataplane {
    /// Loads the embedded object and a router pod's programs (the verifier runs here),
    /// touching nothing else on the system.
    pub fn load(opts: &LoadOptions) -> Result<Self, Error> {
        Self::load_for(Mode::Pod, opts)
    }

    /// Loads the embedded object and the programs of `mode` ([`table::wanted`]): for a node
    /// agent ([`crate::node`]), a configuration for each instance and the node's maps too,
    /// pinned with the others.
    pub fn load_for(mode: Mode, opts: &LoadOptions) -> Result<Self, Error> {
        let (mode_maps, instances) = match mode {
            Mode::Pod => (&[][..], None),
            Mode::Node => (&maps::NODE[..], Some(NODE_INSTANCES_MAX + 1)),
        };
        let mut loader = EbpfLoader::new();
        if let Some(entries) = instances {
            loader.map_max_entries(maps::CONFIG, entries);
            loader.map_max_entries(maps::CONFIG6, entries);
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
            for &name in maps::ALL.iter().chain(&maps::ALL6).chain(mode_maps) {
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
                            maps::CONFIG | maps::CONFIG6 => instances.unwrap_or(0),
                            // Each instance's counters are a stride of it, one per drop
                            // reason: a map of an earlier release with fewer reasons would
                            // mix instances' counters up.
                            maps::NODE_STATS => egress_common::NODE_STATS_LEN,
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
                            std::fs::remove_file(&path).map_err(|source| Error::Unpin {
                                path: path.clone(),
                                source,
                            })?;
                            if matches!(err, LayoutError::Family { .. }) {
                                // The instance gained or lost IPv6: expected, not a loss.
                                reuse.resized.push(name);
                            } else {
                                reuse
                                    .replaced
                                    .push((name, crate::error_chain(&err).to_string()));
                            }
                        }
                    }
                }
                loader.map_pin_path(name, path);
            }
        }
        let held = SignalsHeld::new();
        let mut ebpf = loader.load(crate::EBPF_OBJECT)?;
        for program in table::wanted(mode, opts.ipv6) {
            let name = program.name;
            let loaded = match program.hook {
                Hook::Xdp => xdp_named(&mut ebpf, name)?.load(),
                Hook::TcIngress | Hook::TcEgress => classifier(&mut ebpf, name)?.load(),
            };
            loaded.map_err(|source| Error::Program { name, source })?;
        }
        drop(held);
        let mut set = BTreeMap::new();
        for &name in maps::ALL.iter().chain(&maps::ALL6).chain(mode_maps) {
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
        Ok(Self {
            ebpf,
            mode,
            pin_dir: opts.pin_dir.clone(),
            maps,
            sweep_maps,
            reuse,
            migration,
        })
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
        self.program(programs::POD_INGRESS)
    }

    /// Attaches the programs of this data plane's mode to the interfaces of `interfaces`
    /// in the current network namespace, in the table's order ([`attach::attach`]: owned
    /// by the interfaces, they stay when this process exits; a program of an earlier run at
    /// the same place is replaced atomically). The IPv6 programs go after the IPv4 ones,
    /// which hand IPv6 on to them; a router pod without IPv6 (`ipv6`) has none, and an
    /// earlier run's are detached.
    pub fn attach(&mut self, interfaces: &Interfaces<'_>, ipv6: bool) -> Result<(), Error> {
        for program in table::of(self.mode) {
            let Some(iface) = program.interface(interfaces) else {
                continue;
            };
            if program.wanted(ipv6) {
                let prog = self
                    .ebpf
                    .program_mut(program.name)
                    .ok_or(Error::MissingProgram(program.name))?;
                attach::attach(prog, program, iface, self.pin_dir.as_deref())?;
            } else {
                attach::detach(iface, program).map_err(|e| Error::Attached {
                    iface: iface.to_owned(),
                    source: Box::new(e),
                })?;
            }
        }
        Ok(())
    }

    /// Attaches only the pod-interface ingress program (the low-level `attach` command).
    pub fn attach_pod_ingress(&mut self, iface: &str) -> Result<(), Error> {
        let name = programs::POD_INGRESS;
        let program = table::named(name).ok_or(Error::MissingProgram(name))?;
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or(Error::MissingProgram(name))?;
        attach::attach(prog, program, iface, None).map(drop)
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

fn xdp_named<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, Error> {
    ebpf.program_mut(name)
        .ok_or(Error::MissingProgram(name))?
        .try_into()
        .map_err(|source| Error::Program { name, source })
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
