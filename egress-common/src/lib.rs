//! Types shared by the egress-router BPF programs and user space.
//!
//! Every map key and value is `#[repr(C)]` with explicit padding fields, derives
//! [`bytemuck::Pod`] (which refuses implicit padding at compile time) and has its size
//! asserted next to it, so a layout drift between the BPF object, the loader and maps pinned by an
//! older version fails the build instead of corrupting state at run time.
//!
//! | module | concern |
//! |---|---|
//! | [`claim`] | who holds EGRESS_SOURCE: a claim's identity, carried in ARP frames' padding, and the `CLAIM` map's entries |
//! | [`maps`] | map names, as in the BPF object, in `bpftool map list` and as pin file names |
//! | [`programs`] | program names, for where they run: `<interface>_<hook>`, `node_<role>` |
//! | [`config`] | the instance configuration (`RouterConfig`) at index 0 of `CONFIG` |
//! | [`rules`] | redirect rules, and the addresses of rules that send to a name |
//! | [`flow`] | conntrack and fragment keys and values, generic over the address (`[u8; 4]` or `[u8; 16]`); `FlowKey::reversed` and `peer_key` |
//! | [`lifetime`] | flow timeouts, when a flow is over, what the GC removes: one judgement for the data plane, its GC sweep and the agent |
//! | [`stats`] | counters by data-plane path, and the typed drop reasons |
//! | [`csum`] | the incremental checksum (RFC 1624) |
//! | [`proto`] | the IP protocol numbers the data plane knows |
//! | [`node`] | node mode's types: an instance's way out (`NodeHop`), the uplink |
#![no_std]

pub mod claim;
pub mod config;
pub mod csum;
pub mod flow;
pub mod lifetime;
pub mod maps;
pub mod node;
pub mod programs;
pub mod proto;
pub mod rules;
pub mod stats;

pub use claim::{
    ANSWER_GAP_NS, ARP_TRAILER_OFFSET, CLAIM_OURS, CLAIM_RIVAL, Claim, ClaimId, DEFEND_GAP_NS,
    TRAILER_LEN, claim_flags,
};
pub use config::{DEFAULT_NAT_PORTS, NEXT_HOP_IPV6, RouterConfig, RouterConfig6, config_flags};
pub use flow::{
    Addr, DEFAULT_CONNTRACK_FLOWS, FLOW_ENTRY_PREFIX_SIZES, FRAGMENTS_MAX, FlowEntry, FlowEntry6,
    FlowKey, FlowKey6, FragKey, FragKey6, FragPorts, UNREPLIED_SHARE, flow_kind, peer_key,
    tcp_seen,
};
pub use lifetime::{
    Doomed, Doomed6, MIN_TIMEOUT_NS, PORT_REUSE_IDLE_NS, SweepState, TOUCH_INTERVAL_NS,
    counts_against_client, flow_expired, flow_timeout_ns, gc_collectable, tcp_ended,
    tuple_reusable,
};
pub use maps::DEFAULT_BPFFS_ROOT;
pub use node::{
    NEXT_HOP_IPV4, NODE_INSTANCES_MAX, NODE_STATS_LEN, NODE_STATS_PER_INSTANCE, NodeHop,
    NodeUplink, node_stat,
};
pub use rules::{
    FALLBACK6_RULE_ID, MAX_LOCAL_RULES, MAX_RULE_ADDRS, MAX_RULES, RULE_STATS_LEN, RULES_CAPACITY,
    RuleAddrs, RuleAddrs6, RuleKey, RuleTarget, RuleTarget6, rule_flags,
};
pub use stats::{
    DropReason, ICMP_ERRORS_BURST, ICMP_ERRORS_PER_SEC, PacketCount, STATS_DROP_BASE, STATS_LEN,
    Stat, drop_stat_index,
};

#[cfg(feature = "user")]
mod user {
    use crate::flow::Addr;

    macro_rules! aya_pod {
        ($($t:ident),*) => {$(
            // SAFETY: repr(C), Copy and bytemuck::Pod: no padding, any bit pattern valid.
            unsafe impl aya::Pod for super::$t {}
        )*};
    }
    aya_pod!(
        PacketCount,
        Claim,
        RouterConfig,
        RouterConfig6,
        RuleKey,
        FragKey,
        FragKey6,
        FragPorts,
        SweepState,
        NodeHop,
        NodeUplink
    );
    // SAFETY: as above, for both instances of the sealed `Addr` (flow.rs).
    unsafe impl<A: Addr> aya::Pod for super::FlowKey<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for super::FlowEntry<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for super::RuleTarget<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for super::RuleAddrs<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for super::Doomed<A> {}
}
