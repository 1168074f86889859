//! Types shared by the egress-router BPF programs and user space.
//!
//! Every map key and value is `#[repr(C)]` with explicit padding fields, derives
//! [`bytemuck::Pod`] (which refuses implicit padding at compile time) and has its size
//! asserted below, so a layout drift between the BPF object, the loader and maps pinned by an
//! older version fails the build instead of corrupting state at run time.
#![no_std]

use bytemuck::{Pod, Zeroable};

/// Map names as they appear in the BPF object, in `bpftool map list` and as pin file names.
pub mod maps {
    /// Per-CPU packet/byte counters indexed by [`super::Stat`] and drop reason.
    pub const STATS: &str = "STATS";
    /// One [`super::RouterConfig`] at index 0.
    pub const CONFIG: &str = "CONFIG";
    /// Redirect rules: [`super::RuleKey`] -> [`super::RuleTarget`].
    pub const RULES: &str = "RULES";
    /// Per-CPU packet/byte counters per rule id (0 = fallback).
    pub const RULE_STATS: &str = "RULE_STATS";
    /// Connection tracking, both directions: [`super::FlowKey`] -> [`super::FlowEntry`].
    pub const CONNTRACK: &str = "CONNTRACK";
    /// Ports of IPv4 datagrams in flight as fragments: [`super::FragKey`] ->
    /// [`super::FragPorts`].
    pub const FRAGMENTS: &str = "FRAGMENTS";

    /// The addresses of rules that send to a name (DNS proxy mode): [`super::RuleKey`] ->
    /// [`super::RuleAddrs`], kept current by the agent as the name's records change.
    pub const RULE_ADDRS: &str = "RULE_ADDRS";

    /// Every map, in pin order.
    pub const ALL: [&str; 7] = [
        STATS, CONFIG, RULES, RULE_STATS, CONNTRACK, FRAGMENTS, RULE_ADDRS,
    ];
}

/// Program names in the BPF object.
pub mod programs {
    /// TC ingress of the pod interface (`eth0`): client -> remote.
    pub const POD_INGRESS: &str = "pod_ingress";
    /// TC ingress of the egress interface (`macvlan0`): remote -> client, and the pod's own
    /// flows.
    pub const UPLINK_INGRESS: &str = "uplink_ingress";
    /// TC egress of the egress interface: tracks the connections the pod itself opens.
    pub const UPLINK_EGRESS: &str = "uplink_egress";
    /// Benchmarks only: the lab's ceiling, a stateless forwarder from the pod interface to
    /// the egress interface (no NAT, no conntrack). Never loaded by the product.
    pub const LAB_FORWARD: &str = "lab_forward";
    /// Benchmarks only: a program that returns at once, the cost of the test harness.
    pub const LAB_NOOP: &str = "lab_noop";
}

/// Default root of the per-instance pin directories on a persistent bpffs.
pub const DEFAULT_BPFFS_ROOT: &str = "/sys/fs/bpf/egress-router";

/// A packet and byte counter. Per-CPU in the maps; user space sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PacketCount {
    pub packets: u64,
    pub bytes: u64,
}

impl PacketCount {
    /// Adds another counter, e.g. to sum the per-CPU values of one key.
    #[must_use]
    pub const fn add(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

/// Why a packet was dropped. The discriminant is the index into the drop counters, so
/// values are append-only: never renumber, only add before `Count`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A header was shorter than its length fields claim.
    Truncated = 0,
    /// The IPv4 header is malformed (version, IHL, total length).
    MalformedIpv4 = 1,
    /// Addressed to EGRESS_SOURCE but part of no tracked flow: the egress IP is not a way in.
    Unsolicited = 2,
    /// Unicast IPv4 on the egress interface for an address that is not EGRESS_SOURCE; the pod
    /// does not route for the egress network.
    NotEgressSource = 3,
    /// The TTL would reach 0 on the way through the router.
    TtlExceeded = 4,
    /// No free translated source port (or ICMP id) was found within the retry budget.
    NatExhausted = 5,
    /// A conntrack entry could not be written (other than a port collision).
    ConntrackFull = 6,
    /// A non-first fragment whose first fragment was not seen: never forwarded half
    /// translated.
    FragmentUnknown = 7,
    /// The kernel refused to redirect the packet (no neighbour, interface down).
    RedirectFailed = 8,
    /// A reply of a flow whose conntrack entry has timed out.
    FlowExpired = 9,
    /// A protocol the fallback rule cannot translate (not TCP, UDP or ICMP).
    UnsupportedProtocol = 10,
    /// The data plane has no configuration yet.
    Unconfigured = 11,
    /// A new connection to a rule whose name has no address (yet): not resolved, or the
    /// name has no IPv4 record.
    Unresolved = 12,
    /// Number of reasons; not a reason.
    Count = 13,
}

impl DropReason {
    /// All reasons, in index order.
    pub const ALL: [Self; Self::Count as usize] = [
        Self::Truncated,
        Self::MalformedIpv4,
        Self::Unsolicited,
        Self::NotEgressSource,
        Self::TtlExceeded,
        Self::NatExhausted,
        Self::ConntrackFull,
        Self::FragmentUnknown,
        Self::RedirectFailed,
        Self::FlowExpired,
        Self::UnsupportedProtocol,
        Self::Unconfigured,
        Self::Unresolved,
    ];

    /// Stable snake_case name, used in CLI output and metric labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::MalformedIpv4 => "malformed_ipv4",
            Self::Unsolicited => "unsolicited",
            Self::NotEgressSource => "not_egress_source",
            Self::TtlExceeded => "ttl_exceeded",
            Self::NatExhausted => "nat_exhausted",
            Self::ConntrackFull => "conntrack_full",
            Self::FragmentUnknown => "fragment_unknown",
            Self::RedirectFailed => "redirect_failed",
            Self::FlowExpired => "flow_expired",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::Unconfigured => "unconfigured",
            Self::Unresolved => "unresolved",
            Self::Count => "count",
        }
    }
}

/// Index into the [`maps::STATS`] per-CPU array. Append-only, like [`DropReason`]: the drop
/// reasons occupy `DROP_BASE..DROP_BASE + DropReason::Count`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Every packet the pod-interface ingress program saw.
    PodIngressSeen = 0,
    /// Packets the pod-interface ingress program handed to the stack untouched
    /// (they match no rule).
    PodIngressPassed = 1,
    /// Client packets translated and sent out of the egress interface.
    Forwarded = 2,
    /// Every packet the egress-interface ingress program saw.
    UplinkIngressSeen = 3,
    /// Replies translated back and sent out of the pod interface.
    Replied = 4,
    /// Packets of the pod's own flows (and ARP, broadcast) handed to the stack.
    UplinkIngressPassed = 5,
    /// Packets of the pod's own connections leaving through the egress interface.
    UplinkEgressLocal = 6,
    /// Flows created (one per translated connection).
    FlowsCreated = 7,
    /// Extra tries because the wanted translated port was taken.
    NatRetries = 8,
    /// ICMP errors translated, embedded header included.
    IcmpErrorsTranslated = 9,
    /// TCP SYNs whose MSS option was lowered.
    MssClamped = 10,
    /// Non-first fragments translated from the first fragment's ports.
    FragmentsTranslated = 11,
    /// Packets the egress-interface egress program saw (own flows and forwarded ones).
    UplinkEgressSeen = 12,
    /// Packets the egress-interface egress program let go without tracking: what this data
    /// plane forwarded, ARP, and traffic not from EGRESS_SOURCE.
    UplinkEgressPassed = 13,
}

impl Stat {
    /// All path counters, in index order.
    pub const ALL: [Self; 14] = [
        Self::PodIngressSeen,
        Self::PodIngressPassed,
        Self::Forwarded,
        Self::UplinkIngressSeen,
        Self::Replied,
        Self::UplinkIngressPassed,
        Self::UplinkEgressLocal,
        Self::FlowsCreated,
        Self::NatRetries,
        Self::IcmpErrorsTranslated,
        Self::MssClamped,
        Self::FragmentsTranslated,
        Self::UplinkEgressSeen,
        Self::UplinkEgressPassed,
    ];

    /// Stable snake_case name, used in CLI output and metric labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::PodIngressSeen => "pod_ingress_seen",
            Self::PodIngressPassed => "pod_ingress_passed",
            Self::Forwarded => "forwarded",
            Self::UplinkIngressSeen => "uplink_ingress_seen",
            Self::Replied => "replied",
            Self::UplinkIngressPassed => "uplink_ingress_passed",
            Self::UplinkEgressLocal => "uplink_egress_local",
            Self::FlowsCreated => "flows_created",
            Self::NatRetries => "nat_retries",
            Self::IcmpErrorsTranslated => "icmp_errors_translated",
            Self::MssClamped => "mss_clamped",
            Self::FragmentsTranslated => "fragments_translated",
            Self::UplinkEgressSeen => "uplink_egress_seen",
            Self::UplinkEgressPassed => "uplink_egress_passed",
        }
    }
}

/// First index of the drop counters in [`maps::STATS`].
pub const STATS_DROP_BASE: u32 = 32;
/// Number of entries of [`maps::STATS`].
pub const STATS_LEN: u32 = STATS_DROP_BASE + 32;

/// Index of the drop counter of `reason` in [`maps::STATS`].
#[must_use]
pub const fn drop_stat_index(reason: DropReason) -> u32 {
    STATS_DROP_BASE + reason as u32
}

/// Most redirect rules one instance holds; rule ids are `1..=MAX_RULES`, 0 is the fallback.
pub const MAX_RULES: u32 = 4096;
/// Default conntrack capacity in flows; the map holds two entries per flow.
pub const DEFAULT_CONNTRACK_FLOWS: u32 = 262_144;
/// Default range of translated source ports when the client's own port is taken.
pub const DEFAULT_NAT_PORTS: (u16, u16) = (1024, 65535);

/// IP protocol numbers the data plane knows.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// [`RouterConfig::flags`] bits.
pub mod config_flags {
    /// A fallback IP catches traffic no rule matches.
    pub const HAS_FALLBACK: u32 = 1;
    /// Emit per-packet aya-log events.
    pub const DEBUG: u32 = 2;
}

/// The instance's addresses and interfaces, at index 0 of [`maps::CONFIG`]. Addresses are
/// in network order as bytes, so bpftool prints them as `[198,51,100,100]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RouterConfig {
    /// The pod's address on the pod interface: what clients connect to.
    pub pod_ip: [u8; 4],
    /// EGRESS_SOURCE: the translated source address.
    pub egress_source: [u8; 4],
    /// The fallback destination, valid when [`config_flags::HAS_FALLBACK`] is set.
    pub fallback_ip: [u8; 4],
    pub pod_ifindex: u32,
    pub egress_ifindex: u32,
    /// [`config_flags`] bits.
    pub flags: u32,
    /// Translated source ports are taken from `nat_port_min..=nat_port_max` when the
    /// client's own port is in use.
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    /// Largest TCP MSS advertised through the router: min(pod MTU, egress MTU) - 40.
    pub mss_clamp: u16,
    pub _pad: u16,
}

/// Key of [`maps::RULES`]: a local port and protocol on the pod IP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct RuleKey {
    /// Host byte order.
    pub port: u16,
    /// [`proto::TCP`] or [`proto::UDP`].
    pub proto: u8,
    pub _pad: u8,
}

/// [`RuleTarget::flags`] bits.
pub mod rule_flags {
    /// The rule sends to a name: new connections take one of the addresses in
    /// [`super::maps::RULE_ADDRS`] at random, and `remote_ip` is unused.
    pub const ADDRS: u32 = 1;
}

/// Value of [`maps::RULES`]: where matching connections go.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RuleTarget {
    pub remote_ip: [u8; 4],
    /// Host byte order.
    pub remote_port: u16,
    /// Index into [`maps::RULE_STATS`]; 1-based, 0 is the fallback.
    pub rule_id: u16,
    /// [`rule_flags`] bits.
    pub flags: u32,
}

impl RuleTarget {
    /// A target that delivers to the pod itself instead of translating: the agent's own
    /// listeners (metrics, health), which a fallback would otherwise redirect.
    pub const LOCAL: Self = Self {
        remote_ip: [0; 4],
        remote_port: 0,
        rule_id: 0,
        flags: 0,
    };

    /// Whether this target delivers to the pod itself.
    #[must_use]
    pub const fn is_local(&self) -> bool {
        u32::from_ne_bytes(self.remote_ip) == 0 && self.flags & rule_flags::ADDRS == 0
    }

    /// Whether new connections take their address from [`maps::RULE_ADDRS`].
    #[must_use]
    pub const fn by_name(&self) -> bool {
        self.flags & rule_flags::ADDRS != 0
    }
}

/// Most addresses a name rule spreads its new connections over.
pub const MAX_RULE_ADDRS: usize = 16;

/// Value of [`maps::RULE_ADDRS`]: the current IPv4 addresses of a rule's name. Replaced
/// whole by the agent (a hash map update is atomic for readers), so a reader never sees a
/// half-written list.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RuleAddrs {
    /// Valid entries of `addrs`, 0 to [`MAX_RULE_ADDRS`].
    pub len: u32,
    pub addrs: [[u8; 4]; MAX_RULE_ADDRS],
}

/// A connection-tracking key: one direction of a flow as seen on the wire. For ICMP echo,
/// both ports hold the echo identifier. Zeroed padding included, since the kernel hashes
/// every byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FlowKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// Host byte order.
    pub sport: u16,
    /// Host byte order.
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// [`FlowEntry::kind`] values.
pub mod flow_kind {
    /// Client -> remote: translate and send out of the egress interface.
    pub const FORWARD: u8 = 1;
    /// Remote -> client: translate back and send out of the pod interface.
    pub const REPLY: u8 = 2;
    /// Reply direction of a connection the pod itself opened: hand to the stack.
    pub const LOCAL: u8 = 3;
}

/// [`FlowEntry::tcp_flags`] bits: TCP flags seen in this direction.
pub mod tcp_seen {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// A connection-tracking value: the tuple to write into packets that match the key, and the
/// flow's state in this direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowEntry {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// Host byte order.
    pub sport: u16,
    /// Host byte order.
    pub dport: u16,
    /// The rule that created the flow (0 = fallback).
    pub rule_id: u16,
    /// A [`flow_kind`] value.
    pub kind: u8,
    /// [`tcp_seen`] bits seen in this direction.
    pub tcp_flags: u8,
    /// CLOCK_MONOTONIC_COARSE nanoseconds of the last packet (refreshed at most once per
    /// [`TOUCH_INTERVAL_NS`]).
    pub last_seen_ns: u64,
    /// CLOCK_MONOTONIC_COARSE nanoseconds when the flow was created.
    pub created_ns: u64,
}

/// The key of the entry for the other direction of the flow `entry` (found under `key`)
/// belongs to: the entry's tuple, reversed.
#[inline(always)]
#[must_use]
pub const fn peer_key(key: &FlowKey, entry: &FlowEntry) -> FlowKey {
    FlowKey {
        saddr: entry.daddr,
        daddr: entry.saddr,
        sport: entry.dport,
        dport: entry.sport,
        proto: key.proto,
        _pad: [0; 3],
    }
}

/// A flow's `last_seen_ns` is rewritten at most this often, so established flows do not
/// write to shared memory on every packet.
pub const TOUCH_INTERVAL_NS: u64 = 1_000_000_000;

/// How long a conntrack entry lives without packets, by protocol and the TCP flags seen in
/// its direction: like Linux, shorter for half-open and closing TCP, long for established.
#[must_use]
pub const fn flow_timeout_ns(proto: u8, tcp_flags: u8) -> u64 {
    const S: u64 = 1_000_000_000;
    match proto {
        proto::TCP => {
            if tcp_flags & tcp_seen::RST != 0 {
                10 * S
            } else if tcp_flags & tcp_seen::FIN != 0 {
                120 * S
            } else if tcp_flags & tcp_seen::ACK == 0 {
                60 * S
            } else {
                6 * 3600 * S
            }
        }
        proto::UDP => 120 * S,
        _ => 30 * S,
    }
}

/// Key of [`maps::FRAGMENTS`]: identifies one IPv4 datagram in flight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FragKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// IPv4 identification, host byte order.
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of [`maps::FRAGMENTS`]: the L4 ports of the datagram's first fragment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FragPorts {
    /// Host byte order.
    pub sport: u16,
    /// Host byte order.
    pub dport: u16,
}

/// Capacity of [`maps::FRAGMENTS`].
pub const FRAGMENTS_MAX: u32 = 8192;

// Layout guards (the idea of cilium's bpf_alignchecker): a change here must be deliberate,
// because maps pinned by a running older version are adopted, not recreated.
const _: () = assert!(core::mem::size_of::<PacketCount>() == 16);
const _: () = assert!(core::mem::size_of::<RouterConfig>() == 32);
const _: () = assert!(core::mem::size_of::<RuleKey>() == 4);
const _: () = assert!(core::mem::size_of::<RuleTarget>() == 12);
const _: () = assert!(core::mem::size_of::<RuleAddrs>() == 68);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);
const _: () = assert!(core::mem::size_of::<FlowEntry>() == 32);
const _: () = assert!(core::mem::size_of::<FragKey>() == 12);
const _: () = assert!(core::mem::size_of::<FragPorts>() == 4);
const _: () = assert!((Stat::ALL.len() as u32) <= STATS_DROP_BASE);
const _: () = assert!(STATS_DROP_BASE + DropReason::Count as u32 <= STATS_LEN);

#[cfg(feature = "user")]
mod user {
    // SAFETY: all types are repr(C), Copy, and bytemuck::Pod (no padding, any bit pattern valid).
    unsafe impl aya::Pod for super::PacketCount {}
    unsafe impl aya::Pod for super::RouterConfig {}
    unsafe impl aya::Pod for super::RuleKey {}
    unsafe impl aya::Pod for super::RuleTarget {}
    unsafe impl aya::Pod for super::RuleAddrs {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowEntry {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragPorts {}
}
