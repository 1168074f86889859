//! Teardown in the netns lab: what `egress-router teardown` removes (programs, pins, the
//! address and routes, a macvlan it created), checked against the namespace as it was
//! before init, TCX programs and sysctls included, and that a second teardown succeeds.

use std::time::Duration;

use egress_tests::{
    egress_router_bin,
    lab::{Lab, SERVER_IP},
    netns::run_bounded,
    util::{router_cli, run_ok, teardown_by_hand},
};

#[test]
fn teardown_leaves_nothing_of_the_instance() {
    let lab = Lab::new("op-teardown").unwrap();
    // Links, addresses, routes, TCX and XDP programs per hook, and the sysctls.
    let before = lab.router.network_state().unwrap();
    lab.init_router("td", &format!("80 tcp {SERVER_IP}"), &[])
        .unwrap();
    assert!(lab.pin_dir("td").exists());
    let status: serde_json::Value =
        serde_json::from_str(&router_cli(&lab, "td", &["status", "--json"])).unwrap();
    assert_eq!(status["programs"].as_array().unwrap().len(), 3, "{status}");
    assert_ne!(lab.router.network_state().unwrap(), before);

    // Without EGRESS_SOURCE (a teardown run by hand): the running data plane names it.
    let teardown = || teardown_by_hand(&lab, "td");
    let done = teardown();
    assert_eq!(done["programs"], 3, "{done}");
    assert_eq!(done["address"], true, "EGRESS_SOURCE removed: {done}");
    assert!(!lab.pin_dir("td").exists(), "pins removed");
    // Programs, addresses, routes and sysctls as they were before init (the macvlan came
    // from the cluster network, not from us: it stays).
    assert_eq!(lab.router.network_state().unwrap(), before);
    let err = run_bounded(
        lab.router
            .command(egress_router_bin())
            .args(["--bpffs", lab.bpffs.path().to_str().unwrap()])
            .args(["--instance", "td", "status", "--json"]),
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(!err.status.success(), "status finds no data plane");

    // A second teardown finds nothing and succeeds.
    let again = teardown();
    assert_eq!(again["programs"], 0, "{again}");
    assert_eq!(again["pins"], 0, "{again}");
    assert_eq!(lab.router.network_state().unwrap(), before);

    // A macvlan the instance created goes away with it.
    lab.router
        .ip(&[
            "link", "add", "parent1", "type", "veth", "peer", "name", "parent1p",
        ])
        .unwrap();
    lab.router.ip(&["link", "set", "parent1", "up"]).unwrap();
    lab.init_router(
        "td2",
        &format!("80 tcp {SERVER_IP}"),
        &[
            "--egress-interface",
            "egress1",
            "--macvlan-parent",
            "parent1",
        ],
    )
    .unwrap();
    let link = run_ok(&lab.router, "ip", &["-d", "link", "show", "egress1"], 5);
    assert!(link.contains("alias egress-router:td2"), "{link}");
    router_cli(&lab, "td2", &["--egress-interface", "egress1", "teardown"]);
    let links = run_ok(&lab.router, "ip", &["-o", "link", "show"], 5);
    assert!(!links.contains("egress1"), "created link removed: {links}");
    assert!(!lab.pin_dir("td2").exists());
}
