//! IPv4 fragments: a first fragment's ports are remembered, keyed by the datagram
//! (addresses, protocol, IP id), so the fragments that follow, which carry no L4 header,
//! are translated with them.

use aya_ebpf::{btf_maps::LruHashMap, macros::btf_map};
use egress_common::{FRAGMENTS_MAX, FragKey, FragPorts};

use crate::parse::Ipv4;

/// L4 ports of datagrams in flight as fragments, keyed by the datagram as it arrived.
#[btf_map]
static FRAGMENTS: LruHashMap<FragKey, FragPorts, { FRAGMENTS_MAX as usize }> = LruHashMap::new();

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
