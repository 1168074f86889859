//! Node mode end to end (`egress-router node` and `node-register`), in the node lab
//! (`egress_tests::nodelab`): a router pod registers through the spool, the node agent
//! serves it from the node's uplink, and a client pod's connection to the router pod's IP
//! leaves with EGRESS_SOURCE from the uplink's MAC without entering the router pod.

use std::time::Duration;

use egress_common::{DropReason, Stat};
use egress_tests::{
    lab::SERVER_IP,
    nodefail::fail_over,
    nodelab::{NODE_IP, NodeLab, egress_source, router_ip},
    util::{count_tcp_in, curl, download, mac_of, run_ok, wait_listening_in},
};
use egress_user::dataplane::maps::MapSet;

/// Starts the lab's HTTP peer server (it answers with the peer it saw) on port 80.
fn http_server(lab: &mut NodeLab) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/peer_server.py");
    let mut cmd = lab.server.command("python3");
    cmd.args([script, "http", &SERVER_IP.to_string(), "80"]);
    lab.spawn(cmd).unwrap();
    wait_listening_in(&lab.server, 80);
}

/// Starts the node agent with `extra` arguments, registers router pod 0 with
/// EGRESS_DESTINATION `destination`, and waits until the agent serves it; returns the
/// agent's daemon index.
fn serving(lab: &mut NodeLab, extra: &[&str], destination: &str) -> usize {
    let agent = lab.start_agent(extra).unwrap();
    lab.register(0, destination).unwrap();
    lab.wait_for_log(agent, "serving a new instance", Duration::from_secs(5))
        .unwrap();
    agent
}

/// The node's pinned maps.
fn node_maps(lab: &NodeLab) -> MapSet {
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

#[test]
fn an_instance_whose_registration_goes_is_dropped_and_its_traffic_reaches_the_pod_again() {
    let mut lab = NodeLab::new("nodedrop", 1).unwrap();
    http_server(&mut lab);
    let agent = serving(&mut lab, &[], "80 tcp 203.0.113.10 80");
    let url = format!("http://{}/", router_ip(0));
    assert!(curl(&lab.clients[0], &url).is_ok());
    std::fs::remove_file(lab.spool_file(0)).unwrap();
    lab.wait_for_log(agent, "instance dropped", Duration::from_secs(5))
        .unwrap();
    let tcp_in_router = count_tcp_in(&lab.routers[0]);
    // Nothing listens in the router pod: refused, by the pod itself.
    let refused = curl(&lab.clients[0], &url).unwrap_err();
    assert!(
        refused.contains("refused") || refused.contains("Failed to connect"),
        "{refused}"
    );
    assert!(
        tcp_in_router() >= 1,
        "the connection reached the router pod"
    );
    // A bad registration is refused with its reason, and nothing else changes.
    std::fs::write(lab.spool_file(0), "{\"pod_ip\": \"192.0.2.10\", \"EGRESS_SOURCE\": \"bogus\", \"EGRESS_GATEWAY\": \"198.51.100.1\"}").unwrap();
    let log = lab
        .wait_for_log(agent, "registration refused", Duration::from_secs(5))
        .unwrap();
    assert!(log.contains("EGRESS_SOURCE"), "{log}");
}

/// Times `text` appears in daemon `index`'s log.
fn log_count(lab: &NodeLab, index: usize, text: &str) -> usize {
    lab.daemon_stderr(index).matches(text).count()
}

#[test]
fn sixty_four_instances_on_one_node_are_all_served_at_once_with_one_mac() {
    const PODS: usize = 64;
    let mut lab = NodeLab::with_pods("node64", PODS, 1).unwrap();
    http_server(&mut lab);
    let agent = lab.start_agent(&[]).unwrap();
    // Each instance its own EGRESS_SOURCE and its own rule: port 8000 + i to the server.
    for i in 0..PODS {
        lab.register(i, &format!("{} tcp 203.0.113.10 80", 8000 + i))
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while log_count(&lab, agent, "serving a new instance") < PODS {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            lab.daemon_stderr(agent)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // All at once: one curl per instance, in parallel, from one client pod.
    let curls: Vec<_> = (0..PODS)
        .map(|i| {
            lab.clients[0]
                .command("curl")
                .args(["-sS", "-m", "10"])
                .arg(format!("http://{}:{}/", router_ip(i), 8000 + i))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in curls.into_iter().enumerate() {
        let out = egress_tests::netns::wait_bounded(child, Duration::from_secs(20)).unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            body.starts_with(&format!("{} ", egress_source(i))),
            "instance {i}: {body} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // One MAC on the segment for all of them, the uplink's: no MAC was added.
    let uplink_mac = mac_of(&lab.node, "uplink");
    let neigh: serde_json::Value = serde_json::from_str(&run_ok(
        &lab.gateway,
        "ip",
        &["-j", "neigh", "show", "dev", "lan0"],
        5,
    ))
    .unwrap();
    let entries = neigh.as_array().unwrap();
    let macs: std::collections::BTreeSet<&str> = entries
        .iter()
        .filter_map(|n| n["lladdr"].as_str())
        .collect();
    assert_eq!(macs.into_iter().collect::<Vec<_>>(), [uplink_mac.as_str()]);
    let sources = entries
        .iter()
        .filter(|n| {
            n["dst"]
                .as_str()
                .is_some_and(|d| (0..PODS).any(|i| d == egress_source(i).to_string()))
        })
        .count();
    assert_eq!(sources, PODS, "{neigh}");
    // The same programs on all the pods' interfaces: node_forward and node_forward6.
    let ids: std::collections::BTreeSet<u32> = (0..PODS)
        .flat_map(|i| {
            lab.node
                .enter(|| {
                    let index = egress_user::network::interface::ifindex(&format!("pod{i}"))
                        .expect("the pod's interface");
                    egress_user::dataplane::tcx::query(index, aya::programs::TcAttachType::Egress)
                        .unwrap()
                })
                .unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 2, "programs on the pods' interfaces: {ids:?}");
}

#[test]
fn a_restarted_agent_keeps_every_flow_and_instance() {
    let mut lab = NodeLab::new("noderestart", 1).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/peer_server.py");
    let mut cmd = lab.server.command("python3");
    cmd.args([script, "echo", &SERVER_IP.to_string(), "7"]);
    lab.spawn(cmd).unwrap();
    wait_listening_in(&lab.server, 7);
    let agent = serving(&mut lab, &[], "7 tcp 203.0.113.10 7");
    // An open connection through the node.
    let addr = std::net::SocketAddr::from((router_ip(0), 7));
    let mut stream = lab.clients[0]
        .enter(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)))
        .unwrap()
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut ask = |word: &str| {
        use std::io::{BufRead as _, Write as _};
        stream.write_all(format!("{word}\n").as_bytes()).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&stream)
            .read_line(&mut line)
            .unwrap();
        line
    };
    let before = ask("before");
    assert!(
        before.starts_with(&format!("{} ", egress_source(0))),
        "{before}"
    );
    // The agent is killed outright; the data plane goes on without it.
    lab.kill_daemon(agent).unwrap();
    let between = ask("between");
    assert_eq!(
        between.split(' ').nth(1),
        before.split(' ').nth(1),
        "same translated port"
    );
    // A new agent adopts the instance (no new announcement: it is not new) and its flow.
    let again = lab.start_agent(&[]).unwrap();
    lab.wait_for_log(again, "instance updated", Duration::from_secs(5))
        .unwrap();
    let after = ask("after");
    assert_eq!(after.split(' ').nth(1), before.split(' ').nth(1), "{after}");
    assert!(!lab.daemon_stderr(again).contains("serving a new instance"));
}

#[test]
fn a_staying_registration_comes_back_when_removed_and_is_withdrawn_when_its_pod_stops() {
    let mut lab = NodeLab::new("nodestay", 1).unwrap();
    http_server(&mut lab);
    let agent = lab.start_agent(&[]).unwrap();
    let pod = lab.stay_registered(0, "80 tcp 203.0.113.10 80").unwrap();
    lab.wait_for_log(agent, "serving a new instance", Duration::from_secs(5))
        .unwrap();
    let url = format!("http://{}/", router_ip(0));
    assert!(
        curl(&lab.clients[0], &url)
            .unwrap()
            .starts_with(&egress_source(0).to_string())
    );
    // Removed from the spool while the pod runs: written again, served again.
    std::fs::remove_file(lab.spool_file(0)).unwrap();
    lab.wait_for_log(pod, "registration written again", Duration::from_secs(5))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while log_count(&lab, agent, "serving a new instance") < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            lab.daemon_stderr(agent)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The pod stops: its registration is withdrawn and the agent drops the instance.
    let out = lab.stop_daemon(pod).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!lab.spool_file(0).exists());
    lab.wait_for_log(agent, "instance dropped", Duration::from_secs(5))
        .unwrap();
}

/// The gateway's neighbour entry for `ip`: "MAC STATE".
fn gateway_entry(lab: &NodeLab, ip: std::net::Ipv4Addr) -> String {
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
fn a_router_pod_that_moves_to_another_node_is_served_there_at_once() {
    let mut lab = NodeLab::two_nodes("nodefail").unwrap();
    http_server(&mut lab);
    // Both agents read their spool at the default interval, as in a cluster.
    let agent_a = lab.start_agent(&["--rescan-ms", "200"]).unwrap();
    let agent_b = lab.start_agent_b(&["--rescan-ms", "200"]).unwrap();
    lab.register(0, "80 tcp 203.0.113.10 80").unwrap();
    lab.wait_for_log(agent_a, "serving a new instance", Duration::from_secs(5))
        .unwrap();
    // The client pod (on node B) reaches the router pod on node A.
    let body = curl(&lab.clients[0], &format!("http://{}/", router_ip(0))).unwrap();
    assert!(
        body.starts_with(&format!("{} ", egress_source(0))),
        "{body}"
    );
    let mac_a = mac_of(&lab.node, "uplink");
    let mac_b = mac_of(lab.node_b.as_ref().unwrap(), "uplink");
    let before = gateway_entry(&lab, egress_source(0));
    assert!(before.starts_with(&mac_a), "{before}");

    // Node A dies: its NIC goes, and its agent with it. The replacement starts on node B
    // with the same EGRESS_SOURCE; clients reach it (through its Service, here its new
    // IP) as soon as node B serves it.
    let failover = fail_over(&mut lab, agent_a, "80 tcp 203.0.113.10 80").unwrap();
    assert!(
        failover.body.starts_with(&format!("{} ", egress_source(0))),
        "{failover:?}"
    );
    // Alone, about 0.2 s (the agent reads the spool every 0.2 s). The goal, within 1 s, is
    // measured by the bench (`cargo xtask bench`, section Node mode); here, under the load
    // of the suite, a bound that only a failover that waits for something (an entry of
    // the old node to fail, the next hop to be resolved after its first packets were
    // lost) exceeds.
    assert!(
        failover.first_connection < Duration::from_secs(3),
        "{failover:#?}; node B's agent: {}",
        lab.daemon_stderr(agent_b)
    );
    // The gateway's entry moves to node B's MAC with its announcements (the last one past
    // a Linux neighbour's locktime of 1 s, which ignores a new MAC for an entry updated
    // moments before, as here by the first connection through node A).
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let after = gateway_entry(&lab, egress_source(0));
        if after.starts_with(&mac_b) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{after}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_openshift_egress_router_resource_configures_an_instance_unchanged() {
    let mut lab = NodeLab::new("nodecr", 1).unwrap();
    http_server(&mut lab);
    let dir = egress_tests::util::tempdir("node-instances");
    // As an admin wrote it for egress-router-cni (OpenShift's documented form).
    let resource = format!(
        r#"apiVersion: network.operator.openshift.io/v1
kind: EgressRouter
metadata:
  name: egress-router-redirect
spec:
  networkInterface: {{
    macvlan: {{
      mode: "Bridge"
    }}
  }}
  addresses: [
    {{
      ip: "{}/24",
      gateway: "198.51.100.1"
    }}
  ]
  mode: Redirect
  redirect: {{
    redirectRules: [
      {{
        destinationIP: "203.0.113.10",
        port: 8080,
        targetPort: 80,
        protocol: TCP
      }}
    ]
  }}
"#,
        egress_source(0)
    );
    std::fs::write(dir.join("egress-router-redirect.yaml"), resource).unwrap();
    let instances = dir.to_str().unwrap().to_owned();
    let agent = lab.start_agent(&["--instances", &instances]).unwrap();
    // A pod that names an instance nobody configured is refused, with the reason.
    lab.register_static(0, "nobody").unwrap();
    lab.wait_for_log(
        agent,
        "no static instance named nobody",
        Duration::from_secs(5),
    )
    .unwrap();
    lab.register_static(0, "egress-router-redirect").unwrap();
    let log = lab
        .wait_for_log(agent, "serving a new instance", Duration::from_secs(5))
        .unwrap();
    // What node mode does not use is named.
    assert!(log.contains("spec.networkInterface"), "{log}");
    let body = curl(&lab.clients[0], &format!("http://{}:8080/", router_ip(0))).unwrap();
    assert!(
        body.starts_with(&format!("{} ", egress_source(0))),
        "{body}"
    );
}

#[test]
fn a_router_pod_cannot_register_for_another_pods_ip() {
    let mut lab = NodeLab::with_pods("nodehijack", 2, 1).unwrap();
    http_server(&mut lab);
    let agent = lab.start_agent(&[]).unwrap();
    // Router pod 0 writes, into the only directory it has, a registration that would send
    // port 80 of pod 1 (an ordinary pod here) to a remote of its choosing.
    let forged = egress_user::node::registration::Registration {
        pod_ip: router_ip(1),
        pod_ip6: None,
        instance: None,
        source: format!("{}/24", egress_source(0)),
        gateway: "198.51.100.1".to_owned(),
        destination: "80 tcp 203.0.113.10 80".to_owned(),
    };
    forged.write(&lab.spool_of(0)).unwrap();
    let log = lab
        .wait_for_log(agent, "registration refused", Duration::from_secs(5))
        .unwrap();
    assert!(log.contains("accepted only as <pod IP>.json"), "{log}");
    // Pod 1's traffic is its own: a connection reaches pod 1 (nothing listens there).
    let tcp_in_pod1 = count_tcp_in(&lab.routers[1]);
    let refused = curl(&lab.clients[0], &format!("http://{}/", router_ip(1))).unwrap_err();
    assert!(refused.contains("Failed to connect"), "{refused}");
    assert!(tcp_in_pod1() >= 1);
    assert!(!lab.daemon_stderr(agent).contains("serving a new instance"));
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

/// One UDP datagram to router pod 0's port 53 from each of `ports` in client pod `i`, each
/// its own flow (nobody answers).
fn udp_flows(lab: &NodeLab, i: usize, ports: std::ops::Range<u16>) {
    let script = format!(
        "import socket\n\
         for p in range({}, {}):\n\
         \x20   s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         \x20   s.bind(('{}', p))\n\
         \x20   s.sendto(b'x', ('{}', 53))\n\
         \x20   s.close()\n",
        ports.start,
        ports.end,
        egress_tests::nodelab::client_ip(i),
        router_ip(0)
    );
    run_ok(&lab.clients[i], "python3", &["-c", &script], 20);
}

/// Translated flows of client pod `i` in the node's tables.
fn flows_of(lab: &NodeLab, i: usize) -> usize {
    let client = egress_tests::nodelab::client_ip(i).octets();
    node_maps(lab)
        .conntrack()
        .unwrap()
        .iter()
        .filter(|(k, e)| e.kind == egress_common::flow_kind::FORWARD && k.saddr == client)
        .count()
}

#[test]
fn a_client_over_its_flow_limit_on_the_node_gets_no_new_flow_and_others_still_do() {
    let mut lab = NodeLab::with_pods("nodelimit", 1, 2).unwrap();
    let agent = serving(
        &mut lab,
        &["--max-flows-per-source", "20", "--gc-max-interval", "0.5"],
        "53 udp 203.0.113.10",
    );
    udp_flows(&lab, 0, 30000..30040);
    assert_eq!(flows_of(&lab, 0), 40, "created before any census");
    lab.wait_for_log(agent, "client over its flow limit", Duration::from_secs(10))
        .unwrap();
    let drops = |lab: &NodeLab| {
        node_maps(lab)
            .stats()
            .unwrap()
            .drop(DropReason::SourceLimit)
            .packets
    };
    let before = drops(&lab);
    udp_flows(&lab, 0, 31000..31010);
    assert_eq!(
        drops(&lab) - before,
        10,
        "each new flow of the limited client refused"
    );
    assert_eq!(flows_of(&lab, 0), 40);
    // Another client pod still gets its flows.
    udp_flows(&lab, 1, 30000..30005);
    assert_eq!(flows_of(&lab, 1), 5);
}

#[test]
fn node_teardown_leaves_nothing_of_the_agent_on_the_node() {
    let mut lab = NodeLab::new("nodeteardown", 1).unwrap();
    http_server(&mut lab);
    let agent = serving(&mut lab, &[], "80 tcp 203.0.113.10 80");
    let url = format!("http://{}/", router_ip(0));
    assert!(curl(&lab.clients[0], &url).is_ok());
    // The DaemonSet is deleted: the agent goes, then the teardown runs.
    lab.kill_daemon(agent).unwrap();
    let out = egress_tests::util::stdout_ok(
        lab.node
            .command(egress_tests::egress_router_bin())
            .args(["node-teardown", "--uplink", "uplink", "--bpffs"])
            .arg(lab.bpffs.path()),
        Duration::from_secs(20),
    );
    let removed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        removed["pod_interfaces"],
        serde_json::json!(["pod0"]),
        "{out}"
    );
    assert_eq!(removed["uplink_program"], true, "{out}");
    assert_eq!(
        removed["gateways"],
        serde_json::json!(["198.51.100.1"]),
        "{out}"
    );
    assert!(removed["pins"].as_u64().unwrap() > 0, "{out}");
    let attached = |dev: &str, attach| {
        lab.node
            .enter(|| {
                let index = egress_user::network::interface::ifindex(dev).unwrap();
                egress_user::dataplane::tcx::query(index, attach).unwrap()
            })
            .unwrap()
    };
    assert!(attached("pod0", aya::programs::TcAttachType::Egress).is_empty());
    assert!(attached("uplink", aya::programs::TcAttachType::Ingress).is_empty());
    let link = run_ok(&lab.node, "ip", &["-j", "-d", "link", "show", "uplink"], 5);
    assert!(!link.contains("\"xdp\""), "{link}");
    assert!(!lab.bpffs.path().join("node").exists());
    // The router pod's traffic is its own again.
    let tcp_in_router = count_tcp_in(&lab.routers[0]);
    assert!(curl(&lab.clients[0], &url).is_err());
    assert!(tcp_in_router() >= 1);
    // A second teardown has nothing to remove.
    let again = egress_tests::util::stdout_ok(
        lab.node
            .command(egress_tests::egress_router_bin())
            .args(["node-teardown", "--uplink", "uplink", "--bpffs"])
            .arg(lab.bpffs.path()),
        Duration::from_secs(20),
    );
    assert!(again.contains("\"pins\":0"), "{again}");
}

/// Router pod `i`'s instance in `node-status --json` output.
fn instance_of(status: &serde_json::Value, i: usize) -> serde_json::Value {
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["pod_ip"] == router_ip(i).to_string())
        .unwrap_or_else(|| panic!("no instance for router pod {i}: {status}"))
        .clone()
}

#[test]
fn each_instance_counts_its_own_fallback_and_its_own_drops_by_reason() {
    let mut lab = NodeLab::new("nodecounts", 2).unwrap();
    http_server(&mut lab);
    let agent = lab.start_agent(&[]).unwrap();
    // Router pod 0: only a fallback; router pod 1: a rule for port 80 and a fallback.
    lab.register(0, "203.0.113.10").unwrap();
    lab.register(1, "80 tcp 203.0.113.10 80\n203.0.113.10")
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log_count(&lab, agent, "serving a new instance") < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            lab.daemon_stderr(agent)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..3 {
        let body = curl(&lab.clients[0], &format!("http://{}/", router_ip(0))).unwrap();
        assert!(
            body.starts_with(&format!("{} ", egress_source(0))),
            "{body}"
        );
    }
    let body = curl(&lab.clients[1], &format!("http://{}/", router_ip(1))).unwrap();
    assert!(
        body.starts_with(&format!("{} ", egress_source(1))),
        "{body}"
    );
    // Datagrams to router pod 1's fallback that the node's routing hop leaves with a TTL
    // of 1: the instance answers each with time exceeded while the node's ICMP error
    // budget lasts (a burst of 50), and drops the rest (ttl_exceeded); none of them is
    // fallback traffic. Five first (all answered), then a hundred at once.
    let send = |count: usize| {
        let script = format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 2)\n\
             for _ in range({count}): s.sendto(b'x', ('{}', 9999))\n",
            router_ip(1)
        );
        run_ok(&lab.clients[1], "python3", &["-c", &script], 5);
    };
    send(5);
    let first = lab.status_json().unwrap();
    assert_eq!(instance_of(&first, 1)["icmp_errors"], 5, "{first}");
    send(100);
    let status = lab.status_json().unwrap();
    let of = |i: usize| instance_of(&status, i);
    let rule = |v: &serde_json::Value, id_zero: bool| -> u64 {
        v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| (r["id"] == 0) == id_zero)
            .map(|r| r["packets"].as_u64().unwrap())
            .unwrap_or_else(|| panic!("no such rule: {v}"))
    };
    let (zero, one) = (of(0), of(1));
    // Three HTTP exchanges of at least four packets each way, on instance 0's fallback
    // alone; instance 1's fallback saw nothing it forwarded, its rule the one exchange.
    assert!(rule(&zero, true) >= 3 * 8, "{status}");
    assert_eq!(rule(&one, true), 0, "{status}");
    assert!(rule(&one, false) >= 8, "{status}");
    let (errors, ttl) = (
        one["icmp_errors"].as_u64().unwrap(),
        one["drops"]["ttl_exceeded"].as_u64().unwrap_or(0),
    );
    assert_eq!(errors + ttl, 105, "each answered or dropped: {status}");
    assert!(errors >= 50 && ttl >= 1, "{status}");
    assert_eq!(one["dropped"], ttl, "no other reason: {status}");
    assert_eq!(zero["dropped"], 0, "{status}");
    assert_eq!(zero["icmp_errors"], 0, "{status}");
    assert!(zero["drops"].as_object().unwrap().is_empty(), "{status}");
    // The text form names the reason too.
    let text = egress_tests::util::stdout_ok(
        lab.node
            .command(egress_tests::egress_router_bin())
            .args(["node-status", "--bpffs"])
            .arg(lab.bpffs.path()),
        Duration::from_secs(10),
    );
    assert!(
        text.contains(&format!(
            "{errors} ICMP errors sent, {ttl} dropped (ttl_exceeded {ttl})"
        )),
        "{text}"
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
