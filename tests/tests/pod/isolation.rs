//! The router pod does not route between its two networks, in any mode: a host on the
//! egress network that routes the pod network via EGRESS_SOURCE reaches neither the pod's
//! listeners (proxies, metrics) nor other pods, and the pod network cannot send through the
//! router pod with its cluster addresses. Each case is an attack tried from the lab's
//! gateway (the egress network) or client (a pod).

use std::{net::Ipv4Addr, time::Duration};

use egress_tests::{
    lab::{CLIENT_IP, EGRESS_SOURCE, Lab, ROUTER_POD_IP, SERVER_IP},
    netns::{Netns, run_bounded},
    util::{
        peer_server, router_cli, run_ok, tempdir, unprivileged_router, wait_listening,
        wait_listening_in,
    },
};

/// Counts, in `ns`, the IPv4 packets from `source` that arrive (a prerouting nft counter).
fn count_arrivals(ns: &Netns, source: &str) {
    run_ok(ns, "nft", &["add", "table", "ip", "probe"], 5);
    run_ok(
        ns,
        "nft",
        &[
            "add",
            "chain",
            "ip",
            "probe",
            "pre",
            "{ type filter hook prerouting priority -300; }",
        ],
        5,
    );
    run_ok(
        ns,
        "nft",
        &[
            "add", "rule", "ip", "probe", "pre", "ip", "saddr", source, "counter",
        ],
        5,
    );
}

/// The packets counted by [`count_arrivals`] so far.
fn arrivals(ns: &Netns) -> u64 {
    let listing = run_ok(ns, "nft", &["list", "chain", "ip", "probe", "pre"], 5);
    let words: Vec<&str> = listing.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "packets")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or_else(|| panic!("no counter in {listing}"))
}

/// From the gateway, with a route to the pod network via EGRESS_SOURCE (any host of the
/// egress network can add one): a TCP connection to `port` on the pod IP, and pings to the
/// client pod. Returns whether the connection was accepted, and how many of the pings
/// reached the client.
fn attack_from_the_egress_network(lab: &Lab, port: u16) -> (bool, u64) {
    run_ok(
        &lab.gateway,
        "ip",
        &[
            "route",
            "replace",
            "192.0.2.0/24",
            "via",
            &EGRESS_SOURCE.to_string(),
        ],
        5,
    );
    count_arrivals(&lab.client, "198.51.100.0/24");
    let connected = run_bounded(
        lab.gateway.command("nc").args([
            "-z",
            "-w",
            "2",
            &ROUTER_POD_IP.to_string(),
            &port.to_string(),
        ]),
        Duration::from_secs(5),
    )
    .unwrap()
    .status
    .success();
    pings(&lab.gateway, CLIENT_IP);
    (connected, arrivals(&lab.client))
}

/// Three pings from `ns` to `to`, whose answers do not matter (what arrives is counted).
fn pings(ns: &Netns, to: Ipv4Addr) {
    let to = to.to_string();
    let args = ["-c", "3", "-i", "0.2", "-W", "1", &to];
    let _ = run_bounded(ns.command("ping").args(args), Duration::from_secs(5)).unwrap();
}

fn forwarding(lab: &Lab) -> String {
    run_ok(&lab.router, "sysctl", &["-n", "net.ipv4.ip_forward"], 5)
        .trim()
        .to_owned()
}

/// A proxy pod: its init container (`EGRESS_ROUTER_MODE=mode`, after an earlier release
/// left forwarding on) and an unprivileged main container with `variable`=`value`,
/// listening on `port` of the pod IP. Checks that the proxy serves the pod network from
/// EGRESS_SOURCE, then attacks it from the egress network.
fn proxy_pod_is_closed_to_the_egress_network(
    tag: &str,
    mode: &str,
    variable: &str,
    value: &str,
    port: u16,
    serves: impl Fn(&Lab) -> String,
) {
    let dir = tempdir(tag);
    let resolv_conf = dir.join("resolv.conf");
    std::fs::write(&resolv_conf, "nameserver 192.0.2.53\n").unwrap();
    let mut lab = Lab::new(tag).unwrap();
    lab.router.sysctl("net.ipv4.ip_forward", "1").unwrap();
    peer_server(&mut lab, "http", 80);
    wait_listening(&lab, 80);
    lab.init_proxy_network(mode).unwrap();
    assert_eq!(
        forwarding(&lab),
        "0",
        "the init container turned forwarding off"
    );
    let mut proxy = unprivileged_router(&lab);
    proxy
        .env_clear()
        .env(variable, value)
        .arg("--resolv-conf")
        .arg(&resolv_conf);
    lab.spawn(proxy).unwrap();
    wait_listening_in(&lab.router, port);
    // Replies to the proxy's own connections come in through the guarded egress interface.
    let seen = serves(&lab);
    assert!(
        seen.starts_with(&format!("{EGRESS_SOURCE} ")),
        "{mode}: {seen:?}"
    );

    let (connected, reached) = attack_from_the_egress_network(&lab, port);
    assert!(
        !connected,
        "{mode}: the proxy accepted a connection from the egress network"
    );
    assert_eq!(
        reached, 0,
        "{mode}: pings from the egress network reached a pod"
    );
    let stats = router_cli(&lab, "default", &["stats"]);
    let dropped = stats
        .lines()
        .find(|l| l.starts_with("drop:not_egress_source"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_default();
    assert!(
        dropped >= 4,
        "{mode}: counted as not_egress_source:\n{stats}"
    );
}

#[test]
fn the_egress_network_reaches_neither_the_http_proxy_nor_other_pods() {
    proxy_pod_is_closed_to_the_egress_network(
        "iso-http",
        "http-proxy",
        "EGRESS_HTTP_PROXY_DESTINATION",
        "*",
        8080,
        |lab| {
            let proxy = format!("http://{ROUTER_POD_IP}:8080");
            let url = format!("http://{SERVER_IP}/");
            run_ok(
                &lab.client,
                "curl",
                &["-s", "--max-time", "5", "--proxy", &proxy, &url],
                10,
            )
        },
    );
}

#[test]
fn the_egress_network_reaches_neither_the_dns_proxy_relay_nor_other_pods() {
    proxy_pod_is_closed_to_the_egress_network(
        "iso-dns",
        "dns-proxy",
        "EGRESS_DNS_PROXY_DESTINATION",
        &format!("8000 {SERVER_IP} 80"),
        8000,
        |lab| {
            let url = format!("http://{ROUTER_POD_IP}:8000/");
            run_ok(&lab.client, "curl", &["-s", "--max-time", "5", &url], 10)
        },
    );
}

/// Redirect mode with its agent: neither the metrics listener nor other pods are reachable
/// from the egress network, and the pod network cannot route through the router pod.
#[test]
fn redirect_mode_routes_nothing_between_the_networks() {
    let mut lab = Lab::new("iso-redirect").unwrap();
    lab.router.sysctl("net.ipv4.ip_forward", "1").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    lab.start_agent("iso", &format!("80 tcp {SERVER_IP}"), &[])
        .unwrap();
    assert_eq!(forwarding(&lab), "0");

    let (connected, reached) = attack_from_the_egress_network(&lab, 9469);
    assert!(
        !connected,
        "the metrics listener accepted a connection from the egress network"
    );
    assert_eq!(reached, 0, "pings from the egress network reached a pod");

    // A pod that routes the server's network via the router pod: nothing leaves the egress
    // interface with its cluster address (only translated rules do, from EGRESS_SOURCE).
    count_arrivals(&lab.gateway, "192.0.2.0/24");
    run_ok(
        &lab.client,
        "ip",
        &[
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            &ROUTER_POD_IP.to_string(),
        ],
        5,
    );
    pings(&lab.client, SERVER_IP);
    let _ = run_bounded(
        lab.client
            .command("nc")
            .args(["-z", "-w", "1", &SERVER_IP.to_string(), "81"]),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        arrivals(&lab.gateway),
        0,
        "cluster addresses left the egress interface untranslated"
    );
}

/// The DNS relay never follows a name into the router pod itself: a name that resolves to
/// the pod IP would chain connections through the relay without end.
#[test]
fn the_dns_relay_does_not_follow_a_name_into_the_pod() {
    let dir = tempdir("iso-loop");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("{ROUTER_POD_IP} loop.example.com\n")).unwrap();
    let mut lab = Lab::new("iso-loop").unwrap();
    let (resolv_conf, _) = lab.start_nameserver(&dir, &hosts, 60).unwrap();
    lab.init_proxy_network("dns-proxy").unwrap();
    let mut relay = unprivileged_router(&lab);
    relay
        .env_clear()
        .env("EGRESS_DNS_PROXY_DESTINATION", "8000 loop.example.com")
        .env("EGRESS_DNS_PROXY_DEBUG", "1")
        .arg("--resolv-conf")
        .arg(&resolv_conf);
    let index = lab.daemons_len();
    lab.spawn(relay).unwrap();
    wait_listening_in(&lab.router, 8000);
    let _ = run_bounded(
        lab.client.command("sh").args([
            "-c",
            &format!("printf 'hi\\n' | nc -N -w 2 {ROUTER_POD_IP} 8000"),
        ]),
        Duration::from_secs(5),
    )
    .unwrap();
    let log = String::from_utf8_lossy(&lab.stop_daemon(index).unwrap().stderr).into_owned();
    let chained = log
        .lines()
        .filter(|l| l.contains(&format!("remote={ROUTER_POD_IP}:8000")))
        .count();
    assert_eq!(chained, 0, "connections chained through the relay:\n{log}");
    assert!(log.contains("addresses of the router pod itself"), "{log}");
}
