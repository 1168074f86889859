//! The conntrack GC with its sweep in the kernel judges exactly as the agent's own pass:
//! two data planes get the same flows (every kind the GC tells apart, in both tables, from
//! several clients), one is collected by each, and the results and what is left must be
//! equal. A sweep whose doomed list overflows falls back to the agent's pass, with the
//! same result. The same flows over IPv6 (the IPv6 tables have lists of their own), and
//! both families at once.

use egress_common::{FlowEntry, FlowKey, flow_kind, maps::CT_DOOMED_MAX, proto, tcp_seen};
use egress_user::{
    conntrack::{
        FamilyPass, GcPass, collect_garbage, collect_garbage_in_kernel, monotonic_ns, sweep_only,
    },
    dataplane::{
        family::CtFamily,
        flows::CtTable,
        load::{Dataplane, LoadOptions},
    },
};

const S: u64 = 1_000_000_000;
const ESTABLISHED: u8 = tcp_seen::SYN | tcp_seen::ACK;

/// A family the flows are written in: its address for each IPv4 one of the flows below
/// (IPv6: the IPv4 address in the last four bytes of 2001:db8::/96).
trait Fam: CtFamily + std::fmt::Debug {
    fn of(v4: [u8; 4]) -> Self;
    /// This family's half of a pass.
    fn pass(pass: &GcPass) -> &FamilyPass<Self>;
}

impl Fam for [u8; 4] {
    fn of(v4: [u8; 4]) -> Self {
        v4
    }
    fn pass(pass: &GcPass) -> &FamilyPass<Self> {
        &pass.v4
    }
}

impl Fam for [u8; 16] {
    fn of(v4: [u8; 4]) -> Self {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a[12..].copy_from_slice(&v4);
        a
    }
    fn pass(pass: &GcPass) -> &FamilyPass<Self> {
        &pass.v6
    }
}

/// A data plane with room for `flows` flows, with IPv6 tables or (`ipv6` false) their
/// one-entry placeholders, which the sweep walks as well.
fn load(flows: u32, ipv6: bool) -> Dataplane {
    Dataplane::load(&LoadOptions {
        conntrack_flows: flows,
        pin_dir: None,
        ipv6,
    })
    .unwrap()
}

fn key<A: Fam>(saddr: [u8; 4], sport: u16, daddr: [u8; 4], dport: u16, protocol: u8) -> FlowKey<A> {
    FlowKey {
        saddr: A::of(saddr),
        daddr: A::of(daddr),
        sport,
        dport,
        proto: protocol,
        _pad: [0; 3],
    }
}

/// One flow's entries to write: (table, key, entry).
type Entries<A = [u8; 4]> = Vec<(CtTable, FlowKey<A>, FlowEntry<A>)>;

/// A translated flow from client `client` port `port`, each side with its flags and age;
/// `halves`: which entries exist (forward, reply).
fn flow<A: Fam>(
    out: &mut Entries<A>,
    now: u64,
    t: CtTable,
    (client, port, protocol): (u8, u16, u8),
    (forward_flags, forward_age): (u8, u64),
    (reply_flags, reply_age): (u8, u64),
    (forward_half, reply_half): (bool, bool),
) {
    let forward_key = key([192, 0, 2, client], port, [192, 0, 2, 1], 80, protocol);
    let translated = key([198, 51, 100, 100], port, [203, 0, 113, 10], 80, protocol);
    let forward = FlowEntry::new(
        &translated,
        1,
        flow_kind::FORWARD,
        forward_flags,
        now - forward_age,
    );
    let reply = FlowEntry::new(
        &forward_key.reversed(),
        1,
        flow_kind::REPLY,
        reply_flags,
        now - reply_age,
    );
    if forward_half {
        out.push((t, forward_key, forward));
    }
    if reply_half {
        out.push((t, translated.reversed(), reply));
    }
}

/// Every kind of flow the GC tells apart.
fn mixed<A: Fam>(now: u64) -> Entries<A> {
    let mut e = Vec::new();
    let both = (true, true);
    let r = CtTable::Replied;
    let u = CtTable::Unreplied;
    for client in 2..6u8 {
        let base = u16::from(client) * 100;
        let est = (ESTABLISHED, 5 * S);
        // Live established TCP: counted for its client.
        flow(&mut e, now, r, (client, base, proto::TCP), est, est, both);
        // Reset by the client 11 s ago: expired.
        let rst = (ESTABLISHED | tcp_seen::RST, 11 * S);
        flow(
            &mut e,
            now,
            r,
            (client, base + 1, proto::TCP),
            rst,
            (ESTABLISHED, 11 * S),
            both,
        );
        // Closed both ways 5 s ago: kept, not counted.
        let fin = (ESTABLISHED | tcp_seen::FIN, 5 * S);
        flow(
            &mut e,
            now,
            r,
            (client, base + 2, proto::TCP),
            fin,
            fin,
            both,
        );
        // UDP idle 121 s: expired; idle 100 s: kept.
        flow(
            &mut e,
            now,
            r,
            (client, base + 3, proto::UDP),
            (0, 121 * S),
            (0, 121 * S),
            both,
        );
        flow(
            &mut e,
            now,
            r,
            (client, base + 4, proto::UDP),
            (0, 100 * S),
            (0, 121 * S),
            both,
        );
        // Orphan halves: idle 11 s goes, idle 5 s stays.
        flow(
            &mut e,
            now,
            r,
            (client, base + 5, proto::TCP),
            est,
            (ESTABLISHED, 11 * S),
            (false, true),
        );
        flow(
            &mut e,
            now,
            r,
            (client, base + 6, proto::TCP),
            est,
            est,
            (false, true),
        );
        flow(
            &mut e,
            now,
            r,
            (client, base + 7, proto::TCP),
            (ESTABLISHED, 11 * S),
            est,
            (true, false),
        );
        // Unanswered: a SYN 61 s ago goes, one 5 s ago stays (and counts).
        let syn = |age| (tcp_seen::SYN, age);
        flow(
            &mut e,
            now,
            u,
            (client, base + 8, proto::TCP),
            syn(61 * S),
            (0, 61 * S),
            both,
        );
        flow(
            &mut e,
            now,
            u,
            (client, base + 9, proto::TCP),
            syn(5 * S),
            (0, 5 * S),
            both,
        );
    }
    // The pod's own connections: established and recent stays, reset 11 s ago goes.
    let local = |port, flags, age| {
        let k = key::<A>(
            [203, 0, 113, 10],
            443,
            [198, 51, 100, 100],
            port,
            proto::TCP,
        );
        let mut entry = FlowEntry::new(&k.reversed(), 0, flow_kind::LOCAL, flags, now - age);
        entry.created_ns = now - age;
        (CtTable::Replied, k, entry)
    };
    e.push(local(50000, ESTABLISHED, 5 * S));
    e.push(local(50001, ESTABLISHED | tcp_seen::RST, 11 * S));
    e
}

fn write<A: Fam>(dp: &mut Dataplane, entries: &Entries<A>) {
    for (t, k, v) in entries {
        dp.maps_mut().put_flow(*t, k, v).unwrap();
    }
}

/// Entries left: (table, key).
type Left<A = [u8; 4]> = Vec<(u8, FlowKey<A>)>;

/// Every entry left, both tables of family `A`, sorted.
fn left<A: Fam>(dp: &Dataplane) -> Left<A> {
    let mut all = Vec::new();
    for (i, t) in [CtTable::Replied, CtTable::Unreplied]
        .into_iter()
        .enumerate()
    {
        for (k, _) in dp.maps().conntrack_table_of::<A>(t).unwrap() {
            all.push((i as u8, k));
        }
    }
    all.sort_by_key(|(t, k)| (*t, k.saddr, k.daddr, k.sport, k.dport, k.proto));
    all
}

/// Both passes over the same entries (of either family or both): their results must be
/// equal, and so what is left of each family.
fn compare(
    v4: &Entries,
    v6: &Entries<[u8; 16]>,
    flows: u32,
    now: u64,
) -> (GcPass, Left, Left<[u8; 16]>) {
    let ipv6 = !v6.is_empty();
    let mut agent = load(flows, ipv6);
    let mut kernel = load(flows, ipv6);
    for dp in [&mut agent, &mut kernel] {
        write(dp, v4);
        write(dp, v6);
    }
    let by_agent = collect_garbage(agent.maps_mut(), now).unwrap();
    let by_kernel = collect_garbage_in_kernel(&mut kernel, now).unwrap();
    assert_eq!(by_kernel, by_agent);
    let (a, k) = (left::<[u8; 4]>(&agent), left::<[u8; 4]>(&kernel));
    assert_eq!(k, a, "IPv4 entries left");
    let (a6, k6) = (left::<[u8; 16]>(&agent), left::<[u8; 16]>(&kernel));
    assert_eq!(k6, a6, "IPv6 entries left");
    (by_kernel, k, k6)
}

/// What the sweep alone finds in family `A`'s tables with `entries`: 4 x 6 flows and the
/// local connection in the answered table, 4 old SYNs in the other.
fn sweep_finds_every_kind<A: Fam>(entries: &Entries<A>, now: u64) {
    let mut dp = load(1024, A::IPV6);
    write(&mut dp, entries);
    let answered = entries
        .iter()
        .filter(|(t, ..)| *t == CtTable::Replied)
        .count();
    assert_eq!(
        sweep_only::<A>(&mut dp, CtTable::Replied, now).unwrap(),
        Some((answered as u64, 4 * 4 + 1))
    );
    assert_eq!(
        sweep_only::<A>(&mut dp, CtTable::Unreplied, now).unwrap(),
        Some(((entries.len() - answered) as u64, 4))
    );
}

/// Family `A`'s half of a pass over [`mixed`]: per client, reset 2 + UDP 2 + two orphan
/// halves = 6 entries in the answered table, the old SYN's 2 in the other, and the reset
/// local connection; counted per client: the live TCP, the live UDP, the recent SYN.
fn judged_as_mixed<A: Fam>(pass: &GcPass, entries: &Entries<A>, left: usize) {
    let half = A::pass(pass);
    assert_eq!(half.expired, 4 * 6 + 1, "{pass:?}");
    assert_eq!(half.unreplied_expired, 4 * 2, "{pass:?}");
    assert_eq!(half.flows_by_source.len(), 4, "{pass:?}");
    assert!(half.flows_by_source.values().all(|&n| n == 3), "{pass:?}");
    assert_eq!(left, entries.len() - (4 * 8 + 1));
}

#[test]
fn the_sweep_in_the_kernel_judges_every_kind_of_flow_as_the_agent_does() {
    let now = monotonic_ns();
    let entries = mixed::<[u8; 4]>(now);
    // The sweep itself ran and found them (not the fallback).
    sweep_finds_every_kind(&entries, now);
    let (pass, left, left6) = compare(&entries, &Vec::new(), 1024, now);
    judged_as_mixed(&pass, &entries, left.len());
    assert!(left6.is_empty() && pass.v6.expired_total() == 0);
}

#[test]
fn the_sweep_judges_ipv6_flows_as_the_agent_does_beside_ipv4_ones() {
    let now = monotonic_ns();
    let entries6 = mixed::<[u8; 16]>(now);
    sweep_finds_every_kind(&entries6, now);
    // IPv6 alone: nothing of IPv4 is judged.
    let (pass, left, left6) = compare(&Vec::new(), &entries6, 1024, now);
    judged_as_mixed(&pass, &entries6, left6.len());
    assert!(left.is_empty() && pass.v4.expired_total() == 0);
    // Both families at once, each into its own lists and census.
    let entries = mixed::<[u8; 4]>(now);
    let (pass, left, left6) = compare(&entries, &entries6, 1024, now);
    judged_as_mixed(&pass, &entries, left.len());
    judged_as_mixed(&pass, &entries6, left6.len());
}

/// More collectable flows than the sweep's list holds: the table gets the agent's pass.
#[test]
fn a_sweep_that_overflows_falls_back_to_the_agents_pass() {
    let now = monotonic_ns();
    let mut entries = Vec::new();
    let old = (0, 121 * S);
    for i in 0..CT_DOOMED_MAX + 100 {
        let (client, port) = (2 + (i / 60_000) as u8, 1024 + (i % 60_000) as u16);
        flow(
            &mut entries,
            now,
            CtTable::Replied,
            (client, port, proto::UDP),
            old,
            old,
            (true, true),
        );
    }
    let flows = 2 * (CT_DOOMED_MAX + 100);
    let mut dp = load(flows, false);
    write(&mut dp, &entries);
    assert_eq!(
        sweep_only::<[u8; 4]>(&mut dp, CtTable::Replied, now).unwrap(),
        None
    );
    drop(dp);
    let (pass, left, _) = compare(&entries, &Vec::new(), flows, now);
    assert_eq!(pass.v4.expired, 2 * u64::from(CT_DOOMED_MAX + 100));
    assert!(left.is_empty());
}
