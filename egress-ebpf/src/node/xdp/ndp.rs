//! The neighbour discovery responder: a solicitation for an IPv6 egress address is turned
//! into the solicited advertisement in place, with the uplink's MAC, and sent back out of
//! the uplink (XDP_TX).

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_csum_diff, programs::XdpContext};
use egress_common::{Stat, csum, proto};

use crate::{
    node::maps,
    shared::{
        metrics,
        parse::{self, ETH_HLEN, EthHdr},
        parse6::{IPV6_HLEN, Ipv6Hdr},
    },
};

/// Neighbour discovery's solicitation and advertisement (ICMPv6 types).
const NDISC_SOLICITATION: u8 = 135;
const NDISC_ADVERTISEMENT: u8 = 136;
/// An advertisement's flags, solicited and override, as the bytes after the checksum.
const NDISC_SOLICITED_OVERRIDE: [u8; 4] = [0x60, 0, 0, 0];
/// Neighbour discovery options: source and target link-layer address.
const NDISC_OPT_SOURCE_LLADDR: u8 = 1;
const NDISC_OPT_TARGET_LLADDR: u8 = 2;

/// A neighbour solicitation or advertisement's fixed part.
#[repr(C)]
struct Ndisc {
    kind: u8,
    code: u8,
    csum: u16,
    flags: [u8; 4],
    target: [u32; 4],
}

/// A link-layer address option for Ethernet.
#[repr(C)]
struct LlOption {
    kind: u8,
    len: u8,
    mac: [u8; 6],
}

/// A solicitation for an egress address, from an address of the link (not a duplicate
/// address probe), with nothing or its source link-layer address after it, is turned into
/// the solicited advertisement with the uplink's MAC and sent back out of the uplink.
/// `None`: not such a solicitation (or cloud mode), on to the rest of the program.
#[inline(always)]
pub(crate) fn respond(ctx: &XdpContext, ip: &mut Ipv6Hdr) -> Option<u32> {
    let eth = parse::xdp_ptr::<EthHdr>(ctx, 0)?;
    let msg = parse::xdp_ptr::<Ndisc>(ctx, ETH_HLEN + IPV6_HLEN)?;
    // SAFETY: bounds checked by xdp_ptr; the packet is this program's to rewrite.
    let (eth, msg) = unsafe { (&mut *eth, &mut *msg) };
    if msg.kind != NDISC_SOLICITATION || msg.code != 0 || ip.saddr == [0; 4] {
        return None;
    }
    // SAFETY: the target's 16 bytes, inside the message checked above.
    let target = unsafe { &*(&raw const msg.target).cast::<[u8; 16]>() };
    maps::NODE_SOURCES6.get_ptr(target)?;
    let uplink = maps::NODE_UPLINK.get(0)?;
    if uplink.arp == 0 {
        return None;
    }
    let body = size_of::<Ndisc>();
    let option = match usize::from(u16::from_be(ip.payload_len)) {
        n if n == body => None,
        n if n == body + size_of::<LlOption>() => {
            let option = parse::xdp_ptr::<LlOption>(ctx, ETH_HLEN + IPV6_HLEN + body)?;
            // SAFETY: bounds checked by xdp_ptr.
            let option = unsafe { &mut *option };
            if option.kind != NDISC_OPT_SOURCE_LLADDR || option.len != 1 {
                return None;
            }
            option.kind = NDISC_OPT_TARGET_LLADDR;
            option.mac = uplink.mac;
            Some(option)
        }
        _ => return None,
    };
    ip.daddr = ip.saddr;
    ip.saddr = msg.target;
    msg.kind = NDISC_ADVERTISEMENT;
    msg.flags = NDISC_SOLICITED_OVERRIDE;
    msg.csum = 0;
    // The checksum over the pseudo-header (addresses, length, next header) and the
    // message, as 32-bit words in memory order.
    // SAFETY: the addresses' 32 bytes and the message, inside the frame (checked above).
    let mut sum = unsafe {
        let addrs = (&raw mut ip.saddr).cast::<u32>();
        let sum = bpf_csum_diff(core::ptr::null_mut(), 0, addrs, 32, 0);
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            (&raw mut *msg).cast::<u32>(),
            body as u32,
            sum as u32,
        )
    } as u32 as u64;
    if let Some(option) = option {
        // SAFETY: the option's 8 bytes, inside the frame (checked above).
        sum = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                (&raw mut *option).cast::<u32>(),
                size_of::<LlOption>() as u32,
                sum as u32,
            )
        } as u32 as u64;
    }
    sum += u64::from(u32::from(u16::from_be(ip.payload_len)).to_be());
    sum += u64::from(u32::from(proto::ICMPV6).to_be());
    msg.csum = csum::fold(csum::wsum(sum));
    eth.dst = eth.src;
    eth.src = uplink.mac;
    metrics::count(Stat::NdiscAnswered, (ctx.data_end() - ctx.data()) as u32);
    Some(xdp_action::XDP_TX)
}
