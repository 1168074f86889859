//! Operating the router in the netns lab: restarts that keep flows, adoption of what an
//! init container left behind, inspection (CLI and bpftool), metrics, conntrack GC and
//! teardown (the errors of real failures as the CLI prints them are `errors`). Live reloads
//! are in `reload.rs`, upgrades in `upgrade.rs`.

use std::{
    collections::BTreeSet,
    process::Stdio,
    time::{Duration, Instant},
};

use egress_common::{DropReason, FlowEntry, FlowKey, flow_kind};
use egress_tests::{
    egress_router_bin,
    lab::{CLIENT_IP, EGRESS_SOURCE, GATEWAY_IP, Lab, METRICS_PORT, ROUTER_POD_IP, SERVER_IP},
    netns::{run_bounded, wait_bounded},
    util::{
        ask, drop_counts, metric, metrics, peer_server, router_cli, run_ok, tempdir,
        wait_listening, write_config,
    },
};
use egress_user::dataplane::{flows::CtTable, maps::MapSet};

#[test]
fn iperf_stream_survives_kill_restart_and_a_new_rule() {
    let mut lab = Lab::new("op-iperf").unwrap();
    let mut server = lab.server.command("iperf3");
    server.args(["-s", "-1", "-B", &SERVER_IP.to_string(), "-p", "5201"]);
    lab.spawn(server).unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 5201);
    wait_listening(&lab, 80);
    let dir = tempdir("op-iperf");
    let file = dir.join("destination");
    write_config(&file, &format!("5201 tcp {SERVER_IP}\n"));
    let file_arg = file.to_str().unwrap().to_owned();
    let agent_args = ["--config-file", file_arg.as_str()];
    let first = lab.start_agent("iperf", "", &agent_args).unwrap();
    let drops_before = drop_counts(&lab, "iperf");
    assert_eq!(drops_before.len(), DropReason::ALL.len());

    let client = lab
        .client
        .command("iperf3")
        .args(["-c", &ROUTER_POD_IP.to_string(), "-p", "5201", "-t", "30"])
        .args(["-i", "0.5", "-b", "200M", "-J"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The schedule starts when the stream does (its control and data connections are
    // up), not when the process was spawned: on two busy vCPUs that can be a while.
    let deadline = Instant::now() + Duration::from_secs(10);
    while run_ok(
        &lab.client,
        "ss",
        &["-Htn", "state", "established", "dport = :5201"],
        5,
    )
    .lines()
    .count()
        < 2
    {
        assert!(Instant::now() < deadline, "iperf3 did not start streaming");
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let at = |secs: u64| {
        let left = Duration::from_secs(secs).saturating_sub(start.elapsed());
        std::thread::sleep(left);
    };
    at(5);
    lab.kill_daemon(first).unwrap();
    at(10);
    let second = lab.start_agent("iperf", "", &agent_args).unwrap();
    at(15);
    assert_eq!(ask(&lab, 8080), "", "port 8080 has no rule yet");
    write_config(
        &file,
        &format!("5201 tcp {SERVER_IP}\n8080 tcp {SERVER_IP} 80\n"),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut answer = String::new();
    while Instant::now() < deadline {
        answer = ask(&lab, 8080);
        if !answer.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        answer.starts_with(&format!("{EGRESS_SOURCE} ")),
        "the new rule serves new connections: {answer:?}"
    );

    let out = wait_bounded(client, Duration::from_secs(45)).unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "iperf3 JSON ({err}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "iperf3 failed: {report}");
    let intervals = report["intervals"].as_array().unwrap();
    assert!(intervals.len() >= 59, "{} intervals", intervals.len());
    // Any gap over one second would contain a whole 0.5 s interval without a byte.
    for (i, interval) in intervals.iter().enumerate() {
        let bytes = interval["sum"]["bytes"].as_u64().unwrap();
        assert!(
            bytes > 0,
            "interval {i} ({}) moved no data",
            interval["sum"]["start"]
        );
    }
    assert!(report["end"]["sum_received"]["bytes"].as_u64().unwrap() > 100_000_000);
    // Nothing of the stream was lost in the kill and the restart's program replace: no
    // drop counter moved, and the sender retransmitted (next to) nothing. A loss in the
    // hand-over costs many: 1 ms at 200 Mbit/s is 17 segments. Alone on the machine this
    // is 0; a few stray queue drops happen when other labs of the suite load both CPUs
    // (3 seen), so the bound sits below the smallest hand-over loss instead.
    let retransmits = report["end"]["sum_sent"]["retransmits"].as_u64().unwrap();
    assert!(retransmits <= 8, "{retransmits} TCP retransmissions");
    assert_eq!(
        drop_counts(&lab, "iperf"),
        drops_before,
        "drops during the restart"
    );

    let log = String::from_utf8_lossy(&lab.stop_daemon(second).unwrap().stderr).into_owned();
    assert!(
        log.contains("adopted the running data plane"),
        "the restarted agent took over the maps: {log}"
    );
    assert!(log.contains("configuration reloaded"), "{log}");
}

#[test]
fn init_through_ip_netns_exec_then_an_agent_adopts_its_flows() {
    let mut lab = Lab::new("op-adopt").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    // Like an init container: a private mount namespace with a fresh /sys, no --bpffs.
    let netns_exec = |extra: &[&str]| {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", lab.router.name()])
            .arg(egress_router_bin())
            .env("EGRESS_SOURCE", EGRESS_SOURCE.to_string())
            .env("EGRESS_GATEWAY", GATEWAY_IP.to_string())
            .env("EGRESS_DESTINATION", format!("80 tcp {SERVER_IP}"))
            .args(extra);
        cmd
    };
    let out = run_bounded(
        netns_exec(&[]).env("EGRESS_ROUTER_MODE", "init"),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing runs in the router's namespace any more (a pattern on the command line could
    // not tell: after exec only the binary's path is left).
    let pids = run_bounded(
        std::process::Command::new("ip").args(["netns", "pids", lab.router.name()]),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(pids.status.success());
    assert!(
        pids.stdout.is_empty(),
        "no process is left in the router's namespace: {}",
        String::from_utf8_lossy(&pids.stdout)
    );

    // Flows through the data plane the init container left behind, made with curl (the
    // peer server answers one line without HTTP headers, hence --http0.9).
    let mut ports = BTreeSet::new();
    for _ in 0..3 {
        let answer = run_ok(
            &lab.client,
            "curl",
            &[
                "-s",
                "--http0.9",
                "--max-time",
                "5",
                &format!("http://{ROUTER_POD_IP}/"),
            ],
            10,
        );
        let answer = answer.trim();
        let (ip, port) = answer.split_once(' ').expect("an answer");
        assert_eq!(ip, EGRESS_SOURCE.to_string());
        ports.insert(port.parse::<u16>().unwrap());
    }

    // An agent started later, also through ip netns exec, adopts them.
    let router_ns = lab.router.name().to_owned();
    let json = |args: &[&str]| -> Option<serde_json::Value> {
        let out = run_bounded(
            std::process::Command::new("ip")
                .args(["netns", "exec", &router_ns])
                .arg(egress_router_bin())
                .args(args),
            Duration::from_secs(10),
        )
        .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let program_ids = |status: &serde_json::Value| -> Vec<u64> {
        status["programs"]
            .as_array()
            .map(|all| all.iter().filter_map(|p| p["id"].as_u64()).collect())
            .unwrap_or_default()
    };
    let init_programs = program_ids(&json(&["status", "--json"]).unwrap());
    assert_eq!(init_programs.len(), 3, "the init container's programs");
    let mut agent = netns_exec(&["--metrics-address", "off"]);
    agent.env("EGRESS_ROUTER_MODE", "legacy");
    let index = lab.daemons_len();
    lab.spawn(agent).unwrap();
    let listed = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            // The agent is up once its own programs replaced the init container's (3 new
            // ids); the flows are read after that, from the agent's data plane.
            let now = program_ids(&json(&["status", "--json"])?);
            let replaced = now.len() == 3 && now.iter().all(|id| !init_programs.contains(id));
            if !replaced {
                return None;
            }
            json(&["conntrack", "--json"])
        })
        .expect("the agent set up within 20 s");
    let out = lab.stop_daemon(index).unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("adopted the running data plane"),
        "agent log: {log}"
    );
    let seen: BTreeSet<u16> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["original"]["src"] == CLIENT_IP.to_string() && f["kind"] == "nat")
        .map(|f| f["translated"]["sport"].as_u64().unwrap() as u16)
        .collect();
    assert!(
        ports.is_subset(&seen),
        "the flows made before the agent started ({ports:?}) are listed: {listed}"
    );
    // And the data plane still works after the agent is gone.
    assert!(ask(&lab, 80).starts_with(&format!("{EGRESS_SOURCE} ")));
}

#[test]
fn bpftool_and_conntrack_json_show_the_same_flows_and_metrics_grow() {
    let mut lab = Lab::new("op-inspect").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let agent = lab
        .start_agent(
            "inspect",
            &format!("80 tcp {SERVER_IP}\n8080 tcp {SERVER_IP} 80"),
            &["--gc-max-interval", "0.5"],
        )
        .unwrap();
    let before = metrics(&lab);
    let rule = |s: &prometheus_parse::Scrape| {
        metric(
            s,
            "egress_router_rule_packets_total",
            Some(("port", "8080")),
        )
    };
    for _ in 0..3 {
        assert!(ask(&lab, 8080).starts_with(&format!("{EGRESS_SOURCE} ")));
    }
    assert!(ask(&lab, 80).starts_with(&format!("{EGRESS_SOURCE} ")));

    // bpftool reads the pinned BTF map with field names.
    let pin = lab.pin_dir("inspect").join("CONNTRACK");
    let out = run_bounded(
        std::process::Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(&pin),
        Duration::from_secs(10),
    )
    .unwrap();
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let octets = |v: &serde_json::Value| -> String {
        let b: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o.as_u64().unwrap().to_string())
            .collect();
        b.join(".")
    };
    let from_bpftool: BTreeSet<(String, u64, u64)> = dump
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["formatted"])
        .filter(|f| f["value"]["kind"] == u64::from(flow_kind::FORWARD))
        .map(|f| {
            (
                octets(&f["key"]["saddr"]),
                f["key"]["sport"].as_u64().unwrap(),
                f["key"]["dport"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(from_bpftool.len(), 4, "bpftool dump: {dump}");
    assert!(
        from_bpftool
            .iter()
            .all(|(ip, ..)| *ip == CLIENT_IP.to_string())
    );

    let listed: serde_json::Value =
        serde_json::from_str(&router_cli(&lab, "inspect", &["conntrack", "--json"])).unwrap();
    let from_cli: BTreeSet<(String, u64, u64)> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "nat")
        .map(|f| {
            (
                f["original"]["src"].as_str().unwrap().to_owned(),
                f["original"]["sport"].as_u64().unwrap(),
                f["original"]["dport"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(from_bpftool, from_cli);
    let status = router_cli(&lab, "inspect", &["status"]);
    assert!(
        status.contains("pod_ingress") && status.contains(&format!("{SERVER_IP}:80")),
        "{status}"
    );

    // Counters grow with traffic; GC removes an aged flow and counts it.
    let after = metrics(&lab);
    assert!(rule(&after) >= rule(&before) + 3.0, "per-rule packets grew");
    assert!(
        metric(
            &after,
            "egress_router_packets_total",
            Some(("path", "forwarded"))
        ) > metric(
            &before,
            "egress_router_packets_total",
            Some(("path", "forwarded"))
        )
    );
    let mut maps = MapSet::from_pins(&lab.pin_dir("inspect")).unwrap();
    let aged_key = FlowKey {
        saddr: [192, 0, 2, 77],
        daddr: ROUTER_POD_IP.octets(),
        sport: 1234,
        dport: 80,
        proto: egress_common::proto::UDP,
        _pad: [0; 3],
    };
    let aged = FlowEntry {
        saddr: EGRESS_SOURCE.octets(),
        daddr: SERVER_IP.octets(),
        sport: 1234,
        dport: 80,
        rule_id: 1,
        kind: flow_kind::FORWARD,
        tcp_flags: 0,
        last_seen_ns: 1,
        created_ns: 1,
        ..<FlowEntry>::default()
    };
    maps.put_flow(CtTable::Replied, &aged_key, &aged).unwrap();
    let gone = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        !maps
            .conntrack()
            .unwrap()
            .iter()
            .any(|(k, _)| *k == aged_key)
    });
    assert!(gone, "GC removed the expired flow");
    let later = metrics(&lab);
    assert!(metric(&later, "egress_router_conntrack_gc_expired_total", None) >= 1.0);
    // The default --conntrack-size: 262144 flows, two entries each.
    assert_eq!(
        metric(&later, "egress_router_conntrack_capacity", None),
        2.0 * f64::from(egress_common::DEFAULT_CONNTRACK_FLOWS)
    );
    let health = run_ok(
        &lab.client,
        "curl",
        &[
            "-sf",
            &format!("http://{ROUTER_POD_IP}:{METRICS_PORT}/healthz"),
        ],
        10,
    );
    assert_eq!(health.trim(), "ok");
    lab.stop_daemon(agent).unwrap();
}
