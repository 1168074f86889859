//! Fragments: a first fragment's ports are remembered, keyed by the datagram (addresses,
//! protocol, and the IPv4 id or the IPv6 fragment header's identification), so the
//! fragments that follow, which carry no L4 header, are translated with them.

use aya_ebpf::{
    btf_maps::{LruHashMap, PerCpuArray},
    macros::btf_map,
};
use egress_common::{FRAGMENTS_MAX, FragKey, FragKey6, FragPorts};

use crate::shared::{parse::Ipv4, parse6::Ipv6};

/// L4 ports of datagrams in flight as fragments, keyed by the datagram as it arrived.
#[btf_map]
static FRAGMENTS: LruHashMap<FragKey, FragPorts, { FRAGMENTS_MAX as usize }> = LruHashMap::new();

/// [`FRAGMENTS`] for IPv6 (sized by user space: one entry without IPv6).
#[btf_map]
static FRAGMENTS6: LruHashMap<FragKey6, FragPorts, { FRAGMENTS_MAX as usize }> = LruHashMap::new();

/// Where an IPv6 key is built: 40 bytes the IPv6 programs' stack does not have where a
/// flow is translated.
#[btf_map]
static FRAG_KEY6: PerCpuArray<FragKey6, 1> = PerCpuArray::new();

#[inline(always)]
fn key(ip: &Ipv4) -> FragKey {
    FragKey {
        saddr: ip.saddr.to_ne_bytes(),
        daddr: ip.daddr.to_ne_bytes(),
        id: ip.id,
        proto: ip.proto,
        _pad: 0,
    }
}

/// Remembers the ports of a first fragment for the fragments that follow.
#[inline(always)]
pub(crate) fn remember(ip: &Ipv4, sport: u16, dport: u16) {
    let _ = FRAGMENTS.insert(key(ip), FragPorts { sport, dport }, 0);
}

/// The ports of a later fragment's datagram, from its first fragment.
#[inline(always)]
pub(crate) fn ports(ip: &Ipv4) -> Option<FragPorts> {
    // SAFETY: read-only copy of a live value.
    FRAGMENTS.get_ptr(key(ip)).map(|p| unsafe { *p })
}

/// The IPv6 datagram's key, written into this CPU's [`FRAG_KEY6`].
#[inline(always)]
fn key6(ip: &Ipv6) -> Option<&'static FragKey6> {
    let slot = FRAG_KEY6.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; a TC program does not preempt itself on one CPU.
    let key = unsafe { &mut *slot };
    key.saddr = ip.saddr;
    key.daddr = ip.daddr;
    key.id = ip.frag_id;
    key.proto = ip.proto;
    key._pad = [0; 3];
    Some(key)
}

/// [`remember`] for IPv6.
#[inline(always)]
pub(crate) fn remember6(ip: &Ipv6, sport: u16, dport: u16) {
    if let Some(key) = key6(ip) {
        let _ = FRAGMENTS6.insert(key, FragPorts { sport, dport }, 0);
    }
}

/// [`ports`] for IPv6.
#[inline(always)]
pub(crate) fn ports6(ip: &Ipv6) -> Option<FragPorts> {
    let key = key6(ip)?;
    // SAFETY: read-only copy of a live value.
    FRAGMENTS6.get_ptr(key).map(|p| unsafe { *p })
}
