//! How long a flow lives: timeouts by protocol and TCP state, one per flow judged from both
//! directions, when a flow's TCP connection is over, and when a new flow may take its
//! translated tuple. The data plane and the agent's GC judge with these same functions.

use bytemuck::{Pod, Zeroable};

use crate::{
    flow::{Addr, FlowEntry, FlowKey, tcp_seen},
    proto,
};

/// A flow's `last_seen_ns` is rewritten at most this often, so established flows do not
/// write to shared memory on every packet.
pub const TOUCH_INTERVAL_NS: u64 = 1_000_000_000;

/// A TCP flow that ended (closed both ways, or reset) still holds its translated tuple
/// until its timeout (2 minutes after a close), but a new flow whose port search meets it
/// takes the tuple over once both directions have been idle this long: the delay after
/// which Linux's `tcp_tw_reuse` lets a new connection take a TIME_WAIT socket's tuple, and
/// long enough for the old connection's last ACK to have passed. Without it a client that
/// opens short connections to one remote faster than the NAT range turns over in two
/// minutes (about 260 per second with 31,744 ports) runs out of ports; with it the limit is
/// the range per second.
pub const PORT_REUSE_IDLE_NS: u64 = 1_000_000_000;

/// The shortest timeout of [`flow_timeout_ns`]: an entry idle for less is alive whatever
/// its flags.
pub const MIN_TIMEOUT_NS: u64 = 10_000_000_000;

/// How long a flow lives without packets, by protocol and the TCP flags seen (the union of
/// both directions': one timeout per flow): like Linux, shorter for half-open and closing
/// TCP, long for established.
#[must_use]
pub const fn flow_timeout_ns(proto: u8, tcp_flags: u8) -> u64 {
    const S: u64 = 1_000_000_000;
    match proto {
        proto::TCP => {
            if tcp_flags & tcp_seen::RST != 0 {
                10 * S
            } else if tcp_flags & tcp_seen::FIN != 0 {
                120 * S
            } else if tcp_flags & tcp_seen::ACK == 0 {
                60 * S
            } else {
                6 * 3600 * S
            }
        }
        proto::UDP => 120 * S,
        _ => 30 * S,
    }
}

/// Whether a flow has outlived its timeout at `now`. A translated flow has one timeout,
/// judged from both directions: the TCP flags either side saw (a RST from the client ends
/// the flow for the replies too) and the later of the two last packets. `peer` is the
/// entry of the other direction, if it is there; a connection of the pod's own has none.
/// The data plane and the agent's GC judge with this same function.
#[inline(always)]
#[must_use]
pub fn flow_expired<A: Addr>(
    proto: u8,
    entry: &FlowEntry<A>,
    peer: Option<&FlowEntry<A>>,
    now: u64,
) -> bool {
    let (flags, last_seen) = match peer {
        Some(peer) => (
            entry.tcp_flags | peer.tcp_flags,
            if peer.last_seen_ns > entry.last_seen_ns {
                peer.last_seen_ns
            } else {
                entry.last_seen_ns
            },
        ),
        None => (entry.tcp_flags, entry.last_seen_ns),
    };
    now.saturating_sub(last_seen) > flow_timeout_ns(proto, flags)
}

/// Whether a flow's TCP connection is over: a RST took effect in either direction, or both
/// sides sent their FIN. `peer` as for [`flow_expired`].
#[inline(always)]
#[must_use]
pub const fn tcp_ended<A: Addr>(entry: &FlowEntry<A>, peer: Option<&FlowEntry<A>>) -> bool {
    let peer_flags = match peer {
        Some(peer) => peer.tcp_flags,
        None => 0,
    };
    (entry.tcp_flags | peer_flags) & tcp_seen::RST != 0
        || entry.tcp_flags & peer_flags & tcp_seen::FIN != 0
}

/// Whether the flow holding a translated tuple is over, so that a new flow may take the
/// tuple: timed out, or a TCP connection that ended (see [`tcp_ended`]) with both
/// directions idle for [`PORT_REUSE_IDLE_NS`]. `peer` as for [`flow_expired`].
#[inline(always)]
#[must_use]
pub fn tuple_reusable<A: Addr>(
    proto: u8,
    entry: &FlowEntry<A>,
    peer: Option<&FlowEntry<A>>,
    now: u64,
) -> bool {
    if flow_expired(proto, entry, peer, now) {
        return true;
    }
    let last_seen = match peer {
        Some(peer) if peer.last_seen_ns > entry.last_seen_ns => peer.last_seen_ns,
        _ => entry.last_seen_ns,
    };
    proto == proto::TCP
        && now.saturating_sub(last_seen) >= PORT_REUSE_IDLE_NS
        && tcp_ended(entry, peer)
}

/// Whether the GC removes an entry: its flow outlived its timeout ([`flow_expired`]), or it
/// is half a translated flow (the LRU evicted the other half) that no packet came to heal
/// for the shortest timeout. (A packet heals a half: the data plane re-creates the other
/// half from it, with the same translation.) The agent's pass and the sweep in the kernel
/// judge with this.
#[inline(always)]
#[must_use]
pub fn gc_collectable<A: Addr>(
    proto: u8,
    entry: &FlowEntry<A>,
    peer: Option<&FlowEntry<A>>,
    now: u64,
) -> bool {
    flow_expired(proto, entry, peer, now)
        || (entry.kind != crate::flow_kind::LOCAL
            && peer.is_none()
            && now.saturating_sub(entry.last_seen_ns) > MIN_TIMEOUT_NS)
}

/// Whether a translated flow counts against its client's flow limit: not once its TCP
/// connection ended and it only waits out its timeout (netfilter's connlimit does not
/// count closed connections either).
#[inline(always)]
#[must_use]
pub fn counts_against_client<A: Addr>(
    proto: u8,
    entry: &FlowEntry<A>,
    peer: Option<&FlowEntry<A>>,
) -> bool {
    !(proto == proto::TCP && tcp_ended(entry, peer))
}

/// One [`crate::maps::CT_SWEEP`] entry: what the agent asks the sweep, and what it found.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SweepState {
    /// CLOCK_MONOTONIC nanoseconds the flows are judged at.
    pub now: u64,
    /// The table: 0 [`crate::maps::CONNTRACK`], 1 [`crate::maps::CT_UNREPLIED`],
    /// 2 [`crate::maps::CONNTRACK6`], 3 [`crate::maps::CT_UNREPLIED6`] (see
    /// [`SweepState::table_index`]).
    pub table: u32,
    /// Entries seen.
    pub entries: u32,
    /// Flows written to [`crate::maps::CT_DOOMED`] (an IPv6 table's to
    /// [`crate::maps::CT_DOOMED6`]).
    pub doomed: u32,
    /// Nonzero: the doomed list or the census was full and the sweep stopped early.
    pub overflow: u32,
}

impl SweepState {
    /// [`SweepState::table`] for a family's table: `ipv6`, and `replied` (the answered
    /// flows) or not (the unreplied).
    #[must_use]
    pub const fn table_index(ipv6: bool, replied: bool) -> u32 {
        (ipv6 as u32) * 2 + (!replied) as u32
    }
}

/// One [`crate::maps::CT_DOOMED`] entry (`A`: the family; IPv6's are in
/// [`crate::maps::CT_DOOMED6`]): a collectable flow's entry, and its peer's key when the
/// peer is there (`has_peer`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Doomed<A = [u8; 4]> {
    pub key: FlowKey<A>,
    pub peer: FlowKey<A>,
    pub has_peer: u32,
    /// To a multiple of the keys' size, so that an array of them has no padding.
    pub _pad: u32,
}

crate::flow::pod_instances!(Doomed);

/// [`Doomed`] for IPv6.
pub type Doomed6 = Doomed<[u8; 16]>;

const _: () = assert!(core::mem::size_of::<SweepState>() == 24);
const _: () = assert!(core::mem::size_of::<Doomed>() == 40);
const _: () = assert!(core::mem::size_of::<Doomed6>() == 88);

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn only_a_tuple_of_a_flow_that_is_over_is_reusable() {
        use tcp_seen::{ACK, FIN, RST, SYN};
        let entry = |flags, last| FlowEntry {
            tcp_flags: flags,
            last_seen_ns: last,
            ..<FlowEntry>::default()
        };
        let t = 1000 * S;
        let idle = t - PORT_REUSE_IDLE_NS;
        let open = entry(SYN | ACK, idle);
        let fin = entry(SYN | ACK | FIN, idle);
        let rst = entry(SYN | ACK | RST, idle);
        // Closed both ways, or reset from either side, and idle long enough: reusable.
        assert!(tuple_reusable(proto::TCP, &fin, Some(&fin), t));
        assert!(tuple_reusable(proto::TCP, &open, Some(&rst), t));
        assert!(tuple_reusable(proto::TCP, &rst, None, t));
        // Half closed, open, or a packet from either side within the idle time: not.
        assert!(!tuple_reusable(proto::TCP, &fin, Some(&open), t));
        assert!(!tuple_reusable(proto::TCP, &open, Some(&open), t));
        assert!(!tuple_reusable(
            proto::TCP,
            &fin,
            Some(&entry(FIN, idle + 1)),
            t
        ));
        assert!(!tuple_reusable(
            proto::TCP,
            &entry(FIN, idle + 1),
            Some(&fin),
            t
        ));
        // UDP has no end: only its timeout frees the tuple.
        assert!(!tuple_reusable(proto::UDP, &rst, Some(&rst), t));
        assert!(tuple_reusable(
            proto::UDP,
            &open,
            Some(&open),
            idle + 121 * S
        ));
        assert!(tcp_ended(&fin, Some(&fin)) && !tcp_ended(&fin, None));
    }

    #[test]
    fn no_timeout_is_shorter_than_the_minimum() {
        for p in [proto::TCP, proto::UDP, proto::ICMP, 47] {
            for flags in 0..=u8::MAX {
                assert!(
                    flow_timeout_ns(p, flags) >= MIN_TIMEOUT_NS,
                    "{p} {flags:#x}"
                );
            }
        }
        assert_eq!(flow_timeout_ns(proto::TCP, tcp_seen::RST), MIN_TIMEOUT_NS);
    }

    #[test]
    fn timeouts_follow_protocol_and_tcp_state() {
        use tcp_seen::{ACK, FIN, RST, SYN};
        let cases = [
            (proto::TCP, SYN, 60 * S),
            (proto::TCP, SYN | ACK, 6 * 3600 * S),
            (proto::TCP, ACK, 6 * 3600 * S),
            (proto::TCP, SYN | ACK | FIN, 120 * S),
            (proto::TCP, ACK | FIN | RST, 10 * S),
            (proto::TCP, RST, 10 * S),
            (proto::UDP, 0, 120 * S),
            (proto::ICMP, 0, 30 * S),
            (47, 0, 30 * S),
        ];
        for (p, flags, timeout) in cases {
            assert_eq!(
                flow_timeout_ns(p, flags),
                timeout,
                "proto {p} flags {flags:#x}"
            );
        }
    }

    #[test]
    fn a_flow_expires_from_both_directions_flags_and_latest_packet() {
        use tcp_seen::{ACK, RST, SYN};
        let forward = FlowEntry {
            tcp_flags: SYN | ACK,
            last_seen_ns: 100 * S,
            ..<FlowEntry>::default()
        };
        let mut reply = forward;
        reply.last_seen_ns = 1000 * S;
        let established = 6 * 3600 * S;
        // Alone, each is judged by its own last packet; the boundary is not expired.
        assert!(!flow_expired(
            proto::TCP,
            &forward,
            None,
            100 * S + established
        ));
        assert!(flow_expired(
            proto::TCP,
            &forward,
            None,
            100 * S + established + 1
        ));
        // With its peer, the later packet of the two counts, from either side.
        assert!(!flow_expired(
            proto::TCP,
            &forward,
            Some(&reply),
            100 * S + established + 1
        ));
        assert!(!flow_expired(
            proto::TCP,
            &reply,
            Some(&forward),
            1000 * S + established
        ));
        assert!(flow_expired(
            proto::TCP,
            &forward,
            Some(&reply),
            1000 * S + established + 1
        ));
        // A RST seen by one side ends the flow for both after the RST timeout.
        reply.tcp_flags |= RST;
        let rst_out = 1000 * S + 10 * S + 1;
        assert!(flow_expired(proto::TCP, &forward, Some(&reply), rst_out));
        assert!(flow_expired(proto::TCP, &reply, Some(&forward), rst_out));
        assert!(
            !flow_expired(proto::TCP, &forward, None, rst_out),
            "alone, no RST seen"
        );
        // A clock behind the entry (another CPU's later packet) is never expiry.
        assert!(!flow_expired(proto::UDP, &reply, None, 0));
    }
}
