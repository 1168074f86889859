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
    /// Per-CPU packet/byte counters indexed by [`super::Stat`].
    pub const STATS: &str = "STATS";
}

/// Program names in the BPF object.
pub mod programs {
    /// TC ingress of the pod interface (`eth0`): client -> remote.
    pub const POD_INGRESS: &str = "pod_ingress";
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
    /// Number of reasons; not a reason.
    Count = 2,
}

impl DropReason {
    /// All reasons, in index order.
    pub const ALL: [Self; Self::Count as usize] = [Self::Truncated, Self::MalformedIpv4];

    /// Stable snake_case name, used in CLI output and metric labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::MalformedIpv4 => "malformed_ipv4",
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
}

impl Stat {
    /// All path counters, in index order.
    pub const ALL: [Self; 2] = [Self::PodIngressSeen, Self::PodIngressPassed];

    /// Stable snake_case name, used in CLI output and metric labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::PodIngressSeen => "pod_ingress_seen",
            Self::PodIngressPassed => "pod_ingress_passed",
        }
    }
}

/// First index of the drop counters in [`maps::STATS`].
pub const STATS_DROP_BASE: u32 = 16;
/// Number of entries of [`maps::STATS`].
pub const STATS_LEN: u32 = STATS_DROP_BASE + DropReason::Count as u32;

/// Index of the drop counter of `reason` in [`maps::STATS`].
#[must_use]
pub const fn drop_stat_index(reason: DropReason) -> u32 {
    STATS_DROP_BASE + reason as u32
}

// Layout guards (the idea of cilium's bpf_alignchecker): a change here must be deliberate,
// because maps pinned by a running older version are adopted, not recreated.
const _: () = assert!(core::mem::size_of::<PacketCount>() == 16);
const _: () = assert!((Stat::ALL.len() as u32) <= STATS_DROP_BASE);

#[cfg(feature = "user")]
mod user {
    // SAFETY: all types are repr(C), Copy, and bytemuck::Pod (no padding, any bit pattern valid).
    unsafe impl aya::Pod for super::PacketCount {}
}
