//! The kernel features egress-router uses, one entry each: what it is, which data plane
//! needs it, the first upstream Linux release that has it (for the message; the probe
//! decides), what is used in its place when it is missing, and how to find out.
//!
//! The minimums are upstream's; distribution kernels backport (RHEL 9's 5.14 carries the BPF
//! subsystem of 6.x), which is why only the probes decide.

use aya::{maps::MapType, programs::ProgramType, sys::BpfHelper};

use super::probe::{Probe, Scratch};

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
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Pod => "pod mode",
            Self::Node => "node mode",
        }
    }
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
        probe: Probe::Scratch(Scratch::Tcx),
    },
    Feature {
        name: "cls_bpf",
        what: "the clsact qdisc and cls_bpf direct-action filters: the attachment where \
               TCX is missing",
        since: "4.5",
        planes: BOTH,
        fallback: Some("TCX, where the kernel has it (the attachment needs one of the two)"),
        probe: Probe::Scratch(Scratch::ClsBpf),
    },
    Feature {
        name: "xdp_link",
        what: "XDP attached through a BPF link (BPF_LINK_CREATE), pinned so it outlives the \
               agent",
        since: "5.9",
        planes: NODE,
        fallback: Some("XDP attached over netlink, owned by the uplink"),
        probe: Probe::Scratch(Scratch::XdpLink),
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
        name: "lookup_and_delete",
        what: "BPF_MAP_LOOKUP_AND_DELETE_ELEM on hash maps: the conntrack GC takes an \
               expired flow out atomically, so a packet cannot refresh it in between",
        since: "5.14",
        planes: BOTH,
        fallback: None,
        probe: Probe::LookupAndDelete,
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
        probe: Probe::Scratch(Scratch::Macvlan),
    },
    Feature {
        name: "managed_neighbours",
        what: "managed neighbour entries (NTF_EXT_MANAGED): gateways kept resolved by the \
               kernel",
        since: "5.16",
        planes: NODE,
        fallback: Some("the agent resolves the gateways again itself, every few seconds"),
        probe: Probe::Scratch(Scratch::ManagedNeighbour),
    },
];
