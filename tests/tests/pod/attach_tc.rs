//! The attachment without TCX (`--attach tc`, what `auto` takes on kernels before 6.6): a
//! cls_bpf filter on a clsact qdisc beside other owners' filters, replaced in place by the
//! next run, switched to and from TCX without a second program at a hook, and removed by
//! teardown together with the clsact qdiscs egress-router made and no other. And
//! `egress-router features`.

use egress_tests::{
    egress_router_bin,
    lab::{EGRESS_SOURCE, Lab, SERVER_IP},
    netns::run_bounded,
    util::{ask, peer_server, router_cli, run_ok, wait_listening},
};

/// The preference of egress-router's filters (its IPv6 twins take the next).
const OURS: &str = "59136";

/// `tc filter show dev DEV ingress|egress` in the router pod, one line per filter.
fn filters(lab: &Lab, dev: &str, hook: &str) -> String {
    run_ok(&lab.router, "tc", &["filter", "show", "dev", dev, hook], 5)
}

/// The clsact qdiscs of the router pod's interfaces.
fn clsacts(lab: &Lab) -> Vec<String> {
    ["eth0", "macvlan0"]
        .into_iter()
        .filter(|dev| {
            run_ok(&lab.router, "tc", &["qdisc", "show", "dev", dev], 5).contains("clsact")
        })
        .map(str::to_owned)
        .collect()
}

/// The programs `status` sees, as `name@interface:hook`.
fn attached(lab: &Lab, instance: &str) -> Vec<String> {
    let status: serde_json::Value =
        serde_json::from_str(&router_cli(lab, instance, &["status", "--json"])).unwrap();
    status["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}@{}:{}",
                p["name"].as_str().unwrap(),
                p["interface"].as_str().unwrap(),
                p["hook"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn tc_filters_run_beside_another_owners_and_teardown_removes_only_what_it_made() {
    let mut lab = Lab::new("tc-owners").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    // Another owner's clsact and filter on the pod interface, ahead of ours: classic BPF
    // that matches nothing, so every packet goes on to the next filter.
    run_ok(
        &lab.router,
        "tc",
        &["qdisc", "add", "dev", "eth0", "clsact"],
        5,
    );
    // And an empty clsact of another owner's on the egress interface: not egress-router's
    // to remove, even with nobody's filter on it.
    run_ok(
        &lab.router,
        "tc",
        &["qdisc", "add", "dev", "macvlan0", "clsact"],
        5,
    );
    run_ok(
        &lab.router,
        "tc",
        &[
            "filter",
            "add",
            "dev",
            "eth0",
            "ingress",
            "pref",
            "100",
            "handle",
            "7",
            "bpf",
            "bytecode",
            "1,6 0 0 0,",
        ],
        5,
    );
    lab.init_router(
        "owners",
        &format!("80 tcp {SERVER_IP}"),
        &["--attach", "tc"],
    )
    .unwrap();
    let eth0 = filters(&lab, "eth0", "ingress");
    assert!(
        eth0.contains("pref 100") && eth0.contains(&format!("pref {OURS}")),
        "{eth0}"
    );
    assert!(filters(&lab, "macvlan0", "ingress").contains(&format!("pref {OURS}")));
    assert!(filters(&lab, "macvlan0", "egress").contains(&format!("pref {OURS}")));
    assert_eq!(
        attached(&lab, "owners"),
        [
            "pod_ingress@eth0:tc",
            "egress_ingress@macvlan0:tc",
            "egress_egress@macvlan0:tc"
        ]
    );
    // Translated through both owners' filters: the server saw EGRESS_SOURCE.
    assert!(ask(&lab, 80).starts_with(&format!("{EGRESS_SOURCE} ")));

    // A second run replaces the programs in place: one filter per hook, still ours.
    lab.init_router(
        "owners",
        &format!("80 tcp {SERVER_IP}"),
        &["--attach", "tc"],
    )
    .unwrap();
    let eth0 = filters(&lab, "eth0", "ingress");
    assert_eq!(eth0.matches(&format!("pref {OURS}")).count(), 2, "{eth0}");
    assert!(ask(&lab, 80).starts_with(&format!("{EGRESS_SOURCE} ")));

    router_cli(&lab, "owners", &["teardown"]);
    // Ours are gone; the other owner's filter and both its clsacts stay (the switch test
    // shows the clsacts egress-router made going).
    let eth0 = filters(&lab, "eth0", "ingress");
    assert!(eth0.contains("pref 100") && !eth0.contains(OURS), "{eth0}");
    assert!(!filters(&lab, "macvlan0", "ingress").contains(OURS));
    assert_eq!(clsacts(&lab), ["eth0", "macvlan0"]);
}

#[test]
fn switching_between_tcx_and_tc_leaves_one_program_per_hook_and_traffic_flowing() {
    let mut lab = Lab::new("tc-switch").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let rules = format!("80 tcp {SERVER_IP}");
    let only = |kind: &str| {
        [
            format!("pod_ingress@eth0:{kind}"),
            format!("egress_ingress@macvlan0:{kind}"),
            format!("egress_egress@macvlan0:{kind}"),
        ]
    };
    lab.init_router("switch", &rules, &["--attach", "tcx"])
        .unwrap();
    assert_eq!(attached(&lab, "switch"), only("tcx"));
    assert!(clsacts(&lab).is_empty());

    lab.init_router("switch", &rules, &["--attach", "tc"])
        .unwrap();
    assert_eq!(attached(&lab, "switch"), only("tc"));
    assert!(ask(&lab, 80).starts_with(&format!("{EGRESS_SOURCE} ")));

    lab.init_router("switch", &rules, &["--attach", "tcx"])
        .unwrap();
    assert_eq!(attached(&lab, "switch"), only("tcx"));
    assert!(!filters(&lab, "eth0", "ingress").contains(OURS));
    assert!(ask(&lab, 80).starts_with(&format!("{EGRESS_SOURCE} ")));

    // The clsact qdiscs the tc run made are still recorded as egress-router's: teardown
    // takes them.
    router_cli(&lab, "switch", &["teardown"]);
    assert!(clsacts(&lab).is_empty(), "{:?}", clsacts(&lab));
}

#[test]
fn features_names_every_probe_and_an_unknown_attach_kind_is_refused() {
    let lab = Lab::new("tc-features").unwrap();
    let out = run_bounded(
        lab.router
            .command(egress_router_bin())
            .args(["features", "--json"]),
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let features = report["features"].as_array().unwrap();
    for name in [
        "tcx",
        "cls_bpf",
        "redirect_neigh",
        "check_mtu",
        "managed_neighbours",
        "for_each_map_elem",
        "lookup_and_delete",
    ] {
        assert!(
            features.iter().any(|f| f["name"] == name),
            "{name} in {out}"
        );
    }
    // This kernel (6.18) has everything.
    assert!(features.iter().all(|f| f["status"] == "present"), "{out}");
    assert_eq!(report["pod"]["runs"], true);
    assert_eq!(report["node"]["runs"], true);
    let refused = run_bounded(
        lab.router
            .command(egress_router_bin())
            .args(["attach", "--attach", "fastest"]),
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        text.contains("--attach") && text.contains("auto, tcx or tc"),
        "{text}"
    );
}
