//! Reference programs of the benchmarks (`cargo xtask bench`), never attached by the
//! product. They live in the same object so that they are built with the same toolchain and
//! flags and share its CONFIG map (through `config`, not the product's entry file).
//!
//! - `lab_forward`: the lab's ceiling. It sends every IPv4 frame arriving on the pod
//!   interface out of the egress interface with the same helper the data plane uses, and
//!   nothing else: no parsing beyond the EtherType, no NAT, no conntrack, no counters.
//! - `lab_return`: the same the other way, from the egress interface to the pod interface,
//!   for the ceiling's connections in the per-core mode.
//! - `lab_noop`: returns at once; its BPF_PROG_TEST_RUN time is the harness's own cost,
//!   subtracted from the data plane's.
//! - `lab_xdp_gen`, `lab_xdp_pass` and `lab_sink`: the per-core bench mode's traffic
//!   generator, the receiving veth's NAPI switch, and the end of the router's output (see
//!   each).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    btf_maps::{Array, PerCpuArray},
    helpers::generated::{bpf_get_prandom_u32, bpf_loop, bpf_redirect},
    macros::{btf_map, classifier, xdp},
    programs::{TcContext, XdpContext},
};
use egress_common::maps::LAB_FRAME_LEN;

use crate::shared::{config, fib, parse};

/// The stateless forwarder: IPv4 goes out of the configured egress interface, the rest
/// (ARP) to the stack; unconfigured, IPv4 is dropped.
#[classifier]
pub(crate) fn lab_forward(ctx: TcContext) -> i32 {
    forward_ipv4(&ctx, config::egress_ifindex())
}

/// The stateless forwarder's way back, on the egress interface's ingress: IPv4 goes out of
/// the pod interface, the rest to the stack. With it the ceiling's connections cost the
/// router the same kind of work both ways, and no kernel forwarding.
#[classifier]
pub(crate) fn lab_return(ctx: TcContext) -> i32 {
    forward_ipv4(&ctx, config::pod_ifindex())
}

#[inline(always)]
fn forward_ipv4(ctx: &TcContext, to: Option<u32>) -> i32 {
    let Ok(eth) = parse::ptr_at::<parse::EthHdr>(ctx, 0) else {
        return TC_ACT_OK;
    };
    // SAFETY: bounds checked by ptr_at.
    if unsafe { (*eth).proto } != parse::ETH_P_IP.to_be() {
        return TC_ACT_OK;
    }
    match to {
        Some(ifindex) => fib::redirect_neigh(ifindex),
        None => TC_ACT_SHOT,
    }
}

/// Does nothing.
#[classifier]
pub(crate) fn lab_noop(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

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
/// in CONFIG's `egress_ifindex` (the client's veth). The kernel sends the frames in
/// batches, so the generator costs a fraction of what a socket sender does and leaves the
/// other CPU to the router.
#[xdp]
pub(crate) fn lab_xdp_gen(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + GEN_HEADERS > end {
        return xdp_action::XDP_ABORTED;
    }
    let (Some(ifindex), Some(template)) = (config::egress_ifindex(), LAB_FRAME.get(0)) else {
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
/// load's frames the router sent out, by whether their source is CONFIG's `egress_source`
/// (translated) or not, and drops them, so that no other CPU's work (the gateway's) is
/// needed to count them. Everything else passes.
#[classifier]
pub(crate) fn lab_sink(ctx: TcContext) -> i32 {
    const UDP_OFF: usize = parse::ETH_HLEN + 20;
    let Ok(eth) = parse::ptr_at::<parse::EthHdr>(&ctx, 0) else {
        return TC_ACT_OK;
    };
    // SAFETY: bounds checked by ptr_at.
    if unsafe { (*eth).proto } != parse::ETH_P_IP.to_be() {
        return TC_ACT_OK;
    }
    let (Ok(ip), Ok(ports)) = (
        parse::ptr_at::<parse::Ipv4Hdr>(&ctx, parse::ETH_HLEN),
        parse::ptr_at::<parse::Ports>(&ctx, UDP_OFF),
    ) else {
        return TC_ACT_OK;
    };
    // SAFETY: bounds checked by ptr_at.
    let (proto, saddr, dport) = unsafe { ((*ip).proto, (*ip).saddr, (*ports).dport) };
    if proto != 17 || dport != GEN_DPORT.to_be() {
        return TC_ACT_OK;
    }
    let translated = config::egress_source().is_some_and(|src| src == saddr.to_ne_bytes());
    if let Some(count) = LAB_SINK.get_ptr_mut(u32::from(!translated)) {
        // SAFETY: a per-CPU slot, written only by this CPU.
        unsafe { *count += 1 };
    }
    TC_ACT_SHOT
}
