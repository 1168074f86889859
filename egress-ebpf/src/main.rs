//! egress-router data plane. This file holds only the entry programs; each concern lives in
//! its own module (see ../shared/design.md).
#![no_std]
#![no_main]

mod metrics;

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use egress_common::Stat;

/// TC ingress of the pod interface: client -> remote.
///
/// First light: count every packet and hand it to the stack. NAT arrives with redirect mode.
#[classifier]
pub fn pod_ingress(ctx: TcContext) -> i32 {
    metrics::count(Stat::PodIngressSeen, ctx.len());
    metrics::count(Stat::PodIngressPassed, ctx.len());
    TC_ACT_OK
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
