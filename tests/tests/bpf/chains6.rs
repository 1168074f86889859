//! Random IPv6 extension-header chains (seeded, bounded) through the IPv6 programs, as an
//! attacker on either side would send them: hop-by-hop, routing, destination options,
//! authentication and fragment headers in any order and number, with lengths that fit or
//! overrun, before TCP, UDP, ICMPv6 or nothing, some frames cut short or with a payload
//! length that lies. Whatever the chain:
//!
//! - from the egress network (no flow asked for anything): nothing is redirected toward the
//!   pod, nothing is tracked;
//! - from a client: what is redirected leaves from EGRESS_SOURCE to the fallback, with the
//!   hop limit decremented, and with a valid transport checksum when the client's was;
//! - every frame gets exactly one verdict or one typed drop.

use egress_common::{Stat, programs};
use egress_tests::{
    pktgen::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, try_run, verdicts},
    pktgen6::{CLIENT6, FALLBACK6, POD6, SERVER6, SOURCE6, dataplane6, frame6, header6},
};
use etherparse::{IpNumber, Ipv6Header, TcpHeader, UdpHeader};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

const SEED: u64 = 0x6e61_7436_3636;
const FRAMES: usize = 3000;

/// One generated frame: the bytes, where the transport header starts, its protocol, and
/// whether the frame is as generated (checksums valid, lengths true).
struct Chain {
    frame: Vec<u8>,
    l4: usize,
    proto: u8,
    clean: bool,
}

/// A random chain of up to six extension headers before a TCP SYN, a UDP datagram, an
/// ICMPv6 echo or no transport header, from `src` to `dst`.
fn chain(rng: &mut StdRng, src: [u8; 16], dst: [u8; 16]) -> Chain {
    let count = rng.random_range(0..=6);
    let kinds: Vec<u8> = (0..count)
        .map(|_| [0, 43, 60, 51, 44][rng.random_range(0..5)])
        .collect();
    let (proto, upper) = match rng.random_range(0..4) {
        0 => (6, tcp(src, dst, rng.random())),
        1 => (17, udp(src, dst, rng.random())),
        2 => (58, echo(src, dst, rng.random())),
        _ => (59, Vec::new()),
    };
    let mut ext = Vec::new();
    for (i, &kind) in kinds.iter().enumerate() {
        let next = kinds.get(i + 1).copied().unwrap_or(proto);
        match kind {
            44 => {
                // Offset 0 without M most of the time (an atomic fragment), else anything.
                let off: u16 = if rng.random_ratio(3, 4) {
                    0
                } else {
                    rng.random()
                };
                let [a, b] = off.to_be_bytes();
                ext.extend_from_slice(&[next, 0, a, b, 0, 0, 0x12, 0x34]);
            }
            51 => {
                let len = rng.random_range(1..4u8);
                ext.extend_from_slice(&[next, len]);
                ext.resize(ext.len() + (usize::from(len) + 2) * 4 - 2, 0);
            }
            _ => {
                let len = rng.random_range(0..3u8);
                ext.extend_from_slice(&[next, len]);
                ext.resize(ext.len() + (usize::from(len) + 1) * 8 - 2, 1);
            }
        }
    }
    let first = kinds.first().copied().unwrap_or(proto);
    let hop_limit = if rng.random_ratio(1, 10) {
        rng.random_range(0..3)
    } else {
        64
    };
    let mut frame = frame6(src, dst, IpNumber(first), hop_limit, &ext, &upper);
    let l4 = 14 + 40 + ext.len();
    let mut clean = true;
    if rng.random_ratio(1, 10) {
        // The payload length lies.
        let at = 14 + 4;
        let len: u16 = rng.random();
        frame[at..at + 2].copy_from_slice(&len.to_be_bytes());
        clean = false;
    }
    if rng.random_ratio(1, 10) {
        // Not below the fixed header: BPF_PROG_TEST_RUN refuses an IPv6 frame under 54
        // bytes (the kernel's own IPv6 receive would drop it too).
        frame.truncate(rng.random_range(54..=frame.len()));
        clean = false;
    }
    if rng.random_ratio(1, 20) {
        let at = rng.random_range(14..frame.len());
        frame[at] ^= 1 << rng.random_range(0..8);
        clean = false;
    }
    Chain {
        frame,
        l4,
        proto,
        clean,
    }
}

fn tcp(src: [u8; 16], dst: [u8; 16], sport: u16) -> Vec<u8> {
    let mut tcp = TcpHeader::new(sport | 1024, 8080, 1, 64240);
    tcp.syn = true;
    tcp.checksum = tcp
        .calc_checksum_ipv6(&header6(src, dst, IpNumber::TCP, 20), &[])
        .unwrap();
    tcp.to_bytes().to_vec()
}

fn udp(src: [u8; 16], dst: [u8; 16], sport: u16) -> Vec<u8> {
    let ip = header6(src, dst, IpNumber::UDP, 12);
    let udp = UdpHeader::with_ipv6_checksum(sport | 1024, 5353, &ip, b"fuzz").unwrap();
    let mut out = udp.to_bytes().to_vec();
    out.extend_from_slice(b"fuzz");
    out
}

fn echo(src: [u8; 16], dst: [u8; 16], id: u16) -> Vec<u8> {
    let kind = etherparse::Icmpv6Type::EchoRequest(etherparse::IcmpEchoHeader { id, seq: 1 });
    let icmp = etherparse::Icmpv6Header::with_checksum(kind, src, dst, b"fuzz").unwrap();
    let mut out = icmp.to_bytes().to_vec();
    out.extend_from_slice(b"fuzz");
    out
}

/// The transport checksum of an output whose transport header is at `l4`, recomputed over
/// the pseudo-header, against the one it carries.
fn transport_checksum_valid(out: &[u8], l4: usize, proto: u8) -> bool {
    let (ip, _) = Ipv6Header::from_slice(&out[14..]).unwrap();
    let upper = &out[l4..];
    let header = header6(ip.source, ip.destination, IpNumber(proto), upper.len());
    match proto {
        6 => {
            let (tcp, data) = TcpHeader::from_slice(upper).unwrap();
            tcp.checksum == tcp.calc_checksum_ipv6(&header, data).unwrap()
        }
        17 => {
            let (udp, data) = UdpHeader::from_slice(upper).unwrap();
            udp.checksum == udp.calc_checksum_ipv6(&header, data).unwrap()
        }
        58 => {
            let (icmp, data) = etherparse::Icmpv6Header::from_slice(upper).unwrap();
            let again = etherparse::Icmpv6Header::with_checksum(
                icmp.icmp_type,
                ip.source,
                ip.destination,
                data,
            )
            .unwrap();
            icmp.checksum == again.checksum
        }
        _ => true,
    }
}

#[test]
fn random_extension_header_chains_get_nowhere_unasked_and_translate_cleanly() {
    let mut rng = StdRng::seed_from_u64(SEED);
    // Two data planes, so that nothing the client side creates can be what the egress
    // side's frames match.
    let mut inbound = dataplane6(&[], Some(FALLBACK6));
    let mut outbound = dataplane6(&[], Some(FALLBACK6));
    let (mut redirected, mut dropped, mut errors) = (0, 0, 0);
    for n in 0..FRAMES {
        let c = chain(&mut rng, SERVER6, SOURCE6);
        let (verdict, _) = try_run(&mut inbound, programs::EGRESS_INGRESS6, &c.frame)
            .unwrap_or_else(|e| {
                panic!("frame {n}: {e}, {} bytes, {:02x?}", c.frame.len(), c.frame)
            });
        assert!(
            verdict == TC_ACT_OK || verdict == TC_ACT_SHOT,
            "frame {n} from the egress network: verdict {verdict}, {:02x?}",
            c.frame
        );

        let c = chain(&mut rng, CLIENT6, POD6);
        let (verdict, out) = try_run(&mut outbound, programs::POD_INGRESS6, &c.frame)
            .unwrap_or_else(|e| {
                panic!("frame {n}: {e}, {} bytes, {:02x?}", c.frame.len(), c.frame)
            });
        match verdict {
            TC_ACT_REDIRECT if c.frame[14 + 7] <= 1 => {
                // The hop limit ran out at the router: Time Exceeded back to the frame's
                // source (the client's, or a flipped bit of it), from the pod, with a
                // valid checksum.
                let (ip, _) = Ipv6Header::from_slice(&out[14..]).unwrap();
                assert_eq!(ip.source, POD6, "frame {n}");
                assert_eq!(&ip.destination, &c.frame[14 + 8..14 + 24], "frame {n}");
                assert_eq!(out[14 + 40], 3, "frame {n}: Time Exceeded");
                assert!(transport_checksum_valid(&out, 14 + 40, 58), "frame {n}");
                errors += 1;
            }
            TC_ACT_REDIRECT => {
                redirected += 1;
                let (ip, _) = Ipv6Header::from_slice(&out[14..]).unwrap();
                assert_eq!(
                    (ip.source, ip.destination),
                    (SOURCE6, FALLBACK6),
                    "frame {n}"
                );
                assert_eq!(ip.hop_limit, c.frame[14 + 7] - 1, "frame {n}");
                if c.clean {
                    assert!(
                        transport_checksum_valid(&out, c.l4, c.proto),
                        "frame {n}: checksum, {:02x?}",
                        out
                    );
                }
            }
            TC_ACT_SHOT => dropped += 1,
            TC_ACT_OK => {}
            other => panic!("frame {n} from a client: verdict {other}"),
        }
    }
    assert!(
        inbound.maps().conntrack6().unwrap().is_empty(),
        "nothing tracked from the egress network"
    );
    for dp in [&inbound, &outbound] {
        let stats = dp.maps().stats().unwrap();
        // The IPv6 programs count verdicts and drops only (the IPv4 program before them
        // counts what it saw): one per frame.
        let (_, verdicts, drops) = verdicts(&stats);
        assert_eq!(verdicts + drops, FRAMES as u64, "{stats}");
    }
    assert_eq!(
        outbound
            .maps()
            .stats()
            .unwrap()
            .path(Stat::Forwarded)
            .packets,
        redirected
    );
    // The generator reaches both outcomes (a generator that only made garbage, or only
    // clean frames, would test little).
    assert!(redirected > FRAMES as u64 / 10, "{redirected} redirected");
    assert!(dropped > FRAMES as u64 / 10, "{dropped} dropped");
    // Hop limits of 0 and 1 that reach the fallback are answered (a chain that cannot be
    // walked is dropped first): some of the tenth of frames with a low hop limit.
    assert!(errors > 0, "no Time Exceeded");
    assert_eq!(
        outbound
            .maps()
            .stats()
            .unwrap()
            .path(Stat::IcmpErrorsSent)
            .packets,
        errors
    );
}
