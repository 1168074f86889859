//! The path's limits, answered as a router answers them. A packet about to be translated
//! and sent on whose TTL runs out here gets ICMP Time Exceeded (so traceroute shows the
//! router as a hop); one too big for the next link gets ICMP Fragmentation Needed with that
//! link's MTU when it has DF set (so path-MTU discovery works through the router, RFC
//! 1191), and is dropped (`too_big`) when it has not: the data plane does not fragment.
//!
//! The error is built in place from the packet it answers (its IP header and up to 64 bytes
//! of payload, RFC 792 and RFC 1812 4.3.2.3), from the router's address on that side, and
//! sent back out of the interface the packet came in on. No error answers an ICMP error, a
//! later fragment, or a source that is not unicast (RFC 1122 3.2.2).

use aya_ebpf::{
    bindings::{BPF_F_RECOMPUTE_CSUM, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    btf_maps::PerCpuArray,
    helpers::generated::{bpf_check_mtu, bpf_csum_diff, bpf_skb_load_bytes},
    macros::btf_map,
    programs::TcContext,
};
use egress_common::{DropReason, RouterConfig, Stat, csum};

use crate::shared::{
    budget, icmp,
    metrics::Verdict,
    parse::{ETH_HLEN, ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED, Ipv4, Ipv4Hdr},
};

/// Code of Destination Unreachable: fragmentation needed and DF set.
const ICMP_FRAG_NEEDED: u8 = 4;
/// The "don't fragment" bit of `frag_off` (host order).
const IP_DF: u16 = 0x4000;
/// Return of `bpf_check_mtu` when the packet does not fit.
const BPF_MTU_CHK_RET_FRAG_NEEDED: i64 = 1;
/// Payload bytes of the offending packet quoted after its IP header: more than RFC 792's 8,
/// so that the quoted TCP or UDP checksum field is in (a truncation before a pending
/// checksum offload's field is refused by the kernel).
const QUOTE_PAYLOAD: usize = 64;
/// The longest quote: a 60-byte IP header and [`QUOTE_PAYLOAD`].
const QUOTE_MAX: usize = 60 + QUOTE_PAYLOAD;
/// The new IP header and ICMP header put before the quote.
const ERROR_HEADERS: usize = 20 + 8;
/// The quote beyond a minimal IP header, as a mask of whole 32-bit words (0..=124 bytes).
const QUOTE_WORDS: usize = 0x7c;
/// Room for a quote of `20 + (n & QUOTE_WORDS)` bytes, the form the verifier follows.
const QUOTE_ROOM: usize = 20 + QUOTE_WORDS;

/// Room for the quote while the packet changes shape (too big for the 512-byte stack).
#[btf_map]
static QUOTE: PerCpuArray<[u8; QUOTE_ROOM], 1> = PerCpuArray::new();

/// Where a packet goes and where an error about it would go back.
pub(crate) struct Hop {
    /// The interface the translated packet leaves through.
    pub(crate) out: u32,
    /// The interface it came in through, where an error goes back out.
    pub(crate) back: u32,
    /// The router's address on the sender's side (pod IP or EGRESS_SOURCE).
    pub(crate) from: [u8; 4],
    /// Packets no longer than this (IPv4 total length) fit either interface: the check
    /// with the helper is skipped for them (min(pod MTU, egress MTU); 0: always check).
    pub(crate) fits: u32,
}

impl Hop {
    /// A client's packet on its way to a remote: errors go back to the client, from the
    /// pod IP.
    #[inline(always)]
    pub(crate) fn toward_remote(cfg: &RouterConfig) -> Self {
        Self {
            out: cfg.egress_ifindex,
            back: cfg.pod_ifindex,
            from: cfg.pod_ip,
            fits: fits(cfg),
        }
    }

    /// A remote's reply on its way to a client: errors go back to the remote, from
    /// EGRESS_SOURCE.
    #[inline(always)]
    pub(crate) fn toward_client(cfg: &RouterConfig) -> Self {
        Self {
            out: cfg.pod_ifindex,
            back: cfg.egress_ifindex,
            from: cfg.egress_source,
            fits: fits(cfg),
        }
    }
}

/// IPv4 packets up to this length fit both interfaces: min(pod MTU, egress MTU), which the
/// MSS clamp is derived from (0 when unknown: always checked).
#[inline(always)]
fn fits(cfg: &RouterConfig) -> u32 {
    if cfg.mss_clamp == 0 {
        0
    } else {
        u32::from(cfg.mss_clamp) + 40
    }
}

/// Checks a packet about to be translated and sent out of `hop.out`: TTL and size.
/// `Ok(Some(verdict))`: the packet was turned into the ICMP error for its sender.
#[inline(always)]
pub(crate) fn guard(ctx: &TcContext, ip: &Ipv4, hop: &Hop) -> Result<Option<Verdict>, DropReason> {
    if ip.ttl <= 1 {
        return answer(
            ctx,
            ip,
            hop,
            ICMP_TIME_EXCEEDED,
            0,
            0,
            DropReason::TtlExceeded,
        )
        .map(Some);
    }
    if u32::from(ip.len) <= hop.fits {
        return Ok(None);
    }
    // Zero: the helper measures the packet itself, GSO segments included.
    let mut mtu: u32 = 0;
    // SAFETY: a valid context and a pointer to a local the helper writes the MTU into.
    let rc = unsafe { bpf_check_mtu(ctx.skb.skb.cast(), hop.out, &mut mtu, 0, 0) };
    if rc != BPF_MTU_CHK_RET_FRAG_NEEDED {
        // Fits (0), or the helper could not tell (no such device): sent as it is, and the
        // redirect says whether the device takes it.
        return Ok(None);
    }
    if ip.frag_off & IP_DF == 0 {
        return Err(DropReason::TooBig);
    }
    let next_hop_mtu = if mtu > u32::from(u16::MAX) {
        u16::MAX
    } else {
        mtu as u16
    };
    answer(
        ctx,
        ip,
        hop,
        ICMP_DEST_UNREACH,
        ICMP_FRAG_NEEDED,
        next_hop_mtu,
        DropReason::TooBig,
    )
    .map(Some)
}

/// Turns the packet into the ICMP error `kind`/`code` (`mtu`: the next-hop MTU of a
/// Fragmentation Needed) for its sender, or drops it with `reason` where no error may be
/// sent.
#[inline(always)]
fn answer(
    ctx: &TcContext,
    ip: &Ipv4,
    hop: &Hop,
    kind: u8,
    code: u8,
    mtu: u16,
    reason: DropReason,
) -> Result<Verdict, DropReason> {
    let source = ip.saddr.to_ne_bytes();
    if ip.is_later_fragment()
        || icmp::is_error(ctx, ip)?
        || source[0] == 0
        || source[0] >= 224
        || source[0] == 127
        // SAFETY: reading a field of the context.
        || unsafe { (*ctx.skb.skb).gso_segs } > 1
    {
        return Err(reason);
    }
    if !budget::allow_error(ctx.len()) {
        return Err(reason);
    }
    let ihl = ip.l4 - ETH_HLEN;
    let mut quote = ihl + QUOTE_PAYLOAD;
    let len = usize::from(ip.len);
    if len < quote {
        quote = len;
    }
    // Whole 32-bit words, for the checksum helper; at least the IP header.
    quote &= !3;
    if quote > QUOTE_MAX || quote < ihl {
        return Err(reason);
    }
    // In a form whose bounds the verifier follows (20..=QUOTE_ROOM, whole words): Linux
    // before 6.8 learns nothing from `quote < ihl` (two unknowns), and a zero length
    // would be possible to it.
    let quote = 20 + ((quote - 20) & QUOTE_WORDS);
    // The quote, for its checksum, before the packet changes shape.
    let buf = QUOTE.get_ptr_mut(0).ok_or(reason)?;
    // SAFETY: this CPU's slot of a preallocated array; a TC program does not preempt
    // itself on one CPU.
    let buf = unsafe { &mut *buf };
    // SAFETY: `quote` (20..=QUOTE_MAX bytes) fits the slot; the helper checks the packet.
    if unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            ETH_HLEN as u32,
            buf.as_mut_ptr().cast(),
            quote as u32,
        )
    } != 0
    {
        return Err(reason);
    }

    // [Ethernet][quote] then [Ethernet][new IP][ICMP][quote]. redirect_neigh writes the
    // Ethernet addresses.
    // SAFETY: a valid context; the helpers check their arguments.
    if unsafe {
        aya_ebpf::helpers::generated::bpf_skb_change_tail(ctx.skb.skb, (ETH_HLEN + quote) as u32, 0)
    } != 0
    {
        return Err(reason);
    }
    ctx.adjust_room(ERROR_HEADERS as i32, BPF_ADJ_ROOM_MAC, 0)
        .map_err(|_| reason)?;

    let total = (ERROR_HEADERS + quote) as u16;
    let mut hdr = Ipv4Hdr {
        version_ihl: 0x45,
        // Internetwork control, as Linux sends its ICMP errors.
        tos: 0xc0,
        tot_len: total.to_be(),
        id: 0,
        frag_off: 0,
        ttl: 64,
        proto: egress_common::proto::ICMP,
        check: 0,
        saddr: u32::from_ne_bytes(hop.from),
        daddr: ip.saddr,
    };
    // SAFETY: a 20-byte header on the stack, read as 32-bit words.
    let sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, (&raw mut hdr).cast(), 20, 0) };
    hdr.check = csum::fold(sum as u32);
    ctx.store(ETH_HLEN, &hdr, u64::from(BPF_F_RECOMPUTE_CSUM))
        .map_err(|_| reason)?;

    let mtu = mtu.to_be_bytes();
    let mut icmp = [kind, code, 0, 0, 0, 0, mtu[0], mtu[1]];
    // SAFETY: the ICMP header and the quote on the stack, read as 32-bit words (the quote's
    // length is a multiple of 4 and at most the buffer's).
    let sum = unsafe {
        let quoted = bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            buf.as_mut_ptr().cast(),
            quote as u32,
            0,
        );
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            icmp.as_mut_ptr().cast(),
            8,
            quoted as u32,
        )
    };
    let check = csum::fold(sum as u32).to_ne_bytes();
    icmp[2] = check[0];
    icmp[3] = check[1];
    ctx.store(ETH_HLEN + 20, &icmp, u64::from(BPF_F_RECOMPUTE_CSUM))
        .map_err(|_| reason)?;
    Ok(Verdict::Redirect(hop.back, Stat::IcmpErrorsSent))
}
