//! The conntrack maps, per address family, and the two tables' operations: what
//! [`crate::shared::conntrack`]'s logic runs on. IPv4 and IPv6 have maps of their own (an IPv4 key
//! stays 16 bytes) and share that logic through [`Family`].

use aya_ebpf::{
    btf_maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    macros::btf_map,
};
use egress_common::{
    DEFAULT_CONNTRACK_FLOWS, FlowEntry, FlowKey, UNREPLIED_SHARE,
    flow::Addr,
    maps::{CLIENT_NETS_MAX, CT_LIMITED_MAX},
    proto,
};

/// The answered table's type, every family's.
type Answered<A> = LruHashMap<FlowKey<A>, FlowEntry<A>, { 2 * DEFAULT_CONNTRACK_FLOWS as usize }>;
/// The unreplied table's type, every family's.
type Unanswered<A> = LruHashMap<
    FlowKey<A>,
    FlowEntry<A>,
    { 2 * DEFAULT_CONNTRACK_FLOWS as usize / UNREPLIED_SHARE as usize },
>;
/// The table of clients over their flow limit, every family's.
type Limited<A> = HashMap<A, u32, { CT_LIMITED_MAX as usize }>;
/// The client networks, every family's (see `maps::CLIENT_NETS`).
type Clients<A> = LpmTrie<A, u8, { CLIENT_NETS_MAX as usize }>;

/// Both directions of every answered flow; user space sizes it with `--conntrack-size`.
#[btf_map]
static CONNTRACK: Answered<[u8; 4]> = LruHashMap::new();

/// Both directions of every flow not answered yet; user space sizes it to a quarter of
/// [`CONNTRACK`].
#[btf_map]
static CT_UNREPLIED: Unanswered<[u8; 4]> = LruHashMap::new();

/// Clients over their flow limit, written by the agent (see `maps::CT_LIMITED`).
#[btf_map]
static CT_LIMITED: Limited<[u8; 4]> = HashMap::new();

/// The networks clients may come from, written by the set-up (see `maps::CLIENT_NETS`).
#[btf_map]
static CLIENT_NETS: Clients<[u8; 4]> = LpmTrie::new();

/// [`CLIENT_NETS`] for IPv6.
#[btf_map]
static CLIENT_NETS6: Clients<[u8; 16]> = LpmTrie::new();

/// An address family's conntrack maps: the conntrack code is generic over it and
/// instantiated once per family.
pub(crate) trait Family: Addr {
    /// The family's ICMP protocol number (an echo's identifier plays the port).
    const ICMP: u8;
    /// The address's length in bits: a full-length prefix.
    const BITS: u32;
    fn answered() -> &'static Answered<Self>;
    fn unanswered() -> &'static Unanswered<Self>;
    fn limited() -> &'static Limited<Self>;
    fn clients() -> &'static Clients<Self>;
    /// This CPU's [`NewFlow`] scratch.
    fn new_flow() -> Option<&'static mut NewFlow<Self>>;
}

/// A new flow's entries and translated reply key as `nat::create_flow` builds them: in a
/// per-CPU scratch rather than on the stack, which an IPv6 program does not have room for
/// (two 64-byte entries and a 40-byte key, beside the packet's own parse).
#[repr(C)]
pub(crate) struct NewFlow<A: Addr> {
    pub(crate) reply: FlowEntry<A>,
    pub(crate) forward: FlowEntry<A>,
    pub(crate) reply_key: FlowKey<A>,
    /// The client's address as a full-length prefix, the key of its [`Family::clients`]
    /// lookup (here, not on the stack).
    pub(crate) client: Key<A>,
}

/// [`NewFlow`] for IPv4.
#[btf_map]
static NEW_FLOW: PerCpuArray<NewFlow<[u8; 4]>, 1> = PerCpuArray::new();

/// [`NewFlow`] for IPv6.
#[btf_map]
static NEW_FLOW6: PerCpuArray<NewFlow<[u8; 16]>, 1> = PerCpuArray::new();

/// [`CONNTRACK`] for IPv6 (sized by user space: a minimal table when the instance has no
/// IPv6 EGRESS_SOURCE).
#[btf_map]
static CONNTRACK6: Answered<[u8; 16]> = LruHashMap::new();

/// [`CT_UNREPLIED`] for IPv6.
#[btf_map]
static CT_UNREPLIED6: Unanswered<[u8; 16]> = LruHashMap::new();

/// [`CT_LIMITED`] for IPv6 clients.
#[btf_map]
static CT_LIMITED6: Limited<[u8; 16]> = HashMap::new();

impl Family for [u8; 16] {
    const ICMP: u8 = proto::ICMPV6;
    const BITS: u32 = 128;

    #[inline(always)]
    fn answered() -> &'static Answered<Self> {
        &CONNTRACK6
    }

    #[inline(always)]
    fn unanswered() -> &'static Unanswered<Self> {
        &CT_UNREPLIED6
    }

    #[inline(always)]
    fn limited() -> &'static Limited<Self> {
        &CT_LIMITED6
    }

    #[inline(always)]
    fn clients() -> &'static Clients<Self> {
        &CLIENT_NETS6
    }

    #[inline(always)]
    fn new_flow() -> Option<&'static mut NewFlow<Self>> {
        // SAFETY: this CPU's slot; a TC program does not preempt itself on one CPU.
        NEW_FLOW6.get_ptr_mut(0).map(|p| unsafe { &mut *p })
    }
}

impl Family for [u8; 4] {
    const ICMP: u8 = proto::ICMP;
    const BITS: u32 = 32;

    #[inline(always)]
    fn answered() -> &'static Answered<Self> {
        &CONNTRACK
    }

    #[inline(always)]
    fn unanswered() -> &'static Unanswered<Self> {
        &CT_UNREPLIED
    }

    #[inline(always)]
    fn limited() -> &'static Limited<Self> {
        &CT_LIMITED
    }

    #[inline(always)]
    fn clients() -> &'static Clients<Self> {
        &CLIENT_NETS
    }

    #[inline(always)]
    fn new_flow() -> Option<&'static mut NewFlow<Self>> {
        // SAFETY: this CPU's slot; a TC program does not preempt itself on one CPU.
        NEW_FLOW.get_ptr_mut(0).map(|p| unsafe { &mut *p })
    }
}

/// The table a flow's entries are in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    /// [`CONNTRACK`]: answered flows, and the pod's own connections.
    Replied,
    /// [`CT_UNREPLIED`]: flows waiting for their first answer.
    Unreplied,
}

impl Table {
    /// The map itself, for helpers that take one (`bpf_for_each_map_elem`).
    #[inline(always)]
    pub(crate) fn map_ptr<A: Family>(self) -> *mut core::ffi::c_void {
        match self {
            Self::Replied => core::ptr::from_ref(A::answered()).cast_mut().cast(),
            Self::Unreplied => core::ptr::from_ref(A::unanswered()).cast_mut().cast(),
        }
    }

    #[inline(always)]
    pub(crate) fn get_ptr_mut<A: Family>(self, key: &FlowKey<A>) -> Option<*mut FlowEntry<A>> {
        match self {
            Self::Replied => A::answered().get_ptr_mut(key),
            Self::Unreplied => A::unanswered().get_ptr_mut(key),
        }
    }

    #[inline(always)]
    pub(crate) fn get<A: Family>(self, key: &FlowKey<A>) -> Option<FlowEntry<A>> {
        // SAFETY: a live map value, copied.
        self.get_ptr_mut(key).map(|entry| unsafe { *entry })
    }

    #[inline(always)]
    pub(crate) fn insert<A: Family>(
        self,
        key: &FlowKey<A>,
        value: &FlowEntry<A>,
        flags: u64,
    ) -> Result<(), i32> {
        match self {
            Self::Replied => A::answered().insert(key, value, flags),
            Self::Unreplied => A::unanswered().insert(key, value, flags),
        }
    }

    #[inline(always)]
    pub(crate) fn remove<A: Family>(self, key: &FlowKey<A>) {
        let _ = match self {
            Self::Replied => A::answered().remove(key),
            Self::Unreplied => A::unanswered().remove(key),
        };
    }
}

pub(crate) const EEXIST: i32 = -17;
