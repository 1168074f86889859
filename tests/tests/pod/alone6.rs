//! IPv6 alone (EGRESS_SOURCE and EGRESS_GATEWAY with one IPv6 address each) end to end in
//! the lab: the egress interface gets the IPv6 address, its routes and the stable MAC of
//! that address, and no IPv4 at all; IPv6 clients leave from EGRESS_SOURCE over the fallback
//! and a port rule; IPv4 clients are not translated; IPv4 from the egress network reaches
//! nothing; teardown by hand (from the running data plane's configuration) leaves the
//! namespace as it was. The HTTP proxy serves over IPv6 alone too, and the DNS proxy in a
//! pod without any IPv4 address (an IPv6-only pod network).

use std::time::Duration;

use egress_common::DropReason;
use egress_tests::{
    echo::Echo,
    egress_router_bin,
    lab::{EGRESS_SOURCE, Lab, ROUTER_POD_IP, SERVER_IP},
    lab6::{EGRESS_SOURCE6, GATEWAY_IP6, ROUTER_POD_IP6, SERVER_IP6},
    netns::run_bounded,
    util::{mac_of, peer_server_at, router_cli, run_ok, teardown_by_hand, wait_sockets},
};
use egress_user::{
    dataplane::maps::MapSet,
    network::mac::{mac_text, stable_mac},
};

fn env() -> [String; 2] {
    [format!("{EGRESS_SOURCE6}/64"), GATEWAY_IP6.to_string()]
}

#[test]
fn ipv6_alone_leaves_from_egress_source_and_nothing_of_ipv4_is_set_up() {
    let mut lab = Lab::new("v6alone").unwrap();
    lab.enable_ipv6().unwrap();
    peer_server_at(&mut lab, "echo", &SERVER_IP6.to_string(), 7000, &[]);
    peer_server_at(&mut lab, "echo", &SERVER_IP.to_string(), 7000, &[]);
    wait_sockets(&lab.server, &["-Htln", "sport = :7000"], |n| n == 2);
    let before = lab.router.network_state().unwrap();
    let [source, gateway] = env();
    // A port rule with another remote port, and the IPv6 fallback for everything else.
    let destination = format!("7100 tcp {SERVER_IP6} 7000\n{SERVER_IP6}\n");
    lab.init_router_as("alone", [&source, &gateway], &destination, &[])
        .unwrap();

    // The egress interface: the IPv6 half only, with the MAC of the IPv6 address.
    let state = lab.router.network_state().unwrap();
    for expected in [
        format!("addr macvlan0 inet6 {EGRESS_SOURCE6}/64"),
        format!("route default via {GATEWAY_IP6} dev macvlan0"),
    ] {
        assert!(state.contains(&expected), "{expected:?} missing:\n{state}");
    }
    assert!(
        !state.contains("addr macvlan0 inet "),
        "no IPv4 address on the egress interface:\n{state}"
    );
    assert!(
        !state.lines().any(|l| l.starts_with("route default via 1")),
        "no IPv4 default route:\n{state}"
    );
    assert_eq!(
        mac_of(&lab.router, "macvlan0"),
        mac_text(stable_mac(EGRESS_SOURCE6.into()))
    );

    // IPv6 clients: the rule and the fallback, from EGRESS_SOURCE6.
    for port in [7100, 7000] {
        let seen = Echo::connect_to(&lab, ROUTER_POD_IP6.into(), port)
            .and_then(|mut e| e.ask("hello"))
            .unwrap_or_else(|e| panic!("port {port}: {e}"));
        assert_eq!(
            (seen.peer.as_str(), seen.local.as_str()),
            (
                EGRESS_SOURCE6.to_string().as_str(),
                SERVER_IP6.to_string().as_str()
            ),
            "port {port}"
        );
    }
    // IPv4 clients are not translated: the pod itself refuses them.
    assert!(
        Echo::connect_to(&lab, ROUTER_POD_IP.into(), 7000).is_err(),
        "an IPv4 client was translated by an instance with IPv6 alone"
    );

    // IPv4 from the egress network, to the address an IPv4 half would have had (the
    // gateway believes the router's MAC holds it): nothing answers, and the data plane
    // counts it.
    let mac = mac_of(&lab.router, "macvlan0");
    lab.gateway
        .ip(&[
            "neigh",
            "replace",
            &EGRESS_SOURCE.to_string(),
            "lladdr",
            &mac,
            "dev",
            "lan0",
            "nud",
            "permanent",
        ])
        .unwrap();
    let ping = run_bounded(
        lab.gateway.command("ping").args([
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            &EGRESS_SOURCE.to_string(),
        ]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(!ping.status.success(), "an IPv4 address answered");
    let stats = MapSet::from_pins(&lab.pin_dir("alone"))
        .unwrap()
        .stats()
        .unwrap();
    assert!(
        stats.drop(DropReason::NotEgressSource).packets >= 3,
        "IPv4 to the egress interface dropped and counted: {stats}"
    );

    // What an operator sees: the IPv6 half, no IPv4 EGRESS_SOURCE.
    let status: serde_json::Value =
        serde_json::from_str(&router_cli(&lab, "alone", &["status", "--json"])).unwrap();
    assert_eq!(
        status["egress_source6"],
        EGRESS_SOURCE6.to_string(),
        "{status}"
    );
    assert!(status["egress_source"].is_null(), "{status}");
    // The pod keeps its IPv4 address, whose clients are its own.
    assert_eq!(status["pod_ip"], ROUTER_POD_IP.to_string(), "{status}");
    assert_eq!(status["conntrack_entries"], 0, "{status}");

    // Teardown from the running data plane's configuration: as before, but for IPv6 on
    // the egress interface, which stays on (as IPv4 forwarding stays off).
    let done = teardown_by_hand(&lab, "alone");
    assert_eq!(done["programs"], 6, "{done}");
    let after = lab.router.network_state().unwrap();
    let without_macvlan = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.contains("macvlan0"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(without_macvlan(&after), without_macvlan(&before));
    let left = run_ok(&lab.router, "ip", &["addr", "show", "dev", "macvlan0"], 5);
    assert!(!left.contains("2001:db8:e::100"), "{left}");
}

#[test]
fn the_http_proxy_serves_over_ipv6_alone() {
    let mut lab = Lab::new("v6alone-http").unwrap();
    lab.enable_ipv6().unwrap();
    peer_server_at(&mut lab, "http", &SERVER_IP6.to_string(), 80, &[]);
    wait_sockets(&lab.server, &["-Htln", "sport = :80"], |n| n == 1);
    let [source, gateway] = env();
    lab.init_proxy_network_as("http-proxy", [&source, &gateway])
        .unwrap();
    let mut proxy = lab.router.command(egress_router_bin());
    proxy
        .env_clear()
        .env("EGRESS_HTTP_PROXY_DESTINATION", "*\n");
    let index = lab.daemons_len();
    lab.spawn(proxy).unwrap();
    wait_sockets(&lab.router, &["-Htln", "sport = :8080"], |n| n >= 1);
    let over6 = format!("http://[{ROUTER_POD_IP6}]:8080");
    let seen = egress_tests::util::fetch_via(&lab, &over6, &format!("http://[{SERVER_IP6}]/"), &[]);
    assert!(
        seen.starts_with(&format!("200 {EGRESS_SOURCE6} ")),
        "{seen}\n{}",
        lab.daemon_stderr(index)
    );
    // An IPv4 destination has no source to leave from: refused, never sent from
    // another address.
    let v4 = egress_tests::util::fetch_via(&lab, &over6, &format!("http://{SERVER_IP}/"), &[]);
    assert!(!v4.starts_with("200 "), "{v4}");
}

#[test]
fn the_dns_proxy_serves_over_ipv6_alone() {
    let dir = egress_tests::util::tempdir("v6alone-dns");
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!("{SERVER_IP} app.example.com\n{SERVER_IP6} app.example.com\n"),
    )
    .unwrap();
    let mut lab = Lab::new("v6alone-dns").unwrap();
    lab.enable_ipv6().unwrap();
    // An IPv6-only pod network: the router pod has no IPv4 address at all.
    lab.router
        .ip(&[
            "addr",
            "del",
            &format!("{ROUTER_POD_IP}/{}", egress_tests::lab::POD_PREFIX),
            "dev",
            "eth0",
        ])
        .unwrap();
    // The cluster's nameserver on the IPv6 pod network.
    let (resolv_conf, _) = lab
        .start_nameserver_at(&dir, &hosts, 60, "2001:db8:2::53".parse().unwrap())
        .unwrap();
    peer_server_at(&mut lab, "echo", &SERVER_IP6.to_string(), 7000, &[]);
    peer_server_at(&mut lab, "echo", &SERVER_IP.to_string(), 7000, &[]);
    wait_sockets(&lab.server, &["-Htln", "sport = :7000"], |n| n == 2);
    let [source, gateway] = env();
    lab.init_proxy_network_as("dns-proxy", [&source, &gateway])
        .unwrap();
    let index =
        egress_tests::util::spawn_dns_proxy(&mut lab, "7000 app.example.com\n", &resolv_conf, true);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let seen = loop {
        match Echo::connect_to(&lab, ROUTER_POD_IP6.into(), 7000).and_then(|mut e| e.ask("hi")) {
            Ok(seen) => break seen,
            Err(err) => assert!(
                std::time::Instant::now() < deadline,
                "never served: {err}\n{}",
                lab.daemon_stderr(index)
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        (seen.peer.as_str(), seen.local.as_str()),
        (
            EGRESS_SOURCE6.to_string().as_str(),
            SERVER_IP6.to_string().as_str()
        )
    );
    let out = lab.stop_daemon(index).unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("addresses updated") && log.contains("family=\"ipv6\""),
        "{log}"
    );
    assert!(!log.contains("family=\"ipv4\""), "no A lookups: {log}");
    // The agent's metrics on the pod's IPv6 address, the only one it has.
    assert!(
        log.contains(&format!("addr=[{ROUTER_POD_IP6}]:")),
        "metrics: {log}"
    );
}
