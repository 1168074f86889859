//! Redirect mode end to end in the netns lab: `egress-router` in init mode sets up the
//! router namespace and exits, then real clients (curl, ping, Python sockets) talk to the
//! router pod's IP and real servers report the address they saw.

use std::{collections::HashSet, time::Duration};

use egress_common::{DropReason, Stat};
use egress_tests::{
    asset,
    lab::{EGRESS_SOURCE, Lab, LabOptions, ROUTER_POD_IP, SERVER_IP},
    netns::run_bounded,
    util::{peer_server, run_ok, tempdir, wait_listening, wait_listening_in, wait_sockets},
};
use egress_user::dataplane::{maps::MapSet, stats::Stats};

fn stats(lab: &Lab, instance: &str) -> Stats {
    MapSet::from_pins(&lab.pin_dir(instance))
        .unwrap()
        .stats()
        .unwrap()
}

fn http_server(lab: &mut Lab, port: u16, dir: &std::path::Path) -> usize {
    let mut cmd = lab.server.command("python3");
    cmd.args(["-m", "http.server", &port.to_string(), "--bind"])
        .arg(SERVER_IP.to_string())
        .arg("--directory")
        .arg(dir);
    lab.spawn(cmd).unwrap();
    wait_listening(lab, port);
    lab.daemons_len() - 1
}

#[test]
fn curl_reaches_the_server_which_sees_egress_source() {
    let mut lab = Lab::new("redir-curl").unwrap();
    let dir = tempdir("redir-curl");
    std::fs::write(dir.join("index.html"), "hello from the server\n").unwrap();
    let server = http_server(&mut lab, 80, &dir);
    lab.init_router("curl", &format!("80 tcp {SERVER_IP}"), &[])
        .unwrap();

    let body = run_ok(
        &lab.client,
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            &format!("http://{ROUTER_POD_IP}/"),
        ],
        10,
    );
    assert_eq!(body, "hello from the server\n");

    let log = lab.stop_daemon(server).unwrap();
    let log = String::from_utf8_lossy(&log.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("\"GET / HTTP/1.1\" 200"))
        .unwrap_or_else(|| panic!("no request in the server log: {log}"));
    assert!(
        line.starts_with(&format!("{EGRESS_SOURCE} ")),
        "the server saw another client address: {line}"
    );
    let stats = stats(&lab, "curl");
    assert_eq!(
        stats.path(Stat::FlowsCreated).packets,
        1,
        "one connection: {stats}"
    );
    assert!(stats.path(Stat::Forwarded).packets >= 3, "{stats}");
    assert!(stats.path(Stat::Replied).packets >= 3, "{stats}");
    egress_tests::pktgen::assert_balanced(&stats);
}

#[test]
fn port_remap_udp_fallback_and_ping() {
    let mut lab = Lab::new("redir-rules").unwrap();
    let dir = tempdir("redir-rules");
    std::fs::write(dir.join("index.html"), "port 80\n").unwrap();
    http_server(&mut lab, 80, &dir);
    peer_server(&mut lab, "tcp", 9000);
    peer_server(&mut lab, "udp", 5353);
    wait_listening(&lab, 9000);
    // The pod must not answer pings itself: a reply can only come from the server.
    lab.router
        .sysctl("net.ipv4.icmp_echo_ignore_all", "1")
        .unwrap();
    let destination = format!(
        "# remap, UDP, then everything else to the server\n\
         8080 tcp {SERVER_IP} 80\n\
         \n\
         5300 udp {SERVER_IP} 5353\n\
         {SERVER_IP}\n"
    );
    lab.init_router("rules", &destination, &[]).unwrap();

    let body = run_ok(
        &lab.client,
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            &format!("http://{ROUTER_POD_IP}:8080/"),
        ],
        10,
    );
    assert_eq!(body, "port 80\n", "8080 -> server:80");

    let reply = run_ok(
        &lab.client,
        "python3",
        &[
            asset("udp_ask.py").to_str().unwrap(),
            &ROUTER_POD_IP.to_string(),
            "5300",
        ],
        10,
    );
    assert!(
        reply.starts_with(&format!("{EGRESS_SOURCE} ")),
        "UDP server saw: {reply}"
    );

    // Port 9000 has no rule: the fallback sends it to the server, port unchanged.
    let reply = run_ok(
        &lab.client,
        "sh",
        &[
            "-c",
            &format!("printf 'hi\\n' | nc -N -w 5 {ROUTER_POD_IP} 9000"),
        ],
        10,
    );
    assert!(
        reply.starts_with(&format!("{EGRESS_SOURCE} ")),
        "fallback TCP server saw: {reply}"
    );

    let before = stats(&lab, "rules");
    run_ok(
        &lab.client,
        "ping",
        &[
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            &ROUTER_POD_IP.to_string(),
        ],
        15,
    );
    let after = stats(&lab, "rules");
    assert!(
        after.path(Stat::Replied).packets >= before.path(Stat::Replied).packets + 3,
        "echo replies came back through the data plane: {after}"
    );
}

#[test]
fn fifty_connections_wanting_the_same_tuple_all_succeed() {
    let mut lab = Lab::new("redir-same").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let clients: Vec<String> = (10..35).map(|i| format!("192.0.2.{i}")).collect();
    for ip in &clients {
        lab.client
            .ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])
            .unwrap();
    }
    let destination = format!("8001 tcp {SERVER_IP} 80\n8002 tcp {SERVER_IP} 80\n");
    lab.init_router("same", &destination, &[]).unwrap();

    let mut args = vec![
        asset("same_port_clients.py").to_str().unwrap().to_owned(),
        "20000".to_owned(),
        ROUTER_POD_IP.to_string(),
        "8001,8002".to_owned(),
    ];
    args.extend(clients.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_ok(&lab.client, "python3", &args, 60);
    let seen: Vec<(&str, &str)> = out
        .lines()
        .map(|l| l.split_once(' ').expect("IP PORT"))
        .collect();
    assert_eq!(seen.len(), 50, "{out}");
    assert!(
        seen.iter().all(|(ip, _)| *ip == EGRESS_SOURCE.to_string()),
        "{out}"
    );
    let ports: HashSet<&str> = seen.iter().map(|(_, port)| *port).collect();
    assert_eq!(
        ports.len(),
        50,
        "distinct source ports at the server: {out}"
    );
    assert!(
        ports.contains("20000"),
        "the first flow keeps its port: {out}"
    );
    let stats = stats(&lab, "same");
    assert!(stats.path(Stat::NatRetries).packets >= 49, "{stats}");
    assert_eq!(stats.path(Stat::FlowsCreated).packets, 50, "{stats}");
}

#[test]
fn hundred_megabytes_with_a_smaller_pod_mtu() {
    let opts = LabOptions {
        pod_mtu: 1400,
        node_mtu: 1500,
        ..LabOptions::default()
    };
    let mut lab = Lab::with_options("redir-mtu", &opts).unwrap();
    let dir = tempdir("redir-mtu");
    let size: u64 = 100 * 1024 * 1024;
    let file = std::fs::File::create(dir.join("big")).unwrap();
    file.set_len(size).unwrap();
    http_server(&mut lab, 80, &dir);
    lab.init_router("mtu", &format!("80 tcp {SERVER_IP}"), &[])
        .unwrap();

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
            &format!("http://{ROUTER_POD_IP}/big"),
        ],
        70,
    );
    assert_eq!(out.trim(), size.to_string());
    let stats = stats(&lab, "mtu");
    // The server's SYN-ACK advertised 1460; the client may send at most 1400 - 40.
    assert!(stats.path(Stat::MssClamped).packets >= 1, "{stats}");
}

#[test]
fn egress_source_is_not_a_way_in() {
    let mut lab = Lab::new("redir-in").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    lab.init_router("in", &format!("80 tcp {SERVER_IP}\n{SERVER_IP}"), &[])
        .unwrap();
    // Listeners in the pod on every address: only the data plane stands in the way.
    let listeners = lab.daemons_len();
    let mut tcp = lab.router.command("nc");
    tcp.args(["-lk", "7777"]);
    lab.spawn(tcp).unwrap();
    let mut udp = lab.router.command("nc");
    udp.args(["-luk", "7778"]);
    lab.spawn(udp).unwrap();
    wait_listening_in(&lab.router, 7777);
    wait_sockets(&lab.router, &["-Hlun", "sport = :7778"], |n| n > 0);
    let before = stats(&lab, "in");
    let source = EGRESS_SOURCE.to_string();

    for port in ["7777", "80", "22", "40000"] {
        let out = run_bounded(
            lab.gateway
                .command("nc")
                .args(["-z", "-w", "2", &source, port]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(
            !out.status.success(),
            "TCP {port} on EGRESS_SOURCE answered"
        );
    }
    let ping = run_bounded(
        lab.gateway
            .command("ping")
            .args(["-c", "2", "-i", "0.2", "-W", "1", &source]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(!ping.status.success(), "EGRESS_SOURCE answered a ping");
    // UDP to a listening port: nothing comes back, not even port unreachable.
    let udp = run_bounded(
        lab.gateway.command("sh").args([
            "-c",
            &format!(
                "printf 'x\\n' | nc -u -w 2 {source} 7778; printf 'x\\n' | nc -u -w 2 {source} 9"
            ),
        ]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(udp.stdout.is_empty(), "UDP got an answer: {udp:?}");

    let after = stats(&lab, "in");
    let dropped = |s: &Stats| s.drop(DropReason::Unsolicited).packets;
    // 4 connection attempts (SYN and retries), 2 pings, 2 datagrams.
    assert!(dropped(&after) >= dropped(&before) + 8, "{after}");
    // The pod's own connections out of the egress interface are tracked: replies pass.
    let own = run_ok(
        &lab.router,
        "sh",
        &["-c", &format!("printf 'hi\\n' | nc -N -w 5 {SERVER_IP} 80")],
        10,
    );
    assert!(
        own.starts_with(&format!("{source} ")),
        "pod's own connection: {own}"
    );
    assert!(stats(&lab, "in").path(Stat::EgressEgressLocal).packets >= 2);

    for index in [listeners, listeners + 1] {
        let out = lab.stop_daemon(index).unwrap();
        assert!(
            out.stdout.is_empty(),
            "a listener in the pod got data: {out:?}"
        );
    }
}

#[test]
fn legacy_mode_serves_until_sigterm_and_logs_packets_with_debug() {
    let mut lab = Lab::new("redir-legacy").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let agent = lab
        .start_agent("legacy", &format!("80 tcp {SERVER_IP}"), &["--debug", "1"])
        .unwrap();
    let ask = |lab: &Lab| {
        run_ok(
            &lab.client,
            "sh",
            &[
                "-c",
                &format!("printf 'hi\\n' | nc -N -w 5 {ROUTER_POD_IP} 80"),
            ],
            10,
        )
    };
    assert!(ask(&lab).starts_with(&format!("{EGRESS_SOURCE} ")));
    // The events reach the log through a ring buffer the agent polls: wait for them.
    lab.wait_for_log(
        agent,
        &format!("egress_ingress: translated {ROUTER_POD_IP} -> "),
        Duration::from_secs(10),
    )
    .unwrap();

    let out = lab.stop_daemon(agent).unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "legacy mode exits 0 on SIGTERM: {log}"
    );
    assert!(
        log.contains(&format!(
            "pod_ingress: translated {EGRESS_SOURCE} -> {SERVER_IP}"
        )),
        "per-packet events: {log}"
    );
    assert!(
        log.contains(&format!("egress_ingress: translated {ROUTER_POD_IP} -> ")),
        "per-packet events: {log}"
    );
    // The data plane belongs to the interfaces: it keeps working without the agent.
    assert!(ask(&lab).starts_with(&format!("{EGRESS_SOURCE} ")));
}
