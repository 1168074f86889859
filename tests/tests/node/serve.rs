//! Node mode end to end (`egress-router node` and `node-register`), in the node lab
//! (`egress_tests::nodelab`): a router pod registers through the spool, the node agent
//! serves it from the node's uplink, and a client pod's connection to the router pod's IP
//! leaves with EGRESS_SOURCE from the uplink's MAC without entering the router pod.

use std::time::Duration;

use egress_common::{DropReason, Stat};
use egress_tests::{
    lab::SERVER_IP,
    nodelab::{NODE_IP, NodeLab, egress_source, router_ip},
    util::{count_tcp_in, curl, download, mac_of, run_ok, wait_listening_in},
};
use egress_user::dataplane::maps::MapSet;

/// Starts the lab's HTTP peer server (it answers with the peer it saw) on port 80.
pub(super) fn http_server(lab: &mut NodeLab) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/peer_server.py");
    let mut cmd = lab.server.command("python3");
    cmd.args([script, "http", &SERVER_IP.to_string(), "80"]);
    lab.spawn(cmd).unwrap();
    wait_listening_in(&lab.server, 80);
}

/// Starts the node agent with `extra` arguments, registers router pod 0 with
/// EGRESS_DESTINATION `destination`, and waits until the agent serves it; returns the
/// agent's daemon index.
pub(super) fn serving(lab: &mut NodeLab, extra: &[&str], destination: &str) -> usize {
    let agent = lab.start_agent(extra).unwrap();
    lab.register(0, destination).unwrap();
    lab.wait_for_log(agent, "serving a new instance", Duration::from_secs(5))
        .unwrap();
    agent
}

/// The node's pinned maps.
pub(super) fn node_maps(lab: &NodeLab) -> MapSet {
    MapSet::from_pins(&lab.bpffs.path().join("node")).unwrap()
}

#[test]
fn a_client_pod_reaches_the_server_from_egress_source_without_entering_the_router_pod() {
    let mut lab = NodeLab::new("node", 1).unwrap();
    http_server(&mut lab);
    let metrics_at = format!("{NODE_IP}:9470");
    serving(
        &mut lab,
        &["--node-metrics-address", &metrics_at],
        "80 tcp 203.0.113.10 80",
    );
    let tcp_in_router = count_tcp_in(&lab.routers[0]);

    let url = format!("http://{}/", router_ip(0));
    let body = curl(&lab.clients[0], &url).unwrap();
    let seen: Vec<&str> = body.split_whitespace().collect();
    assert_eq!(
        seen[0],
        egress_source(0).to_string(),
        "the server saw {body}"
    );
    // Several requests, each a connection: all through the node.
    for _ in 0..5 {
        assert!(
            curl(&lab.clients[0], &url)
                .unwrap()
                .starts_with(&egress_source(0).to_string())
        );
    }
    assert_eq!(
        tcp_in_router(),
        0,
        "the router pod's namespace saw none of it"
    );

    // The gateway knows EGRESS_SOURCE at the uplink's MAC; the node's stack does not hold
    // the address.
    let uplink_mac = mac_of(&lab.node, "uplink");
    let neigh = run_ok(
        &lab.gateway,
        "ip",
        &["neigh", "show", &egress_source(0).to_string()],
        5,
    );
    assert!(
        neigh.contains(&uplink_mac),
        "gateway: {neigh}; uplink {uplink_mac}"
    );
    let addrs = run_ok(&lab.node, "ip", &["-4", "addr", "show"], 5);
    assert!(!addrs.contains(&egress_source(0).to_string()), "{addrs}");
    assert!(addrs.contains(&NODE_IP.to_string()));

    // node-status shows the instance with its rule's counters and its flows; the node's
    // counters and flows are the pins' (`--instance node stats`, `conntrack`).
    let v = lab.status_json().unwrap();
    let status = v.to_string();
    let one = &v[0];
    assert_eq!(one["pod_ip"], router_ip(0).to_string(), "{status}");
    assert_eq!(
        one["egress_source"],
        egress_source(0).to_string(),
        "{status}"
    );
    assert_eq!(one["gateway"], "198.51.100.1", "{status}");
    assert_eq!(one["host_interface"], "pod0", "{status}");
    assert_eq!(one["rules"][0]["target"], "203.0.113.10:80", "{status}");
    assert!(
        one["rules"][0]["packets"].as_u64().unwrap() >= 6 * 8,
        "{status}"
    );
    // Its own packets by verdict: six requests of at least four packets each way.
    assert!(one["forwarded"].as_u64().unwrap() >= 6 * 4, "{status}");
    assert!(one["replied"].as_u64().unwrap() >= 6 * 4, "{status}");
    assert_eq!(one["dropped"], 0, "{status}");
    let stats = egress_tests::util::stdout_ok(
        lab.node
            .command(egress_tests::egress_router_bin())
            .args(["--instance", "node", "stats", "--bpffs"])
            .arg(lab.bpffs.path()),
        Duration::from_secs(10),
    );
    assert!(stats.contains("arp_answered"), "{stats}");
    // The agent's /metrics: the instance's rule counters under its labels; /healthz.
    let scrape = run_ok(
        &lab.node,
        "curl",
        &["-sS", "-m", "3", &format!("http://{metrics_at}/metrics")],
        5,
    );
    let line = scrape
        .lines()
        .find(|l| l.starts_with("egress_router_instance_rule_packets_total{instance=\"1\""))
        .unwrap_or_else(|| panic!("{scrape}"));
    assert!(
        line.contains(&format!(
            "pod=\"{}\",source=\"{}\"",
            router_ip(0),
            egress_source(0)
        )),
        "{line}"
    );
    let packets: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(packets >= 6 * 8, "{line}");
    assert!(
        scrape.contains("egress_router_node_instances 1"),
        "{scrape}"
    );
    let health = run_ok(
        &lab.node,
        "curl",
        &["-sS", "-m", "3", &format!("http://{metrics_at}/healthz")],
        5,
    );
    assert_eq!(health.trim(), "ok");
    let stats = node_maps(&lab).stats().unwrap();
    assert!(stats.path(Stat::Forwarded).packets >= 6 * 4, "{stats}");
    assert!(stats.path(Stat::Replied).packets >= 6 * 4, "{stats}");
    assert!(stats.path(Stat::ArpAnswered).packets >= 1, "{stats}");
}

#[test]
fn unsolicited_traffic_to_an_egress_address_gets_nothing_back_and_is_dropped_in_xdp() {
    let mut lab = NodeLab::new("nodeprobe", 1).unwrap();
    http_server(&mut lab);
    serving(&mut lab, &[], "80 tcp 203.0.113.10 80");
    // From the egress network: TCP and UDP to EGRESS_SOURCE (the port the router uses
    // included) get nothing back.
    let target = egress_source(0).to_string();
    for port in ["22", "80", "1024"] {
        let out = egress_tests::netns::run_bounded(
            lab.gateway.command("curl").args([
                "-sS",
                "-m",
                "1",
                &format!("http://{target}:{port}/"),
            ]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(!out.status.success(), "port {port} answered");
    }
    let early = node_maps(&lab)
        .stats()
        .unwrap()
        .drop(DropReason::UnsolicitedEarly);
    assert!(early.packets >= 3, "dropped in XDP: {early:?}");
    // And counted as the instance's, whose address they were sent to, under the reason.
    let maps = MapSet::from_node_pins(&lab.bpffs.path().join("node")).unwrap();
    let counts = maps.node_counts(1).unwrap();
    let mine = counts
        .drops
        .iter()
        .find(|(r, _)| *r == DropReason::UnsolicitedEarly);
    assert!(mine.is_some_and(|(_, c)| c.packets >= 3), "{counts:?}");
    assert_eq!(
        counts.dropped(),
        mine.unwrap().1,
        "no other reason: {counts:?}"
    );
    // The node's own address still answers (its traffic is not the data plane's).
    let ping = egress_tests::netns::run_bounded(
        lab.gateway
            .command("ping")
            .args(["-c", "1", "-W", "2", &NODE_IP.to_string()]),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(ping.status.success(), "the node answers for itself");
}

/// The gateway's neighbour entry for `ip`: "MAC STATE".
pub(super) fn gateway_entry(lab: &NodeLab, ip: std::net::Ipv4Addr) -> String {
    let v: serde_json::Value = serde_json::from_str(&run_ok(
        &lab.gateway,
        "ip",
        &["-j", "neigh", "show", &ip.to_string()],
        5,
    ))
    .unwrap();
    format!(
        "{} {}",
        v[0]["lladdr"].as_str().unwrap_or("-"),
        v[0]["state"]
    )
}

#[test]
fn in_cloud_mode_nothing_answers_arp_and_the_clouds_routing_carries_the_address() {
    let mut lab = NodeLab::new("nodecloud", 1).unwrap();
    http_server(&mut lab);
    serving(&mut lab, &["--no-arp"], "80 tcp 203.0.113.10 80");
    // Nobody answers the gateway's ARP for EGRESS_SOURCE, and nothing announced it.
    let url = format!("http://{}/", router_ip(0));
    assert!(curl(&lab.clients[0], &url).is_err());
    let entry = gateway_entry(&lab, egress_source(0));
    assert!(!entry.contains(&mac_of(&lab.node, "uplink")), "{entry}");
    assert_eq!(
        node_maps(&lab)
            .stats()
            .unwrap()
            .path(Stat::ArpAnswered)
            .packets,
        0
    );
    // The cloud delivers the address to the node's NIC (here: the gateway's static entry,
    // as a cloud's routing does it): traffic flows.
    let mac = mac_of(&lab.node, "uplink");
    run_ok(
        &lab.gateway,
        "ip",
        &[
            "neigh",
            "replace",
            &egress_source(0).to_string(),
            "lladdr",
            &mac,
            "dev",
            "lan0",
            "nud",
            "permanent",
        ],
        5,
    );
    let body = curl(&lab.clients[0], &url).unwrap();
    assert!(
        body.starts_with(&format!("{} ", egress_source(0))),
        "{body}"
    );
}

#[test]
fn a_download_through_an_uplink_with_gro_is_translated_per_aggregate_and_lost_nowhere() {
    // A NIC receives with GRO by default (a veth does not): the replies of a download then
    // reach node_reply as aggregates larger than the MTU, which the way toward the client
    // must take (they were all dropped, `no_route_to_client`, until the bench's download
    // found it).
    let mut lab = NodeLab::new("nodegro", 1).unwrap();
    lab.uplink_gro().unwrap();
    let mut iperf = lab.server.command("iperf3");
    iperf.args(["-s", "-B", &SERVER_IP.to_string(), "-p", "5201"]);
    lab.spawn(iperf).unwrap();
    wait_listening_in(&lab.server, 5201);
    serving(&mut lab, &[], "5201 tcp 203.0.113.10 5201");
    // 64 MiB from the server to the client (-R: the reply direction), within 20 s.
    let (received, said) = download(&lab.clients[0], router_ip(0).into(), 5201, "64M");
    assert!(received >= 64 << 20, "received {received} bytes: {said}");
    let maps = node_maps(&lab);
    let stats = maps.stats().unwrap();
    assert_eq!(stats.drop(DropReason::NoRouteToClient).packets, 0);
    let counts = MapSet::from_node_pins(&lab.bpffs.path().join("node"))
        .unwrap()
        .node_counts(1)
        .unwrap();
    assert!(counts.drops.is_empty(), "{counts:?}");
    // Aggregates: fewer translated replies than the frames the uplink took.
    let replied = counts.replied.packets;
    let frames = stats.path(Stat::XdpPassed).packets;
    assert!(
        replied * 2 < frames,
        "{replied} replies translated for {frames} frames: no aggregation"
    );
}
