//! Claiming EGRESS_SOURCE on the egress network: the egress interface takes the MAC derived
//! from the address (so a replacement pod on any node keeps it), and a set-up refuses,
//! changing nothing, when another live host already answers for the address (split brain).

use std::time::Duration;

use egress_tests::{
    egress_router_bin,
    lab::{EGRESS_SOURCE, GATEWAY_IP, Lab, SERVER_IP},
    lab6::{EGRESS_SOURCE6, SERVER_IP6, dual_stack_env},
    netns::run_bounded,
    util::{ask, mac_of, peer_server, router_cli, run_ok, wait_listening},
};
use egress_user::network::mac::{mac_text, stable_mac};

/// `egress-router init` in the router namespace with `extra` arguments; its output.
fn init(lab: &Lab, extra: &[&str]) -> std::process::Output {
    run_bounded(
        lab.router
            .command(egress_router_bin())
            .env("EGRESS_SOURCE", format!("{EGRESS_SOURCE}/24"))
            .env("EGRESS_GATEWAY", GATEWAY_IP.to_string())
            .env("EGRESS_DESTINATION", format!("80 tcp {SERVER_IP}"))
            .env("EGRESS_ROUTER_MODE", "init")
            .arg("--bpffs")
            .arg(lab.bpffs.path())
            .args(["--instance", "claim"])
            .args(extra),
        Duration::from_secs(30),
    )
    .unwrap()
}

#[test]
fn a_second_holder_of_egress_source_is_refused_and_nothing_changes() {
    let mut lab = Lab::new("claim-conflict").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    // A live host on the egress network already holds EGRESS_SOURCE (a predecessor pod
    // that still runs, say): here the gateway's LAN side, as a second address.
    let holder = format!("{EGRESS_SOURCE}/32");
    lab.gateway
        .ip(&["addr", "add", &holder, "dev", "lan0"])
        .unwrap();
    let holder_mac = mac_of(&lab.gateway, "lan0");
    let before = lab.router.network_state().unwrap();

    let out = init(&lab, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "EGRESS_SOURCE {EGRESS_SOURCE} is in use: {holder_mac} answered for it on macvlan0"
        )),
        "{stderr}"
    );
    assert_eq!(
        lab.router.network_state().unwrap(),
        before,
        "nothing changed"
    );
    assert!(!lab.pin_dir("claim").exists(), "no pins");

    // Told to: it claims the address anyway.
    let out = init(&lab, &["--force-source"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    router_cli(&lab, "claim", &["teardown"]);
    assert_eq!(lab.router.network_state().unwrap(), before);

    // The holder gone, the set-up goes through, and a restart (the address is ours now)
    // does not probe against itself.
    lab.gateway
        .ip(&["addr", "del", &holder, "dev", "lan0"])
        .unwrap();
    for _ in 0..2 {
        let out = init(&lab, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(ask(&lab, 80).starts_with(&format!("{EGRESS_SOURCE} ")));
}

#[test]
fn the_egress_interface_takes_the_stable_mac_and_teardown_gives_its_own_back() {
    let mut lab = Lab::new("claim-mac").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let own = mac_of(&lab.router, "macvlan0");
    let stable = mac_text(stable_mac(EGRESS_SOURCE.into()));
    assert_eq!(stable, "02:45:c6:33:64:64");
    assert_ne!(own, stable);

    let out = init(&lab, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mac_of(&lab.router, "macvlan0"), stable);
    let details = run_ok(&lab.router, "ip", &["-d", "link", "show", "macvlan0"], 5);
    assert!(
        details.contains(&format!("alias egress-router:claim mac {own}")),
        "{details}"
    );
    // The gateway learnt the stable MAC from the announcement and traffic flows.
    assert!(ask(&lab, 80).starts_with(&format!("{EGRESS_SOURCE} ")));
    let neigh = run_ok(
        &lab.gateway,
        "ip",
        &["neigh", "show", &EGRESS_SOURCE.to_string(), "dev", "lan0"],
        5,
    );
    assert!(neigh.contains(&format!("lladdr {stable}")), "{neigh}");
    // A second init keeps the first one's record of the interface's own MAC.
    assert!(init(&lab, &[]).status.success());

    router_cli(&lab, "claim", &["teardown"]);
    assert_eq!(mac_of(&lab.router, "macvlan0"), own, "its own MAC back");

    // Opted out: the interface keeps its MAC.
    let out = init(&lab, &["--keep-mac"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mac_of(&lab.router, "macvlan0"), own);
}

/// The same for EGRESS_SOURCE's IPv6 address: a host that holds it answers the router's
/// duplicate address detection, and the set-up refuses, changing nothing; with
/// --force-source it claims the address anyway.
#[test]
fn a_second_holder_of_the_ipv6_egress_source_is_refused_and_nothing_changes() {
    let lab = Lab::new("claim-conflict6").unwrap();
    lab.enable_ipv6().unwrap();
    lab.gateway
        .ip(&[
            "-6",
            "addr",
            "add",
            &format!("{EGRESS_SOURCE6}/64"),
            "dev",
            "lan0",
            "nodad",
        ])
        .unwrap();
    let holder_mac = mac_of(&lab.gateway, "lan0");
    let before = lab.router.network_state().unwrap();
    let [source, gateway] = dual_stack_env();
    let init = |extra: &[&str]| {
        run_bounded(
            lab.router
                .command(egress_router_bin())
                .env("EGRESS_SOURCE", &source)
                .env("EGRESS_GATEWAY", &gateway)
                .env("EGRESS_DESTINATION", format!("80 tcp {SERVER_IP6}"))
                .env("EGRESS_ROUTER_MODE", "init")
                .arg("--bpffs")
                .arg(lab.bpffs.path())
                .args(["--instance", "claim6"])
                .args(extra),
            Duration::from_secs(30),
        )
        .unwrap()
    };
    let out = init(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "EGRESS_SOURCE {EGRESS_SOURCE6} is in use: {holder_mac} answered for it on macvlan0"
        )),
        "{stderr}"
    );
    assert_eq!(
        lab.router.network_state().unwrap(),
        before,
        "nothing changed"
    );

    let out = init(&["--force-source"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
