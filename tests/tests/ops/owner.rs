//! Two routers with one EGRESS_SOURCE (tests/src/owner.rs): both router pods' macvlans on
//! one segment with the same stable MAC, so the MAC cannot tell a live holder from the
//! prober's own frames. The holder's data plane answers probes with a broadcast claim;
//! a second router is refused while the first serves (behind port security that passes
//! only the stable MAC too); two started together end with exactly one serving, and only
//! its port sends frames from the stable MAC; the first router's flows go on throughout.

use std::time::Duration;

use egress_tests::{
    echo::Echo,
    failover::{ECHO_PORT, FailoverLab, FailoverOptions, POD_A},
    lab::EGRESS_SOURCE,
    netns::wait_bounded,
    owner::{
        Agent, Node, StableMacWatch, heal, init, partition, router, send_arp, spawn_init,
        stable_mac_port, stat, teardown,
    },
};

#[test]
fn a_second_router_is_refused_while_the_first_serves() {
    for port_security in [false, true] {
        let opts = FailoverOptions {
            port_security,
            ..FailoverOptions::default()
        };
        let tag = if port_security { "own-ps" } else { "own" };
        let mut lab = FailoverLab::new(tag, opts).unwrap();
        lab.start_server().unwrap();
        let out = init(&lab, Node::A).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut open = Echo::connect_from(&lab.client, POD_A.into(), ECHO_PORT).unwrap();
        assert_eq!(open.ask("before").unwrap().peer, EGRESS_SOURCE.to_string());

        let before = lab.router_b.network_state().unwrap();
        let out = init(&lab, Node::B).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "port security {port_security}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("EGRESS_SOURCE {EGRESS_SOURCE} is in use"))
                && stderr.contains("as another egress-router that holds it"),
            "the refusal names the holder: {stderr}"
        );
        assert_eq!(
            lab.router_b.network_state().unwrap(),
            before,
            "nothing changed on node B"
        );
        // The first router's flows go on: the connection that was open, and new ones.
        assert_eq!(open.ask("after").unwrap().peer, EGRESS_SOURCE.to_string());
        for _ in 0..3 {
            let answer = lab.ask(POD_A, Duration::from_secs(3)).unwrap();
            assert!(answer.starts_with(&format!("{EGRESS_SOURCE} ")), "{answer}");
        }
        assert_eq!(stable_mac_port(&lab).unwrap().as_deref(), Some("pA"));
    }
}

#[test]
fn two_routers_started_together_end_with_one_owner() {
    let mut lab = FailoverLab::new("own-race", FailoverOptions::default()).unwrap();
    lab.start_server().unwrap();
    let watch = StableMacWatch::new(&lab).unwrap();
    // Started at the same moment, and a little apart (the second probing while the first
    // sets up, attaches or announces), in both orders.
    let mut winners = Vec::new();
    for (round, apart_ms) in [0u64, 0, 40, 120, 200, 300, 420].into_iter().enumerate() {
        let first = if round % 2 == 0 { Node::A } else { Node::B };
        let started = spawn_init(&lab, first).unwrap();
        std::thread::sleep(Duration::from_millis(apart_ms));
        let second = spawn_init(&lab, first.other()).unwrap();
        let outs = [
            (
                first,
                wait_bounded(started, Duration::from_secs(30)).unwrap(),
            ),
            (
                first.other(),
                wait_bounded(second, Duration::from_secs(30)).unwrap(),
            ),
        ];
        let report = |outs: &[(Node, std::process::Output)]| {
            outs.iter()
                .map(|(node, out)| {
                    format!(
                        "{node:?}: {:?} {}",
                        out.status.code(),
                        String::from_utf8_lossy(&out.stderr)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let served: Vec<Node> = outs
            .iter()
            .filter(|(_, out)| out.status.success())
            .map(|(node, _)| *node)
            .collect();
        let [winner] = served[..] else {
            panic!(
                "round {round} ({apart_ms} ms apart): {} served\n{}",
                served.len(),
                report(&outs)
            );
        };
        let loser = winner.other();
        let (_, lost) = outs.iter().find(|(node, _)| *node == loser).unwrap();
        assert_eq!(lost.status.code(), Some(1), "{}", report(&outs));
        assert!(
            String::from_utf8_lossy(&lost.stderr).contains("is in use"),
            "{}",
            report(&outs)
        );
        // From here on only the winner's port sends from the stable MAC, and the switch
        // sends the MAC's frames there.
        let from_loser = watch.frames(loser).unwrap();
        let from_winner = watch.frames(winner).unwrap();
        for _ in 0..5 {
            let answer = lab.ask(winner.pod(), Duration::from_secs(3)).unwrap();
            assert!(
                answer.starts_with(&format!("{EGRESS_SOURCE} ")),
                "round {round}: {answer}"
            );
        }
        assert!(lab.ask(loser.pod(), Duration::from_millis(500)).is_err());
        assert_eq!(
            watch.frames(loser).unwrap(),
            from_loser,
            "round {round}: the loser {loser:?} sent frames from the stable MAC\n{}",
            report(&outs)
        );
        assert!(watch.frames(winner).unwrap() > from_winner);
        let port = if winner == Node::A { "pA" } else { "pB" };
        assert_eq!(stable_mac_port(&lab).unwrap().as_deref(), Some(port));
        let loser_addrs = router(&lab, loser)
            .unwrap()
            .command("ip")
            .args(["-4", "-o", "addr", "show"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&loser_addrs.stdout).contains(&EGRESS_SOURCE.to_string()),
            "the loser holds no EGRESS_SOURCE"
        );
        let lost = String::from_utf8_lossy(&lost.stderr);
        let how = if lost.contains("stepped down") {
            "stepped down after announcing"
        } else if lost.contains("claiming it at this moment") {
            "yielded while both probed"
        } else {
            "refused by the holder's answer"
        };
        eprintln!("round {round} ({apart_ms} ms apart): {winner:?} serves, {loser:?} {how}");
        winners.push(winner);
        // The winner's pod is deleted: its set-up removed, its macvlan gone quiet.
        teardown(&lab, winner).unwrap();
        router(&lab, winner)
            .unwrap()
            .ip(&["link", "set", "macvlan0", "down"])
            .unwrap();
    }
    eprintln!("winners: {winners:?}");
}

/// A router that skips the probe (`--force-source`, for hosts that answer wrongly) and so
/// claims the address while another egress-router holds it: the holder answers its first
/// announcement with its older claim (the newcomer does not answer back: the younger claim
/// stays quiet), and the newcomer steps down before announcing again, so the last frame
/// from the stable MAC the switch saw is the holder's, and the holder's open connection
/// goes on. The holder counted the rival's claims and answered them.
#[test]
fn a_router_that_skipped_the_probe_steps_down_for_the_older_claim() {
    let mut lab = FailoverLab::new("own-force", FailoverOptions::default()).unwrap();
    lab.start_server().unwrap();
    assert!(init(&lab, Node::A).unwrap().status.success());
    let mut open = Echo::connect_from(&lab.client, POD_A.into(), ECHO_PORT).unwrap();
    assert_eq!(open.ask("before").unwrap().peer, EGRESS_SOURCE.to_string());
    let contested = stat(&lab, Node::A, "claim_contested").unwrap();

    let mut cmd = FailoverLab::init_command(&lab.router_b, lab.bpffs_b(), false);
    cmd.env("EGRESS_ROUTER_FORCE_SOURCE", "1");
    let out = egress_tests::netns::run_bounded(&mut cmd, Duration::from_secs(30)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("this router stepped down"), "{stderr}");
    // Nothing from the stable MAC since the holder's answer: the switch sends to A.
    assert_eq!(stable_mac_port(&lab).unwrap().as_deref(), Some("pA"));
    assert_eq!(open.ask("after").unwrap().peer, EGRESS_SOURCE.to_string());
    assert!(stat(&lab, Node::A, "claim_contested").unwrap() > contested);
    assert!(stat(&lab, Node::A, "claim_defended").unwrap() >= 1);
    let b = lab
        .router_b
        .command("ip")
        .args(["-o", "addr", "show"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&b.stdout).contains(&EGRESS_SOURCE.to_string()));
}

/// A host on the egress network floods probes for EGRESS_SOURCE, and claims it as a
/// younger egress-router would: the holder's broadcast answers stay within their rate (at
/// most one per 20 ms for probes and routers' claims, one a second for hosts' claims), the
/// rest goes to the stack, and the holder keeps serving.
#[test]
fn a_flood_of_probes_gets_a_bounded_number_of_broadcasts() {
    let mut lab = FailoverLab::new("own-flood", FailoverOptions::default()).unwrap();
    lab.start_server().unwrap();
    let watch = StableMacWatch::new(&lab).unwrap();
    assert!(init(&lab, Node::A).unwrap().status.success());
    let broadcasts = watch.broadcasts(Node::A).unwrap();
    let attacker = [0x02, 0, 0, 0, 0x66, 0x66];
    let started = std::time::Instant::now();
    send_arp(
        &lab,
        2000,
        attacker,
        std::net::Ipv4Addr::UNSPECIFIED,
        false,
        None,
    )
    .unwrap();
    // Past the answers' gap: the claims below get an answer of their own.
    std::thread::sleep(Duration::from_millis(50));
    // Claims with a younger claim than the holder's and the stable MAC: answered at the
    // probes' rate at most.
    let forged = egress_common::ClaimId {
        claimed_at_ms: u64::MAX,
        nonce: 1,
    };
    let stable = egress_user::network::mac::stable_mac(EGRESS_SOURCE.into());
    send_arp(
        &lab,
        500,
        stable,
        EGRESS_SOURCE,
        true,
        Some(forged.trailer()),
    )
    .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(100));
    let sent = watch.broadcasts(Node::A).unwrap() - broadcasts;
    let bound = (elapsed / 0.020).ceil() as u64 + 1 + (elapsed.ceil() as u64 + 1);
    eprintln!("{sent} broadcasts in {elapsed:.3} s (bound {bound})");
    assert!(sent >= 2, "the probes and the claims were answered");
    assert!(sent <= bound, "{sent} broadcasts in {elapsed:.3} s");
    assert!(stat(&lab, Node::A, "claim_contested").unwrap() >= 2500);
    // The forged claims moved the switch's entry; the next frame from A moves it back.
    let answer = lab.ask(POD_A, Duration::from_secs(3)).unwrap();
    assert!(answer.starts_with(&format!("{EGRESS_SOURCE} ")), "{answer}");
}

/// A partition of the egress network: router B starts on its side, finds no holder and
/// serves; the partition heals, so two agents hold one address. Each agent announces its
/// claim again every 10 s; the younger (B) sees the older claim (A's announcement, or A's
/// answer to B's), steps down (exits 1, its set-up removed), and A serves on.
#[test]
fn after_a_partition_heals_the_younger_agent_steps_down() {
    let mut lab = FailoverLab::new("own-heal", FailoverOptions::default()).unwrap();
    lab.start_server().unwrap();
    let a = Agent::spawn(&lab, Node::A).unwrap();
    a.wait_for_log("data plane set up", Duration::from_secs(20))
        .unwrap();
    let answer = lab.ask(POD_A, Duration::from_secs(3)).unwrap();
    assert!(answer.starts_with(&format!("{EGRESS_SOURCE} ")), "{answer}");

    partition(&lab, Node::B).unwrap();
    let mut b = Agent::spawn(&lab, Node::B).unwrap();
    b.wait_for_log("data plane set up", Duration::from_secs(20))
        .unwrap();
    heal(&lab).unwrap();
    let code = b.wait_exit(Duration::from_secs(25)).unwrap();
    let log = b.log();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("this router stepped down"), "{log}");
    assert!(!a.log().contains("steps down"), "{}", a.log());
    for _ in 0..3 {
        let answer = lab.ask(POD_A, Duration::from_secs(3)).unwrap();
        assert!(answer.starts_with(&format!("{EGRESS_SOURCE} ")), "{answer}");
    }
    assert_eq!(stable_mac_port(&lab).unwrap().as_deref(), Some("pA"));
    let b_addrs = lab
        .router_b
        .command("ip")
        .args(["-o", "addr", "show"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&b_addrs.stdout).contains(&EGRESS_SOURCE.to_string()));
}
