//! Connection tracking: two LRU hashes hold both directions of every flow.
//!
//! A flow lives in [`CT_UNREPLIED`] until the remote answers, then both its entries move to
//! [`CONNTRACK`] (cilium and the kernel call the answered state "replied"/"assured"). A flood
//! of flows nobody answers (a client spraying a fallback port, a scan) therefore only churns
//! the unreplied table: it can never evict an answered connection, however idle, which is
//! what the kernel's conntrack does by dropping unassured entries first.
//!
//! A flow is two entries: the forward entry (the client's tuple -> the translated tuple) and
//! the reply entry (the remote's tuple -> the client-facing tuple). Connections the pod opens
//! itself have only a reply-side `LOCAL` entry. [`lookup`] says what a packet's tuple is to
//! the table ([`Ct`]), as cilium's `ct_lookup4` does, so the entry programs only decide what
//! to do with that state. Entries are refreshed at most once per [`TOUCH_INTERVAL_NS`], and a
//! refresh also looks up the peer entry, which keeps both alive in the LRU together and
//! re-creates the peer if it was evicted.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    btf_maps::{HashMap, LruHashMap},
    helpers::generated::bpf_ktime_get_coarse_ns,
    macros::btf_map,
};
use egress_common::{
    DEFAULT_CONNTRACK_FLOWS, DropReason, FlowEntry, FlowKey, MIN_TIMEOUT_NS, Stat,
    TOUCH_INTERVAL_NS, UNREPLIED_SHARE, flow::Addr, flow_expired, flow_kind, maps::CT_LIMITED_MAX,
    peer_key, proto, tcp_ended, tcp_seen,
};

use crate::{
    metrics,
    tcp::{self, Receiver, Seg},
};

/// Both directions of every answered flow; user space sizes it with `--conntrack-size`.
#[btf_map]
static CONNTRACK: LruHashMap<FlowKey, FlowEntry, { 2 * DEFAULT_CONNTRACK_FLOWS as usize }> =
    LruHashMap::new();

/// Both directions of every flow not answered yet; user space sizes it to a quarter of
/// [`CONNTRACK`].
#[btf_map]
static CT_UNREPLIED: LruHashMap<
    FlowKey,
    FlowEntry,
    { 2 * DEFAULT_CONNTRACK_FLOWS as usize / UNREPLIED_SHARE as usize },
> = LruHashMap::new();

/// Clients over their flow limit, written by the agent (see `maps::CT_LIMITED`).
#[btf_map]
static CT_LIMITED: HashMap<[u8; 4], u32, { CT_LIMITED_MAX as usize }> = HashMap::new();

/// The answered table's type, every family's.
type Answered<A> = LruHashMap<FlowKey<A>, FlowEntry<A>, { 2 * DEFAULT_CONNTRACK_FLOWS as usize }>;
/// The unreplied table's type, every family's.
type Unanswered<A> = LruHashMap<
    FlowKey<A>,
    FlowEntry<A>,
    { 2 * DEFAULT_CONNTRACK_FLOWS as usize / UNREPLIED_SHARE as usize },
>;

/// An address family's conntrack maps: the code below is generic over it and instantiated
/// once per family.
pub(crate) trait Family: Addr {
    fn answered() -> &'static Answered<Self>;
    fn unanswered() -> &'static Unanswered<Self>;
    fn limited() -> &'static HashMap<Self, u32, { CT_LIMITED_MAX as usize }>;
}

impl Family for [u8; 4] {
    #[inline(always)]
    fn answered() -> &'static Answered<Self> {
        &CONNTRACK
    }

    #[inline(always)]
    fn unanswered() -> &'static Unanswered<Self> {
        &CT_UNREPLIED
    }

    #[inline(always)]
    fn limited() -> &'static HashMap<Self, u32, { CT_LIMITED_MAX as usize }> {
        &CT_LIMITED
    }
}

/// Whether a client may open another flow: not when the agent found it over its limit.
#[inline(always)]
pub(crate) fn admit<A: Family>(client: A) -> Result<(), DropReason> {
    match A::limited().get_ptr(client) {
        Some(_) => Err(DropReason::SourceLimit),
        None => Ok(()),
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

/// CLOCK_MONOTONIC_COARSE: cheaper than the precise clock and plenty for timeouts.
#[inline(always)]
pub(crate) fn now() -> u64 {
    // SAFETY: no arguments, no side effects.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// What the table knows of a packet's tuple.
pub(crate) enum Ct<A: Addr = [u8; 4]> {
    /// No entry: a new flow from a client, or a packet nobody asked for.
    New,
    /// Client -> remote of a translated flow (refreshed): rewrite with this entry.
    Forward(FlowEntry<A>),
    /// Remote -> client of a translated flow (refreshed): rewrite with this entry.
    Reply(FlowEntry<A>),
    /// A reply to a connection the pod opened itself (refreshed).
    Local,
    /// A reply-side entry that outlived its timeout. (A client's packet revives its flow,
    /// so forward entries are never reported expired.)
    Expired,
    /// The entry's other half now belongs to another flow, after an LRU eviction.
    Stale(Table),
    /// A client's new SYN over a flow that ended (reset, closed both ways, or timed out):
    /// the tuple is being reused, and the new connection starts with fresh state.
    Closed(FlowEntry<A>, Table),
}

/// Looks a packet's tuple up and, for a live flow, records the packet on it: the TCP segment
/// (sequence numbers, and the flags that take effect) and, at most once per interval, the
/// time.
#[inline(always)]
pub(crate) fn lookup<A: Family>(key: &FlowKey<A>, seg: &Seg) -> Ct<A> {
    let (entry, table) = match A::answered().get_ptr_mut(key) {
        Some(entry) => (entry, Table::Replied),
        None => match A::unanswered().get_ptr_mut(key) {
            Some(entry) => (entry, Table::Unreplied),
            None => return Ct::New,
        },
    };
    let now = now();
    // SAFETY: a live map value, copied.
    let snapshot = unsafe { *entry };
    let idle = now.wrapping_sub(snapshot.last_seen_ns) > MIN_TIMEOUT_NS;
    match snapshot.kind {
        flow_kind::FORWARD => {
            if seg.flags & (tcp_seen::SYN | tcp_seen::ACK) == tcp_seen::SYN
                && ended(key, &snapshot, now, table)
            {
                return Ct::Closed(snapshot, table);
            }
        }
        flow_kind::REPLY => {
            // Alive whatever its flags while idle for less than the shortest timeout; past
            // that, judged with the other direction (one timeout per flow).
            if idle
                && flow_expired(
                    key.proto,
                    &snapshot,
                    peer(key, &snapshot, table).as_ref(),
                    now,
                )
            {
                return Ct::Expired;
            }
        }
        _ => {
            if idle && flow_expired(key.proto, &snapshot, None, now) {
                return Ct::Expired;
            }
        }
    }
    let flags = if key.proto == proto::TCP {
        let local = snapshot.kind == flow_kind::LOCAL;
        // SAFETY: a live map value; concurrent writers store sequence numbers, flag bits
        // and timestamps, and a lost update only delays one.
        tcp::track(unsafe { &mut *entry }, seg, !local, || {
            if local {
                // The pod's own connection: its acknowledgements are in the same entry.
                Receiver {
                    known: snapshot.tcp_flags & tcp_seen::ACK_KNOWN,
                    ..Receiver::of(&snapshot)
                }
            } else {
                peer(key, &snapshot, table).map_or_else(Receiver::default, |p| Receiver::of(&p))
            }
        })
    } else {
        seg.flags
    };
    if !touch(key, entry, flags, now, table) {
        return Ct::Stale(table);
    }
    match snapshot.kind {
        flow_kind::FORWARD => Ct::Forward(snapshot),
        flow_kind::REPLY => {
            // The first answer (a RST refusing the connection is none): the flow moves to
            // the table of answered flows.
            if table == Table::Unreplied && flags & tcp_seen::RST == 0 {
                promote(key, entry);
            }
            Ct::Reply(snapshot)
        }
        _ => Ct::Local,
    }
}

/// Moves a flow from [`CT_UNREPLIED`] to [`CONNTRACK`], given its reply entry. The answered
/// table gets both entries first, so that a concurrent lookup finds the flow in one table
/// or the other (a client packet that misses both in between re-creates the same
/// translation, see `nat::create_flow`).
#[inline(always)]
fn promote<A: Family>(reply_key: &FlowKey<A>, reply: *mut FlowEntry<A>) {
    // SAFETY: a live map value, copied after this packet's update.
    let reply = unsafe { *reply };
    let forward_key = peer_key(reply_key, &reply);
    let Some(forward) = Table::Unreplied.get(&forward_key) else {
        return;
    };
    if !forward.returns_to(reply_key) {
        return;
    }
    let _ = Table::Replied.insert(&forward_key, &forward, u64::from(BPF_NOEXIST));
    let _ = Table::Replied.insert(reply_key, &reply, u64::from(BPF_NOEXIST));
    Table::Unreplied.remove(&forward_key);
    Table::Unreplied.remove(reply_key);
    metrics::count(Stat::FlowsReplied, 0);
}

/// The other direction's entry of a translated flow, if it is there and still this flow's.
#[inline(always)]
fn peer<A: Family>(key: &FlowKey<A>, entry: &FlowEntry<A>, table: Table) -> Option<FlowEntry<A>> {
    let peer = table.get(&peer_key(key, entry))?;
    peer.returns_to(key).then_some(peer)
}

/// [`peer`] read in place instead of copied (for paths short of stack: the port search,
/// the GC sweep's callback).
#[inline(always)]
pub(crate) fn peer_in_place<'a, A: Family>(
    key: &FlowKey<A>,
    entry: &FlowEntry<A>,
    table: Table,
) -> Option<&'a FlowEntry<A>> {
    // SAFETY: a live map value, read only.
    let peer = unsafe { &*table.get_ptr_mut(&peer_key(key, entry))? };
    peer.returns_to(key).then_some(peer)
}

/// Whether the flow of a forward entry has ended: a RST took effect either way, both sides
/// sent their FIN, or it timed out.
#[inline(always)]
fn ended<A: Family>(key: &FlowKey<A>, entry: &FlowEntry<A>, now: u64, table: Table) -> bool {
    let peer = peer(key, entry, table);
    tcp_ended(entry, peer.as_ref()) || flow_expired(key.proto, entry, peer.as_ref(), now)
}

/// Removes both entries of a flow that ended, so that a new connection over the same tuple
/// starts afresh.
#[inline(always)]
pub(crate) fn reopen<A: Family>(key: &FlowKey<A>, entry: &FlowEntry<A>, table: Table) {
    if peer(key, entry, table).is_some() {
        table.remove(&peer_key(key, entry));
    }
    table.remove(key);
}

/// The entry of an ICMP error's direction (cilium's "related"): read, not refreshed.
#[inline(always)]
pub(crate) fn related<A: Family>(key: &FlowKey<A>) -> Option<FlowEntry<A>> {
    Table::Replied
        .get(key)
        .or_else(|| Table::Unreplied.get(key))
}

/// Records a packet on an entry: TCP flags seen in this direction and, at most once per
/// interval, the time, on both entries of a translated flow. Re-creates an evicted peer.
/// `false` when the peer entry now belongs to another flow (the entry must be recreated).
#[inline(always)]
fn touch<A: Family>(
    key: &FlowKey<A>,
    entry: *mut FlowEntry<A>,
    tcp_flags: u8,
    now: u64,
    table: Table,
) -> bool {
    // SAFETY: a live map value; concurrent writers only store timestamps and flag bits.
    let e = unsafe { &mut *entry };
    let flags = e.tcp_flags | tcp_flags;
    if flags == e.tcp_flags && now.wrapping_sub(e.last_seen_ns) < TOUCH_INTERVAL_NS {
        return true;
    }
    e.tcp_flags = flags;
    e.last_seen_ns = now;
    if e.kind == flow_kind::LOCAL {
        return true;
    }
    let pkey = peer_key(key, e);
    match table.get_ptr_mut(&pkey) {
        Some(peer) => {
            // SAFETY: as above.
            let peer = unsafe { &mut *peer };
            if !peer.returns_to(key) {
                return false;
            }
            peer.last_seen_ns = now;
        }
        None => {
            let mut value = FlowEntry::new(&key.reversed(), e.rule_id, peer_kind(e.kind), 0, now);
            value.created_ns = e.created_ns;
            // A concurrent re-creation on another CPU is just as good.
            let _ = table.insert(&pkey, &value, u64::from(BPF_NOEXIST));
        }
    }
    true
}

/// The kind of the other direction of a translated flow.
#[inline(always)]
fn peer_kind(kind: u8) -> u8 {
    if kind == flow_kind::FORWARD {
        flow_kind::REPLY
    } else {
        flow_kind::FORWARD
    }
}

/// Removes a forward entry whose reply tuple was taken over by another flow.
#[inline(always)]
pub(crate) fn forget<A: Family>(key: &FlowKey<A>, table: Table) {
    table.remove(key);
}

/// Tracks a connection the pod itself opened through the egress interface, keyed by the
/// tuple its replies will carry. The pod's own segments are trusted: its FIN and RST take
/// effect, and its acknowledgements are what a RST from the remote must match.
#[inline(always)]
pub(crate) fn track_local<A: Family>(reply_key: &FlowKey<A>, seg: &Seg) {
    let now = now();
    if let Some(entry) = A::answered().get_ptr_mut(reply_key) {
        // SAFETY: a live map value.
        let e = unsafe { &mut *entry };
        if e.kind != flow_kind::LOCAL {
            return;
        }
        if now.wrapping_sub(e.last_seen_ns) >= TOUCH_INTERVAL_NS {
            e.last_seen_ns = now;
        }
        if seg.flags & (tcp_seen::FIN | tcp_seen::RST) != 0 {
            e.tcp_flags |= seg.flags & (tcp_seen::FIN | tcp_seen::RST);
        }
        tcp::record_ack(e, seg);
        return;
    }
    let mut value = FlowEntry::new(&reply_key.reversed(), 0, flow_kind::LOCAL, 0, now);
    tcp::record_ack(&mut value, seg);
    let _ = A::answered().insert(reply_key, value, u64::from(BPF_NOEXIST));
}
