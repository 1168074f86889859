//! Bounds-checked access to packet headers (direct packet access), for TC and XDP programs.
//!
//! Every accessor checks `data + offset + size <= data_end` right before handing out a
//! pointer, so the verifier sees the check next to the use. Offsets derived from IHL or the
//! TCP data offset are bounded by construction (`& 0x0f` times 4).

use core::mem::size_of;

use aya_ebpf::programs::{TcContext, XdpContext};
use egress_common::DropReason;

pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
pub(crate) const ETH_P_ARP: u16 = 0x0806;
/// Fragment offset mask and "more fragments" bit of `frag_off` (host order).
const IP_OFFSET: u16 = 0x1fff;
const IP_MF: u16 = 0x2000;

#[repr(C)]
pub(crate) struct EthHdr {
    pub(crate) dst: [u8; 6],
    pub(crate) src: [u8; 6],
    /// Network order.
    pub(crate) proto: u16,
}

#[repr(C)]
pub(crate) struct Ipv4Hdr {
    pub(crate) version_ihl: u8,
    pub(crate) tos: u8,
    pub(crate) tot_len: u16,
    pub(crate) id: u16,
    pub(crate) frag_off: u16,
    pub(crate) ttl: u8,
    pub(crate) proto: u8,
    pub(crate) check: u16,
    pub(crate) saddr: u32,
    pub(crate) daddr: u32,
}

/// The first four bytes of TCP and UDP headers.
#[repr(C)]
pub(crate) struct Ports {
    pub(crate) sport: u16,
    pub(crate) dport: u16,
}

#[repr(C)]
pub(crate) struct TcpHdr {
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) doff: u8,
    pub(crate) flags: u8,
    pub(crate) window: u16,
    pub(crate) check: u16,
    pub(crate) urg: u16,
}

#[repr(C)]
pub(crate) struct IcmpHdr {
    pub(crate) kind: u8,
    pub(crate) code: u8,
    pub(crate) check: u16,
    /// Echo identifier (network order); unused for errors.
    pub(crate) id: u16,
    pub(crate) seq: u16,
}

pub(crate) const ICMP_ECHO_REPLY: u8 = 0;
pub(crate) const ICMP_DEST_UNREACH: u8 = 3;
pub(crate) const ICMP_ECHO_REQUEST: u8 = 8;
pub(crate) const ICMP_TIME_EXCEEDED: u8 = 11;
pub(crate) const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// Offsets of the L4 checksum field from the start of the L4 header.
pub(crate) const TCP_CSUM_OFF: usize = 16;
pub(crate) const UDP_CSUM_OFF: usize = 6;

/// A pointer to a `T` at `offset` from the start of the packet, if the linear data holds it.
#[inline(always)]
pub(crate) fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Result<*mut T, DropReason> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(DropReason::Truncated);
    }
    Ok((start + offset) as *mut T)
}

/// [`ptr_at`] in an XDP program: a pointer to a `T` at `offset` of the frame, if the frame
/// holds it.
#[inline(always)]
pub(crate) fn xdp_ptr<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    if start + offset + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Makes the first `len` bytes linear (direct access reaches only the linear part). Cheap
/// when they already are; a packet shorter than `len` is truncated.
#[inline(always)]
pub(crate) fn ensure(ctx: &TcContext, len: usize) -> Result<(), DropReason> {
    // The packet's bounds read afresh (volatile): reusing earlier reads, the compiler may
    // widen them from 32 bits with shifts, which the verifier refuses on packet pointers
    // (seen with the IPv6 programs' variable header lengths).
    // SAFETY: reading fields of the context.
    let (data, end) = unsafe {
        let skb = ctx.skb.skb;
        (
            core::ptr::read_volatile(core::ptr::addr_of!((*skb).data)),
            core::ptr::read_volatile(core::ptr::addr_of!((*skb).data_end)),
        )
    };
    if data as usize + len <= end as usize {
        return Ok(());
    }
    if (ctx.len() as usize) < len {
        return Err(DropReason::Truncated);
    }
    ctx.pull_data(len as u32).map_err(|_| DropReason::Truncated)
}

/// The IPv4 header fields the programs decide on.
#[derive(Clone, Copy)]
pub(crate) struct Ipv4 {
    /// Offset of the L4 header (14 + IHL * 4).
    pub l4: usize,
    pub(crate) proto: u8,
    pub(crate) ttl: u8,
    /// Raw (network order) addresses, as loaded.
    pub(crate) saddr: u32,
    pub(crate) daddr: u32,
    /// Identification, host order.
    pub(crate) id: u16,
    /// Flags and fragment offset, host order.
    pub(crate) frag_off: u16,
    /// Total length (header and payload), host order.
    pub(crate) len: u16,
}

impl Ipv4 {
    /// Part of a fragmented datagram (first or later fragment).
    #[inline(always)]
    pub(crate) fn is_fragment(&self) -> bool {
        self.frag_off & (IP_OFFSET | IP_MF) != 0
    }

    /// A fragment other than the first: it carries no L4 header.
    #[inline(always)]
    pub(crate) fn is_later_fragment(&self) -> bool {
        self.frag_off & IP_OFFSET != 0
    }
}

/// What every translated packet reads: Ethernet, IPv4 without options, and a TCP header
/// without options (or a UDP header and the start of its payload).
const HEADERS_LEN: usize = ETH_HLEN + 20 + 20;

/// Parses the Ethernet and IPv4 headers. `Ok(None)` for anything that is not IPv4.
#[inline(always)]
pub(crate) fn ipv4(ctx: &TcContext) -> Result<Option<Ipv4>, DropReason> {
    // One pull for all the headers (or the whole frame if shorter) where they are not
    // linear, e.g. frames from an AF_PACKET TX ring carry everything after the Ethernet
    // header in a page fragment: the later `ensure`s then cost nothing instead of one
    // pull each.
    let len = ctx.len() as usize;
    ensure(ctx, if len < HEADERS_LEN { len } else { HEADERS_LEN })?;
    ensure(ctx, ETH_HLEN + size_of::<Ipv4Hdr>())?;
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    if unsafe { (*eth).proto } != ETH_P_IP.to_be() {
        return Ok(None);
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN)?;
    // SAFETY: bounds checked by ptr_at.
    let ip = unsafe { &*ip };
    let vihl = ip.version_ihl;
    let ihl = usize::from(vihl & 0x0f) * 4;
    let tot_len = usize::from(u16::from_be(ip.tot_len));
    if vihl >> 4 != 4 || ihl < size_of::<Ipv4Hdr>() || tot_len < ihl {
        return Err(DropReason::MalformedIpv4);
    }
    if ETH_HLEN + tot_len > ctx.len() as usize {
        return Err(DropReason::Truncated);
    }
    let parsed = Ipv4 {
        l4: ETH_HLEN + ihl,
        proto: ip.proto,
        ttl: ip.ttl,
        saddr: ip.saddr,
        daddr: ip.daddr,
        id: u16::from_be(ip.id),
        frag_off: u16::from_be(ip.frag_off),
        len: tot_len as u16,
    };
    Ok(Some(parsed))
}

/// Whether the frame carries IPv6.
#[inline(always)]
pub(crate) fn is_ipv6(ctx: &TcContext) -> bool {
    match ptr_at::<EthHdr>(ctx, 0) {
        // SAFETY: bounds checked by ptr_at.
        Ok(eth) => (unsafe { (*eth).proto }) == ETH_P_IPV6.to_be(),
        Err(_) => false,
    }
}
