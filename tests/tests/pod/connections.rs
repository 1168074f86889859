//! Short connections through the router, many of them reusing the client's ports, as a
//! client pod without keep-alive opens them. Each client port has one translated port, so
//! no connection meets another connection's TIME_WAIT on the server (which refuses a SYN
//! whose timestamps look old, PAWS) and none waits for a NAT port: nothing is dropped,
//! nothing retransmitted.

use std::time::Duration;

use egress_tests::{
    lab::{EGRESS_SOURCE, Lab, ROUTER_POD_IP, SERVER_IP},
    netns::{Netns, run_bounded},
    util::{drop_counts, router_cli, wait_listening},
};

/// A counter of the namespace's TCP extension statistics (`/proc/net/netstat`).
fn tcp_ext(ns: &Netns, name: &str) -> u64 {
    let out = run_bounded(
        ns.command("cat").arg("/proc/net/netstat"),
        Duration::from_secs(5),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/net/netstat"))
}

/// A pod whose ephemeral range leaves the router 1,024 NAT ports, and a client using 1,000
/// ports: every client port is reused several times within the server's TIME_WAIT (60 s)
/// and the ports' closed flows (120 s). All connections complete, the server refuses no
/// SYN as old, the client retransmits none, and the router retries and drops no port.
#[test]
fn reused_client_ports_meet_no_time_wait_and_no_full_nat_range() {
    let mut lab = Lab::new("conn-reuse").unwrap();
    lab.router
        .sysctl("net.ipv4.ip_local_port_range", "1024 64511")
        .unwrap();
    lab.client
        .sysctl("net.ipv4.ip_local_port_range", "40000 40999")
        .unwrap();
    let connrate = env!("CARGO_BIN_EXE_connrate");
    let mut serve = lab.server.command(connrate);
    serve.args([
        "serve",
        &format!("{SERVER_IP}:8080"),
        "2",
        &EGRESS_SOURCE.to_string(),
    ]);
    lab.spawn(serve).unwrap();
    wait_listening(&lab, 8080);
    lab.init_router("reuse", &format!("8080 tcp {SERVER_IP}"), &[])
        .unwrap();

    let out = run_bounded(
        lab.client
            .command(connrate)
            .args(["client", &format!("{ROUTER_POD_IP}:8080"), "3", "2"]),
        Duration::from_secs(20),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| -> u64 {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("connrate printed no {name}: {text}"))
    };
    let connections = field("connections");
    assert!(
        connections >= 3000,
        "each of the 1,000 client ports used three times or more: {text}"
    );
    assert_eq!(field("errors"), 0, "{text}");
    assert_eq!(tcp_ext(&lab.server, "PAWSTimewait"), 0, "refused as old");
    assert_eq!(
        tcp_ext(&lab.client, "TCPSynRetrans"),
        0,
        "SYNs retransmitted"
    );

    let stats = router_cli(&lab, "reuse", &["stats"]);
    let path = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| {
                let mut words = l.split_whitespace();
                (words.next()? == name).then(|| words.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {name} in stats:\n{stats}"))
    };
    assert_eq!(path("nat_retries"), 0, "{stats}");
    assert!(path("flows_reopened") >= connections - 1000, "{stats}");
    assert!(
        drop_counts(&lab, "reuse").values().all(|&n| n == 0),
        "{stats}"
    );
}
