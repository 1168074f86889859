//! Per-client flow limit in the netns lab: a client pod that opens more flows than
//! `--max-flows-per-source` gets no new flow once the agent's GC has counted it, while
//! another client keeps opening flows, and the limit shows in `/metrics` and bpftool.

use std::time::{Duration, Instant};

use egress_tests::{
    lab::{Lab, ROUTER_POD_IP, SERVER_IP},
    util::{metric, metrics, nat_flows_from, router_cli, run_ok},
};

/// Sends one UDP datagram to the router's port 53 from each of `ports` on `from`, each its
/// own flow (nobody answers: the flows stay unanswered).
fn udp_flows(lab: &Lab, from: &str, ports: std::ops::Range<u16>) {
    let script = format!(
        "import socket\n\
         for p in range({}, {}):\n\
         \x20   s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         \x20   s.bind(('{from}', p))\n\
         \x20   s.sendto(b'x', ('{ROUTER_POD_IP}', 53))\n\
         \x20   s.close()\n",
        ports.start, ports.end
    );
    run_ok(&lab.client, "python3", &["-c", &script], 20);
}

/// The translated flows `conntrack --json` lists for client address `from`.
fn flows_of(lab: &Lab, from: &str) -> usize {
    nat_flows_from(lab, "lim", from)
}

#[test]
fn a_client_over_its_flow_limit_gets_no_new_flow_and_others_still_do() {
    let mut lab = Lab::new("limit").unwrap();
    lab.start_agent(
        "lim",
        &format!("53 udp {SERVER_IP}"),
        &["--max-flows-per-source", "20", "--gc-max-interval", "1"],
    )
    .unwrap();
    udp_flows(&lab, "192.0.2.2", 30000..30040);
    assert_eq!(flows_of(&lab, "192.0.2.2"), 40, "created before any census");

    // The next GC pass counts 40 > 20 and limits the client.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&metrics(&lab), "egress_router_limited_clients", None) < 1.0 {
        assert!(Instant::now() < deadline, "the client was never limited");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        metric(
            &metrics(&lab),
            "egress_router_client_flow_limit",
            Some(("family", "ipv4"))
        ),
        20.0
    );
    let status: serde_json::Value =
        serde_json::from_str(&router_cli(&lab, "lim", &["status", "--json"])).unwrap();
    assert_eq!(
        status["limited_clients"],
        serde_json::json!([{"client": "192.0.2.2", "flows": 40}]),
        "{status}"
    );

    let refused_before = metric(
        &metrics(&lab),
        "egress_router_drops_total",
        Some(("reason", "source_limit")),
    );
    udp_flows(&lab, "192.0.2.2", 31000..31010);
    let refused = metric(
        &metrics(&lab),
        "egress_router_drops_total",
        Some(("reason", "source_limit")),
    ) - refused_before;
    assert_eq!(refused, 10.0, "each new flow of the limited client refused");
    assert_eq!(flows_of(&lab, "192.0.2.2"), 40);

    // Another client pod still gets its flows.
    run_ok(
        &lab.client,
        "ip",
        &["addr", "add", "192.0.2.3/24", "dev", "eth0"],
        5,
    );
    udp_flows(&lab, "192.0.2.3", 30000..30005);
    assert_eq!(flows_of(&lab, "192.0.2.3"), 5);
}

/// By default one client may hold a quarter of the ports a remote offers (7,936 of the
/// default range's 31,744), not a quarter of the table (65,536 flows, more than a remote's
/// ports: one client could take them all).
#[test]
fn by_default_a_client_may_hold_a_quarter_of_a_remotes_ports() {
    let mut lab = Lab::new("limit-default").unwrap();
    lab.start_agent(
        "lim",
        &format!("53 udp {SERVER_IP}"),
        &["--gc-max-interval", "1"],
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let limit = loop {
        let limit = metric(
            &metrics(&lab),
            "egress_router_client_flow_limit",
            Some(("family", "ipv4")),
        );
        if limit > 0.0 || Instant::now() > deadline {
            break limit;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(limit, 7936.0);
}
