//! Per-CPU packet/byte counters, indexed by `egress_common::Stat` and drop reason.

use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};
use egress_common::{PacketCount, STATS_LEN, Stat};

#[btf_map]
static STATS: PerCpuArray<PacketCount, { STATS_LEN as usize }> = PerCpuArray::new();

/// Adds one packet of `len` bytes to the counter at `index`.
#[inline(always)]
fn count_index(index: u32, len: u32) {
    if let Some(slot) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot of a preallocated array; only this CPU writes it, and the
        // program is not preempted by itself on the same CPU.
        let slot = unsafe { &mut *slot };
        slot.packets += 1;
        slot.bytes += u64::from(len);
    }
}

/// Counts a packet on a path counter.
#[inline(always)]
pub fn count(stat: Stat, len: u32) {
    count_index(stat as u32, len);
}
