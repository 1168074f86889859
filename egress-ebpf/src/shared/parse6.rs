//! IPv6 headers: the fixed header and a bounded walk over the extension headers to the
//! upper-layer header, with the fragment header's fields when there is one.

use aya_ebpf::programs::TcContext;
use egress_common::DropReason;

use crate::shared::parse::{self, ETH_HLEN, ETH_P_IPV6, EthHdr};

/// Length of the fixed IPv6 header.
pub(crate) const IPV6_HLEN: usize = 40;

/// Most extension headers walked before the upper-layer header. RFC 8200 recommends an
/// order with at most one of each (two destination options); a packet that needs more
/// to reach its transport header is dropped (`ipv6_ext_headers`), never forwarded with a
/// header this data plane did not see.
const MAX_EXT_HEADERS: usize = 4;

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;

/// ICMPv6 types the data plane knows.
pub(crate) const ICMPV6_ECHO_REQUEST: u8 = 128;
pub(crate) const ICMPV6_ECHO_REPLY: u8 = 129;
/// Neighbour discovery: router solicitation to redirect (133-137).
pub(crate) const ICMPV6_NDISC_FIRST: u8 = 133;
pub(crate) const ICMPV6_NDISC_LAST: u8 = 137;

#[repr(C)]
pub(crate) struct Ipv6Hdr {
    pub(crate) vtc_flow: u32,
    pub(crate) payload_len: u16,
    pub(crate) nexthdr: u8,
    pub(crate) hop_limit: u8,
    /// As 32-bit words (network order in memory), so that they are read and written a word
    /// at a time: the header is 4-byte aligned, and BPF has no unaligned loads.
    pub(crate) saddr: [u32; 4],
    pub(crate) daddr: [u32; 4],
}

/// An address's bytes as the conntrack keys hold them.
#[inline(always)]
pub(crate) fn addr_bytes(words: [u32; 4]) -> [u8; 16] {
    // SAFETY: 16 bytes either way; any bit pattern is valid for both.
    unsafe { core::mem::transmute(words) }
}

/// An address as the header's words, from the bytes a map holds.
#[inline(always)]
pub(crate) fn addr_words(bytes: [u8; 16]) -> [u32; 4] {
    // SAFETY: as above.
    unsafe { core::mem::transmute(bytes) }
}

/// The first two bytes every walked extension header starts with.
#[repr(C)]
struct ExtHdr {
    nexthdr: u8,
    /// In 8-byte units after the first 8 (4-byte units after the first 8 for AH).
    len: u8,
}

/// The fragment header (RFC 8200, 4.5).
#[repr(C)]
struct FragHdr {
    nexthdr: u8,
    _reserved: u8,
    /// Offset in 8-byte units << 3, two reserved bits, M (network order).
    frag_off: u16,
    id: u32,
}

/// Fragment offset mask and "more fragments" bit of the fragment header's second field
/// (host order).
const IP6_OFFSET: u16 = 0xfff8;
const IP6_MF: u16 = 0x0001;

/// The IPv6 header fields the programs decide on, after the extension headers.
#[derive(Clone, Copy)]
pub(crate) struct Ipv6 {
    /// Offset of the upper-layer header.
    pub(crate) l4: usize,
    /// The upper-layer protocol (the last extension header's next header).
    pub(crate) proto: u8,
    pub(crate) hop_limit: u8,
    pub(crate) saddr: [u8; 16],
    pub(crate) daddr: [u8; 16],
    /// The fragment header's offset and M bit (host order), 0 without one.
    pub(crate) frag_off: u16,
    /// The fragment header's identification (network order), 0 without one.
    pub(crate) frag_id: u32,
    /// Length from the start of the IPv6 header: 40 + the payload length.
    pub(crate) len: u32,
}

impl Ipv6 {
    /// Part of a fragmented datagram (first or later fragment).
    #[inline(always)]
    pub(crate) fn is_fragment(&self) -> bool {
        self.frag_off & (IP6_OFFSET | IP6_MF) != 0
    }

    /// A fragment other than the first: it carries no upper-layer header.
    #[inline(always)]
    pub(crate) fn is_later_fragment(&self) -> bool {
        self.frag_off & IP6_OFFSET != 0
    }
}

/// Most bytes before the upper-layer header: four extension headers of the largest size.
const MAX_L4: usize = ETH_HLEN + IPV6_HLEN + MAX_EXT_HEADERS * 2048;
/// A mask above any offset the walk reaches (five steps of 2048 bytes at most after the
/// fixed header: 10294), so masking changes no value.
const L4_BITS: usize = 0x3fff;

/// The walk's results with what the verifier knows of the path that produced them
/// forgotten: each value goes through the skb's control buffer (TC's scratch space) and
/// comes back as a number the verifier knows only by the bound checked here. Without it,
/// the rest of the program is verified once per way through the walk (no extension
/// header, one, a fragment header...): over the verifier's million instructions.
#[inline(always)]
fn converge(ctx: &TcContext, mut ip: Ipv6) -> Result<Ipv6, DropReason> {
    // SAFETY: cb[0..4] of the context is the program's scratch space; volatile, so the
    // compiler keeps the store and the load.
    let launder = |slot: usize, value: u32| unsafe {
        let cb = core::ptr::addr_of_mut!((*ctx.skb.skb).cb[slot]);
        core::ptr::write_volatile(cb, value);
        core::ptr::read_volatile(cb)
    };
    // The offset as a 64-bit word (cb[0] and cb[1], 8-byte aligned): read back as 32 bits,
    // the compiler would widen it with shifts that the verifier refuses on the packet
    // pointer it is added to.
    // Masked as it comes back, besides the check below: Linux before 6.8 does not carry a
    // bound learnt by a comparison to a copy the compiler spilled to the stack before it,
    // so the value must come with a bound of its own.
    // SAFETY: as above.
    ip.l4 = unsafe {
        let cb = core::ptr::addr_of_mut!((*ctx.skb.skb).cb[0]).cast::<u64>();
        core::ptr::write_volatile(cb, ip.l4 as u64);
        core::ptr::read_volatile(cb) as usize & L4_BITS
    };
    if ip.l4 > MAX_L4 {
        return Err(DropReason::Ipv6ExtHeaders);
    }
    ip.proto = launder(2, u32::from(ip.proto)) as u8;
    ip.frag_off = launder(3, u32::from(ip.frag_off)) as u16;
    ip.frag_id = launder(4, ip.frag_id);
    Ok(ip)
}

/// What a translated IPv6 packet reads up front: Ethernet, the fixed header and a TCP
/// header without options.
const HEADERS_LEN: usize = ETH_HLEN + IPV6_HLEN + 20;

/// Parses the Ethernet and IPv6 headers and walks the extension headers. `Ok(None)` for
/// anything that is not IPv6.
#[inline(always)]
pub(crate) fn ipv6(ctx: &TcContext) -> Result<Option<Ipv6>, DropReason> {
    let len = ctx.len() as usize;
    parse::ensure(ctx, if len < HEADERS_LEN { len } else { HEADERS_LEN })?;
    parse::ensure(ctx, ETH_HLEN + IPV6_HLEN)?;
    let eth = parse::ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    if unsafe { (*eth).proto } != ETH_P_IPV6.to_be() {
        return Ok(None);
    }
    let ip = parse::ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN)?;
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    let payload = usize::from(u16::from_be(ip.payload_len));
    // Version 6; a payload length of 0 is a jumbogram's (hop-by-hop option), which no
    // Ethernet link carries.
    if (u32::from_be(ip.vtc_flow) >> 28) != 6 || payload == 0 {
        return Err(DropReason::MalformedIpv6);
    }
    let end = ETH_HLEN + IPV6_HLEN + payload;
    if end > len {
        return Err(DropReason::Truncated);
    }
    let mut parsed = Ipv6 {
        l4: ETH_HLEN + IPV6_HLEN,
        proto: ip.nexthdr,
        hop_limit: ip.hop_limit,
        saddr: addr_bytes(ip.saddr),
        daddr: addr_bytes(ip.daddr),
        frag_off: 0,
        frag_id: 0,
        len: (IPV6_HLEN + payload) as u32,
    };
    let mut fragment_header = false;
    // One step per extension header, and one more to reach the upper-layer header.
    for _ in 0..=MAX_EXT_HEADERS {
        match parsed.proto {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AUTH => {
                let off = parsed.l4;
                parse::ensure(ctx, off + 2)?;
                let ext = parse::ptr_at::<ExtHdr>(ctx, off)?;
                // SAFETY: bounds checked by ptr_at.
                let ext = unsafe { &*ext };
                let units = usize::from(ext.len);
                parsed.l4 = if parsed.proto == NEXTHDR_AUTH {
                    off + (units + 2) * 4
                } else {
                    off + (units + 1) * 8
                };
                parsed.proto = ext.nexthdr;
            }
            NEXTHDR_FRAGMENT => {
                // One fragment header; a second is an error (RFC 8200: not nested).
                if fragment_header {
                    return Err(DropReason::Ipv6ExtHeaders);
                }
                fragment_header = true;
                let off = parsed.l4;
                parse::ensure(ctx, off + 8)?;
                let frag = parse::ptr_at::<FragHdr>(ctx, off)?;
                // SAFETY: bounds checked by ptr_at.
                let frag = unsafe { &*frag };
                parsed.frag_off = u16::from_be(frag.frag_off) & (IP6_OFFSET | IP6_MF);
                parsed.frag_id = frag.id;
                parsed.proto = frag.nexthdr;
                parsed.l4 = off + 8;
            }
            _ => {
                if parsed.l4 > end {
                    return Err(DropReason::Truncated);
                }
                return converge(ctx, parsed).map(Some);
            }
        }
    }
    Err(DropReason::Ipv6ExtHeaders)
}
