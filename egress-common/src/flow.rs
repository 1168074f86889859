//! Connection tracking and fragment keys and values, and the tuple
//! operations both sides share ([`FlowKey::reversed`], [`peer_key`]). How long a flow
//! lives: [`crate::lifetime`].

use bytemuck::{Pod, Zeroable};

/// Default conntrack capacity in flows; the map holds two entries per flow.
pub const DEFAULT_CONNTRACK_FLOWS: u32 = 262_144;

/// The table of flows not answered yet ([`crate::maps::CT_UNREPLIED`]) holds this fraction
/// of the conntrack capacity.
pub const UNREPLIED_SHARE: u32 = 4;

/// An address as map keys and values hold it: network order bytes, IPv4 (`[u8; 4]`, the
/// default of every generic type here) or IPv6 (`[u8; 16]`). The conntrack types are
/// generic over it, so both families share one definition and one body of code; each
/// family has maps of its own. Sealed: these two are the only ones, which is what makes
/// the generic types `Pod` for every `A` (see [`pod_instances`]).
pub trait Addr:
    sealed::Sealed + Copy + Default + Eq + Pod + core::fmt::Debug + core::hash::Hash
{
    /// Whether two addresses are equal, in the fewest loads (one 32-bit compare for IPv4).
    /// By value: a reference to a byte array says nothing of its alignment, and BPF has no
    /// unaligned loads, so compared through references the bytes would be loaded one by
    /// one; the caller's field load knows the struct's alignment.
    fn same(self, other: Self) -> bool;

    /// The address mixed into 32 bits (every bit counts), for keyed hashes.
    fn mix(self, seed: u32) -> u32;
}

impl Addr for [u8; 4] {
    #[inline(always)]
    fn same(self, other: Self) -> bool {
        u32::from_ne_bytes(self) == u32::from_ne_bytes(other)
    }

    #[inline(always)]
    fn mix(self, seed: u32) -> u32 {
        seed ^ u32::from_ne_bytes(self)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for [u8; 4] {}
    impl Sealed for [u8; 16] {}
}

impl Addr for [u8; 16] {
    #[inline(always)]
    fn same(self, other: Self) -> bool {
        u128::from_ne_bytes(self) == u128::from_ne_bytes(other)
    }

    #[inline(always)]
    fn mix(self, seed: u32) -> u32 {
        let mut h = seed;
        for word in bytemuck::cast::<Self, [u32; 4]>(self) {
            h = (h ^ word).wrapping_mul(0x9e37_79b1);
        }
        h
    }
}

/// A connection-tracking key: one direction of a flow as seen on the wire. For ICMP echo,
/// both ports hold the echo identifier. Zeroed padding included, since the kernel hashes
/// every byte.
///
/// Aligned to 8 (no size changes: 16 and 40 bytes), so that keys are copied and compared
/// in 64-bit words: at its fields' alignment of 2, BPF (which has no unaligned loads)
/// moves an IPv6 key in twenty 16-bit pieces, and the register spills of that overran the
/// 512-byte stack of the IPv6 programs.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey<A = [u8; 4]> {
    pub saddr: A,
    pub daddr: A,
    /// Host byte order.
    pub sport: u16,
    /// Host byte order.
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// [`FlowEntry::kind`] values.
pub mod flow_kind {
    /// Client -> remote: translate and send out of the egress interface.
    pub const FORWARD: u8 = 1;
    /// Remote -> client: translate back and send out of the pod interface.
    pub const REPLY: u8 = 2;
    /// Reply direction of a connection the pod itself opened: hand to the stack.
    pub const LOCAL: u8 = 3;
}

/// [`FlowEntry::tcp_flags`] bits: TCP flags that took effect in this direction (a RST or FIN
/// counts only inside the window, see the data plane's `tcp` module), and whether the
/// entry's sequence numbers are known.
pub mod tcp_seen {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
    /// [`super::FlowEntry::seq_end`] holds this direction's next sequence number.
    pub const SEQ_KNOWN: u8 = 0x40;
    /// [`super::FlowEntry::ack_max`] holds this direction's highest acknowledgement.
    pub const ACK_KNOWN: u8 = 0x80;
    /// The TCP header's flags that conntrack records.
    pub const FLAGS: u8 = FIN | SYN | RST | ACK;
}

/// A connection-tracking value: the tuple to write into packets that match the key, and the
/// flow's state in this direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry<A = [u8; 4]> {
    pub saddr: A,
    pub daddr: A,
    /// Host byte order.
    pub sport: u16,
    /// Host byte order.
    pub dport: u16,
    /// The rule that created the flow (0 = fallback).
    pub rule_id: u16,
    /// A [`flow_kind`] value.
    pub kind: u8,
    /// [`tcp_seen`] bits of this direction.
    pub tcp_flags: u8,
    /// CLOCK_MONOTONIC_COARSE nanoseconds of the last packet (refreshed at most once per
    /// [`TOUCH_INTERVAL_NS`]).
    pub last_seen_ns: u64,
    /// CLOCK_MONOTONIC_COARSE nanoseconds when the flow was created.
    pub created_ns: u64,
    /// TCP: the sequence number that follows the last one this direction's sender sent
    /// (with [`tcp_seen::SEQ_KNOWN`]).
    pub seq_end: u32,
    /// TCP: the highest acknowledgement number this direction's sender sent, i.e. the next
    /// byte it expects (with [`tcp_seen::ACK_KNOWN`]).
    pub ack_max: u32,
}

/// The IPv6 conntrack key.
pub type FlowKey6 = FlowKey<[u8; 16]>;
/// The IPv6 conntrack value.
pub type FlowEntry6 = FlowEntry<[u8; 16]>;

/// `Pod` for a generic map type over every [`Addr`] (bytemuck's derive takes no
/// generics): `Addr` is sealed to `[u8; 4]` and `[u8; 16]`, and the sizes asserted for
/// both instances are the sums of the fields', so no instance has implicit padding. For
/// every `A` rather than the two instances, so that generic code needs no bounds.
macro_rules! pod_instances {
    ($($t:ident),*) => {$(
        // SAFETY: repr(C), explicit padding fields only (sizes asserted for both instances
        // of the sealed `Addr`), and every bit pattern of every field is valid.
        unsafe impl<A: Addr> Zeroable for $t<A> {}
        // SAFETY: as above.
        unsafe impl<A: Addr> Pod for $t<A> {}
    )*};
}
pub(crate) use pod_instances;
pod_instances!(FlowKey, FlowEntry);

impl<A: Addr> FlowKey<A> {
    /// The same flow seen from the other end: addresses and ports swapped. The one place a
    /// tuple is reversed, in the data plane and in user space alike.
    #[inline(always)]
    #[must_use]
    pub const fn reversed(&self) -> Self {
        Self {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

impl<A: Addr> FlowEntry<A> {
    /// An entry that rewrites packets to `tuple` (its protocol is the key's).
    #[inline(always)]
    #[must_use]
    pub const fn new(tuple: &FlowKey<A>, rule_id: u16, kind: u8, tcp_flags: u8, now: u64) -> Self {
        Self {
            saddr: tuple.saddr,
            daddr: tuple.daddr,
            sport: tuple.sport,
            dport: tuple.dport,
            rule_id,
            kind,
            tcp_flags,
            last_seen_ns: now,
            created_ns: now,
            seq_end: 0,
            ack_max: 0,
        }
    }

    /// An entry that rewrites packets back to where `key`'s packets came from (the tuple
    /// reversed), built in place: `new(&key.reversed(), ..)` without the reversed key as a
    /// temporary, which IPv6's BPF stack cannot spare.
    #[inline(always)]
    #[must_use]
    pub const fn back_to(
        key: &FlowKey<A>,
        rule_id: u16,
        kind: u8,
        tcp_flags: u8,
        now: u64,
    ) -> Self {
        Self {
            saddr: key.daddr,
            daddr: key.saddr,
            sport: key.dport,
            dport: key.sport,
            rule_id,
            kind,
            tcp_flags,
            last_seen_ns: now,
            created_ns: now,
            seq_end: 0,
            ack_max: 0,
        }
    }

    /// The tuple packets are rewritten to, as a key of protocol `proto`.
    #[inline(always)]
    #[must_use]
    pub const fn tuple(&self, proto: u8) -> FlowKey<A> {
        FlowKey {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            proto,
            _pad: [0; 3],
        }
    }

    /// Whether this entry, found under `peer_key(key, ..)`, translates back to `key`: the
    /// same flow, not another one that claimed the tuple after an eviction.
    #[inline(always)]
    #[must_use]
    pub fn returns_to(&self, key: &FlowKey<A>) -> bool {
        // `key.reversed()` compared field by field, without the reversed key as a
        // temporary.
        self.saddr.same(key.daddr)
            && self.daddr.same(key.saddr)
            && self.sport == key.dport
            && self.dport == key.sport
    }
}

/// The key of the entry for the other direction of the flow `entry` (found under `key`)
/// belongs to: the entry's tuple, reversed.
#[inline(always)]
#[must_use]
pub const fn peer_key<A: Addr>(key: &FlowKey<A>, entry: &FlowEntry<A>) -> FlowKey<A> {
    // `entry.tuple(key.proto).reversed()`, built in place.
    FlowKey {
        saddr: entry.daddr,
        daddr: entry.saddr,
        sport: entry.dport,
        dport: entry.sport,
        proto: key.proto,
        _pad: [0; 3],
    }
}

/// Key of [`crate::maps::FRAGMENTS`]: identifies one IPv4 datagram in flight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FragKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// IPv4 identification, host byte order.
    pub id: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of [`crate::maps::FRAGMENTS`]: the L4 ports of the datagram's first fragment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FragPorts {
    /// Host byte order.
    pub sport: u16,
    /// Host byte order.
    pub dport: u16,
}

/// Capacity of [`crate::maps::FRAGMENTS`] (and of [`crate::maps::FRAGMENTS6`] for an
/// instance with IPv6).
pub const FRAGMENTS_MAX: u32 = 8192;

/// Key of [`crate::maps::FRAGMENTS6`]: identifies one IPv6 datagram in flight (RFC 8200:
/// source, destination and the fragment header's identification; the upper-layer
/// protocol too, as for IPv4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FragKey6 {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// The fragment header's identification, network byte order.
    pub id: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 16);
const _: () = assert!(core::mem::size_of::<FlowEntry>() == 40);
const _: () = assert!(core::mem::size_of::<FlowKey6>() == 40);
const _: () = assert!(core::mem::size_of::<FlowEntry6>() == 64);

/// Value sizes of [`crate::maps::CONNTRACK`] in earlier releases whose entries are a prefix
/// of [`FlowEntry`] (the fields after it read as zero: sequence numbers unknown). User
/// space migrates such a table's flows on upgrade.
pub const FLOW_ENTRY_PREFIX_SIZES: [usize; 1] = [32];
const _: () = assert!(core::mem::size_of::<FragKey>() == 12);
const _: () = assert!(core::mem::size_of::<FragPorts>() == 4);
const _: () = assert!(core::mem::size_of::<FragKey6>() == 40);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;

    fn key(saddr: [u8; 4], sport: u16, daddr: [u8; 4], dport: u16) -> FlowKey {
        FlowKey {
            saddr,
            daddr,
            sport,
            dport,
            proto: proto::TCP,
            _pad: [0; 3],
        }
    }

    #[test]
    fn reversing_twice_is_the_identity_and_padding_stays_zero() {
        let mut k = key([192, 0, 2, 2], 40000, [192, 0, 2, 1], 80);
        let r = k.reversed();
        assert_eq!(r, key([192, 0, 2, 1], 80, [192, 0, 2, 2], 40000));
        assert_eq!(r.reversed(), k);
        k._pad = [1, 2, 3];
        assert_eq!(k.reversed()._pad, [0; 3], "the kernel hashes padding too");
    }

    #[test]
    fn the_peer_of_a_forward_entry_is_its_reply_entry_and_back() {
        // Client 192.0.2.2:40000 -> pod 192.0.2.1:8080, translated to
        // 198.51.100.100:40000 -> 203.0.113.10:80.
        let forward_key = key([192, 0, 2, 2], 40000, [192, 0, 2, 1], 8080);
        let translated = key([198, 51, 100, 100], 40000, [203, 0, 113, 10], 80);
        let forward = FlowEntry::new(&translated, 1, flow_kind::FORWARD, 0, 7);
        let reply_key = peer_key(&forward_key, &forward);
        assert_eq!(
            reply_key,
            key([203, 0, 113, 10], 80, [198, 51, 100, 100], 40000)
        );
        let reply = FlowEntry::new(&forward_key.reversed(), 1, flow_kind::REPLY, 0, 7);
        assert_eq!(
            FlowEntry::back_to(&forward_key, 1, flow_kind::REPLY, 0, 7),
            reply
        );
        assert_eq!(peer_key(&reply_key, &reply), forward_key);
        assert!(reply.returns_to(&forward_key) && forward.returns_to(&reply_key));
        // An entry that another flow wrote under the same key does not return there.
        let other = FlowEntry::new(
            &key([192, 0, 2, 3], 40000, [192, 0, 2, 1], 8080).reversed(),
            2,
            flow_kind::REPLY,
            0,
            7,
        );
        assert!(!other.returns_to(&forward_key));
        assert_eq!((forward.created_ns, forward.last_seen_ns), (7, 7));
        assert_eq!(forward.tuple(proto::TCP), translated);
    }
}
