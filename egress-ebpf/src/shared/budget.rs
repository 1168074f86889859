//! How many ICMP errors the router sends itself (Time Exceeded, Fragmentation Needed,
//! Packet Too Big; [`crate::shared::path`], [`crate::shared::path6`]): at most
//! `egress_common::ICMP_ERRORS_PER_SEC` on average, `ICMP_ERRORS_BURST` at once, both
//! families together, as Linux limits its own (RFC 4443 2.4(f) makes it a must for
//! ICMPv6). Without it, a client sending hop-limit-1 packets as fast as it can would have
//! the router build and send an error for each, at the cost of the router's CPU and of
//! the client's own link.
//!
//! One shared deadline, not a per-CPU bucket: the limit is the instance's, whatever the
//! number of CPUs. Its read and write are not atomic, so CPUs that race may let a few
//! more through; the error path is rare enough for the shared cache line not to matter.

use aya_ebpf::{btf_maps::Array, macros::btf_map};
use egress_common::{ICMP_ERRORS_BURST, ICMP_ERRORS_PER_SEC, Stat};

use crate::shared::{conntrack, metrics};

/// Time between two errors at the steady rate.
const INTERVAL_NS: u64 = 1_000_000_000 / ICMP_ERRORS_PER_SEC;
/// How far ahead of the steady rate the errors may run: the burst.
const AHEAD_NS: u64 = (ICMP_ERRORS_BURST - 1) * INTERVAL_NS;

/// When the next error is due at the steady rate (CLOCK_MONOTONIC nanoseconds; the
/// generic cell rate algorithm's theoretical arrival time). Not pinned: a new data plane
/// starts with a full burst.
#[btf_map]
static ICMP_ERRORS_DUE: Array<u64, 1> = Array::new();

/// Whether an error may be sent now (and if so, it is counted against the limit); if not,
/// it is counted as held back (`len`: the packet's length).
#[inline(never)]
pub(crate) fn allow_error(len: u32) -> bool {
    let Some(due) = ICMP_ERRORS_DUE.get_ptr_mut(0) else {
        return false;
    };
    let now = conntrack::now();
    // SAFETY: the array's one slot, a plain u64; a racing write loses one update at most.
    let due = unsafe { &mut *due };
    let next = if *due < now { now } else { *due };
    if next - now > AHEAD_NS {
        metrics::count(Stat::IcmpErrorsLimited, len);
        return false;
    }
    *due = next + INTERVAL_NS;
    true
}
