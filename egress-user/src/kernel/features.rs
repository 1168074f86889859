//! The kernel features egress-router uses, one entry each: what it is, which data plane
//! needs it, the first upstream Linux release that has it (for the message; the probe
//! decides), what is used in its place when it is missing, and how to find out.
//!
//! The minimums are upstream's; distribution kernels backport (RHEL 9's 5.14 carries the BPF
//! subsystem of 6.x), which is why only the probes decide.

use std::fmt;

use aya::{maps::MapType, programs::ProgramType, sys::BpfHelper};

use super::{probe, scratch};

/// The data planes, for what each needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Plane {
    /// A router pod's own data plane: redirect mode, and the network guard of the proxy
    /// modes' init containers.
    Pod,
    /// The node agent's.
    Node,
}

impl Plane {
    fn name(self) -> &'static str {
        match self {
            Self::Pod => "pod mode",
            Self::Node => "node mode",
        }
    }
}

/// How a feature's presence is found out.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Probe {
    Program(ProgramType),
    Map(MapType),
    /// A helper, called from a program of this type.
    Helper(ProgramType, BpfHelper),
    /// A loop the verifier must prove bounded (Linux 5.3).
    BoundedLoop,
    /// A global variable in a `.bss`-like array map (Linux 5.2).
    GlobalData,
    /// BTF loaded into the kernel, for the maps' field names.
    Btf,
    /// `BPF_MAP_LOOKUP_BATCH` on a hash map.
    MapBatch,
    /// `BPF_PROG_TEST_RUN` of a TC program.
    TestRun,
    /// The bpf filesystem type.
    Bpffs,
    /// Probes that need an interface: in a network namespace of their own.
    Scratch(scratch::Probe),
}

/// One kernel feature egress-router uses.
#[derive(Clone, Copy, Debug)]
pub struct Feature {
    /// A short name, as `features` prints it.
    pub name: &'static str,
    /// What it is and what egress-router uses it for.
    pub what: &'static str,
    /// The first upstream Linux release with it.
    pub since: &'static str,
    /// The data planes that need it.
    pub planes: &'static [Plane],
    /// What is used in its place when it is missing; `None`: nothing, the planes that need
    /// it cannot run without it.
    pub fallback: Option<&'static str>,
    pub(crate) probe: Probe,
}

const BOTH: &[Plane] = &[Plane::Pod, Plane::Node];
const POD: &[Plane] = &[Plane::Pod];
const NODE: &[Plane] = &[Plane::Node];

const fn helper(
    name: &'static str,
    what: &'static str,
    since: &'static str,
    planes: &'static [Plane],
    id: BpfHelper,
) -> Feature {
    Feature {
        name,
        what,
        since,
        planes,
        fallback: None,
        probe: Probe::Helper(ProgramType::SchedClassifier, id),
    }
}

/// Every kernel feature the data plane and the agents use.
pub const FEATURES: &[Feature] = &[
    Feature {
        name: "sched_cls",
        what: "TC programs (BPF_PROG_TYPE_SCHED_CLS): the whole data plane",
        since: "4.1",
        planes: BOTH,
        fallback: None,
        probe: Probe::Program(ProgramType::SchedClassifier),
    },
    Feature {
        name: "xdp",
        what: "XDP programs: the uplink's ARP/NDP responder and early drop",
        since: "4.8",
        planes: NODE,
        fallback: None,
        probe: Probe::Program(ProgramType::Xdp),
    },
    Feature {
        name: "tcx",
        what: "TCX attachment (BPF_TCX_INGRESS/EGRESS): programs owned by the interface, \
               without a qdisc",
        since: "6.6",
        planes: BOTH,
        fallback: Some("a clsact qdisc with cls_bpf direct-action filters (--attach tc)"),
        probe: Probe::Scratch(scratch::Probe::Tcx),
    },
    Feature {
        name: "cls_bpf",
        what: "the clsact qdisc and cls_bpf direct-action filters: the attachment where \
               TCX is missing",
        since: "4.5",
        planes: BOTH,
        fallback: Some("TCX, where the kernel has it (the attachment needs one of the two)"),
        probe: Probe::Scratch(scratch::Probe::ClsBpf),
    },
    Feature {
        name: "xdp_link",
        what: "XDP attached through a BPF link (BPF_LINK_CREATE), pinned so it outlives the \
               agent",
        since: "5.9",
        planes: NODE,
        fallback: Some("XDP attached over netlink, owned by the uplink"),
        probe: Probe::Scratch(scratch::Probe::XdpLink),
    },
    Feature {
        name: "bounded_loops",
        what: "loops the verifier proves bounded (port allocation, header walks)",
        since: "5.3",
        planes: BOTH,
        fallback: None,
        probe: Probe::BoundedLoop,
    },
    Feature {
        name: "global_data",
        what: "global variables in array maps (aya's .rodata/.bss)",
        since: "5.2",
        planes: BOTH,
        fallback: None,
        probe: Probe::GlobalData,
    },
    Feature {
        name: "btf",
        what: "BTF for the maps, so `bpftool map dump` shows field names",
        since: "5.1",
        planes: BOTH,
        fallback: Some("maps without BTF: bpftool dumps them as hex"),
        probe: Probe::Btf,
    },
    Feature {
        name: "hash",
        what: "hash maps (rules, node lookups)",
        since: "3.19",
        planes: BOTH,
        fallback: None,
        probe: Probe::Map(MapType::Hash),
    },
    Feature {
        name: "lru_hash",
        what: "LRU hash maps (conntrack, fragments)",
        since: "4.10",
        planes: BOTH,
        fallback: None,
        probe: Probe::Map(MapType::LruHash),
    },
    Feature {
        name: "array",
        what: "array maps (configuration, sweep state)",
        since: "3.19",
        planes: BOTH,
        fallback: None,
        probe: Probe::Map(MapType::Array),
    },
    Feature {
        name: "percpu_array",
        what: "per-CPU array maps (counters, scratch space)",
        since: "4.6",
        planes: BOTH,
        fallback: None,
        probe: Probe::Map(MapType::PerCpuArray),
    },
    Feature {
        name: "perf_event_array",
        what: "perf event arrays: per-packet debug events (EGRESS_ROUTER_DEBUG)",
        since: "4.3",
        planes: BOTH,
        fallback: Some("no per-packet debug events"),
        probe: Probe::Map(MapType::PerfEventArray),
    },
    helper(
        "redirect_neigh",
        "bpf_redirect_neigh: forwarding toward EGRESS_GATEWAY with the kernel's neighbours",
        "5.10",
        BOTH,
        BpfHelper::BPF_FUNC_redirect_neigh,
    ),
    helper(
        "ktime_get_coarse_ns",
        "bpf_ktime_get_coarse_ns: the conntrack clock",
        "5.11",
        BOTH,
        BpfHelper::BPF_FUNC_ktime_get_coarse_ns,
    ),
    helper(
        "check_mtu",
        "bpf_check_mtu: path MTU (Fragmentation Needed, Packet Too Big)",
        "5.12",
        BOTH,
        BpfHelper::BPF_FUNC_check_mtu,
    ),
    helper(
        "fib_lookup",
        "bpf_fib_lookup: replies routed toward the client",
        "4.18",
        NODE,
        BpfHelper::BPF_FUNC_fib_lookup,
    ),
    helper(
        "skb_adjust_room",
        "bpf_skb_adjust_room: the router's own ICMP errors",
        "4.13",
        BOTH,
        BpfHelper::BPF_FUNC_skb_adjust_room,
    ),
    helper(
        "skb_change_tail",
        "bpf_skb_change_tail: the router's own ICMP errors",
        "4.9",
        BOTH,
        BpfHelper::BPF_FUNC_skb_change_tail,
    ),
    helper(
        "csum",
        "bpf_l3_csum_replace, bpf_l4_csum_replace, bpf_csum_diff: checksums after NAT",
        "4.6",
        BOTH,
        BpfHelper::BPF_FUNC_l4_csum_replace,
    ),
    helper(
        "skb_pull_data",
        "bpf_skb_pull_data: direct access to the headers",
        "4.9",
        BOTH,
        BpfHelper::BPF_FUNC_skb_pull_data,
    ),
    Feature {
        name: "for_each_map_elem",
        what: "bpf_for_each_map_elem: the conntrack GC's sweep in the kernel",
        since: "5.13",
        planes: BOTH,
        fallback: Some("the agent judges every flow itself (a slower GC pass)"),
        probe: Probe::Helper(
            ProgramType::SchedClassifier,
            BpfHelper::BPF_FUNC_for_each_map_elem,
        ),
    },
    Feature {
        name: "prog_test_run",
        what: "BPF_PROG_TEST_RUN of a TC program: how the agent runs the GC's sweep",
        since: "4.12",
        planes: BOTH,
        fallback: Some("the agent judges every flow itself (a slower GC pass)"),
        probe: Probe::TestRun,
    },
    Feature {
        name: "map_batch",
        what: "BPF_MAP_LOOKUP_BATCH: reading a conntrack table in a few syscalls",
        since: "5.6",
        planes: BOTH,
        fallback: Some("one syscall per entry"),
        probe: Probe::MapBatch,
    },
    Feature {
        name: "bpffs",
        what: "the bpf filesystem: pins that keep maps and links across restarts",
        since: "4.4",
        planes: BOTH,
        fallback: Some("no pins: the data plane works, a restarted agent starts empty"),
        probe: Probe::Bpffs,
    },
    Feature {
        name: "macvlan",
        what: "macvlan interfaces (--macvlan-parent creates the egress interface)",
        since: "3.0",
        planes: POD,
        fallback: Some("an egress interface made by the CNI (Multus) instead"),
        probe: Probe::Scratch(scratch::Probe::Macvlan),
    },
    Feature {
        name: "managed_neighbours",
        what: "managed neighbour entries (NTF_EXT_MANAGED): gateways kept resolved by the \
               kernel",
        since: "5.16",
        planes: NODE,
        fallback: Some("the agent resolves the gateways again itself, every few seconds"),
        probe: Probe::Scratch(scratch::Probe::ManagedNeighbour),
    },
];

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "kebab-case")]
pub enum Status {
    Present,
    /// Missing, with what the kernel said.
    Missing(String),
    /// The probe could not tell (no privileges, say): treated as present, so the real use
    /// reports what fails.
    Unknown(String),
}

/// One feature and what its probe found.
#[derive(Clone, Debug)]
pub struct Found {
    pub feature: &'static Feature,
    pub status: Status,
}

impl Found {
    /// Whether egress-router can use the feature (an unknown counts as present).
    #[must_use]
    pub fn usable(&self) -> bool {
        !matches!(self.status, Status::Missing(_))
    }
}

/// Every feature, probed.
#[derive(Clone, Debug)]
pub struct Report {
    pub found: Vec<Found>,
}

/// A feature a data plane cannot run without.
#[derive(Debug, thiserror::Error)]
#[error(
    "this kernel lacks {name} ({what}; Linux {since} or later), which {plane} needs: nothing \
     was changed"
)]
pub struct Missing {
    pub name: &'static str,
    pub what: &'static str,
    pub since: &'static str,
    pub plane: &'static str,
}

impl Missing {
    /// `feature`, which `plane` needs.
    #[must_use]
    pub fn of(feature: &Feature, plane: Plane) -> Self {
        Self {
            name: feature.name,
            what: feature.what,
            since: feature.since,
            plane: plane.name(),
        }
    }
}

impl Report {
    /// Probes every feature of [`FEATURES`].
    #[must_use]
    pub fn probe() -> Self {
        let scratch = scratch::probe_all();
        let found = FEATURES
            .iter()
            .map(|feature| Found {
                feature,
                status: match feature.probe {
                    Probe::Scratch(which) => scratch.status(which),
                    other => probe::status(other),
                },
            })
            .collect();
        Self { found }
    }

    /// What was found of the feature named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Found> {
        self.found.iter().find(|f| f.feature.name == name)
    }

    /// Whether the feature named `name` can be used (unknown counts as usable).
    #[must_use]
    pub fn usable(&self, name: &str) -> bool {
        self.get(name).is_some_and(Found::usable)
    }

    /// The first feature `plane` cannot run without, if any: one without a fallback, or
    /// both ways to attach at once.
    pub fn require(&self, plane: Plane) -> Result<(), Missing> {
        let missing = |feature: &Feature| Missing::of(feature, plane);
        for found in &self.found {
            let feature = found.feature;
            if !feature.planes.contains(&plane) || found.usable() {
                continue;
            }
            if feature.fallback.is_none() {
                return Err(missing(feature));
            }
        }
        if !self.usable("tcx") && !self.usable("cls_bpf") {
            let cls_bpf = self.get("cls_bpf").expect("in FEATURES").feature;
            return Err(missing(cls_bpf));
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<20} {:<8} {:<6} {:<10} in its place / detail",
            "feature", "status", "since", "used by"
        )?;
        for found in &self.found {
            let feature = found.feature;
            let planes = feature
                .planes
                .iter()
                .map(|p| match p {
                    Plane::Pod => "pod",
                    Plane::Node => "node",
                })
                .collect::<Vec<_>>()
                .join(",");
            let (status, detail) = match &found.status {
                Status::Present => ("yes", String::new()),
                Status::Missing(why) => (
                    "no",
                    feature.fallback.map_or_else(
                        || format!("nothing: required ({why})"),
                        |fallback| format!("{fallback} ({why})"),
                    ),
                ),
                Status::Unknown(why) => ("unknown", format!("not probed: {why}")),
            };
            writeln!(
                f,
                "{:<20} {:<8} {:<6} {:<10} {detail}",
                feature.name, status, feature.since, planes
            )?;
        }
        Ok(())
    }
}

/// The JSON form of a report: one object per feature.
#[derive(serde::Serialize)]
pub struct JsonRow<'a> {
    pub name: &'static str,
    pub what: &'static str,
    pub since: &'static str,
    pub planes: &'static [Plane],
    pub fallback: Option<&'static str>,
    #[serde(flatten)]
    pub status: &'a Status,
}

impl Report {
    /// One JSON object per feature.
    #[must_use]
    pub fn json_rows(&self) -> Vec<JsonRow<'_>> {
        self.found
            .iter()
            .map(|found| JsonRow {
                name: found.feature.name,
                what: found.feature.what,
                since: found.feature.since,
                planes: found.feature.planes,
                fallback: found.feature.fallback,
                status: &found.status,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(missing: &[&str]) -> Report {
        Report {
            found: FEATURES
                .iter()
                .map(|feature| Found {
                    feature,
                    status: if missing.contains(&feature.name) {
                        Status::Missing("test".into())
                    } else {
                        Status::Present
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = FEATURES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn a_missing_feature_with_a_fallback_is_no_refusal() {
        let r = report(&["tcx", "managed_neighbours", "for_each_map_elem", "btf"]);
        assert!(r.require(Plane::Pod).is_ok());
        assert!(r.require(Plane::Node).is_ok());
    }

    #[test]
    fn a_required_feature_names_itself_and_its_kernel() {
        let err = report(&["check_mtu"]).require(Plane::Pod).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("check_mtu") && text.contains("Linux 5.12"),
            "{text}"
        );
        // XDP is node mode's alone.
        assert!(report(&["xdp"]).require(Plane::Pod).is_ok());
        assert!(report(&["xdp"]).require(Plane::Node).is_err());
    }

    #[test]
    fn no_way_to_attach_is_a_refusal() {
        assert!(report(&["cls_bpf"]).require(Plane::Pod).is_ok());
        let err = report(&["tcx", "cls_bpf"]).require(Plane::Pod).unwrap_err();
        assert_eq!(err.name, "cls_bpf");
    }
}
