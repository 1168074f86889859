//! Network set-up of the egress side, in the lab: what `ip` shows afterwards, what the gateway
//! learns from the gratuitous ARP, idempotency, and failures that change nothing; the same
//! for the IPv6 half.

use std::{future::Future, time::Duration};

use egress_tests::{
    lab::{CLIENT_IP, EGRESS_SOURCE, GATEWAY_IP, Lab, NODE_PREFIX, POD_PREFIX},
    lab6::{EGRESS_SOURCE6, GATEWAY_IP6},
    netns::{Netns, run_bounded},
};
use egress_user::{
    config::fields::{Egress4, Egress6, EgressSource},
    network::{
        announce::announce,
        error::Error,
        mac::{mac_text, stable_mac},
        plan::{Applied, MacvlanMode, NetworkPlan},
    },
};

fn block_on_in<F: Future + Send>(ns: &Netns, f: impl FnOnce() -> F + Send) -> F::Output
where
    F::Output: Send,
{
    ns.enter(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .unwrap()
}

fn apply_in(ns: &Netns, plan: NetworkPlan) -> Result<Applied, Error> {
    block_on_in(ns, move || async move { plan.apply().await })
}

fn plan(iface: &str, parent: Option<&str>) -> NetworkPlan {
    NetworkPlan {
        egress_interface: iface.to_owned(),
        macvlan_parent: parent.map(str::to_owned),
        macvlan_mode: MacvlanMode::Private,
        v4: Some(Egress4 {
            source: EgressSource {
                ip: EGRESS_SOURCE,
                prefix: NODE_PREFIX,
            },
            gateway: GATEWAY_IP,
        }),
        v6: None,
        owner: "egress-router:network-test".to_owned(),
        mac: Some(stable_mac(EGRESS_SOURCE.into())),
    }
}

fn stdout(ns: &Netns, program: &str, args: &[&str]) -> String {
    let out = run_bounded(ns.command(program).args(args), Duration::from_secs(10)).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sets_up_the_egress_side_idempotently_and_announces_the_source() {
    let lab = Lab::new("network").unwrap();
    // Let the gateway learn neighbours from unsolicited ARP, as a switch learns MACs.
    lab.gateway
        .sysctl("net.ipv4.conf.lan0.arp_accept", "1")
        .unwrap();
    // What an earlier release left: forwarding on in the pod's namespace.
    lab.router.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let plan = plan("macvlan0", None);

    let applied: Applied = block_on_in(&lab.router, || async {
        let applied = plan.apply().await.unwrap();
        announce(
            "macvlan0",
            applied.egress_ifindex,
            applied.egress_mac,
            EGRESS_SOURCE,
            Duration::from_millis(100),
            None,
        )
        .await
        .unwrap();
        applied
    });
    assert!(!applied.created_macvlan);
    assert_eq!(
        applied.egress_mac,
        stable_mac(EGRESS_SOURCE.into()),
        "the stable MAC"
    );

    let state = lab.router.network_state().unwrap();
    for expected in [
        format!("addr macvlan0 inet {EGRESS_SOURCE}/{NODE_PREFIX}"),
        format!("route default via {GATEWAY_IP} dev macvlan0"),
        format!("route {GATEWAY_IP} dev macvlan0 proto static scope link"),
        // The cluster route stays on the pod interface.
        format!("route 192.0.2.0/{POD_PREFIX} dev eth0 proto kernel scope link src"),
    ] {
        assert!(state.contains(&expected), "{expected:?} missing:\n{state}");
    }
    assert_eq!(
        stdout(&lab.router, "sysctl", &["-n", "net.ipv4.ip_forward"]).trim(),
        "0",
        "the pod does not route between its networks"
    );
    assert!(
        stdout(&lab.router, "ip", &["-o", "link", "show", "macvlan0"]).contains("state UP"),
        "macvlan0 is not up"
    );

    // The gratuitous ARP reached the gateway before any traffic did (sent by now; its
    // processing on the gateway's side is asynchronous: waited for, at most 2 s).
    let learnt = format!("lladdr {}", mac_text(applied.egress_mac));
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let neigh = stdout(
            &lab.gateway,
            "ip",
            &["neigh", "show", &EGRESS_SOURCE.to_string(), "dev", "lan0"],
        );
        if neigh.contains(&learnt) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway neighbour entry after the announcement: {neigh:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // EGRESS_SOURCE answers from the gateway side over the macvlan and the node's uplink
    // (no data plane is attached in this test), and the pod network still reaches eth0.
    let ping = |ns: &Netns, to: String| {
        run_bounded(
            ns.command("ping")
                .args(["-c", "2", "-i", "0.2", "-W", "1", &to]),
            Duration::from_secs(10),
        )
        .unwrap()
        .status
        .success()
    };
    assert!(ping(&lab.gateway, EGRESS_SOURCE.to_string()));
    assert!(ping(&lab.router, CLIENT_IP.to_string()));

    // A pod restart runs the set-up again: same state.
    let again = apply_in(&lab.router, plan).unwrap();
    assert_eq!(again, applied);
    assert_eq!(lab.router.network_state().unwrap(), state);
}

#[test]
fn creates_the_macvlan_on_its_parent_and_fails_cleanly_without_one() {
    let lab = Lab::new("macvlan").unwrap();
    let before = lab.node.network_state().unwrap();

    let err = apply_in(&lab.node, plan("egress0", None)).unwrap_err();
    assert!(
        matches!(err, Error::NoEgressInterface(ref i) if i == "egress0"),
        "{err}"
    );
    let err = apply_in(&lab.node, plan("egress0", Some("nope0"))).unwrap_err();
    assert!(
        matches!(err, Error::NoParent(ref p) if p == "nope0"),
        "{err}"
    );
    assert_eq!(
        lab.node.network_state().unwrap(),
        before,
        "a failed set-up changed the network"
    );

    let created = apply_in(&lab.node, plan("egress0", Some("uplink"))).unwrap();
    assert!(created.created_macvlan);
    let details = stdout(&lab.node, "ip", &["-d", "-o", "link", "show", "egress0"]);
    assert!(
        details.contains("egress0@uplink") && details.contains("macvlan mode private"),
        "{details}"
    );
    let again = apply_in(&lab.node, plan("egress0", Some("uplink"))).unwrap();
    assert!(!again.created_macvlan);
    assert_eq!(again.egress_ifindex, created.egress_ifindex);
}

#[test]
fn sets_up_the_ipv6_half_idempotently_and_tears_it_down() {
    let lab = Lab::new("network6").unwrap();
    lab.enable_ipv6().unwrap();
    let before = lab.router.network_state().unwrap();
    // What a host on the egress network might have configured, and must not: router
    // advertisements and autoconfiguration on (the kernel's defaults).
    let mut plan = plan("macvlan0", None);
    plan.v6 = Some(Egress6 {
        source: EgressSource {
            ip: EGRESS_SOURCE6,
            prefix: 64,
        },
        gateway: GATEWAY_IP6,
    });
    let applied = apply_in(&lab.router, plan.clone()).unwrap();
    let state = lab.router.network_state().unwrap();
    for expected in [
        format!("addr macvlan0 inet6 {EGRESS_SOURCE6}/64"),
        format!("route default via {GATEWAY_IP6} dev macvlan0"),
        format!("route {GATEWAY_IP6} dev macvlan0"),
        format!("addr macvlan0 inet {EGRESS_SOURCE}/{NODE_PREFIX}"),
        "net.ipv6.conf.all.forwarding = 0".to_owned(),
    ] {
        assert!(state.contains(&expected), "{expected:?} missing:\n{state}");
    }
    let address = stdout(
        &lab.router,
        "ip",
        &[
            "-6", "-o", "addr", "show", "dev", "macvlan0", "scope", "global",
        ],
    );
    assert!(
        address.contains(&EGRESS_SOURCE6.to_string()) && !address.contains("tentative"),
        "usable at once, without DAD: {address}"
    );
    for key in ["accept_ra", "autoconf"] {
        let value = stdout(
            &lab.router,
            "sysctl",
            &["-n", &format!("net.ipv6.conf.macvlan0.{key}")],
        );
        assert_eq!(
            value.trim(),
            "0",
            "{key}: the egress network configures nothing"
        );
    }
    // Reachable over IPv6 from the gateway (no data plane here), neighbour discovery
    // included.
    let ping = run_bounded(
        lab.gateway.command("ping").args([
            "-6",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            &EGRESS_SOURCE6.to_string(),
        ]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(ping.status.success(), "{ping:?}");

    // A pod restart: the same state.
    let again = apply_in(&lab.router, plan.clone()).unwrap();
    assert_eq!(again, applied);
    assert_eq!(lab.router.network_state().unwrap(), state);

    // Teardown takes both addresses and all four routes; IPv6 stays on for the interface
    // (as IPv4 forwarding stays off), the rest is as before.
    let removed = block_on_in(&lab.router, || async { plan.teardown().await.unwrap() });
    assert!(removed.address && removed.routes == 4, "{removed:?}");
    let after = lab.router.network_state().unwrap();
    let without = |state: &str| -> String {
        state
            .lines()
            .filter(|l| !l.contains("macvlan0") || l.starts_with("link") || l.starts_with("tcx"))
            .filter(|l| !l.contains("fe80::") && !l.contains("ff00::"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    assert_eq!(without(&after), without(&before));
    assert!(!after.contains(&EGRESS_SOURCE6.to_string()), "{after}");
    assert!(!after.contains(&GATEWAY_IP6.to_string()), "{after}");
}
