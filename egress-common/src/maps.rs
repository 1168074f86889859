//! Map names as they appear in the BPF object, in `bpftool map list` and as pin file names.

/// Per-CPU packet/byte counters indexed by [`crate::Stat`] and drop reason.
pub const STATS: &str = "STATS";
/// One [`crate::RouterConfig`] at index 0.
pub const CONFIG: &str = "CONFIG";
/// Redirect rules: [`crate::RuleKey`] -> [`crate::RuleTarget`].
pub const RULES: &str = "RULES";
/// Per-CPU packet/byte counters per rule id (0 = fallback).
pub const RULE_STATS: &str = "RULE_STATS";
/// Connection tracking of answered flows (and the pod's own connections), both
/// directions: [`crate::FlowKey`] -> [`crate::FlowEntry`].
pub const CONNTRACK: &str = "CONNTRACK";
/// Connection tracking of flows not answered yet, same layout as [`CONNTRACK`]; a flow
/// moves to [`CONNTRACK`] with its first answer.
pub const CT_UNREPLIED: &str = "CT_UNREPLIED";
/// Ports of IPv4 datagrams in flight as fragments: [`crate::FragKey`] ->
/// [`crate::FragPorts`].
pub const FRAGMENTS: &str = "FRAGMENTS";

/// The addresses of rules that send to a name (DNS proxy mode): [`crate::RuleKey`] ->
/// [`crate::RuleAddrs`], kept current by the agent as the name's records change.
pub const RULE_ADDRS: &str = "RULE_ADDRS";

/// Client addresses that hold more flows than `--max-flows-per-source` allows, as the
/// agent's last GC pass counted them: `[u8; 4]` (the address) -> `u32` (its flows). Their
/// new flows are dropped (`source_limit`) until they hold fewer.
pub const CT_LIMITED: &str = "CT_LIMITED";

/// The conntrack GC's sweep in the kernel (program [`crate::programs::CT_SWEEP`]): its
/// arguments and results, one [`crate::SweepState`] at index 0. Not pinned: each agent
/// process has its own, like the two below.
pub const CT_SWEEP: &str = "CT_SWEEP";
/// The flows the sweep found collectable, [`crate::SweepState::doomed`] of them:
/// index -> [`crate::Doomed`].
pub const CT_DOOMED: &str = "CT_DOOMED";
/// The sweep's census: a client's address -> its translated flows that are not closed.
pub const CT_CENSUS: &str = "CT_CENSUS";
/// [`CT_DOOMED`] for the IPv6 tables: index -> [`crate::Doomed6`] (one entry for an
/// instance without IPv6).
pub const CT_DOOMED6: &str = "CT_DOOMED6";
/// [`CT_CENSUS`] for IPv6 clients: `[u8; 16]` -> `u32`.
pub const CT_CENSUS6: &str = "CT_CENSUS6";
/// Capacity of [`CT_DOOMED`]: a pass that finds more falls back to the user-space pass.
pub const CT_DOOMED_MAX: u32 = 8192;
/// Capacity of [`CT_CENSUS`]: more clients than this, and the pass falls back.
pub const CT_CENSUS_MAX: u32 = 8192;

/// The IPv6 half of the configuration: one [`crate::RouterConfig6`] at index 0.
pub const CONFIG6: &str = "CONFIG6";
/// IPv6 redirect rules: [`crate::RuleKey`] -> [`crate::RuleTarget6`].
pub const RULES6: &str = "RULES6";
/// [`CONNTRACK`] for IPv6: [`crate::FlowKey6`] -> [`crate::FlowEntry6`].
pub const CONNTRACK6: &str = "CONNTRACK6";
/// [`CT_UNREPLIED`] for IPv6.
pub const CT_UNREPLIED6: &str = "CT_UNREPLIED6";
/// [`CT_LIMITED`] for IPv6 clients: `[u8; 16]` -> `u32`.
pub const CT_LIMITED6: &str = "CT_LIMITED6";
/// [`FRAGMENTS`] for IPv6: [`crate::FragKey6`] -> [`crate::FragPorts`].
pub const FRAGMENTS6: &str = "FRAGMENTS6";
/// [`RULE_ADDRS`] for IPv6 (the names' AAAA records): [`crate::RuleKey`] ->
/// [`crate::RuleAddrs6`].
pub const RULE_ADDRS6: &str = "RULE_ADDRS6";

/// Node mode: a router pod's host-side interface index -> its instance (`u32`), for the
/// client packets on their way into the pod ([`crate::node`]).
pub const NODE_PODS: &str = "NODE_PODS";
/// Node mode: EGRESS_SOURCE -> its instance (`u32`), for the replies on the uplink and the
/// ARP responder.
pub const NODE_SOURCES: &str = "NODE_SOURCES";
/// Node mode: EGRESS_SOURCE's IPv6 address (`[u8; 16]`) -> its instance (`u32`), for the
/// IPv6 replies on the uplink and the neighbour discovery responder.
pub const NODE_SOURCES6: &str = "NODE_SOURCES6";
/// Node mode: each instance's way out, [`crate::NodeHop`] at its index.
pub const NODE_HOPS: &str = "NODE_HOPS";
/// Node mode: the uplink, one [`crate::NodeUplink`] at index 0.
pub const NODE_UPLINK: &str = "NODE_UPLINK";
/// Node mode: per-CPU packet counters per instance ([`crate::node_stat`]).
pub const NODE_STATS: &str = "NODE_STATS";
/// Node mode's maps, pinned and handed over with [`ALL`] in its pin directory.
pub const NODE: [&str; 6] = [
    NODE_PODS,
    NODE_SOURCES,
    NODE_SOURCES6,
    NODE_HOPS,
    NODE_UPLINK,
    NODE_STATS,
];

/// Who holds EGRESS_SOURCE: [`crate::Claim`] at [`crate::CLAIM_OURS`] (this router's
/// claim, written by the set-up) and at [`crate::CLAIM_RIVAL`] (the last other claimant the
/// data plane saw, for the agent).
pub const CLAIM: &str = "CLAIM";

/// The networks whose addresses may open flows (`config_flags::CHECK_SOURCES`): an LPM
/// trie of `[u8; 4]` prefixes -> `u8`, 1 for a client network, 0 for a more specific
/// prefix where no client can be (the egress side, the pod's own address, ...).
pub const CLIENT_NETS: &str = "CLIENT_NETS";
/// [`CLIENT_NETS`] for IPv6: `[u8; 16]` prefixes.
pub const CLIENT_NETS6: &str = "CLIENT_NETS6";
/// Capacity of [`CLIENT_NETS`] and [`CLIENT_NETS6`], in prefixes.
pub const CLIENT_NETS_MAX: u32 = 64;

/// Maps of [`ALL`] that a data plane of an earlier release lacks: those who read a running
/// data plane (inspection, hand-over) do without them, and a load creates them.
pub const ADDED_LATER: [&str; 3] = [CLAIM, CLIENT_NETS, CLIENT_NETS6];

/// Capacity of [`CT_LIMITED`].
pub const CT_LIMITED_MAX: u32 = 4096;

/// Every map, in pin order.
pub const ALL: [&str; 12] = [
    STATS,
    CONFIG,
    RULES,
    RULE_STATS,
    CONNTRACK,
    FRAGMENTS,
    RULE_ADDRS,
    CT_UNREPLIED,
    CT_LIMITED,
    CLAIM,
    CLIENT_NETS,
    CLIENT_NETS6,
];

/// The IPv6 maps, pinned and handed over with [`ALL`]. Every object has them (one entry
/// each for an instance without IPv6), but only the IPv6 programs use them, so the maps of
/// a running IPv4 program, or of an earlier release, do not include them.
pub const ALL6: [&str; 7] = [
    CONFIG6,
    RULES6,
    CONNTRACK6,
    CT_UNREPLIED6,
    CT_LIMITED6,
    FRAGMENTS6,
    RULE_ADDRS6,
];

/// Default root of the per-instance pin directories on a persistent bpffs.
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf/egress-router";
