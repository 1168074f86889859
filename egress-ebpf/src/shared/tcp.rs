//! TCP specifics: the segment conntrack tracks, which RST and FIN may close a flow, and the
//! MSS clamp on SYNs.
//!
//! Each direction's entry keeps the sequence number that follows the last byte its sender
//! sent (`seq_end`) and the highest acknowledgement it sent (`ack_max`), roughly as
//! netfilter's `tcp_in_window` does. A RST closes the flow only with the sequence number the
//! receiver expects next (its last acknowledgement) or the sender's next one: what RFC 5961
//! makes endpoints accept, so a blind RST from the egress network does not end the flow in
//! conntrack. A FIN counts only inside the sender's window. Either way the packet passes:
//! the endpoint judges it (and answers an in-window guess with a challenge ACK).

use aya_ebpf::programs::TcContext;
use egress_common::{DropReason, FlowEntry, Stat, csum::Delta, flow::Addr, tcp_seen};

use crate::shared::{
    metrics,
    parse::{self, TcpHdr},
};

const FLAG_SYN: u8 = 0x02;
const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
/// Options scanned before giving up on finding the MSS (Linux and the BSDs put it first).
const MAX_OPTIONS: usize = 8;
/// How far beyond a direction's `seq_end` a segment may start and still move it (and a FIN
/// still count): four 64 KiB GSO segments of reordering ahead of the router.
const SEQ_WINDOW: u32 = 1 << 18;

/// A TCP segment as conntrack tracks it.
#[derive(Clone, Copy, Default)]
pub(crate) struct Seg {
    /// The [`tcp_seen::FLAGS`] bits of the header.
    pub(crate) flags: u8,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    /// The sequence number after the segment: `seq` + payload + SYN + FIN.
    pub(crate) end: u32,
    /// Whether `seq`, `ack` and `end` are known: not for a fragment, whose payload length
    /// is not the segment's.
    pub(crate) numbers: bool,
}

/// The segment of the TCP header at `l4` (20 bytes the caller made linear) of an IP
/// packet of `ip_len` bytes from the start of its IP header; a fragment's numbers are not
/// the segment's.
#[inline(always)]
pub(crate) fn segment(
    ctx: &TcContext,
    l4: usize,
    ip_len: u32,
    fragment: bool,
) -> Result<Seg, DropReason> {
    let tcp = parse::ptr_at::<TcpHdr>(ctx, l4)?;
    // SAFETY: bounds checked by ptr_at.
    let tcp = unsafe { &*tcp };
    let flags = tcp.flags & tcp_seen::FLAGS;
    let headers = (l4 - crate::shared::parse::ETH_HLEN) as u32 + u32::from(tcp.doff >> 4) * 4;
    let len = ip_len;
    let seq = u32::from_be(tcp.seq);
    let payload = len.saturating_sub(headers);
    let syn_fin = u32::from(flags & tcp_seen::SYN != 0) + u32::from(flags & tcp_seen::FIN != 0);
    Ok(Seg {
        flags,
        seq,
        ack: u32::from_be(tcp.ack),
        end: seq.wrapping_add(payload).wrapping_add(syn_fin),
        numbers: !fragment && headers <= len,
    })
}

/// `a` comes after `b` in sequence space.
#[inline(always)]
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// What the receiver of a segment has told conntrack: its next sequence number and its
/// highest acknowledgement, valid with the [`tcp_seen::SEQ_KNOWN`] and
/// [`tcp_seen::ACK_KNOWN`] bits of `known`. (Plain fields, not options: an `Option<u32>`
/// here compiles to a read of an uninitialised register that the verifier refuses.)
#[derive(Clone, Copy, Default)]
pub(crate) struct Receiver {
    pub(crate) known: u8,
    pub(crate) seq_end: u32,
    pub(crate) ack_max: u32,
}

impl Receiver {
    /// The receiver as the entry of its direction records it.
    #[inline(always)]
    pub(crate) fn of<A: Addr>(entry: &FlowEntry<A>) -> Self {
        Self {
            known: entry.tcp_flags & (tcp_seen::SEQ_KNOWN | tcp_seen::ACK_KNOWN),
            seq_end: entry.seq_end,
            ack_max: entry.ack_max,
        }
    }
}

/// Records a segment in its sender's entry `e` and returns the flags that take effect. A
/// RST takes effect with the receiver's last acknowledgement or the sender's next sequence
/// number as its sequence number (or, before the sender sent anything, acknowledging the
/// receiver's SYN); a FIN inside the sender's window. `receiver` is asked only for a RST.
/// `acks`: whether `e` keeps its sender's acknowledgements (a pod's own connection has one
/// entry, whose `ack_max` is the pod's, written on the way out).
#[inline(always)]
pub(crate) fn track<A: Addr>(
    e: &mut FlowEntry<A>,
    seg: &Seg,
    acks: bool,
    receiver: impl FnOnce() -> Receiver,
) -> u8 {
    let mut flags = seg.flags;
    let sent = e.tcp_flags & tcp_seen::SEQ_KNOWN != 0;
    if !seg.numbers {
        // A fragment: no sequence numbers to judge by, so it closes nothing.
        if flags & tcp_seen::RST != 0 {
            metrics::count(Stat::TcpRstIgnored, 0);
        } else if flags & tcp_seen::FIN != 0 {
            metrics::count(Stat::TcpFinIgnored, 0);
        }
        return flags & !(tcp_seen::RST | tcp_seen::FIN);
    }
    if flags & tcp_seen::RST != 0 {
        let r = receiver();
        let valid = if r.known & tcp_seen::ACK_KNOWN != 0 && seg.seq == r.ack_max {
            true
        } else if sent {
            seg.seq == e.seq_end
        } else if r.known & tcp_seen::SEQ_KNOWN != 0 {
            flags & tcp_seen::ACK != 0 && seg.ack == r.seq_end
        } else {
            // Nothing known either way (a flow taken over from an earlier release).
            true
        };
        if !valid {
            metrics::count(Stat::TcpRstIgnored, 0);
            flags &= !tcp_seen::RST;
        }
        // A RST carries no data to track.
        return flags;
    }
    // Inside the window: starts at most SEQ_WINDOW ahead of what was sent, ends after it.
    let in_window =
        !after(seg.seq, e.seq_end.wrapping_add(SEQ_WINDOW)) && after(seg.end, e.seq_end);
    // A FIN that ends exactly where the sender is (a retransmission) still counts.
    if flags & tcp_seen::FIN != 0 && sent && !in_window && seg.end != e.seq_end {
        metrics::count(Stat::TcpFinIgnored, 0);
        flags &= !tcp_seen::FIN;
    }
    if !sent || in_window {
        e.seq_end = seg.end;
        e.tcp_flags |= tcp_seen::SEQ_KNOWN;
    }
    if acks {
        record_ack(e, seg);
    }
    flags
}

/// Records a segment's acknowledgement in `e` when it is the highest its sender sent.
#[inline(always)]
pub(crate) fn record_ack<A: Addr>(e: &mut FlowEntry<A>, seg: &Seg) {
    if seg.numbers
        && seg.flags & tcp_seen::ACK != 0
        && (e.tcp_flags & tcp_seen::ACK_KNOWN == 0 || after(seg.ack, e.ack_max))
    {
        e.ack_max = seg.ack;
        e.tcp_flags |= tcp_seen::ACK_KNOWN;
    }
}

/// Lowers the MSS option of a SYN (or SYN-ACK) to `clamp`. Returns the checksum difference
/// of the change (zero when nothing changed).
#[inline(always)]
pub(crate) fn clamp_mss(ctx: &TcContext, l4: usize, clamp: u16) -> Result<Delta, DropReason> {
    let mut delta = Delta::default();
    let tcp = parse::ptr_at::<TcpHdr>(ctx, l4)?;
    // SAFETY: bounds checked by ptr_at.
    let (doff, flags) = unsafe { ((*tcp).doff, (*tcp).flags) };
    if flags & FLAG_SYN == 0 || clamp == 0 {
        return Ok(delta);
    }
    let hdr_len = usize::from(doff >> 4) * 4;
    if hdr_len <= 20 {
        return Ok(delta);
    }
    parse::ensure(ctx, l4 + hdr_len)?;
    let end = l4 + hdr_len;
    let mut off = l4 + 20;
    for _ in 0..MAX_OPTIONS {
        if off + 1 > end {
            break;
        }
        // Kind and length together: a one-byte read at a variable offset gives the verifier
        // no usable range check. An option cut off by the end of the packet ends the scan.
        let Ok(opt) = parse::ptr_at::<[u8; 2]>(ctx, off) else {
            break;
        };
        // SAFETY: bounds checked by ptr_at.
        let [kind, len] = unsafe { *opt };
        let len = usize::from(len);
        if kind == OPT_EOL {
            break;
        }
        if kind == OPT_NOP {
            off += 1;
            continue;
        }
        if kind == OPT_MSS && len == 4 {
            if off + 4 > end {
                break;
            }
            let mss = parse::ptr_at::<u16>(ctx, off + 2)?;
            // SAFETY: bounds checked by ptr_at.
            let mss = unsafe { &mut *mss };
            if u16::from_be(*mss) > clamp {
                let new = clamp.to_be();
                // The checksum sums 16-bit words from the start of the TCP header: a value
                // at an odd offset straddles two words, i.e. counts byte-swapped.
                if (off + 2 - l4) & 1 == 0 {
                    delta.u16(*mss, new);
                } else {
                    delta.u16((*mss).swap_bytes(), new.swap_bytes());
                }
                *mss = new;
            }
            break;
        }
        if len < 2 {
            break;
        }
        off += len;
    }
    Ok(delta)
}
