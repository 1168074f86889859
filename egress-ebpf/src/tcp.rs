//! TCP specifics: the flags conntrack keeps, and the MSS clamp on SYNs.

use aya_ebpf::programs::TcContext;
use egress_common::{DropReason, csum::Delta, tcp_seen};

use crate::parse::{TcpHdr, ensure, ptr_at};

const FLAG_SYN: u8 = 0x02;
const TRACKED: u8 = tcp_seen::FIN | tcp_seen::SYN | tcp_seen::RST | tcp_seen::ACK;
const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
/// Options scanned before giving up on finding the MSS (Linux and the BSDs put it first).
const MAX_OPTIONS: usize = 8;

/// The TCP flags conntrack records, from the header at `l4`.
#[inline(always)]
pub(crate) fn flags(ctx: &TcContext, l4: usize) -> Result<u8, DropReason> {
    let tcp = ptr_at::<TcpHdr>(ctx, l4)?;
    // SAFETY: bounds checked by ptr_at.
    Ok(unsafe { (*tcp).flags } & TRACKED)
}

/// Lowers the MSS option of a SYN (or SYN-ACK) to `clamp`. Returns the checksum difference
/// of the change (zero when nothing changed).
#[inline(always)]
pub(crate) fn clamp_mss(ctx: &TcContext, l4: usize, clamp: u16) -> Result<Delta, DropReason> {
    let mut delta = Delta::default();
    let tcp = ptr_at::<TcpHdr>(ctx, l4)?;
    // SAFETY: bounds checked by ptr_at.
    let (doff, flags) = unsafe { ((*tcp).doff, (*tcp).flags) };
    if flags & FLAG_SYN == 0 || clamp == 0 {
        return Ok(delta);
    }
    let hdr_len = usize::from(doff >> 4) * 4;
    if hdr_len <= 20 {
        return Ok(delta);
    }
    ensure(ctx, l4 + hdr_len)?;
    let end = l4 + hdr_len;
    let mut off = l4 + 20;
    for _ in 0..MAX_OPTIONS {
        if off + 1 > end {
            break;
        }
        // Kind and length together: a one-byte read at a variable offset gives the verifier
        // no usable range check. An option cut off by the end of the packet ends the scan.
        let Ok(opt) = ptr_at::<[u8; 2]>(ctx, off) else {
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
            let mss = ptr_at::<u16>(ctx, off + 2)?;
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
