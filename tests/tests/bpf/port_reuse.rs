//! Translated ports of flows that are over, with BPF_PROG_TEST_RUN: a new flow whose port
//! search meets a closed or reset flow idle for `PORT_REUSE_IDLE_NS` takes its tuple over;
//! a flow that is still open, half closed, or closed a moment ago keeps it, whoever asks.
//! The NAT range is one port, so that every flow to the remote wants the same tuple.

use egress_common::{DropReason, PORT_REUSE_IDLE_NS, Stat};
use egress_tests::pktgen::{
    CLIENT, POD, SERVER, SOURCE, TC_ACT_REDIRECT, TC_ACT_SHOT, age_flows, check_tcp,
    dataplane_with, drops, flow_states, run, tcp_segment,
};
use egress_user::dataplane::load::Dataplane;

/// The one translated port.
const NAT_PORT: u16 = 20000;
/// Seconds past which a flow that ended gives its tuple up.
const IDLE_S: u64 = PORT_REUSE_IDLE_NS / 1_000_000_000;

fn dp() -> Dataplane {
    dataplane_with("80 tcp 203.0.113.10", (NAT_PORT, NAT_PORT))
}

/// A client segment from `port`: the verdict, and the translated segment when forwarded.
fn client(dp: &mut Dataplane, port: u16, flags: &str, seq: u32, ack: u32) -> u32 {
    let frame = tcp_segment((CLIENT, port), (POD, 80), flags, seq, ack, b"");
    let (verdict, out) = run(dp, "pod_ingress", &frame);
    if verdict == TC_ACT_REDIRECT {
        check_tcp(&out, (SOURCE, NAT_PORT), (SERVER, 80));
    }
    verdict
}

/// A server segment to the translated port: the verdict, checked to reach client `port`.
fn server(dp: &mut Dataplane, port: u16, flags: &str, seq: u32, ack: u32) -> u32 {
    let frame = tcp_segment((SERVER, 80), (SOURCE, NAT_PORT), flags, seq, ack, b"");
    let (verdict, out) = run(dp, "egress_ingress", &frame);
    if verdict == TC_ACT_REDIRECT {
        check_tcp(&out, (POD, 80), (CLIENT, port));
    }
    verdict
}

/// A handshake from client `port` (ISNs 100 and 5000); afterwards the client's next byte is
/// 101 and the server's 5001.
fn connect(dp: &mut Dataplane, port: u16) {
    assert_eq!(client(dp, port, "S", 100, 0), TC_ACT_REDIRECT);
    assert_eq!(server(dp, port, "SA", 5000, 101), TC_ACT_REDIRECT);
    assert_eq!(client(dp, port, "A", 101, 5001), TC_ACT_REDIRECT);
}

fn reclaimed(dp: &Dataplane) -> u64 {
    dp.maps()
        .stats()
        .unwrap()
        .path(Stat::NatPortsReclaimed)
        .packets
}

/// The server closes first, the client answers: once both directions have been idle for
/// the reuse time, another client's flow gets the tuple (before it, the new flow finds the
/// range full), and the server's answer reaches the new client.
#[test]
fn a_closed_flow_gives_its_port_to_a_new_flow_once_idle() {
    let mut dp = dp();
    connect(&mut dp, 40000);
    assert_eq!(server(&mut dp, 40000, "FA", 5001, 101), TC_ACT_REDIRECT);
    assert_eq!(client(&mut dp, 40000, "FA", 101, 5002), TC_ACT_REDIRECT);
    assert_eq!(server(&mut dp, 40000, "A", 5002, 102), TC_ACT_REDIRECT);
    assert_eq!(flow_states(&dp), [(40000, "closed")]);

    assert_eq!(
        client(&mut dp, 40001, "S", 700, 0),
        TC_ACT_SHOT,
        "closed just now"
    );
    assert_eq!(drops(&dp, DropReason::NatExhausted), 1);
    assert_eq!(reclaimed(&dp), 0);

    age_flows(&mut dp, IDLE_S);
    connect(&mut dp, 40001);
    assert_eq!(reclaimed(&dp), 1);
    assert_eq!(flow_states(&dp), [(40001, "established")]);
    assert_eq!(drops(&dp, DropReason::NatExhausted), 1);
}

/// A connection the server refused (the RST acknowledging the SYN) never leaves the table of
/// unanswered flows: its tuple is taken over from there.
#[test]
fn a_refused_flow_gives_its_port_up_from_the_unanswered_table() {
    let mut dp = dp();
    assert_eq!(client(&mut dp, 40000, "S", 100, 0), TC_ACT_REDIRECT);
    assert_eq!(server(&mut dp, 40000, "RA", 0, 101), TC_ACT_REDIRECT);
    assert_eq!(flow_states(&dp), [(40000, "reset")]);
    age_flows(&mut dp, IDLE_S);
    connect(&mut dp, 40001);
    assert_eq!(reclaimed(&dp), 1);
    assert_eq!(flow_states(&dp), [(40001, "established")]);
}

/// What a client or a host on the egress network can do does not free a tuple in use: an
/// open flow idle for longer than the reuse time, a half-closed one, and one whose "RST"
/// was blind keep their port, and still pass both ways; the new flow is dropped.
#[test]
fn a_flow_that_is_not_over_keeps_its_port() {
    for end in ["open", "server FIN only", "blind RST"] {
        let mut dp = dp();
        connect(&mut dp, 40000);
        match end {
            "server FIN only" => {
                assert_eq!(server(&mut dp, 40000, "FA", 5001, 101), TC_ACT_REDIRECT);
            }
            "blind RST" => {
                assert_eq!(server(&mut dp, 40000, "R", 9_999_999, 0), TC_ACT_REDIRECT);
            }
            _ => {}
        }
        age_flows(&mut dp, IDLE_S + 5);
        assert_eq!(client(&mut dp, 40001, "S", 700, 0), TC_ACT_SHOT, "{end}");
        assert_eq!(drops(&dp, DropReason::NatExhausted), 1, "{end}");
        assert_eq!(reclaimed(&dp), 0, "{end}");
        assert_eq!(
            client(&mut dp, 40000, "A", 101, 5001),
            TC_ACT_REDIRECT,
            "{end}"
        );
        assert_eq!(
            server(&mut dp, 40000, "A", 5001, 101),
            TC_ACT_REDIRECT,
            "{end}"
        );
        assert_eq!(flow_states(&dp).len(), 1, "{end}: one flow");
    }
}
