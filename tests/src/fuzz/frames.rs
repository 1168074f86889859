//! The fuzzer's frames: what the lab's peers send, and mutations of it.

use etherparse::{
    IcmpEchoHeader, Icmpv4Header, Icmpv4Type, IpNumber, Ipv4Header, TcpHeader, UdpHeader,
};
use rand::{Rng as _, RngCore as _};

use super::{Fuzzer, REMOTES};
use crate::pktgen::{POD, SOURCE, frame, ones_complement};

impl Fuzzer {
    pub(super) fn ttl(&mut self) -> u8 {
        match self.rng.random_range(0..20) {
            0 => 0,
            1 => 1,
            2 => 2,
            _ => 64,
        }
    }

    pub(super) fn payload(&mut self) -> Vec<u8> {
        let len = match self.rng.random_range(0..10) {
            0 => self.rng.random_range(1300..1600),
            1..4 => self.rng.random_range(0..64),
            _ => 0,
        };
        let mut b = vec![0u8; len];
        self.rng.fill_bytes(&mut b);
        b
    }

    /// A client's packet to the pod IP: by rule, by fallback, TCP/UDP/echo, odd TTLs,
    /// sizes, DF, options and fragments.
    pub(super) fn client_packet(&mut self) -> Vec<u8> {
        let client = [192, 0, 2, self.rng.random_range(2..12)];
        // A few hundred ports, so tuples come back (reopened, reused, remapped).
        let sport = self.rng.random_range(40000..40300);
        let dport = [80, 53, 8080, 443, 7][self.rng.random_range(0..5)];
        let proto = [6, 17, 1, 6, 17, 47][self.rng.random_range(0..6)];
        let data = self.payload();
        let ttl = self.ttl();
        self.l4_frame(proto, (client, sport), (POD, dport), ttl, &data)
    }

    /// A reply to a flow the fuzzer created, with random flags and numbers.
    pub(super) fn reply_packet(&mut self) -> Option<Vec<u8>> {
        if self.known.is_empty() {
            return None;
        }
        let k = self.known[self.rng.random_range(0..self.known.len())];
        let data = self.payload();
        let ttl = self.ttl();
        if k.proto == 1 {
            return Some(self.echo(0, (k.remote.0, k.nat_port), SOURCE, ttl, &data));
        }
        Some(self.l4_frame(k.proto, k.remote, (SOURCE, k.nat_port), ttl, &data))
    }

    /// An ICMP error from a remote about a flow the fuzzer created.
    pub(super) fn icmp_error(&mut self) -> Option<Vec<u8>> {
        if self.known.is_empty() {
            return None;
        }
        let k = self.known[self.rng.random_range(0..self.known.len())];
        let quoted = if k.proto == 1 {
            self.echo(8, (SOURCE, k.nat_port), k.remote.0, 64, b"")
        } else {
            self.l4_frame(k.proto, (SOURCE, k.nat_port), k.remote, 64, b"")
        };
        let take = 28.min(quoted.len() - 14) + self.rng.random_range(0..12);
        let quote = &quoted[14..(14 + take).min(quoted.len())];
        let (kind, code) = [(3, 3), (3, 4), (11, 0), (12, 0), (3, 1)][self.rng.random_range(0..5)];
        let mut icmp = vec![kind, code, 0, 0, 0, 0, 5, 0xdc];
        icmp.extend_from_slice(quote);
        let check = ones_complement(&icmp);
        icmp[2..4].copy_from_slice(&check.to_be_bytes());
        let ttl = self.ttl();
        Some(frame(
            ipv4(k.remote.0, SOURCE, IpNumber::ICMP, icmp.len(), ttl, false),
            &icmp,
        ))
    }

    /// The pod's own packet out of the egress interface (the proxies' connections).
    pub(super) fn own_packet(&mut self) -> Vec<u8> {
        let remote = REMOTES[self.rng.random_range(0..3)];
        let sport = self.rng.random_range(33000..33100);
        let proto = [6, 17, 1][self.rng.random_range(0..3)];
        let data = self.payload();
        self.l4_frame(proto, (SOURCE, sport), (remote, 443), 64, &data)
    }

    pub(super) fn echo(
        &mut self,
        kind: u8,
        src: ([u8; 4], u16),
        dst: [u8; 4],
        ttl: u8,
        data: &[u8],
    ) -> Vec<u8> {
        let icmp = Icmpv4Header::with_checksum(
            if kind == 8 {
                Icmpv4Type::EchoRequest(IcmpEchoHeader { id: src.1, seq: 1 })
            } else {
                Icmpv4Type::EchoReply(IcmpEchoHeader { id: src.1, seq: 1 })
            },
            data,
        );
        let mut l4 = icmp.to_bytes().to_vec();
        l4.extend_from_slice(data);
        let df = self.rng.random_bool(0.5);
        frame(ipv4(src.0, dst, IpNumber::ICMP, l4.len(), ttl, df), &l4)
    }

    /// A TCP (random flags and numbers), UDP or ICMP echo frame, or another protocol; now
    /// and then split into a first fragment only, or given IP options.
    pub(super) fn l4_frame(
        &mut self,
        proto: u8,
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        ttl: u8,
        data: &[u8],
    ) -> Vec<u8> {
        let df = self.rng.random_bool(0.5);
        let mut l4 = match proto {
            6 => {
                let mut tcp = TcpHeader::new(src.1, dst.1, self.rng.random(), 64240);
                let flags: u8 = self.rng.random();
                tcp.fin = flags & 1 != 0;
                tcp.syn = flags & 2 != 0;
                tcp.rst = flags & 4 != 0;
                tcp.psh = flags & 8 != 0;
                tcp.ack = flags & 16 != 0;
                tcp.acknowledgment_number = self.rng.random();
                let ip = ipv4(
                    src.0,
                    dst.0,
                    IpNumber::TCP,
                    tcp.header_len() + data.len(),
                    ttl,
                    df,
                );
                tcp.checksum = tcp.calc_checksum_ipv4(&ip, data).unwrap();
                tcp.to_bytes().to_vec()
            }
            17 => {
                let ip = ipv4(src.0, dst.0, IpNumber::UDP, 8 + data.len(), ttl, df);
                UdpHeader::with_ipv4_checksum(src.1, dst.1, &ip, data)
                    .unwrap()
                    .to_bytes()
                    .to_vec()
            }
            1 => return self.echo(8, src, dst.0, ttl, data),
            _ => Vec::new(),
        };
        l4.extend_from_slice(data);
        let mut ip = ipv4(src.0, dst.0, IpNumber(proto), l4.len(), ttl, df);
        match self.rng.random_range(0..12) {
            0 if l4.len() > 16 => {
                // A first fragment: the rest never comes.
                ip.more_fragments = true;
                ip.dont_fragment = false;
                let cut = l4.len() / 16 * 8;
                l4.truncate(cut.max(8));
                ip.set_payload_len(l4.len()).unwrap();
            }
            1 => {
                ip.options = [7, 7, 4, 0, 0, 0, 0, 0][..].try_into().unwrap();
                ip.set_payload_len(l4.len()).unwrap();
            }
            _ => {}
        }
        frame(ip, &l4)
    }

    /// Flips bits, overwrites bytes, or cuts the frame short.
    pub(super) fn mutate(&mut self, b: &mut Vec<u8>) {
        if b.len() < 15 {
            return;
        }
        for _ in 0..self.rng.random_range(1..4) {
            match self.rng.random_range(0..4) {
                0 => {
                    let at = self.rng.random_range(0..b.len());
                    b[at] ^= 1 << self.rng.random_range(0..8);
                }
                1 if b.len() > 14 => {
                    // Within the IPv4 and L4 headers, where parsing decides.
                    let at = self.rng.random_range(14..b.len().min(74));
                    b[at] = self.rng.random();
                }
                2 if b.len() > 14 => {
                    let len = self.rng.random_range(14..b.len());
                    b.truncate(len);
                }
                _ => {
                    let at = self.rng.random_range(0..b.len());
                    b[at] = [0, 0xff, 0x45, 0x40][self.rng.random_range(0..4)];
                }
            }
        }
    }
}

fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: IpNumber,
    payload: usize,
    ttl: u8,
    df: bool,
) -> Ipv4Header {
    let mut ip = crate::pktgen::ipv4(src, dst, proto, payload, ttl);
    ip.dont_fragment = df;
    ip
}
