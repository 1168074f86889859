//! The path's limits over IPv6, answered as an IPv6 router answers them ([`crate::shared::path`]
//! for IPv4): a packet whose hop limit runs out here gets ICMPv6 Time Exceeded; one too
//! big for the next link gets ICMPv6 Packet Too Big with that link's MTU (RFC 8201: IPv6
//! routers never fragment, so this is the only way a sender learns the path's MTU).
//!
//! The error is built from the packet it answers: its IPv6 header, extension headers and
//! 64 bytes of what follows (RFC 4443 asks for as much as fits in 1280 bytes; this much
//! names the flow and holds its transport checksum), from the router's address on that
//! side, and sent back out of the interface the packet came in on. It is assembled in a
//! per-CPU buffer, not on the stack: the IPv6 programs use almost all of their 512 bytes.
//! No error answers an ICMPv6 error, a later fragment, or a source that is not unicast
//! (RFC 4443 2.4).

use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    btf_maps::PerCpuArray,
    helpers::generated::{
        bpf_check_mtu, bpf_csum_diff, bpf_skb_change_tail, bpf_skb_load_bytes, bpf_skb_store_bytes,
    },
    macros::btf_map,
    programs::TcContext,
};
use egress_common::{DropReason, RouterConfig, RouterConfig6, Stat, csum, proto};

use crate::shared::{
    budget, icmp6,
    metrics::Verdict,
    parse::ETH_HLEN,
    parse6::{IPV6_HLEN, Ipv6},
};

const ICMPV6_PKT_TOOBIG: u8 = 2;
const ICMPV6_TIME_EXCEED: u8 = 3;
/// Return of `bpf_check_mtu` when the packet does not fit.
const BPF_MTU_CHK_RET_FRAG_NEEDED: i64 = 1;
/// Payload bytes quoted after the offending packet's headers.
const QUOTE_PAYLOAD: usize = 64;
/// The longest quote.
const QUOTE_MAX: usize = 256;
/// The mask that keeps a quote's length past the fixed header in whole 32-bit words.
const QUOTE_WORDS: usize = 0xfc;
/// Room for a quote: the fixed header and the most the mask lets through.
const QUOTE_ROOM: usize = IPV6_HLEN + QUOTE_WORDS;
/// The error's own IPv6 and ICMPv6 headers, put before the quote.
const ERROR_HEADERS: usize = IPV6_HLEN + 8;
/// The hop limit of the errors, as Linux sends its own.
const HOP_LIMIT: u8 = 64;

/// The error being built: its IPv6 header (first holding the pseudo-header's length and
/// next header, for the checksum), its ICMPv6 header, and the quote.
#[btf_map]
static ERROR6: PerCpuArray<[u8; ERROR_HEADERS + QUOTE_ROOM], 1> = PerCpuArray::new();

/// Where a packet goes and where an error about it would go back.
pub(crate) struct Hop6<'a> {
    /// The interface the translated packet leaves through.
    pub(crate) out: u32,
    /// The interface it came in through, where an error goes back out.
    pub(crate) back: u32,
    /// The router's address on the sender's side (the pod's IPv6 address or EGRESS_SOURCE's),
    /// in the configuration map: by reference, as 16 more bytes on the stack are more than
    /// `pod_ingress6` has.
    pub(crate) from: &'a [u8; 16],
    /// Packets no longer than this (40 + payload length) fit either interface: the check
    /// with the helper is skipped for them (0: always check).
    pub(crate) fits: u32,
}

impl<'a> Hop6<'a> {
    /// A client's packet on its way to a remote: errors go back to the client, from the
    /// pod's IPv6 address.
    #[inline(always)]
    pub(crate) fn toward_remote(cfg: &RouterConfig, cfg6: &'a RouterConfig6) -> Self {
        Self {
            out: cfg.egress_ifindex,
            back: cfg.pod_ifindex,
            from: &cfg6.pod_ip,
            fits: fits(cfg6),
        }
    }

    /// A remote's reply on its way to a client: errors go back to the remote, from
    /// EGRESS_SOURCE's IPv6 address.
    #[inline(always)]
    pub(crate) fn toward_client(cfg: &RouterConfig, cfg6: &'a RouterConfig6) -> Self {
        Self {
            out: cfg.pod_ifindex,
            back: cfg.egress_ifindex,
            from: &cfg6.egress_source,
            fits: fits(cfg6),
        }
    }
}

/// Packets up to this length fit both interfaces: min(pod MTU, egress MTU), which the IPv6
/// MSS clamp is derived from (MTU - 60).
#[inline(always)]
fn fits(cfg6: &RouterConfig6) -> u32 {
    if cfg6.mss_clamp == 0 {
        0
    } else {
        u32::from(cfg6.mss_clamp) + 60
    }
}

/// Whether the packet may be beyond the path's limits ([`guard`] tells): its hop limit
/// runs out, or it is longer than what is known to fit.
#[inline(always)]
pub(crate) fn beyond(ip: &Ipv6, hop: &Hop6<'_>) -> bool {
    ip.hop_limit <= 1 || ip.len > hop.fits
}

/// Checks a packet about to be translated and sent out of `hop.out`: hop limit and size.
/// `Ok(Some(verdict))`: the packet was turned into the ICMPv6 error for its sender.
#[inline(always)]
pub(crate) fn guard(
    ctx: &TcContext,
    ip: &Ipv6,
    hop: &Hop6<'_>,
) -> Result<Option<Verdict>, DropReason> {
    if ip.hop_limit <= 1 {
        return answer(ctx, ip, hop, ICMPV6_TIME_EXCEED, 0, DropReason::TtlExceeded).map(Some);
    }
    if ip.len <= hop.fits {
        return Ok(None);
    }
    // Zero: the helper measures the packet itself, GSO segments included.
    let mut mtu: u32 = 0;
    // SAFETY: a valid context and a pointer to a local the helper writes the MTU into.
    let rc = unsafe { bpf_check_mtu(ctx.skb.skb.cast(), hop.out, &mut mtu, 0, 0) };
    if rc != BPF_MTU_CHK_RET_FRAG_NEEDED {
        // Fits, or the helper could not tell: sent as it is.
        return Ok(None);
    }
    answer(ctx, ip, hop, ICMPV6_PKT_TOOBIG, mtu, DropReason::TooBig).map(Some)
}

/// Turns the packet into the ICMPv6 error `kind` (code 0; `field`: the MTU of a Packet Too
/// Big) for its sender, or drops it with `reason` where no error may be sent.
#[inline(always)]
fn answer(
    ctx: &TcContext,
    ip: &Ipv6,
    hop: &Hop6<'_>,
    kind: u8,
    field: u32,
    reason: DropReason,
) -> Result<Verdict, DropReason> {
    // Multicast, unspecified (::) and loopback (::1) sources get no error.
    let source = u128::from_be_bytes(ip.saddr);
    if ip.is_later_fragment()
        || icmp6::is_error(ctx, ip)?
        || source >> 120 == 0xff
        || source <= 1
        // SAFETY: reading a field of the context.
        || unsafe { (*ctx.skb.skb).gso_segs } > 1
    {
        return Err(reason);
    }
    if !budget::allow_error(ctx.len()) {
        return Err(reason);
    }
    // The headers, 64 bytes after them, at most QUOTE_MAX; whole 32-bit words, for the
    // checksum helper.
    let headers = ip.l4 - ETH_HLEN;
    let mut quote = headers + QUOTE_PAYLOAD;
    let len = ip.len as usize;
    if len < quote {
        quote = len;
    }
    if quote > QUOTE_MAX {
        quote = QUOTE_MAX;
    }
    if quote < IPV6_HLEN {
        return Err(reason);
    }
    // In a form whose bounds the verifier follows (40..=292, whole words): a mask alone
    // loses the lower bound checked above.
    let quote = IPV6_HLEN + ((quote - IPV6_HLEN) & QUOTE_WORDS);
    let buf = ERROR6.get_ptr_mut(0).ok_or(reason)?;
    // SAFETY: this CPU's slot of a preallocated array; a TC program does not preempt
    // itself on one CPU.
    let buf = unsafe { &mut *buf };
    // SAFETY: `quote` (40..=QUOTE_ROOM bytes) fits after the headers; the helper checks
    // the packet.
    if unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            ETH_HLEN as u32,
            buf.as_mut_ptr().add(ERROR_HEADERS).cast(),
            quote as u32,
        )
    } != 0
    {
        return Err(reason);
    }
    // The checksum covers the pseudo-header (source, destination, upper-layer length,
    // next header), the ICMPv6 header and the quote. The pseudo-header's length and next
    // header stand in the first 8 bytes, where the IPv6 header's own go after.
    let upper = (8 + quote) as u32;
    buf[..4].copy_from_slice(&upper.to_be_bytes());
    buf[4..8].copy_from_slice(&[0, 0, 0, proto::ICMPV6]);
    buf[8..24].copy_from_slice(hop.from);
    buf[24..40].copy_from_slice(&ip.saddr);
    let field = field.to_be_bytes();
    buf[40..48].copy_from_slice(&[kind, 0, 0, 0, field[0], field[1], field[2], field[3]]);
    // SAFETY: the buffer's first ERROR_HEADERS + quote bytes (a multiple of 4, at most
    // 340, within the helper's 512).
    let sum = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            buf.as_mut_ptr().cast(),
            (ERROR_HEADERS + quote) as u32,
            0,
        )
    };
    let check = csum::fold(sum as u32).to_ne_bytes();
    buf[42] = check[0];
    buf[43] = check[1];
    let payload = (upper as u16).to_be_bytes();
    buf[..8].copy_from_slice(&[
        0x60,
        0,
        0,
        0,
        payload[0],
        payload[1],
        proto::ICMPV6,
        HOP_LIMIT,
    ]);

    // [Ethernet][quote] then [Ethernet][IPv6][ICMPv6][quote]. redirect_neigh writes the
    // Ethernet addresses.
    // SAFETY: a valid context; the helpers check their arguments.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH_HLEN + quote) as u32, 0) } != 0 {
        return Err(reason);
    }
    ctx.adjust_room(ERROR_HEADERS as i32, BPF_ADJ_ROOM_MAC, 0)
        .map_err(|_| reason)?;
    // SAFETY: the buffer holds the ERROR_HEADERS bytes written; the helper checks the
    // packet.
    if unsafe {
        bpf_skb_store_bytes(
            ctx.skb.skb.cast(),
            ETH_HLEN as u32,
            buf.as_ptr().cast(),
            ERROR_HEADERS as u32,
            0,
        )
    } != 0
    {
        return Err(reason);
    }
    Ok(Verdict::Redirect(hop.back, Stat::IcmpErrorsSent))
}
