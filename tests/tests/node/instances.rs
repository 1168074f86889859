//! Node mode's instances over their life, in the node lab: a registration that goes drops
//! its instance, 64 instances on one node, an agent restart, a staying registration, a
//! router pod that moves to another node, an OpenShift EgressRouter resource, a
//! registration for another pod's IP refused, and `node-teardown`.

use std::time::Duration;

use egress_tests::{
    lab::SERVER_IP,
    nodefail::fail_over,
    nodelab::{NodeLab, egress_source, router_ip},
    util::{count_tcp_in, curl, mac_of, run_ok, wait_listening_in},
};
use egress_user::dataplane::programs::Hook;

use super::serve::{gateway_entry, http_server, serving};

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
pub(super) fn log_count(lab: &NodeLab, index: usize, text: &str) -> usize {
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
                    egress_user::dataplane::attach::program_ids(index, Hook::TcEgress).unwrap()
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
                egress_user::dataplane::attach::program_ids(index, attach).unwrap()
            })
            .unwrap()
    };
    assert!(attached("pod0", Hook::TcEgress).is_empty());
    assert!(attached("uplink", Hook::TcIngress).is_empty());
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
