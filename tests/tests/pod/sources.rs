//! Which sources may open flows: a client pod that sends from an address no client can
//! have (the egress network's gateway's, here) or, with `EGRESS_ROUTER_CLIENT_CIDRS`, from outside
//! the client networks, gets no flow (`bad_source`), while the real client does; a bad
//! value of the variable is refused before anything changes.

use std::time::Duration;

use egress_tests::{
    lab::{Lab, ROUTER_POD_IP, SERVER_IP},
    util::{drop_counts, nat_flows_from, run_ok},
};

/// Sends one UDP datagram to the router's port 53 from `from` (an address of the client
/// namespace), port `port`.
fn datagram(lab: &Lab, from: &str, port: u16) {
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('{from}', {port}))\n\
         s.sendto(b'x', ('{ROUTER_POD_IP}', 53))\n"
    );
    run_ok(&lab.client, "python3", &["-c", &script], 10);
}

/// Translated flows from client address `from` in `conntrack --json`.
fn flows_from(lab: &Lab, from: &str) -> usize {
    nat_flows_from(lab, "src", from)
}

fn bad_source(lab: &Lab) -> u64 {
    drop_counts(lab, "src")
        .get("bad_source")
        .copied()
        .unwrap_or(0)
}

#[test]
fn a_source_on_the_egress_side_opens_no_flow() {
    let mut lab = Lab::new("src-default").unwrap();
    lab.start_agent("src", &format!("53 udp {SERVER_IP}"), &[])
        .unwrap();
    // The egress network's gateway's address, spoofed by the client pod.
    lab.client
        .ip(&["addr", "add", "198.51.100.1/32", "dev", "eth0"])
        .unwrap();
    let before = bad_source(&lab);
    datagram(&lab, "198.51.100.1", 40000);
    datagram(&lab, "192.0.2.2", 40001);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(bad_source(&lab) - before, 1);
    assert_eq!(flows_from(&lab, "198.51.100.1"), 0);
    assert_eq!(flows_from(&lab, "192.0.2.2"), 1);
}

#[test]
fn with_client_cidrs_only_those_networks_open_flows() {
    let mut lab = Lab::new("src-cidrs").unwrap();
    lab.start_agent(
        "src",
        &format!("53 udp {SERVER_IP}"),
        &["--client-cidrs", "192.0.2.0/30, 2001:db8:c::/64"],
    )
    .unwrap();
    // In the lab's client subnet, but not in the client networks named.
    lab.client
        .ip(&["addr", "add", "192.0.2.77/32", "dev", "eth0"])
        .unwrap();
    let before = bad_source(&lab);
    for port in 40000..40005 {
        datagram(&lab, "192.0.2.77", port);
    }
    datagram(&lab, "192.0.2.2", 40010);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(bad_source(&lab) - before, 5);
    assert_eq!(flows_from(&lab, "192.0.2.77"), 0);
    assert_eq!(flows_from(&lab, "192.0.2.2"), 1);
}

#[test]
fn a_bad_client_cidrs_value_is_refused_naming_the_variable() {
    let lab = Lab::new("src-bad").unwrap();
    let before = lab.router.network_state().unwrap();
    let mut cmd = lab.agent_command("src", &format!("53 udp {SERVER_IP}"), &[]);
    cmd.env("EGRESS_ROUTER_CLIENT_CIDRS", "10.128.0.0/14,10.0.0.0/33");
    let out = egress_tests::netns::run_bounded(&mut cmd, Duration::from_secs(20)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "--client-cidrs (EGRESS_ROUTER_CLIENT_CIDRS) value '10.0.0.0/33' is invalid: the prefix length must be 0 to 32"
        ),
        "{stderr}"
    );
    assert_eq!(lab.router.network_state().unwrap(), before);
}
