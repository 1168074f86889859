//! A packet fuzzer for the data plane: seeded, generated and mutated frames through pod
//! mode's three IPv4 programs with BPF_PROG_TEST_RUN, and the invariants every one of them
//! must keep:
//!
//! - the verdict is one of pass, drop, redirect;
//! - a frame whose checksums were valid and that is passed or redirected changed has valid
//!   checksums (IPv4 header, TCP/UDP with the pseudo-header, ICMP);
//! - nothing leaves toward the egress network but from EGRESS_SOURCE to a configured
//!   remote, and nothing goes toward a client but from the pod IP (or an error of the
//!   router's own, back the way it came);
//! - every packet is counted once as seen and once as a verdict or a typed drop;
//! - the conntrack tables hold only whole pairs whose halves point at each other.
//!
//! Generated frames are what the lab's peers send (client flows by rule and fallback, the
//! replies of the flows the fuzzer created, ICMP errors quoting them, the pod's own
//! connections, fragments, options, odd TTLs and sizes); mutated ones are those with bits
//! flipped, bytes overwritten, or cut short; and some are random bytes. A failure names the
//! seed, the frame's number, the program and the frame in hex.
//!
//! | module | concern |
//! |---|---|
//! | `frames` | the fuzzer's frames: what the lab's peers send, and mutations of it |

mod frames;

use std::collections::HashMap;

use egress_common::{FlowEntry, FlowKey, flow_kind, peer_key, programs};
use egress_user::dataplane::{flows::CtTable, load::Dataplane};
use etherparse::{IpNumber, Ipv4Header, TcpHeader, UdpHeader};
use rand::{Rng as _, RngCore as _, SeedableRng as _, rngs::StdRng};

use crate::pktgen::{
    POD, SERVER, SOURCE, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, dataplane_sized, ones_complement,
    try_run,
};

/// The configuration under fuzz: two rules and a fallback.
pub const DESTINATION: &str = "80 tcp 203.0.113.10\n53 udp 203.0.113.11 5353\n203.0.113.20";
/// The remotes it may send to.
const REMOTES: [[u8; 4]; 3] = [SERVER, [203, 0, 113, 11], [203, 0, 113, 20]];
const PROGRAMS: [&str; 3] = [
    programs::POD_INGRESS,
    programs::EGRESS_INGRESS,
    programs::EGRESS_EGRESS,
];

/// A flow the fuzzer saw translated: its translated ends.
#[derive(Clone, Copy)]
struct Known {
    proto: u8,
    remote: ([u8; 4], u16),
    nat_port: u16,
}

/// The fuzzer: its data plane, randomness and what it learnt.
pub struct Fuzzer {
    seed: u64,
    rng: StdRng,
    dp: Dataplane,
    known: Vec<Known>,
    frames: u64,
}

impl Fuzzer {
    /// A data plane configured with [`DESTINATION`] (a table large enough that nothing is
    /// evicted within a round) and a generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        let dp = dataplane_sized(DESTINATION, 262_144, |cfg| {
            cfg.nat_port_max = 32767;
            cfg.mss_clamp = 1460;
            cfg.nat_secret = 0x5eed_0002;
        });
        Self {
            seed,
            rng: StdRng::seed_from_u64(seed),
            dp,
            known: Vec::new(),
            frames: 0,
        }
    }

    /// Runs `count` frames, checking the tables and counters every `check_every`.
    pub fn run(&mut self, count: u64, check_every: u64) {
        for _ in 0..count {
            self.one();
            if self.frames.is_multiple_of(check_every) {
                self.check_tables();
                self.check_counters();
            }
        }
        self.check_tables();
        self.check_counters();
    }

    /// Frames run so far.
    #[must_use]
    pub fn frames(&self) -> u64 {
        self.frames
    }

    fn one(&mut self) {
        self.frames += 1;
        let pick = self.rng.random_range(0..100);
        let (program, mut bytes) = match pick {
            0..25 => (programs::POD_INGRESS, self.client_packet()),
            25..50 => match self.reply_packet() {
                Some(f) => (programs::EGRESS_INGRESS, f),
                None => (programs::POD_INGRESS, self.client_packet()),
            },
            50..58 => match self.icmp_error() {
                Some(f) => (programs::EGRESS_INGRESS, f),
                None => (programs::POD_INGRESS, self.client_packet()),
            },
            58..65 => (programs::EGRESS_EGRESS, self.own_packet()),
            65..95 => {
                let base = match self.rng.random_range(0..3) {
                    0 => self.client_packet(),
                    1 => self.reply_packet().unwrap_or_else(|| self.own_packet()),
                    _ => self.own_packet(),
                };
                let program = PROGRAMS[self.rng.random_range(0..3)];
                (program, base)
            }
            _ => {
                // BPF_PROG_TEST_RUN takes nothing shorter than an Ethernet header.
                let len = self.rng.random_range(14..200);
                let mut b = vec![0u8; len];
                self.rng.fill_bytes(&mut b);
                if len >= 14 && self.rng.random_bool(0.7) {
                    b[12..14].copy_from_slice(&[0x08, 0x00]);
                }
                (PROGRAMS[self.rng.random_range(0..3)], b)
            }
        };
        if (65..95).contains(&pick) {
            self.mutate(&mut bytes);
        }
        // BPF_PROG_TEST_RUN refuses a frame whose EtherType promises more than it holds
        // (an IPv4 frame under 34 bytes, IPv6 under 54): such runts are padded.
        let floor = match bytes[12..14] {
            [0x08, 0x00] => 34,
            [0x86, 0xdd] => 54,
            _ => 14,
        };
        if bytes.len() < floor {
            bytes.resize(floor, 0);
        }
        let valid_before = checksums(&bytes) == Some(true);
        let (verdict, out) = match try_run(&mut self.dp, program, &bytes) {
            Ok(ran) => ran,
            Err(err) => panic!(
                "fuzz seed {} frame {} ({program}): BPF_PROG_TEST_RUN refused {} bytes: {err}\n{}",
                self.seed,
                self.frames,
                bytes.len(),
                hex(&bytes)
            ),
        };
        let fail = |what: &str| -> ! {
            panic!(
                "fuzz seed {} frame {} ({program}): {what}\ninput  {}\noutput {}",
                self.seed,
                self.frames,
                hex(&bytes),
                hex(&out)
            )
        };
        if ![TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT].contains(&verdict) {
            fail(&format!("verdict {verdict}"));
        }
        if verdict == TC_ACT_SHOT || out == bytes {
            return;
        }
        if valid_before && checksums(&out) != Some(true) {
            fail("a checksum broke on a packet that passes");
        }
        if verdict == TC_ACT_REDIRECT {
            let Ok((ip, _)) = Ipv4Header::from_slice(&out[14.min(out.len())..]) else {
                fail("redirected, but not IPv4");
            };
            let (src, dst) = (ip.source, ip.destination);
            let ok = match program {
                // Out to a remote from EGRESS_SOURCE, or an error back to the client.
                p if p == programs::POD_INGRESS => {
                    (src == SOURCE && REMOTES.contains(&dst)) || src == POD
                }
                // Back to a client (any address that opened a flow) from the pod IP, or an
                // error back to the remote.
                p if p == programs::EGRESS_INGRESS => src == POD || src == SOURCE,
                _ => false,
            };
            if !ok {
                fail(&format!("redirected {src:?} -> {dst:?}"));
            }
            if program == programs::POD_INGRESS && src == SOURCE {
                self.learn(&bytes, &out);
            }
        }
    }

    /// Remembers a client flow that was translated, for replies and errors about it.
    fn learn(&mut self, input: &[u8], out: &[u8]) {
        let (Ok((i, irest)), Ok((o, orest))) = (
            Ipv4Header::from_slice(&input[14..]),
            Ipv4Header::from_slice(&out[14..]),
        ) else {
            return;
        };
        if o.is_fragmenting_payload() || irest.len() < 4 || orest.len() < 4 {
            return;
        }
        let port = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
        let proto = o.protocol.0;
        let (nat_port, remote_port) = match proto {
            6 | 17 => (port(orest, 0), port(orest, 2)),
            1 if orest.len() >= 8 && orest[0] == 8 => (port(orest, 4), port(orest, 4)),
            _ => return,
        };
        if i.protocol != o.protocol || irest.is_empty() {
            return;
        }
        if self.known.len() < 4096 {
            self.known.push(Known {
                proto,
                remote: (o.destination, remote_port),
                nat_port,
            });
        }
    }

    /// Every translated flow is a forward entry and a reply entry in the same table that
    /// point at each other; the pod's own connections have their one entry.
    pub fn check_tables(&self) {
        for t in CtTable::ALL {
            let table: HashMap<FlowKey, FlowEntry> = self
                .dp
                .maps()
                .conntrack_table(t)
                .unwrap()
                .into_iter()
                .collect();
            for (key, entry) in &table {
                if entry.kind == flow_kind::LOCAL {
                    continue;
                }
                assert!(
                    entry.kind == flow_kind::FORWARD || entry.kind == flow_kind::REPLY,
                    "fuzz seed {}: entry of kind {} in {t:?}",
                    self.seed,
                    entry.kind
                );
                let peer = table.get(&peer_key(key, entry));
                assert!(
                    peer.is_some_and(|p| p.returns_to(key) && p.kind != entry.kind),
                    "fuzz seed {} after {} frames: {t:?} entry {key:?} -> {entry:?} has no \
                     matching other half ({peer:?})",
                    self.seed,
                    self.frames
                );
            }
        }
    }

    /// Every packet seen once, and once as a verdict or a typed drop.
    pub fn check_counters(&self) {
        let stats = self.dp.maps().stats().unwrap();
        let (seen, verdicts, dropped) = crate::pktgen::verdicts(&stats);
        assert_eq!(
            seen,
            verdicts + dropped,
            "fuzz seed {}: {seen} packets seen, {verdicts} verdicts and {dropped} drops\n{stats}",
            self.seed
        );
        assert_eq!(
            seen, self.frames,
            "fuzz seed {}: every frame seen once",
            self.seed
        );
    }
}

/// Whether a frame's checksums are valid: `None` when it is not an IPv4 packet whose
/// checksums can be judged (cut short, not IPv4).
#[must_use]
pub fn checksums(frame: &[u8]) -> Option<bool> {
    if frame.len() < 14 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let (ip, rest) = Ipv4Header::from_slice(&frame[14..]).ok()?;
    let l4_len = usize::from(ip.total_len).checked_sub(ip.header_len())?;
    if rest.len() < l4_len {
        return None;
    }
    if ip.header_checksum != ip.calc_header_checksum() {
        return Some(false);
    }
    let l4 = &rest[..l4_len];
    if ip.is_fragmenting_payload() {
        return Some(true);
    }
    match ip.protocol {
        IpNumber::TCP => {
            let (tcp, data) = TcpHeader::from_slice(l4).ok()?;
            Some(tcp.checksum == tcp.calc_checksum_ipv4(&ip, data).ok()?)
        }
        IpNumber::UDP => {
            let (udp, data) = UdpHeader::from_slice(l4).ok()?;
            if usize::from(udp.length) != l4.len() {
                return None;
            }
            Some(udp.checksum == 0 || udp.checksum == udp.calc_checksum_ipv4(&ip, data).ok()?)
        }
        IpNumber::ICMP => Some(l4.len() >= 8 && ones_complement(l4) == 0),
        _ => Some(true),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
