//! Conntrack races: BPF_PROG_TEST_RUN from two threads pinned to different CPUs, and the
//! GC racing the traffic it judges. A flow must keep one translation whoever creates or
//! re-creates its entries, and its two entries must stay a pair.

use std::{
    collections::HashMap,
    sync::{Barrier, atomic::AtomicBool, atomic::Ordering},
    time::{Duration, Instant},
};

use egress_common::{Stat, flow_kind, peer_key};
use egress_tests::pktgen::{
    CLIENT, POD, SERVER, SOURCE, TC_ACT_REDIRECT, age_flows, check_tcp, check_udp, dataplane_with,
    pin_to_cpu, program_fd, run, run_fd, tcp_segment, udp_frame,
};
use egress_user::{
    conntrack::{collect_garbage, collect_garbage_with, monotonic_ns},
    dataplane::{flows::CtTable, load::Dataplane},
};

/// Translated ports; clients use ports inside it (kept) or above it (remapped).
const NAT: (u16, u16) = (20000, 29999);

fn syn(port: u16) -> Vec<u8> {
    tcp_segment((CLIENT, port), (POD, 80), "S", 100, 0, b"")
}

fn ack(port: u16) -> Vec<u8> {
    tcp_segment((CLIENT, port), (POD, 80), "A", 101, 5001, b"")
}

fn reply(nat_port: u16) -> Vec<u8> {
    tcp_segment((SERVER, 80), (SOURCE, nat_port), "A", 5001, 101, b"")
}

/// The GC tests use UDP: its 120 s timeout can be aged past on a machine up for minutes
/// (CLOCK_MONOTONIC starts at boot; TCP's 6 h could not).
const UDP_RULE: &str = "53 udp 203.0.113.10";
const UDP_AGE: u64 = 200;

fn query(port: u16) -> Vec<u8> {
    udp_frame((CLIENT, port), (POD, 53), b"query", 64)
}

fn answer(nat_port: u16) -> Vec<u8> {
    udp_frame((SERVER, 53), (SOURCE, nat_port), b"answer", 64)
}

/// [`nat_port`] of a UDP packet.
fn udp_nat_port(verdict: u32, out: &[u8]) -> u16 {
    assert_eq!(verdict, TC_ACT_REDIRECT, "client packet forwarded");
    let port = u16::from_be_bytes([out[34], out[35]]);
    check_udp(out, (SOURCE, port), (SERVER, 53));
    port
}

/// The translated source port of a forwarded client packet (addresses and checksums
/// checked).
fn nat_port(verdict: u32, out: &[u8]) -> u16 {
    assert_eq!(verdict, TC_ACT_REDIRECT, "client packet forwarded");
    // Ethernet (14) + IPv4 without options (20): the TCP source port.
    let port = u16::from_be_bytes([out[34], out[35]]);
    check_tcp(out, (SOURCE, port), (SERVER, 80));
    port
}

/// The table holds exactly `flows` flows, each a forward entry and the reply entry that
/// points back at it.
fn assert_pairs(dp: &Dataplane, flows: usize) {
    let table: HashMap<_, _> = dp.maps().conntrack().unwrap().into_iter().collect();
    let forward: Vec<_> = table
        .iter()
        .filter(|(_, e)| e.kind == flow_kind::FORWARD)
        .collect();
    assert_eq!(forward.len(), flows, "forward entries");
    for (key, entry) in &forward {
        let reply = table
            .get(&peer_key(key, entry))
            .unwrap_or_else(|| panic!("the reply entry of {key:?}"));
        assert!(
            reply.returns_to(key),
            "{key:?}: reply entry of another flow"
        );
    }
    assert_eq!(table.len(), 2 * flows, "no entry outside a pair");
}

fn created(dp: &Dataplane) -> u64 {
    dp.maps().stats().unwrap().path(Stat::FlowsCreated).packets
}

/// Two CPUs see the first packet of the same flow at once (a SYN and its retransmission
/// on two queues): both send it out with the same translation, one flow is created, and
/// its reply entry survives, whether the client's port is kept or remapped.
#[test]
fn two_cpus_creating_the_same_flow_agree_on_one_translation() {
    // Well within the unreplied table of the test data plane (256 flows).
    const FLOWS: u16 = 100;
    for first_port in [NAT.0 + 100, 40000] {
        let mut dp = dataplane_with("80 tcp 203.0.113.10", NAT);
        let fd = program_fd(&mut dp, "pod_ingress");
        let barrier = Barrier::new(2);
        let ports: Vec<Vec<u16>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..2)
                .map(|cpu| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        pin_to_cpu(cpu);
                        (0..FLOWS)
                            .map(|i| {
                                barrier.wait();
                                let (verdict, out) = run_fd(fd, &syn(first_port + i));
                                nat_port(verdict, &out)
                            })
                            .collect()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(ports[0], ports[1], "one translation per flow");
        assert_eq!(created(&dp), u64::from(FLOWS), "one flow each");
        assert_pairs(&dp, usize::from(FLOWS));
        for port in &ports[0] {
            let (verdict, _) = run(&mut dp, "egress_ingress", &reply(*port));
            assert_eq!(verdict, TC_ACT_REDIRECT, "the reply of port {port}");
        }
    }
}

/// The LRU evicts one half of a flow at a time. When it takes the forward entry of a
/// remapped flow, the client's next packet re-creates the flow with the same translated
/// port, so the connection goes on.
#[test]
fn a_flow_whose_forward_entry_was_evicted_keeps_its_translation() {
    let mut dp = dataplane_with("80 tcp 203.0.113.10", NAT);
    let ports: Vec<u16> = (0..200)
        .map(|i| {
            let (verdict, out) = run(&mut dp, "pod_ingress", &syn(40000 + i));
            let port = nat_port(verdict, &out);
            let (verdict, _) = run(&mut dp, "egress_ingress", &reply(port));
            assert_eq!(verdict, TC_ACT_REDIRECT, "answered");
            port
        })
        .collect();
    for (key, entry) in dp.maps().conntrack_table(CtTable::Replied).unwrap() {
        if entry.kind == flow_kind::FORWARD {
            assert!(dp.maps_mut().remove_flow(CtTable::Replied, &key).unwrap());
        }
    }
    for (i, port) in ports.iter().enumerate() {
        let (verdict, out) = run(&mut dp, "pod_ingress", &ack(40000 + i as u16));
        assert_eq!(nat_port(verdict, &out), *port, "flow {i} kept its port");
    }
    assert_pairs(&dp, ports.len());
}

/// A packet that refreshes a flow after the GC judged it expired, right before the GC takes
/// its entries out: the flow stays, both entries, and its replies get through.
#[test]
fn gc_keeps_a_flow_refreshed_between_its_judgement_and_its_removal() {
    let mut dp = dataplane_with(UDP_RULE, NAT);
    let ports: Vec<u16> = (0..3)
        .map(|i| {
            let (verdict, out) = run(&mut dp, "pod_ingress", &query(40000 + i));
            let port = udp_nat_port(verdict, &out);
            let (verdict, _) = run(&mut dp, "egress_ingress", &answer(port));
            assert_eq!(verdict, TC_ACT_REDIRECT);
            port
        })
        .collect();
    age_flows(&mut dp, UDP_AGE);
    let mut gc_maps = dp.maps().reopen().unwrap();
    let mut refreshed = false;
    let pass = collect_garbage_with(&mut gc_maps, monotonic_ns(), |key| {
        if key.sport == 40001 {
            let (verdict, out) = run(&mut dp, "pod_ingress", &query(40001));
            assert_eq!(udp_nat_port(verdict, &out), ports[1]);
            refreshed = true;
        }
    })
    .unwrap();
    assert!(refreshed, "the GC judged the flow expired first");
    assert_eq!(pass.v4.expired, 4, "the two other flows went, both halves");
    assert_pairs(&dp, 1);
    let (verdict, _) = run(&mut dp, "egress_ingress", &answer(ports[1]));
    assert_eq!(verdict, TC_ACT_REDIRECT, "the refreshed flow's reply");
}

/// The GC runs on one CPU, over and over, on a table it is told is hours idle, while the
/// flows' packets run on the other: whatever it removes, no flow ever changes its
/// translation, and afterwards every flow is one consistent pair.
#[test]
fn gc_racing_the_traffic_never_changes_a_translation() {
    const FLOWS: u16 = 64;
    let mut dp = dataplane_with(UDP_RULE, NAT);
    let ports: Vec<u16> = (0..FLOWS)
        .map(|i| {
            let (verdict, out) = run(&mut dp, "pod_ingress", &query(40000 + i));
            udp_nat_port(verdict, &out)
        })
        .collect();
    let forward = program_fd(&mut dp, "pod_ingress");
    let replies = program_fd(&mut dp, "egress_ingress");
    let mut gc_maps = dp.maps().reopen().unwrap();
    let mut aging = dp.maps().reopen().unwrap();
    let done = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (changed, removed) = std::thread::scope(|s| {
        let traffic = s.spawn(|| {
            pin_to_cpu(0);
            let mut changed = Vec::new();
            for _round in 0..2000 {
                if Instant::now() > deadline {
                    break;
                }
                for (i, port) in ports.iter().enumerate() {
                    let (verdict, out) = run_fd(forward, &query(40000 + i as u16));
                    let now = udp_nat_port(verdict, &out);
                    if now != *port && changed.len() < 10 {
                        changed.push((i, *port, now));
                    }
                    let _ = run_fd(replies, &answer(*port));
                }
            }
            done.store(true, Ordering::Relaxed);
            changed
        });
        let gc = s.spawn(|| {
            pin_to_cpu(1);
            let mut removed = 0;
            while !done.load(Ordering::Relaxed) {
                for t in CtTable::ALL {
                    for (key, mut entry) in aging.conntrack_table(t).unwrap() {
                        entry.last_seen_ns =
                            entry.last_seen_ns.saturating_sub(UDP_AGE * 1_000_000_000);
                        // Racing the data plane's own writes: whichever lands is fine.
                        let _ = aging.put_flow(t, &key, &entry);
                    }
                }
                removed += collect_garbage(&mut gc_maps, monotonic_ns())
                    .unwrap()
                    .v4
                    .expired;
            }
            removed
        });
        (traffic.join().unwrap(), gc.join().unwrap())
    });
    assert!(
        removed > 0,
        "the GC did remove entries while the traffic ran"
    );
    assert!(
        changed.is_empty(),
        "translations changed (flow, port, then): {changed:?}"
    );
    // Afterwards, one more packet each way: every flow is whole again.
    for (i, port) in ports.iter().enumerate() {
        let (verdict, out) = run(&mut dp, "pod_ingress", &query(40000 + i as u16));
        assert_eq!(udp_nat_port(verdict, &out), *port);
        let (verdict, _) = run(&mut dp, "egress_ingress", &answer(*port));
        assert_eq!(verdict, TC_ACT_REDIRECT, "flow {i}'s reply");
    }
    assert_pairs(&dp, usize::from(FLOWS));
}
