//! The router as an IPv6 hop, in the dual-stack lab with real `ping -6` and a real UDP
//! server: a probe whose hop limit runs out at the router gets Time Exceeded from the pod's
//! IPv6 address; a packet too big for the next link gets Packet Too Big with that link's
//! MTU (IPv6 routers never fragment), which the sender's kernel learns, on the way out
//! (from the pod) and on the way back (from EGRESS_SOURCE, to the remote), whose
//! fragmented datagrams then get through.

use std::time::Duration;

use egress_common::Stat;
use egress_tests::{
    asset,
    lab::{Lab, LabOptions, SERVER_IP},
    lab6::{EGRESS_SOURCE6, ROUTER_POD_IP6, SERVER_IP6, dual_stack_env},
    netns::run_bounded,
    util::run_ok,
};
use egress_user::dataplane::maps::MapSet;

/// `ping -6` from the client to the pod's IPv6 address (the fallback sends it on).
fn ping6(lab: &Lab, args: &[&str]) -> String {
    let mut cmd = lab.client.command("ping");
    cmd.args(["-6", "-n", "-c", "1", "-W", "2"])
        .args(args)
        .arg(ROUTER_POD_IP6.to_string());
    let out = run_bounded(&mut cmd, Duration::from_secs(10)).unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn dual_lab(tag: &str, opts: &LabOptions, destination: &str) -> Lab {
    let lab = Lab::with_options(tag, opts).unwrap();
    lab.enable_ipv6().unwrap();
    let [source, gateway] = dual_stack_env();
    lab.init_router_as(tag, [&source, &gateway], destination, &[])
        .unwrap();
    lab
}

#[test]
fn the_router_answers_hop_limit_and_mtu_as_an_ipv6_hop() {
    let opts = LabOptions {
        node_mtu: 1400,
        ..LabOptions::default()
    };
    let lab = dual_lab("path6", &opts, &format!("{SERVER_IP}\n{SERVER_IP6}"));

    let through = ping6(&lab, &[]);
    assert!(
        through.contains("1 received"),
        "echo through the fallback: {through}"
    );

    let expired = ping6(&lab, &["-t", "1"]);
    assert!(
        expired.contains(&format!("From {ROUTER_POD_IP6} icmp_seq=1 Time exceeded")),
        "{expired}"
    );

    // 1450 bytes of ICMPv6 payload make a 1498-byte packet: too big for the 1400-byte link.
    let too_big = ping6(&lab, &["-M", "do", "-s", "1450"]);
    assert!(
        too_big.contains(&format!(
            "From {ROUTER_POD_IP6} icmp_seq=1 Packet too big: mtu=1400"
        )),
        "{too_big}"
    );
    // The client's kernel took note: the route to the pod now has the path's MTU.
    let route = run_ok(
        &lab.client,
        "ip",
        &["-6", "route", "get", &ROUTER_POD_IP6.to_string()],
        5,
    );
    assert!(route.contains("mtu 1400"), "{route}");
}

#[test]
fn a_reply_too_big_for_the_pod_network_teaches_the_remote_its_mtu() {
    let opts = LabOptions {
        pod_mtu: 1400,
        node_mtu: 1500,
        ..LabOptions::default()
    };
    let mut lab = dual_lab(
        "path6-back",
        &opts,
        &format!("5300 udp {SERVER_IP6} 5353\n80 tcp {SERVER_IP6}\n"),
    );
    // TCP first (before the server learns the path's MTU below, which would make its
    // MSS small enough already): 100 MB over IPv6 through the smaller pod network, the
    // server's MSS clamped to the pod MTU - 60.
    let dir = egress_tests::util::tempdir("path6-back");
    let size: u64 = 100 * 1024 * 1024;
    std::fs::File::create(dir.join("big"))
        .unwrap()
        .set_len(size)
        .unwrap();
    let mut http = lab.server.command("python3");
    http.args(["-m", "http.server", "80", "--bind"])
        .arg(SERVER_IP6.to_string())
        .arg("--directory")
        .arg(&*dir);
    lab.spawn(http).unwrap();
    egress_tests::util::wait_listening(&lab, 80);
    let out = run_ok(
        &lab.client,
        "curl",
        &[
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &format!("http://[{ROUTER_POD_IP6}]/big"),
        ],
        70,
    );
    assert_eq!(out.trim(), size.to_string());
    let stats = MapSet::from_pins(&lab.pin_dir("path6-back"))
        .unwrap()
        .stats()
        .unwrap();
    assert!(stats.path(Stat::MssClamped).packets >= 1, "{stats}");

    // A server that answers each datagram with 1450 bytes: 1498 on the wire, which the
    // node network carries and the pod network (1400) does not.
    let mut server = lab.server.command("python3");
    server.args([
        "-c",
        &format!(
            "import socket\n\
             s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
             s.bind(('{SERVER_IP6}', 5353))\n\
             while True:\n\
             \x20   _, peer = s.recvfrom(2048)\n\
             \x20   s.sendto(b'x' * 1450, peer)\n"
        ),
    ]);
    lab.spawn(server).unwrap();
    egress_tests::util::wait_sockets(&lab.server, &["-Hlun", "sport = :5353"], |n| n > 0);
    // The first answer is too big for the pod network: the router answers the server with
    // Packet Too Big. The server then fragments its answers (IPv6 routers never do), and
    // the router translates the fragments: the client's retry gets the whole answer.
    let answer = run_ok(
        &lab.client,
        "python3",
        &[
            asset("udp_ask.py").to_str().unwrap(),
            &ROUTER_POD_IP6.to_string(),
            "5300",
        ],
        10,
    );
    assert!(
        answer.trim() == "x".repeat(1450),
        "the answer, reassembled by the client: {} bytes",
        answer.trim().len()
    );
    let route = run_ok(
        &lab.server,
        "ip",
        &["-6", "route", "get", &EGRESS_SOURCE6.to_string()],
        5,
    );
    assert!(
        route.contains("mtu 1400"),
        "the server learnt the path's MTU: {route}"
    );
    let stats = MapSet::from_pins(&lab.pin_dir("path6-back"))
        .unwrap()
        .stats()
        .unwrap();
    assert!(stats.path(Stat::IcmpErrorsSent).packets >= 1, "{stats}");
    assert!(
        stats.path(Stat::FragmentsTranslated).packets >= 1,
        "{stats}"
    );
}
