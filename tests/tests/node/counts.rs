//! What node mode counts, per client and per instance, in the node lab: a client over its
//! flow limit on the node gets no new flow while others still do, and each instance counts
//! its own fallback and its own drops by reason.

use std::time::Duration;

use egress_common::DropReason;
use egress_tests::{
    nodelab::{NodeLab, egress_source, router_ip},
    util::{curl, run_ok},
};

use super::{
    instances::log_count,
    serve::{http_server, node_maps, serving},
};

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
