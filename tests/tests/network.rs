//! Network set-up of the egress side, in the lab: what `ip` shows afterwards, what the gateway
//! learns from the gratuitous ARP, idempotency, and failures that change nothing.

use std::{future::Future, time::Duration};

use egress_tests::{
    lab::{CLIENT_IP, EGRESS_SOURCE, GATEWAY_IP, Lab, NODE_PREFIX, POD_PREFIX},
    netns::{Netns, run_bounded},
};
use egress_user::{
    config::fields::EgressSource,
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
        source: EgressSource {
            ip: EGRESS_SOURCE,
            prefix: NODE_PREFIX,
        },
        gateway: GATEWAY_IP,
        owner: "egress-router:network-test".to_owned(),
        mac: Some(stable_mac(EGRESS_SOURCE)),
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
        )
        .await
        .unwrap();
        applied
    });
    assert!(!applied.created_macvlan);
    assert_eq!(
        applied.egress_mac,
        stable_mac(EGRESS_SOURCE),
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
