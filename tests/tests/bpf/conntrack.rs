//! Conntrack against spoofing, with BPF_PROG_TEST_RUN: which RST and FIN may end a flow,
//! a new connection over the tuple of one that ended, and one timeout per flow in the
//! data plane itself. Each test drives a real handshake through the programs, then plays
//! the attacker (or the endpoint) and ages the flow as the clock would.

use egress_common::{DropReason, Stat};
use egress_tests::pktgen::{
    CLIENT, POD, SERVER, SOURCE, TC_ACT_REDIRECT, TC_ACT_SHOT, age_flows, check_tcp, dataplane,
    drops, flow_states, run, tcp_segment,
};
use egress_user::dataplane::load::Dataplane;

const PORT: u16 = 40000;
/// The client's and the server's initial sequence numbers.
const CLIENT_ISN: u32 = 100;
const SERVER_ISN: u32 = 5000;

fn client(flags: &str, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
    tcp_segment((CLIENT, PORT), (POD, 80), flags, seq, ack, data)
}

fn server(flags: &str, seq: u32, ack: u32, data: &[u8]) -> Vec<u8> {
    tcp_segment((SERVER, 80), (SOURCE, PORT), flags, seq, ack, data)
}

/// Sends a client packet and asserts it was translated toward the server.
fn to_server(dp: &mut Dataplane, frame: &[u8]) {
    let (verdict, out) = run(dp, "pod_ingress", frame);
    assert_eq!(verdict, TC_ACT_REDIRECT, "client packet forwarded");
    check_tcp(&out, (SOURCE, PORT), (SERVER, 80));
}

/// Sends a server packet; returns the verdict (translated back when redirected).
fn from_server(dp: &mut Dataplane, frame: &[u8]) -> u32 {
    let (verdict, out) = run(dp, "egress_ingress", frame);
    if verdict == TC_ACT_REDIRECT {
        check_tcp(&out, (POD, 80), (CLIENT, PORT));
    }
    verdict
}

/// A flow through the rule `80 tcp SERVER`: handshake, 10 bytes from the client, 20 from
/// the server, acknowledged. Afterwards the client's next byte is 111 and the server's 5021.
fn established() -> Dataplane {
    let mut dp = dataplane("80 tcp 203.0.113.10");
    to_server(&mut dp, &client("S", CLIENT_ISN, 0, b""));
    assert_eq!(
        from_server(&mut dp, &server("SA", SERVER_ISN, CLIENT_ISN + 1, b"")),
        TC_ACT_REDIRECT
    );
    to_server(&mut dp, &client("A", 101, 5001, b""));
    to_server(&mut dp, &client("PA", 101, 5001, &[b'c'; 10]));
    assert_eq!(
        from_server(&mut dp, &server("PA", 5001, 111, &[b's'; 20])),
        TC_ACT_REDIRECT
    );
    to_server(&mut dp, &client("A", 111, 5021, b""));
    assert_eq!(flow_states(&dp), [(PORT, "established")]);
    dp
}

fn path(dp: &Dataplane, stat: Stat) -> u64 {
    dp.maps().stats().unwrap().path(stat).packets
}

/// Blind RSTs from the egress network, with any sequence number but the one the client
/// expects, pass to the client (which judges them, RFC 5961) but do not end the flow: after
/// the shortest timeout (a reset flow's 10 s) the server's packets still get through.
#[test]
fn a_blind_rst_from_the_egress_network_does_not_end_the_flow() {
    let mut dp = established();
    for seq in [0, 5020, 5022, 12_345, 5021 + 100_000, u32::MAX] {
        assert_eq!(
            from_server(&mut dp, &server("R", seq, 0, b"")),
            TC_ACT_REDIRECT,
            "passed on for the client to judge (seq {seq})"
        );
        assert_eq!(
            from_server(&mut dp, &server("RA", seq, 111, b"")),
            TC_ACT_REDIRECT
        );
    }
    assert_eq!(flow_states(&dp), [(PORT, "established")]);
    assert_eq!(path(&dp, Stat::TcpRstIgnored), 12);
    age_flows(&mut dp, 11);
    assert_eq!(
        from_server(&mut dp, &server("PA", 5021, 111, b"late")),
        TC_ACT_REDIRECT,
        "the flow outlived the spoofed RSTs"
    );
    assert_eq!(drops(&dp, DropReason::FlowExpired), 0);
}

/// The server's real RST (the sequence number the client acknowledged last) ends the flow;
/// so does a RST at the sender's next sequence number (after data, not yet acknowledged).
#[test]
fn a_rst_with_the_expected_sequence_number_ends_the_flow() {
    let mut dp = established();
    assert_eq!(
        from_server(&mut dp, &server("R", 5021, 0, b"")),
        TC_ACT_REDIRECT
    );
    assert_eq!(flow_states(&dp), [(PORT, "reset")]);
    assert_eq!(path(&dp, Stat::TcpRstIgnored), 0);
    age_flows(&mut dp, 11);
    assert_eq!(
        from_server(&mut dp, &server("PA", 5021, 111, b"late")),
        TC_ACT_SHOT
    );
    assert_eq!(drops(&dp, DropReason::FlowExpired), 1);

    // A RST right after unacknowledged data, at the sender's next sequence number.
    let mut dp = established();
    assert_eq!(
        from_server(&mut dp, &server("PA", 5021, 111, &[b's'; 5])),
        TC_ACT_REDIRECT
    );
    assert_eq!(
        from_server(&mut dp, &server("R", 5026, 0, b"")),
        TC_ACT_REDIRECT
    );
    assert_eq!(flow_states(&dp), [(PORT, "reset")]);
}

/// The answer to a SYN: a RST that acknowledges it (connection refused) ends the flow; one
/// that acknowledges something else does not.
#[test]
fn a_refused_connection_ends_only_with_a_rst_that_acknowledges_the_syn() {
    let mut dp = dataplane("80 tcp 203.0.113.10");
    to_server(&mut dp, &client("S", CLIENT_ISN, 0, b""));
    assert_eq!(
        from_server(&mut dp, &server("RA", 0, 7777, b"")),
        TC_ACT_REDIRECT
    );
    assert_eq!(flow_states(&dp), [(PORT, "syn_sent")]);
    assert_eq!(
        from_server(&mut dp, &server("RA", 0, CLIENT_ISN + 1, b"")),
        TC_ACT_REDIRECT
    );
    assert_eq!(flow_states(&dp), [(PORT, "reset")]);
}

/// A FIN far from the server's sequence space is passed on but closes nothing; the real
/// one (and its retransmission) does.
#[test]
fn a_fin_counts_only_inside_the_senders_window() {
    let mut dp = established();
    for seq in [
        5021 + (1 << 20),
        5021u32.wrapping_sub(1 << 20),
        3_000_000_000,
    ] {
        assert_eq!(
            from_server(&mut dp, &server("FA", seq, 111, b"")),
            TC_ACT_REDIRECT
        );
    }
    assert_eq!(flow_states(&dp), [(PORT, "established")]);
    assert_eq!(path(&dp, Stat::TcpFinIgnored), 3);
    assert_eq!(
        from_server(&mut dp, &server("FA", 5021, 111, b"")),
        TC_ACT_REDIRECT
    );
    assert_eq!(flow_states(&dp), [(PORT, "closing")]);
    assert_eq!(
        from_server(&mut dp, &server("FA", 5021, 111, b"")),
        TC_ACT_REDIRECT,
        "retransmitted"
    );
    assert_eq!(path(&dp, Stat::TcpFinIgnored), 3);
    to_server(&mut dp, &client("FA", 111, 5022, b""));
    assert_eq!(flow_states(&dp), [(PORT, "closed")]);
}

/// After a RST, a new connection from the same client port starts with fresh state: it is
/// not born reset (and cut 10 s later), and it keeps its translation.
#[test]
fn a_new_syn_over_a_reset_flow_starts_afresh() {
    let mut dp = established();
    to_server(&mut dp, &client("R", 111, 0, b""));
    assert_eq!(flow_states(&dp), [(PORT, "reset")]);
    to_server(&mut dp, &client("S", 900_000, 0, b""));
    assert_eq!(path(&dp, Stat::FlowsReopened), 1);
    assert_eq!(flow_states(&dp), [(PORT, "syn_sent")]);
    assert_eq!(
        from_server(&mut dp, &server("SA", 70_000, 900_001, b"")),
        TC_ACT_REDIRECT
    );
    to_server(&mut dp, &client("A", 900_001, 70_001, b""));
    assert_eq!(flow_states(&dp), [(PORT, "established")]);
    age_flows(&mut dp, 11);
    assert_eq!(
        from_server(&mut dp, &server("PA", 70_001, 900_001, b"new")),
        TC_ACT_REDIRECT,
        "the new connection outlives a reset flow's timeout"
    );
    // A SYN retransmitted on a live flow is not a new connection.
    to_server(&mut dp, &client("S", 900_000, 0, b""));
    assert_eq!(path(&dp, Stat::FlowsReopened), 1);
}

/// A flow has one timeout, also in the data plane: the client's RST ends it for the
/// server's packets too, 10 s later, without waiting for the agent's GC.
#[test]
fn the_clients_rst_ends_the_flow_for_the_replies_too() {
    let mut dp = established();
    to_server(&mut dp, &client("R", 111, 0, b""));
    age_flows(&mut dp, 9);
    assert_eq!(
        from_server(&mut dp, &server("A", 5021, 111, b"")),
        TC_ACT_REDIRECT,
        "within the reset flow's 10 s"
    );
    age_flows(&mut dp, 11);
    assert_eq!(
        from_server(&mut dp, &server("A", 5021, 111, b"")),
        TC_ACT_SHOT
    );
    assert_eq!(drops(&dp, DropReason::FlowExpired), 1);
}

/// A client sprays new flows at the fallback that nobody answers (ten times the table's
/// capacity): they churn the table of unanswered flows only, so every answered flow of
/// another client, idle the whole time, still gets its replies and keeps its translation.
#[test]
fn a_flood_of_unanswered_flows_evicts_no_answered_flow() {
    const ATTACKER: [u8; 4] = [192, 0, 2, 66];
    let mut dp = dataplane("80 tcp 203.0.113.10\n203.0.113.99");
    let flows: Vec<u16> = (0..100).map(|i| 41000 + i).collect();
    for &port in &flows {
        let (verdict, _) = run(
            &mut dp,
            "pod_ingress",
            &tcp_segment((CLIENT, port), (POD, 80), "S", CLIENT_ISN, 0, b""),
        );
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let (verdict, _) = run(
            &mut dp,
            "egress_ingress",
            &tcp_segment(
                (SERVER, 80),
                (SOURCE, port),
                "SA",
                SERVER_ISN,
                CLIENT_ISN + 1,
                b"",
            ),
        );
        assert_eq!(verdict, TC_ACT_REDIRECT);
    }
    assert_eq!(path(&dp, Stat::FlowsReplied), 100);
    let capacity = dp.maps().conntrack_capacity().unwrap() as usize / 2;
    for i in 0..10 * capacity {
        let sport = 1024 + (i % 60000) as u16;
        let dport = 1000 + (i / 60000) as u16;
        let frame = tcp_segment((ATTACKER, sport), (POD, dport), "S", 1, 0, b"");
        let (verdict, _) = run(&mut dp, "pod_ingress", &frame);
        assert_eq!(
            verdict, TC_ACT_REDIRECT,
            "the flood goes out (to the fallback)"
        );
    }
    assert!(path(&dp, Stat::FlowsCreated) >= 100 + 10 * capacity as u64);
    for &port in &flows {
        let answer = tcp_segment(
            (SERVER, 80),
            (SOURCE, port),
            "A",
            SERVER_ISN + 1,
            CLIENT_ISN + 1,
            b"",
        );
        let (verdict, out) = run(&mut dp, "egress_ingress", &answer);
        assert_eq!(verdict, TC_ACT_REDIRECT, "flow {port} still answered");
        check_tcp(&out, (POD, 80), (CLIENT, port));
    }
    assert_eq!(drops(&dp, DropReason::Unsolicited), 0);
}

/// The agent reads a conntrack table in batches (`BPF_MAP_LOOKUP_BATCH`): every entry of
/// thousands of flows once, none twice, whatever the buckets hold.
#[test]
fn a_batched_read_sees_every_entry_exactly_once() {
    use std::collections::HashSet;

    // Room for every flow in the table of unanswered flows (a quarter of the capacity).
    let mut dp = egress_tests::pktgen::dataplane_sized("5300 udp 203.0.113.10 53", 32768, |_| {});
    let clients = 6000u16;
    for i in 0..clients {
        let client = [192, 0, 2, 10 + (i % 200) as u8];
        let query = egress_tests::pktgen::udp_frame((client, 20000 + i), (POD, 5300), b"q", 64);
        let (verdict, _) = run(&mut dp, egress_common::programs::POD_INGRESS, &query);
        assert_eq!(verdict, TC_ACT_REDIRECT);
    }
    let flows = dp.maps().conntrack().unwrap();
    let keys: HashSet<_> = flows.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        flows.len(),
        2 * usize::from(clients),
        "forward and reply entries"
    );
    assert_eq!(keys.len(), flows.len(), "no entry twice");
    for i in 0..clients {
        let forward = egress_common::FlowKey {
            saddr: [192, 0, 2, 10 + (i % 200) as u8],
            daddr: POD,
            sport: 20000 + i,
            dport: 5300,
            proto: egress_common::proto::UDP,
            _pad: [0; 3],
        };
        assert!(keys.contains(&forward), "flow {i} missing");
    }
}
