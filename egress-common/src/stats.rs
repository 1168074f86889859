//! Counters: per-CPU packet/byte counts by data-plane path ([`Stat`]) and by typed drop
//! reason ([`DropReason`]), both in [`crate::maps::STATS`].

use bytemuck::{Pod, Zeroable};

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
    /// A conntrack entry could not be written (other than a port collision). The tables
    /// are LRU maps, which evict rather than refuse, so this needs the kernel to find no
    /// entry to evict (a tiny table, every entry in use on other CPUs at that moment).
    ConntrackFull = 6,
    /// A non-first fragment whose first fragment was not seen: never forwarded half
    /// translated.
    FragmentUnknown = 7,
    /// The redirect helper refused the packet. It checks only its arguments; a redirect
    /// that fails later in the kernel (no neighbour for the next hop, the interface down)
    /// is dropped there, after the program, and counted by neither.
    RedirectFailed = 8,
    /// A reply of a flow whose conntrack entry has timed out.
    FlowExpired = 9,
    /// A protocol the fallback rule cannot translate (not TCP, UDP or ICMP).
    UnsupportedProtocol = 10,
    /// The data plane has no configuration yet.
    Unconfigured = 11,
    /// A new connection to a rule whose name has no address (yet) of the client's family:
    /// not resolved, or the name has no A (IPv4) or AAAA (IPv6) record.
    Unresolved = 12,
    /// IPv6 on the egress interface, either way: not supported yet, so none of it reaches
    /// the pod from the egress network (or leaves it there).
    Ipv6Unsupported = 13,
    /// A new flow from a client that holds more flows than `--max-flows-per-source`
    /// allows (counted by the agent's GC).
    SourceLimit = 14,
    /// Too big for the next link, without DF (with DF it is answered with ICMP
    /// Fragmentation Needed instead): the data plane does not fragment.
    TooBig = 15,
    /// The IPv6 header is malformed (version, payload length).
    MalformedIpv6 = 16,
    /// More IPv6 extension headers than the data plane walks (see the parser's bound), or
    /// one it cannot walk: never forwarded with a transport header it did not see.
    Ipv6ExtHeaders = 17,
    /// Node mode: addressed to an egress address of the node and part of no flow, dropped
    /// by the uplink's XDP program before the node's stack sees it.
    UnsolicitedEarly = 18,
    /// Node mode: the client's side of the reply could not be found in the node's routes
    /// (`bpf_fib_lookup`), so it was not sent.
    NoRouteToClient = 19,
    /// A new flow from a source address that cannot be a client: outside
    /// `EGRESS_ROUTER_CLIENT_CIDRS`, or on the egress side (EGRESS_SOURCE's subnet),
    /// loopback, unspecified, multicast or broadcast, or the pod's own address. Spoofed, or
    /// from where no client is.
    BadSource = 20,
    /// Number of reasons; not a reason.
    Count = 21,
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
        Self::Ipv6Unsupported,
        Self::SourceLimit,
        Self::TooBig,
        Self::MalformedIpv6,
        Self::Ipv6ExtHeaders,
        Self::UnsolicitedEarly,
        Self::NoRouteToClient,
        Self::BadSource,
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
            Self::Ipv6Unsupported => "ipv6_unsupported",
            Self::SourceLimit => "source_limit",
            Self::TooBig => "too_big",
            Self::MalformedIpv6 => "malformed_ipv6",
            Self::Ipv6ExtHeaders => "ipv6_ext_headers",
            Self::UnsolicitedEarly => "unsolicited_early",
            Self::NoRouteToClient => "no_route_to_client",
            Self::BadSource => "bad_source",
            Self::Count => "count",
        }
    }
}

/// Index into the [`crate::maps::STATS`] per-CPU array. Append-only, like [`DropReason`]: the drop
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
    EgressIngressSeen = 3,
    /// Replies translated back and sent out of the pod interface.
    Replied = 4,
    /// Packets of the pod's own flows (and ARP, broadcast) handed to the stack.
    EgressIngressPassed = 5,
    /// Packets of the pod's own connections leaving through the egress interface.
    EgressEgressLocal = 6,
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
    EgressEgressSeen = 12,
    /// Packets the egress-interface egress program let go without tracking: what this data
    /// plane forwarded, ARP, and traffic not from EGRESS_SOURCE.
    EgressEgressPassed = 13,
    /// TCP RSTs of a tracked flow that matched neither the receiver's next expected byte
    /// nor the sender's next sequence number: passed on (the endpoint decides, RFC 5961),
    /// but the flow stays open.
    TcpRstIgnored = 14,
    /// TCP FINs outside the sender's window: passed on, but the flow stays open.
    TcpFinIgnored = 15,
    /// Flows started afresh by a new SYN over a closed (reset or finished) flow of the
    /// same tuple.
    FlowsReopened = 16,
    /// Flows answered for the first time, moved from the unreplied table to the answered
    /// one.
    FlowsReplied = 17,
    /// ICMP errors the router sent itself: Time Exceeded for a TTL that ran out, and
    /// Fragmentation Needed for a packet too big for the next link.
    IcmpErrorsSent = 18,
    /// Translated tuples taken over from a flow that was over (closed or reset, and idle
    /// for [`crate::PORT_REUSE_IDLE_NS`], or timed out) when a new flow's port search met
    /// it.
    NatPortsReclaimed = 19,
    /// ICMP and ICMPv6 errors the router would have sent itself but held back: it sends
    /// at most [`crate::ICMP_ERRORS_PER_SEC`] (RFC 4443 2.4(f), Linux's own limit). The
    /// packet is dropped under its reason all the same.
    IcmpErrorsLimited = 20,
    /// Node mode: ARP requests for an egress address answered by the uplink's XDP program.
    ArpAnswered = 21,
    /// Node mode: packets to an egress address that the uplink's XDP program passed on to
    /// the TC program (replies of flows, ICMP, fragments). The node's own traffic passes
    /// uncounted.
    XdpPassed = 22,
    /// Node mode: neighbour solicitations for an egress IPv6 address the uplink's XDP
    /// program answered with the uplink's MAC.
    NdiscAnswered = 23,
    /// Pod mode: an ARP probe for EGRESS_SOURCE, or another host's claim of it, answered
    /// by a broadcast claim from this router (with its claim trailer), so that a router
    /// starting with the same address and MAC hears it.
    ClaimDefended = 24,
    /// Pod mode: ARP from another host that claims EGRESS_SOURCE (a reply, an announcement)
    /// or probes for it; the last one is in `CLAIM` for the agent.
    ClaimContested = 25,
}

impl Stat {
    /// All path counters, in index order.
    pub const ALL: [Self; 26] = [
        Self::PodIngressSeen,
        Self::PodIngressPassed,
        Self::Forwarded,
        Self::EgressIngressSeen,
        Self::Replied,
        Self::EgressIngressPassed,
        Self::EgressEgressLocal,
        Self::FlowsCreated,
        Self::NatRetries,
        Self::IcmpErrorsTranslated,
        Self::MssClamped,
        Self::FragmentsTranslated,
        Self::EgressEgressSeen,
        Self::EgressEgressPassed,
        Self::TcpRstIgnored,
        Self::TcpFinIgnored,
        Self::FlowsReopened,
        Self::FlowsReplied,
        Self::IcmpErrorsSent,
        Self::NatPortsReclaimed,
        Self::IcmpErrorsLimited,
        Self::ArpAnswered,
        Self::XdpPassed,
        Self::NdiscAnswered,
        Self::ClaimDefended,
        Self::ClaimContested,
    ];

    /// Stable snake_case name, used in CLI output and metric labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::PodIngressSeen => "pod_ingress_seen",
            Self::PodIngressPassed => "pod_ingress_passed",
            Self::Forwarded => "forwarded",
            Self::EgressIngressSeen => "egress_ingress_seen",
            Self::Replied => "replied",
            Self::EgressIngressPassed => "egress_ingress_passed",
            Self::EgressEgressLocal => "egress_egress_local",
            Self::FlowsCreated => "flows_created",
            Self::NatRetries => "nat_retries",
            Self::IcmpErrorsTranslated => "icmp_errors_translated",
            Self::MssClamped => "mss_clamped",
            Self::FragmentsTranslated => "fragments_translated",
            Self::EgressEgressSeen => "egress_egress_seen",
            Self::EgressEgressPassed => "egress_egress_passed",
            Self::TcpRstIgnored => "tcp_rst_ignored",
            Self::TcpFinIgnored => "tcp_fin_ignored",
            Self::FlowsReopened => "flows_reopened",
            Self::FlowsReplied => "flows_replied",
            Self::IcmpErrorsSent => "icmp_errors_sent",
            Self::NatPortsReclaimed => "nat_ports_reclaimed",
            Self::IcmpErrorsLimited => "icmp_errors_limited",
            Self::ArpAnswered => "arp_answered",
            Self::XdpPassed => "xdp_passed",
            Self::NdiscAnswered => "ndisc_answered",
            Self::ClaimDefended => "claim_defended",
            Self::ClaimContested => "claim_contested",
        }
    }
}

/// ICMP errors the router sends itself (both families together), per second on average:
/// Linux's `icmp_msgs_per_sec`. A client that sends packets whose hop limit runs out, or
/// too big ones, at any rate gets no more errors than this back.
pub const ICMP_ERRORS_PER_SEC: u64 = 1000;
/// How many of them may go at once after a quiet spell: Linux's `icmp_msgs_burst`.
pub const ICMP_ERRORS_BURST: u64 = 50;

/// First index of the drop counters in [`crate::maps::STATS`].
pub const STATS_DROP_BASE: u32 = 32;
/// Number of entries of [`crate::maps::STATS`].
pub const STATS_LEN: u32 = STATS_DROP_BASE + 32;

/// Index of the drop counter of `reason` in [`crate::maps::STATS`].
#[must_use]
pub const fn drop_stat_index(reason: DropReason) -> u32 {
    STATS_DROP_BASE + reason as u32
}

const _: () = assert!(core::mem::size_of::<PacketCount>() == 16);
const _: () = assert!((Stat::ALL.len() as u32) <= STATS_DROP_BASE);
const _: () = assert!(STATS_DROP_BASE + DropReason::Count as u32 <= STATS_LEN);
