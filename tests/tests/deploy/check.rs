//! `egress-router check`, the egress network's preflight, in the lab: a healthy network, a
//! hypervisor-like MAC filter (the gateway's side drops frames from any MAC but the node
//! NIC's, as RHOSP port security, RHV's network filter or vSphere's forged-transmit setting
//! do), and a live holder of EGRESS_SOURCE; both families of a dual-stack EGRESS_SOURCE,
//! and IPv6 alone. Each with its exit status, and nothing left changed.

use std::time::Duration;

use egress_tests::{
    egress_router_bin,
    lab::{EGRESS_SOURCE, GATEWAY_IP, Lab, SERVER_IP},
    lab6::{EGRESS_SOURCE6, GATEWAY_IP6, SERVER_IP6, dual_stack_env},
    netns::{Netns, run_bounded},
    util::{mac_of, run_ok},
};

/// `egress-router check` in `ns` with the lab's variables and `extra` arguments: (exit
/// status, stdout).
fn check(ns: &Netns, extra: &[&str]) -> (i32, String) {
    let source = format!("{EGRESS_SOURCE}/24");
    let destination = format!("80 tcp {SERVER_IP}\n81 tcp 198.51.100.7");
    check_with(ns, [&source, &GATEWAY_IP.to_string()], &destination, extra)
}

/// [`check`] with other EGRESS_SOURCE, EGRESS_GATEWAY and EGRESS_DESTINATION.
fn check_with(
    ns: &Netns,
    [source, gateway]: [&str; 2],
    destination: &str,
    extra: &[&str],
) -> (i32, String) {
    let out = run_bounded(
        ns.command(egress_router_bin())
            .env_clear()
            .env("EGRESS_SOURCE", source)
            .env("EGRESS_GATEWAY", gateway)
            .env("EGRESS_DESTINATION", destination)
            .args(extra)
            .arg("check"),
        Duration::from_secs(30),
    )
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

const STABLE: &str = "02:45:c6:33:64:64";

#[test]
fn a_healthy_egress_network_passes_and_nothing_changes() {
    let lab = Lab::new("check-ok").unwrap();
    let before = lab.router.network_state().unwrap();
    let (code, out) = check(&lab.router, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict: ok"), "{out}");
    assert!(
        out.contains(&format!("{GATEWAY_IP} answers ARP from {STABLE}")),
        "asked with the stable MAC: {out}"
    );
    // A remote on EGRESS_SOURCE's own subnet is not reached via the gateway.
    assert!(
        out.contains("warn  destinations") && out.contains("198.51.100.7"),
        "{out}"
    );
    assert_eq!(lab.router.network_state().unwrap(), before, "{out}");
}

#[test]
fn a_mac_filter_is_named_with_the_fix_for_each_platform() {
    let lab = Lab::new("check-filter").unwrap();
    // The "hypervisor": frames reach the gateway only from the node NIC's own MAC.
    let uplink = mac_of(&lab.node, "uplink");
    run_ok(&lab.gateway, "nft", &["add", "table", "netdev", "hv"], 5);
    run_ok(
        &lab.gateway,
        "nft",
        &["add chain netdev hv port { type filter hook ingress device lan0 priority 0 ; }"],
        5,
    );
    run_ok(
        &lab.gateway,
        "nft",
        &[
            "add", "rule", "netdev", "hv", "port", "ether", "saddr", "!=", &uplink, "drop",
        ],
        5,
    );
    let pod_before = lab.router.network_state().unwrap();
    let node_before = lab.node.network_state().unwrap();

    // From the pod: the gateway is silent, and the parent cannot be tried from here.
    let (code, out) = check(&lab.router, &[]);
    assert_eq!(code, 5, "gateway unreachable: {out}");
    assert!(out.contains("verdict: gateway-unreachable"), "{out}");
    assert!(out.contains("--macvlan-parent"), "says how to tell: {out}");
    assert_eq!(lab.router.network_state().unwrap(), pod_before);

    // From the node: the NIC's own MAC gets an answer, the router's does not.
    let (code, out) = check(
        &lab.node,
        &[
            "--egress-interface",
            "egress9",
            "--macvlan-parent",
            "uplink",
        ],
    );
    eprintln!("{out}");
    assert_eq!(code, 4, "mac filtered: {out}");
    assert!(out.contains("verdict: mac-filtered"), "{out}");
    assert!(
        out.contains(&format!("answers the node's own MAC {uplink}")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "openstack port set --allowed-address ip_address={EGRESS_SOURCE},mac_address={STABLE} <port>"
        )),
        "{out}"
    );
    assert!(
        out.contains("No Network Filter") && out.contains("Forged transmits"),
        "{out}"
    );
    assert_eq!(
        lab.node.network_state().unwrap(),
        node_before,
        "temporary macvlan gone"
    );

    // Without the filter, the same check from the node passes.
    run_ok(&lab.gateway, "nft", &["delete", "table", "netdev", "hv"], 5);
    let (code, out) = check(
        &lab.node,
        &[
            "--egress-interface",
            "egress9",
            "--macvlan-parent",
            "uplink",
        ],
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_live_holder_of_egress_source_is_reported() {
    let lab = Lab::new("check-held").unwrap();
    lab.gateway
        .ip(&["addr", "add", &format!("{EGRESS_SOURCE}/32"), "dev", "lan0"])
        .unwrap();
    let (code, out) = check(&lab.router, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!(
            "{EGRESS_SOURCE} is in use: {} answered for it",
            mac_of(&lab.gateway, "lan0")
        )),
        "{out}"
    );
}

/// Both families are checked: EGRESS_SOURCE's IPv6 address free (duplicate address
/// detection), the IPv6 gateway answering neighbour discovery from the stable MAC, an IPv6
/// remote on EGRESS_SOURCE's IPv6 subnet named; then a live holder of the IPv6 address;
/// and IPv6 alone, asked with the MAC of the IPv6 address.
#[test]
fn both_families_are_checked() {
    let lab = Lab::new("check-dual").unwrap();
    lab.enable_ipv6().unwrap();
    let before = lab.router.network_state().unwrap();
    let [source, gateway] = dual_stack_env();
    let destination = format!("80 tcp {SERVER_IP}\n80 tcp {SERVER_IP6}\n81 tcp 2001:db8:e::7");
    let (code, out) = check_with(&lab.router, [&source, &gateway], &destination, &[]);
    assert_eq!(code, 0, "{out}");
    for expected in [
        format!("{GATEWAY_IP} answers ARP from {STABLE}"),
        format!("{GATEWAY_IP6} answers neighbour discovery from {STABLE}"),
        format!("{EGRESS_SOURCE6} is free (nobody answered duplicate address detection)"),
        "2001:db8:e::7 on EGRESS_SOURCE's subnet".to_owned(),
    ] {
        assert!(out.contains(&expected), "{expected:?} missing: {out}");
    }
    assert_eq!(lab.router.network_state().unwrap(), before, "{out}");

    // A host that holds the IPv6 address answers the detection.
    lab.gateway
        .ip(&[
            "-6",
            "addr",
            "add",
            &format!("{EGRESS_SOURCE6}/128"),
            "dev",
            "lan0",
            "nodad",
        ])
        .unwrap();
    let (code, out) = check_with(&lab.router, [&source, &gateway], &destination, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!(
            "{EGRESS_SOURCE6} is in use: {} answered for it",
            mac_of(&lab.gateway, "lan0")
        )),
        "{out}"
    );
    lab.gateway
        .ip(&[
            "-6",
            "addr",
            "del",
            &format!("{EGRESS_SOURCE6}/128"),
            "dev",
            "lan0",
        ])
        .unwrap();

    // IPv6 alone: no ARP at all, and the MAC of the IPv6 address.
    let stable6 = egress_user::network::mac::mac_text(egress_user::network::mac::stable_mac(
        EGRESS_SOURCE6.into(),
    ));
    let (code, out) = check_with(
        &lab.router,
        [&format!("{EGRESS_SOURCE6}/64"), &GATEWAY_IP6.to_string()],
        &format!("80 tcp {SERVER_IP6}"),
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "{GATEWAY_IP6} answers neighbour discovery from {stable6}"
        )),
        "{out}"
    );
    assert!(!out.contains("ARP"), "{out}");
    assert_eq!(lab.router.network_state().unwrap(), before, "{out}");
}
