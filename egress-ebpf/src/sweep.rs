//! The conntrack GC's sweep in the kernel: every entry of one table judged where it lies,
//! with `bpf_for_each_map_elem`, instead of copied to the agent (2M entries at 1M flows).
//! The agent runs the program with BPF_PROG_TEST_RUN and gets the collectable flows
//! ([`CT_DOOMED`]) and each client's count of flows that are not closed ([`CT_CENSUS`]),
//! IPv6 tables' in their own ([`CT_DOOMED6`], [`CT_CENSUS6`]);
//! it removes the flows itself, with the checks that keep a flow a packet refreshed
//! meanwhile. The judgement is `egress_common`'s, the same as the agent's own pass.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::TC_ACT_OK,
    btf_maps::{Array, HashMap},
    helpers::generated::bpf_for_each_map_elem,
    macros::{btf_map, classifier},
    programs::TcContext,
};
use egress_common::{
    Doomed, FlowEntry, FlowKey, MIN_TIMEOUT_NS, SweepState, counts_against_client, flow_kind,
    gc_collectable,
    maps::{CT_CENSUS_MAX, CT_DOOMED_MAX},
    peer_key,
};

use crate::shared::{
    conntrack::{self, Table},
    ctmaps::Family,
};

/// The arguments and results of a sweep (see `egress_common::maps::CT_SWEEP`).
#[btf_map]
static CT_SWEEP: Array<SweepState, 1> = Array::new();

/// The list of collectable flows a sweep fills, every family's.
type DoomedList<A> = Array<Doomed<A>, { CT_DOOMED_MAX as usize }>;
/// The census a sweep counts in, every family's.
type Census<A> = HashMap<A, u32, { CT_CENSUS_MAX as usize }>;

/// The collectable flows the sweep found in an IPv4 table.
#[btf_map]
static CT_DOOMED: DoomedList<[u8; 4]> = Array::new();

/// Per IPv4 client address, its translated flows that are not closed.
#[btf_map]
static CT_CENSUS: Census<[u8; 4]> = HashMap::new();

/// [`CT_DOOMED`] for the IPv6 tables (one entry for an instance without IPv6).
#[btf_map]
static CT_DOOMED6: DoomedList<[u8; 16]> = Array::new();

/// [`CT_CENSUS`] for IPv6 clients.
#[btf_map]
static CT_CENSUS6: Census<[u8; 16]> = HashMap::new();

/// A family's sweep results.
trait Swept: Family {
    fn doomed() -> &'static DoomedList<Self>;
    fn census() -> &'static Census<Self>;
}

impl Swept for [u8; 4] {
    #[inline(always)]
    fn doomed() -> &'static DoomedList<Self> {
        &CT_DOOMED
    }

    #[inline(always)]
    fn census() -> &'static Census<Self> {
        &CT_CENSUS
    }
}

impl Swept for [u8; 16] {
    #[inline(always)]
    fn doomed() -> &'static DoomedList<Self> {
        &CT_DOOMED6
    }

    #[inline(always)]
    fn census() -> &'static Census<Self> {
        &CT_CENSUS6
    }
}

/// Callback return: go on with the next entry, or stop.
const NEXT: i64 = 0;
const STOP: i64 = 1;

#[classifier]
pub(crate) fn ct_sweep(_ctx: TcContext) -> i32 {
    let Some(state) = CT_SWEEP.get_ptr_mut(0) else {
        return TC_ACT_OK;
    };
    // The helper takes its context on the stack.
    // SAFETY: the array's one slot; only this program and the agent (between runs) use it.
    // The counts start as the agent wrote them (zero). Not set here: constants would have
    // the verifier walk the callback once per value of the doomed count.
    let mut local = unsafe { *state };
    // One call of the helper per table, each in its own function: Linux before 6.8
    // refuses one call site that sees several maps ("tail_call abusing map_ptr"), and the
    // compiler merges calls that differ only in their arguments.
    match local.table {
        0 => sweep::<[u8; 4], true>(&mut local),
        1 => sweep::<[u8; 4], false>(&mut local),
        2 => sweep::<[u8; 16], true>(&mut local),
        _ => sweep::<[u8; 16], false>(&mut local),
    }
    // SAFETY: the array's one slot, as above.
    unsafe { *state = local };
    TC_ACT_OK
}

/// Visits every entry of one table (`REPLIED`: [`Table::Replied`]) of family `A`.
#[inline(never)]
fn sweep<A: Swept, const REPLIED: bool>(local: &mut SweepState) {
    let (map, callback) = table::<A, REPLIED>();
    // SAFETY: a map of this object, a callback with the helper's signature, and a context
    // on the caller's stack that outlives the call.
    unsafe {
        bpf_for_each_map_elem(map, callback, core::ptr::from_mut(local).cast(), 0);
    }
}

/// The map and callback of one table (`REPLIED`: [`Table::Replied`]) of family `A`.
#[inline(always)]
fn table<A: Swept, const REPLIED: bool>() -> (*mut c_void, *mut c_void) {
    let t = if REPLIED {
        Table::Replied
    } else {
        Table::Unreplied
    };
    (
        t.map_ptr::<A>(),
        visit::<A, REPLIED> as *const () as *mut c_void,
    )
}

/// One entry of a table (`REPLIED`: [`Table::Replied`]) of family `A`.
#[inline(never)]
extern "C" fn visit<A: Swept, const REPLIED: bool>(
    _map: *mut c_void,
    key: *mut FlowKey<A>,
    value: *mut FlowEntry<A>,
    state: *mut SweepState,
) -> i64 {
    // SAFETY: the helper passes the entry's key and value and our context.
    let (key, entry, state) = unsafe { (&*key, &*value, &mut *state) };
    let table = if REPLIED {
        Table::Replied
    } else {
        Table::Unreplied
    };
    state.entries += 1;
    let now = state.now;
    match entry.kind {
        flow_kind::REPLY => {
            // A reply entry goes with its forward entry. Alone, only once idle for the
            // shortest timeout, which also bounds how many lookups this costs.
            if now.saturating_sub(entry.last_seen_ns) <= MIN_TIMEOUT_NS {
                return NEXT;
            }
            if conntrack::peer_in_place(key, entry, table).is_some() {
                return NEXT;
            }
            doom(state, key, FlowKey::default(), false)
        }
        flow_kind::FORWARD => {
            let peer = conntrack::peer_in_place(key, entry, table);
            if gc_collectable(key.proto, entry, peer, now) {
                // The peer's key in both arms, never an `Option`'s: the compiler reads a
                // `None`'s undefined key before it tests which it is, and 5.15's verifier
                // refuses that read of stack never written (docs/design/verifier.md).
                let (peer_key, has_peer) = match peer {
                    Some(_) => (peer_key(key, entry), true),
                    None => (FlowKey::default(), false),
                };
                return doom(state, key, peer_key, has_peer);
            }
            if !counts_against_client(key.proto, entry, peer) {
                return NEXT;
            }
            if let Some(count) = A::census().get_ptr_mut(key.saddr) {
                // SAFETY: a live value of a map only this program writes, one run at a time.
                unsafe { *count += 1 };
                return NEXT;
            }
            if A::census().insert(key.saddr, 1, 0).is_err() {
                state.overflow = 1;
                return STOP;
            }
            NEXT
        }
        _ => {
            if gc_collectable(key.proto, entry, None, now) {
                return doom(state, key, FlowKey::default(), false);
            }
            NEXT
        }
    }
}

/// Appends a collectable flow to its family's list (`peer`: its reply entry's key, if
/// `has_peer`; zero otherwise); stops the sweep when the list is full.
#[inline(always)]
fn doom<A: Swept>(
    state: &mut SweepState,
    key: &FlowKey<A>,
    peer: FlowKey<A>,
    has_peer: bool,
) -> i64 {
    let Some(slot) = A::doomed().get_ptr_mut(state.doomed) else {
        state.overflow = 1;
        return STOP;
    };
    // SAFETY: an array slot only this program writes, one run at a time.
    unsafe {
        *slot = Doomed {
            key: *key,
            peer,
            has_peer: u32::from(has_peer),
            _pad: 0,
        };
    }
    state.doomed += 1;
    NEXT
}
