//! Map names as they appear in the BPF object, in `bpftool map list` and as pin file names.

/// Per-CPU packet/byte counters indexed by [`crate::Stat`] and drop reason.
pub const STATS: &str = "STATS";
/// One [`crate::RouterConfig`] at index 0.
pub const CONFIG: &str = "CONFIG";
/// Redirect rules: [`crate::RuleKey`] -> [`crate::RuleTarget`].
pub const RULES: &str = "RULES";
/// Per-CPU packet/byte counters per rule id (0 = fallback).
pub const RULE_STATS: &str = "RULE_STATS";
/// Connection tracking, both directions: [`crate::FlowKey`] -> [`crate::FlowEntry`].
pub const CONNTRACK: &str = "CONNTRACK";
/// Ports of IPv4 datagrams in flight as fragments: [`crate::FragKey`] ->
/// [`crate::FragPorts`].
pub const FRAGMENTS: &str = "FRAGMENTS";

/// The addresses of rules that send to a name (DNS proxy mode): [`crate::RuleKey`] ->
/// [`crate::RuleAddrs`], kept current by the agent as the name's records change.
pub const RULE_ADDRS: &str = "RULE_ADDRS";

/// Every map, in pin order.
pub const ALL: [&str; 7] = [
    STATS, CONFIG, RULES, RULE_STATS, CONNTRACK, FRAGMENTS, RULE_ADDRS,
];

/// Default root of the per-instance pin directories on a persistent bpffs.
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf/egress-router";
