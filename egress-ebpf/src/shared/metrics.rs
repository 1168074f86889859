//! Per-CPU packet/byte counters: path counters by `egress_common::Stat`, drops by typed
//! reason, per-rule counters, and node mode's per-instance counters. Entry programs record
//! exactly one [`Verdict`] (or drop reason) per packet, at their exit (`crate::exit`).

use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};
use egress_common::{
    DropReason, NODE_STATS_LEN, NODE_STATS_PER_INSTANCE, PacketCount, RULE_STATS_LEN, STATS_LEN,
    Stat, drop_stat_index,
};

/// What happens to a packet that is not dropped; recorded once, at the program's exit.
pub(crate) enum Verdict {
    /// Hand to the stack, counted on a path counter.
    Pass(Stat),
    /// Send out of `ifindex` with neighbour resolution, counted on a path counter (but a
    /// claim answer, counted `ClaimDefended`, goes as it is: `exit::pod`).
    Redirect(u32, Stat),
    /// Not this program's family: on to the next program at the hook (TCX_NEXT), counted
    /// by that one.
    Next,
}

#[btf_map]
static STATS: PerCpuArray<PacketCount, { STATS_LEN as usize }> = PerCpuArray::new();

#[btf_map]
static RULE_STATS: PerCpuArray<PacketCount, { RULE_STATS_LEN as usize }> = PerCpuArray::new();

#[inline(always)]
fn bump(map: &PerCpuArray<PacketCount, { STATS_LEN as usize }>, index: u32, len: u32) {
    if let Some(slot) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot of a preallocated array; only this CPU writes it, and a TC
        // program is not preempted by itself on the same CPU.
        let slot = unsafe { &mut *slot };
        slot.packets += 1;
        slot.bytes += u64::from(len);
    }
}

/// Counts a packet on a path counter.
#[inline(always)]
pub(crate) fn count(stat: Stat, len: u32) {
    bump(&STATS, stat as u32, len);
}

/// Counts a dropped packet under its reason.
#[inline(always)]
pub(crate) fn count_drop(reason: DropReason, len: u32) {
    bump(&STATS, drop_stat_index(reason), len);
}

/// Counts a packet of a rule's flow (0 = fallback).
#[inline(always)]
pub(crate) fn count_rule(rule_id: u16, len: u32) {
    if let Some(slot) = RULE_STATS.get_ptr_mut(u32::from(rule_id)) {
        // SAFETY: as in `bump`.
        let slot = unsafe { &mut *slot };
        slot.packets += 1;
        slot.bytes += u64::from(len);
    }
}

/// Node mode: per-instance counters (`egress_common::node_stat`).
#[btf_map]
static NODE_STATS: PerCpuArray<PacketCount, { NODE_STATS_LEN as usize }> = PerCpuArray::new();

/// Node mode: counts a packet of length `len` on instance `instance`'s counter `slot`.
#[inline(always)]
pub(crate) fn count_instance(instance: u32, slot: u32, len: u32) {
    if let Some(c) = NODE_STATS.get_ptr_mut(instance * NODE_STATS_PER_INSTANCE + slot) {
        // SAFETY: this CPU's slot of a preallocated array; a program does not preempt
        // itself on one CPU.
        let c = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += u64::from(len);
    }
}
