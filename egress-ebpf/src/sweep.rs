//! The conntrack GC's sweep in the kernel: every entry of one table judged where it lies,
//! with `bpf_for_each_map_elem`, instead of copied to the agent (2M entries at 1M flows).
//! The agent runs the program with BPF_PROG_TEST_RUN and gets the collectable flows
//! ([`CT_DOOMED`]) and each client's count of flows that are not closed ([`CT_CENSUS`]);
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

use crate::conntrack::{Table, peer_in_place};

/// The arguments and results of a sweep (see `egress_common::maps::CT_SWEEP`).
#[btf_map]
static CT_SWEEP: Array<SweepState, 1> = Array::new();

/// The collectable flows the sweep found.
#[btf_map]
static CT_DOOMED: Array<Doomed, { CT_DOOMED_MAX as usize }> = Array::new();

/// Per client address, its translated flows that are not closed.
#[btf_map]
static CT_CENSUS: HashMap<[u8; 4], u32, { CT_CENSUS_MAX as usize }> = HashMap::new();

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
    let (map, callback) = if local.table == 0 {
        (
            Table::Replied.map_ptr::<[u8; 4]>(),
            visit::<true> as *const () as *mut c_void,
        )
    } else {
        (
            Table::Unreplied.map_ptr::<[u8; 4]>(),
            visit::<false> as *const () as *mut c_void,
        )
    };
    // SAFETY: a map of this object, a callback with the helper's signature, and a context
    // on this stack that outlives the call.
    unsafe {
        bpf_for_each_map_elem(map, callback, (&raw mut local).cast(), 0);
        *state = local;
    }
    TC_ACT_OK
}

/// One entry of the table (`REPLIED`: [`Table::Replied`]).
#[inline(never)]
extern "C" fn visit<const REPLIED: bool>(
    _map: *mut c_void,
    key: *mut FlowKey,
    value: *mut FlowEntry,
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
            if peer_in_place(key, entry, table).is_some() {
                return NEXT;
            }
            doom(state, key, None)
        }
        flow_kind::FORWARD => {
            let peer = peer_in_place(key, entry, table);
            if gc_collectable(key.proto, entry, peer, now) {
                return doom(state, key, peer.map(|_| peer_key(key, entry)));
            }
            if !counts_against_client(key.proto, entry, peer) {
                return NEXT;
            }
            if let Some(count) = CT_CENSUS.get_ptr_mut(key.saddr) {
                // SAFETY: a live value of a map only this program writes, one run at a time.
                unsafe { *count += 1 };
                return NEXT;
            }
            if CT_CENSUS.insert(key.saddr, 1, 0).is_err() {
                state.overflow = 1;
                return STOP;
            }
            NEXT
        }
        _ => {
            if gc_collectable(key.proto, entry, None, now) {
                return doom(state, key, None);
            }
            NEXT
        }
    }
}

/// Appends a collectable flow to [`CT_DOOMED`]; stops the sweep when the list is full.
#[inline(always)]
fn doom(state: &mut SweepState, key: &FlowKey, peer: Option<FlowKey>) -> i64 {
    let Some(slot) = CT_DOOMED.get_ptr_mut(state.doomed) else {
        state.overflow = 1;
        return STOP;
    };
    // SAFETY: an array slot only this program writes, one run at a time.
    unsafe {
        *slot = Doomed {
            key: *key,
            peer: peer.unwrap_or_default(),
            has_peer: u32::from(peer.is_some()),
            _pad: 0,
        };
    }
    state.doomed += 1;
    NEXT
}
