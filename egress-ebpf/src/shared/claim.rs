//! Holding EGRESS_SOURCE on the egress network (pod mode): ARP that concerns the address.
//!
//! Another router with the same EGRESS_SOURCE uses the same (stable) MAC, so its probe is
//! answered by the stack with a unicast reply to that MAC, which the switch delivers back
//! to this router's port: the newcomer never hears it. The data plane answers instead,
//! with a broadcast ARP reply from this router's MAC that carries its claim
//! ([`egress_common::ClaimId`]) in the trailer, which every port hears; and it answers
//! another host's claim of the address (a reply or an announcement) the same way, so that
//! two routers holding one address learn of each other and the younger steps down
//! (the agent decides, from the rival recorded at [`CLAIM_RIVAL`]). Both answers are
//! rate-limited; beyond the rate, the frame goes to the stack as it would without this.

use aya_ebpf::{
    btf_maps::Array,
    helpers::generated::{bpf_ktime_get_ns, bpf_skb_change_tail},
    macros::btf_map,
    programs::TcContext,
};
use egress_common::{
    ANSWER_GAP_NS, ARP_TRAILER_OFFSET, CLAIM_OURS, CLAIM_RIVAL, Claim, DEFEND_GAP_NS, DropReason,
    RouterConfig, Stat, TRAILER_LEN, claim_flags,
};

use crate::shared::{
    metrics::{self, Verdict},
    parse::{self, EthHdr},
};

/// This router's claim and the last rival's ([`egress_common::maps::CLAIM`]).
#[btf_map]
static CLAIM: Array<Claim, 2> = Array::new();

const ETH_P_ARP: u16 = 0x0806;
/// Hardware type Ethernet, protocol type IPv4, their address lengths.
const ARP_ETH_IPV4: [u8; 6] = [0, 1, 8, 0, 6, 4];
const OP_REQUEST: [u8; 2] = [0, 1];
const OP_REPLY: [u8; 2] = [0, 2];

/// The ARP payload for IPv4 over Ethernet.
#[repr(C)]
struct Arp {
    head: [u8; 6],
    op: [u8; 2],
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
}

/// An ARP frame as it arrives.
#[repr(C)]
struct ArpFrame {
    eth: EthHdr,
    arp: Arp,
}

/// Our answer: the frame rewritten, and the claim trailer.
#[repr(C)]
struct Answer {
    eth: EthHdr,
    arp: Arp,
    trailer: Trailer,
}

/// Whether the frame is ARP.
#[inline(always)]
pub(crate) fn is_arp(ctx: &TcContext) -> bool {
    match parse::ptr_at::<EthHdr>(ctx, 0) {
        // SAFETY: bounds checked by ptr_at.
        Ok(eth) => (unsafe { (*eth).proto }) == ETH_P_ARP.to_be(),
        Err(_) => false,
    }
}

/// The verdict on an ARP frame that arrived on the egress interface: a probe for
/// EGRESS_SOURCE or another host's claim of it is answered by a broadcast claim of ours
/// (sent back out of the egress interface); everything else, and everything before the
/// set-up wrote our claim, goes to the stack. (A frame whose trailer is not in the linear
/// data counts as one without: ARP frames are tiny and always linear.)
#[inline(always)]
pub(crate) fn arp(ctx: &TcContext, cfg: &RouterConfig) -> Result<Verdict, DropReason> {
    match handle(ctx, cfg.egress_source) {
        Handled::Stack => Ok(Verdict::Pass(Stat::EgressIngressPassed)),
        // `exit::pod` sends it as it is (no neighbour resolution) by its counter.
        Handled::Answer => Ok(Verdict::Redirect(cfg.egress_ifindex, Stat::ClaimDefended)),
    }
}

/// What [`handle`] did with the frame.
#[repr(u32)]
enum Handled {
    /// Left it for the stack.
    Stack,
    /// Rewrote it into our answer.
    Answer,
}

/// The work of [`arp`], inlined: as a call of its own, its frame on top of
/// `egress_ingress`'s and the helpers' would pass the 512 bytes Linux 5.15 and 6.1 allow a
/// chain of calls (newer kernels count it more finely). The frame is read and written in
/// place, not copied, so it adds little to the program's own.
#[inline(always)]
fn handle(ctx: &TcContext, source: [u8; 4]) -> Handled {
    let Ok(frame) = parse::ptr_at::<ArpFrame>(ctx, 0) else {
        return Handled::Stack;
    };
    // SAFETY: bounds checked by ptr_at; read before the frame changes.
    let (head, op, sha, spa, tpa) = unsafe {
        let arp = &(*frame).arp;
        (arp.head, arp.op, arp.sha, arp.spa, arp.tpa)
    };
    if head != ARP_ETH_IPV4 || source == [0; 4] {
        return Handled::Stack;
    }
    let probe = op == OP_REQUEST && spa == [0; 4] && tpa == source;
    if !probe && spa != source {
        return Handled::Stack;
    }
    let Some(ours) = CLAIM.get_ptr_mut(CLAIM_OURS) else {
        return Handled::Stack;
    };
    // SAFETY: an array slot; the races of two CPUs on the times are harmless (one more or
    // one fewer answer).
    let ours = unsafe { &mut *ours };
    if ours.claimed_at_ms == 0 {
        return Handled::Stack;
    }
    // SAFETY: bounds checked by ptr_at above; the frame is unchanged since.
    let from = unsafe { (*frame).eth.src };
    let trailer = trailer_of(ctx, from, sha);
    // Our own frame, reflected back to us (a hairpin, a VEPA relay): not a rival.
    if trailer == Some((ours.claimed_at_ms, ours.nonce)) {
        return Handled::Stack;
    }
    // SAFETY: no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    metrics::count(Stat::ClaimContested, ctx.len());
    let older = match trailer {
        Some((at, nonce)) => !probe && (at, nonce) < (ours.claimed_at_ms, ours.nonce),
        None => false,
    };
    record_rival(sha, probe, trailer, now);
    // An older claim than ours is not answered: the younger router stays quiet and steps
    // down (user space decides), so that the last frame from the shared MAC the switch
    // sees is the owner's.
    if older {
        return Handled::Stack;
    }
    // Probes and younger routers' claims share the fast budget (a router starting must
    // hear the owner within its announcement's wait); claims without a trailer (a host)
    // the slow one.
    let fast = probe || trailer.is_some();
    let last = if fast { ours.at_ns } else { ours.defended_ns };
    let gap = if fast { ANSWER_GAP_NS } else { DEFEND_GAP_NS };
    if last != 0 && now.wrapping_sub(last) < gap {
        return Handled::Stack;
    }
    if answer(ctx, ours, source, sha, spa).is_none() {
        // Not resized, so not written: the stack answers it, and the budget is unspent.
        return Handled::Stack;
    }
    if fast {
        ours.at_ns = now;
    } else {
        ours.defended_ns = now;
    }
    Handled::Answer
}

/// The claim a frame's trailer carries, as (time, nonce): only from a frame whose
/// Ethernet source is its ARP sender (a router sends its claims so), and with a time (0 is
/// no claim's). Read from the packet in place: no copy on the stack.
#[inline(always)]
fn trailer_of(ctx: &TcContext, from: [u8; 6], sha: [u8; 6]) -> Option<(u64, u32)> {
    if from != sha {
        return None;
    }
    let trailer = parse::ptr_at::<Trailer>(ctx, ARP_TRAILER_OFFSET).ok()?;
    // SAFETY: bounds checked by ptr_at.
    let (magic, at, nonce) = unsafe { ((*trailer).magic, (*trailer).at, (*trailer).nonce) };
    if magic != egress_common::claim::TRAILER_MAGIC {
        return None;
    }
    let at = u64::from_be_bytes(at);
    (at != 0).then_some((at, u32::from_be_bytes(nonce)))
}

/// The claim trailer as it sits in a frame.
#[repr(C)]
struct Trailer {
    magic: [u8; 4],
    at: [u8; 8],
    nonce: [u8; 4],
}

/// How long a recorded router's claim is kept against later frames: one a probe or a
/// host's frame does not replace, so the agent (which looks every second) sees it.
const RIVAL_KEPT_NS: u64 = 10_000_000_000;

/// Records the claimant (`sha`) as the last rival, with the claim its trailer carries. A
/// router's claim recorded in the last [`RIVAL_KEPT_NS`] is replaced only by an older one.
#[inline(always)]
fn record_rival(sha: [u8; 6], probe: bool, trailer: Option<(u64, u32)>, now: u64) {
    let Some(rival) = CLAIM.get_ptr_mut(CLAIM_RIVAL) else {
        return;
    };
    // SAFETY: an array slot; two CPUs recording at once leave one rival or a mix of two,
    // which the agent reads as one more rival (it steps down only for an older claim of
    // the shared MAC).
    let rival = unsafe { &mut *rival };
    let kept = rival.flags & claim_flags::TRAILER != 0
        && rival.flags & claim_flags::PROBE == 0
        && now.wrapping_sub(rival.at_ns) < RIVAL_KEPT_NS;
    if kept {
        let older = match trailer {
            Some((at, nonce)) => !probe && (at, nonce) < (rival.claimed_at_ms, rival.nonce),
            None => false,
        };
        if !older {
            return;
        }
    }
    rival.flags = if probe { claim_flags::PROBE } else { 0 };
    rival.mac = sha;
    (rival.claimed_at_ms, rival.nonce) = trailer.unwrap_or((0, 0));
    if trailer.is_some() {
        rival.flags |= claim_flags::TRAILER;
    }
    rival.at_ns = now;
}

/// Rewrites the frame into our broadcast claim: an ARP reply from our MAC for
/// EGRESS_SOURCE to the claimant (`sha`, `spa`), with our claim in the trailer. None: the
/// frame could not be resized.
#[inline(always)]
fn answer(
    ctx: &TcContext,
    ours: &Claim,
    source: [u8; 4],
    sha: [u8; 6],
    spa: [u8; 4],
) -> Option<()> {
    let frame_len = (ARP_TRAILER_OFFSET + TRAILER_LEN) as u32;
    // SAFETY: the context's own skb.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, frame_len, 0) } != 0 {
        return None;
    }
    ctx.pull_data(frame_len).ok()?;
    let out = parse::ptr_at::<Answer>(ctx, 0).ok()?;
    // SAFETY: bounds checked by ptr_at, after the resize.
    unsafe {
        (*out).eth.dst = [0xff; 6];
        (*out).eth.src = ours.mac;
        (*out).arp.op = OP_REPLY;
        (*out).arp.sha = ours.mac;
        (*out).arp.spa = source;
        (*out).arp.tha = sha;
        (*out).arp.tpa = spa;
        (*out).trailer.magic = egress_common::claim::TRAILER_MAGIC;
        (*out).trailer.at = ours.claimed_at_ms.to_be_bytes();
        (*out).trailer.nonce = ours.nonce.to_be_bytes();
    }
    Some(())
}
