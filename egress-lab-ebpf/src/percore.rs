//! The per-core bench mode's harness: `lab_xdp_gen`, the traffic generator (XDP, run with
//! BPF_PROG_TEST_RUN in live-frames mode), `lab_xdp_pass`, the receiving veth's NAPI switch,
//! and `lab_sink`, the end of the router's output (TC egress of the node's uplink).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    btf_maps::{Array, PerCpuArray},
    helpers::generated::{bpf_get_prandom_u32, bpf_loop, bpf_redirect},
    macros::{btf_map, classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::packet;

/// Size of [`LAB_FRAME`]'s value: at least the generator's headers (42 bytes). The tests
/// crate's `labbpf::maps::LAB_FRAME_LEN` (aya checks the two agree when it opens the map).
const LAB_FRAME_LEN: usize = 64;

/// The generator's template frame (Ethernet, IPv4, UDP), written by the bench.
#[btf_map]
static LAB_FRAME: Array<[u8; LAB_FRAME_LEN], 1> = Array::new();

/// The generator's pacing: iterations of an empty `bpf_loop` before each frame (0: none).
/// The bench tunes it during the warm-up so that the generator offers a little more than
/// the router takes. Pacing by dropping frames instead made the generator return most of
/// its pages to its page pool's ring, under the lock the router core takes to return the
/// pages of the frames it sent: 25 % of the router core went to that lock.
#[btf_map]
static LAB_PACE: Array<u32, 1> = Array::new();

/// The per-core sink's counts: [translated, untranslated] frames of the UDP load.
#[btf_map]
static LAB_SINK: PerCpuArray<u64, 2> = PerCpuArray::new();

/// First UDP source port of the generator's flows, and how many there are (a power of
/// two): the same 2048 flows as the bench's trafgen load.
const GEN_SPORT_MIN: u16 = 10_000;
/// The UDP load's destination port (the bench's `UDP_PORT`).
const GEN_DPORT: u16 = 5001;
const GEN_FLOWS: u32 = 2048;
/// Offset of the UDP source port in the generator's frame (Ethernet, IPv4 without options).
const GEN_SPORT_OFF: usize = 14 + 20;
/// The headers the generator writes into every frame: Ethernet, IPv4, UDP.
const GEN_HEADERS: usize = 14 + 20 + 8;

/// The per-core bench mode's generator, run by BPF_PROG_TEST_RUN in live-frames mode on
/// the generator's CPU: each run writes LAB_FRAME's headers into the frame (the router
/// rewrites them in place, and the kernel hands the same pages back to the generator
/// without resetting their data), gives it a random one of the 2048 UDP source ports (the
/// UDP checksum is 0, "none", so nothing else changes) and sends it out of the interface
/// in LAB_CONFIG's `egress_ifindex` (the client's veth). The kernel sends the frames in
/// batches, so the generator costs a fraction of what a socket sender does and leaves the
/// other CPU to the router.
#[xdp]
pub(crate) fn lab_xdp_gen(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + GEN_HEADERS > end {
        return xdp_action::XDP_ABORTED;
    }
    let (Some(ifindex), Some(template)) = (packet::egress_ifindex(), LAB_FRAME.get(0)) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: the frame holds GEN_HEADERS bytes (checked above), the template
    // LAB_FRAME_LEN >= GEN_HEADERS.
    unsafe {
        core::ptr::copy_nonoverlapping(template.as_ptr(), data as *mut u8, GEN_HEADERS);
    }
    if let Some(&spins) = LAB_PACE.get(0)
        && spins > 0
    {
        // SAFETY: a callback with the helper's signature and no context.
        unsafe {
            bpf_loop(
                spins,
                pace_step as *const () as *mut c_void,
                core::ptr::null_mut(),
                0,
            )
        };
    }
    // SAFETY: no arguments; returns a number.
    let flow = unsafe { bpf_get_prandom_u32() } % GEN_FLOWS;
    let port = (GEN_SPORT_MIN + flow as u16).to_be_bytes();
    // SAFETY: bounds checked above against data_end.
    unsafe { core::ptr::write_unaligned((data + GEN_SPORT_OFF) as *mut [u8; 2], port) };
    // SAFETY: plain helper call; XDP_REDIRECT when the target exists, XDP_ABORTED if not.
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

/// One step of the generator's pacing: nothing.
#[inline(never)]
extern "C" fn pace_step(_index: u32, _ctx: *mut c_void) -> i64 {
    0
}

/// Passes every frame: attached to the router pod's veth in the per-core bench mode, for
/// all three variants alike, because a veth receives in NAPI (and can hand that work to a
/// kernel thread on the router's CPU) only while an XDP program is attached.
#[xdp]
pub(crate) fn lab_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The per-core mode's end of the line, on the node's uplink (TC egress): counts the UDP
/// load's frames the router sent out, by whether their source is LAB_CONFIG's `egress_source`
/// (translated) or not, and drops them, so that no other CPU's work (the gateway's) is
/// needed to count them. Everything else passes.
#[classifier]
pub(crate) fn lab_sink(ctx: TcContext) -> i32 {
    const UDP_OFF: usize = packet::ETH_HLEN + 20;
    let Some(eth) = packet::ptr_at::<packet::EthHdr>(&ctx, 0) else {
        return TC_ACT_OK;
    };
    // SAFETY: bounds checked by ptr_at.
    if unsafe { (*eth).proto } != packet::ETH_P_IP.to_be() {
        return TC_ACT_OK;
    }
    let (Some(ip), Some(ports)) = (
        packet::ptr_at::<packet::Ipv4Hdr>(&ctx, packet::ETH_HLEN),
        packet::ptr_at::<packet::Ports>(&ctx, UDP_OFF),
    ) else {
        return TC_ACT_OK;
    };
    // SAFETY: bounds checked by ptr_at.
    let (proto, saddr, dport) = unsafe { ((*ip).proto, (*ip).saddr, (*ports).dport) };
    if proto != 17 || dport != GEN_DPORT.to_be() {
        return TC_ACT_OK;
    }
    let translated = packet::egress_source().is_some_and(|src| src == saddr.to_ne_bytes());
    if let Some(count) = LAB_SINK.get_ptr_mut(u32::from(!translated)) {
        // SAFETY: a per-CPU slot, written only by this CPU.
        unsafe { *count += 1 };
    }
    TC_ACT_SHOT
}
