//! Node mode over IPv6 (`egress-router node --ipv6`), in the node lab's dual-stack half
//! (`egress_tests::nodelab6`): a dual-stack router pod registers, the node agent serves
//! both families from the node's uplink, neighbour discovery for the IPv6 egress address
//! is answered by XDP with the uplink's MAC, and unsolicited IPv6 traffic to it is dropped
//! there.

use std::time::Duration;

use egress_common::Stat;
use egress_tests::{
    lab::SERVER_IP,
    lab6::SERVER_IP6,
    nodelab::{NodeLab, egress_source, router_ip},
    nodelab6::{client_ip6, egress_source6, router_ip6},
    util::{count_tcp_in, curl, download, mac_of, run_ok, wait_sockets},
};
use egress_user::dataplane::maps::MapSet;

/// The HTTP peer server (it answers with the peer it saw) on port 80 of both families.
fn http_servers(lab: &mut NodeLab) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/peer_server.py");
    for ip in [SERVER_IP.to_string(), SERVER_IP6.to_string()] {
        let mut cmd = lab.server.command("python3");
        cmd.args([script, "http", &ip, "80"]);
        lab.spawn(cmd).unwrap();
    }
    // Both listening (one would do for `wait_listening_in`).
    wait_sockets(&lab.server, &["-ltnH", "sport = :80"], |n| n >= 2);
}

/// A dual-stack node lab with one router pod and one client pod, its HTTP servers, and the
/// agent started with `extra`; returns the lab and the agent's daemon index.
fn dual_lab(tag: &str, extra: &[&str]) -> (NodeLab, usize) {
    let mut lab = NodeLab::new(tag, 1).unwrap();
    lab.enable_ipv6().unwrap();
    http_servers(&mut lab);
    let agent = lab.start_agent(extra).unwrap();
    (lab, agent)
}

/// Both families' rules: port 80 to the server's address of the family.
fn destination() -> String {
    format!("80 tcp {SERVER_IP} 80\n80 tcp {SERVER_IP6} 80")
}

#[test]
fn a_dual_stack_instance_sends_each_family_from_its_egress_source_without_entering_the_pod() {
    let (lab, agent) = dual_lab("node6", &["--ipv6"]);
    lab.register_dual(0, &destination(), None).unwrap();
    lab.wait_for_log(agent, "serving a new instance", Duration::from_secs(5))
        .unwrap();
    let seen_in_pod = count_tcp_in(&lab.routers[0]);
    for _ in 0..3 {
        let v4 = curl(&lab.clients[0], &format!("http://{}/", router_ip(0))).unwrap();
        assert!(v4.starts_with(&format!("{} ", egress_source(0))), "{v4}");
        let v6 = curl(&lab.clients[0], &format!("http://[{}]/", router_ip6(0))).unwrap();
        assert!(v6.starts_with(&format!("{} ", egress_source6(0))), "{v6}");
    }
    assert_eq!(seen_in_pod(), 0, "the router pod saw none of it");
    // The gateway learnt the IPv6 egress address at the uplink's MAC, from the XDP
    // program's neighbour advertisements.
    let uplink_mac = mac_of(&lab.node, "uplink");
    let neigh = run_ok(
        &lab.gateway,
        "ip",
        &["-6", "neigh", "show", &egress_source6(0).to_string()],
        5,
    );
    assert!(neigh.contains(&uplink_mac), "{neigh} (uplink {uplink_mac})");
    let maps = MapSet::from_node_pins(&lab.bpffs.path().join("node")).unwrap();
    let stats = maps.stats().unwrap();
    assert!(stats.path(Stat::NdiscAnswered).packets >= 1, "{stats:?}");
    // The node never holds the egress address.
    let addrs = run_ok(&lab.node, "ip", &["-6", "addr", "show"], 5);
    assert!(!addrs.contains(&egress_source6(0).to_string()), "{addrs}");
    // node-status shows the IPv6 half with its rule's counters and flows.
    let v = lab.status_json().unwrap();
    let status = v.to_string();
    let one = &v[0];
    assert_eq!(one["pod_ip6"], router_ip6(0).to_string(), "{status}");
    assert_eq!(
        one["egress_source6"],
        egress_source6(0).to_string(),
        "{status}"
    );
    let v6_rule = one["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["family"] == "ipv6")
        .unwrap_or_else(|| panic!("{status}"));
    assert!(v6_rule["packets"].as_u64().unwrap() >= 3 * 8, "{status}");
    assert!(one["flows"].as_u64().unwrap() >= 6, "{status}");
}

#[test]
fn unsolicited_ipv6_to_an_egress_address_gets_nothing_back_and_is_dropped_in_xdp() {
    let (lab, agent) = dual_lab("node6probe", &["--ipv6"]);
    lab.register_dual(0, &destination(), None).unwrap();
    lab.wait_for_log(agent, "serving a new instance", Duration::from_secs(5))
        .unwrap();
    // From the egress network: TCP to the IPv6 egress address gets nothing back.
    for port in ["22", "80", "1024"] {
        let url = format!("http://[{}]:{port}/", egress_source6(0));
        assert!(curl(&lab.gateway, &url).is_err(), "port {port} answered");
    }
    let maps = MapSet::from_node_pins(&lab.bpffs.path().join("node")).unwrap();
    let counts = maps.node_counts(1).unwrap();
    let early = counts
        .drops
        .iter()
        .find(|(r, _)| *r == egress_common::DropReason::UnsolicitedEarly)
        .map_or(0, |(_, c)| c.packets);
    assert!(early >= 3, "dropped in XDP as the instance's: {counts:?}");
}

#[test]
fn a_router_pod_cannot_claim_another_pods_ipv6_address_and_ipv6_needs_the_agents_consent() {
    // Without --ipv6 the agent refuses a dual-stack instance, naming the option.
    let (lab, agent) = dual_lab("node6off", &[]);
    lab.register_dual(0, &destination(), None).unwrap();
    lab.wait_for_log(agent, "--ipv6", Duration::from_secs(5))
        .unwrap();
    drop(lab);
    // With it, a router pod that names the client pod's IPv6 address as its own (POD_IPS
    // is the pod's to set) is refused: the node routes that address elsewhere.
    let (lab, agent) = dual_lab("node6forge", &["--ipv6"]);
    let forged = format!("{},{}", router_ip(0), client_ip6(0));
    lab.register_dual(0, &destination(), Some(&forged)).unwrap();
    lab.wait_for_log(agent, "not this pod's address", Duration::from_secs(5))
        .unwrap();
    // The client's IPv6 traffic to the server still goes its own way: nothing of the
    // router's took its address.
    let maps = MapSet::from_node_pins(&lab.bpffs.path().join("node")).unwrap();
    assert!(maps.node_instances().unwrap().is_empty());
}

#[test]
fn an_ipv6_download_through_an_uplink_with_gro_is_lost_nowhere() {
    // As serve.rs's GRO download, over IPv6: aggregates larger than the MTU
    // must find their way toward the client (node::redirect6).
    let (mut lab, agent) = dual_lab("node6gro", &["--ipv6"]);
    lab.uplink_gro().unwrap();
    let mut iperf = lab.server.command("iperf3");
    iperf.args(["-s", "-B", &SERVER_IP6.to_string(), "-p", "5201"]);
    lab.spawn(iperf).unwrap();
    wait_sockets(&lab.server, &["-ltnH", "sport = :5201"], |n| n >= 1);
    let rules = format!("5201 tcp {SERVER_IP} 5201\n5201 tcp {SERVER_IP6} 5201");
    lab.register_dual(0, &rules, None).unwrap();
    lab.wait_for_log(agent, "serving a new instance", Duration::from_secs(5))
        .unwrap();
    let (received, said) = download(&lab.clients[0], router_ip6(0).into(), 5201, "64M");
    assert!(received >= 64 << 20, "received {received} bytes: {said}");
    let maps = MapSet::from_node_pins(&lab.bpffs.path().join("node")).unwrap();
    let counts = maps.node_counts(1).unwrap();
    assert!(counts.drops.is_empty(), "{counts:?}");
    assert!(counts.replied.packets > 0, "{counts:?}");
}
