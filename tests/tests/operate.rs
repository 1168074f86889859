//! Operating the router in the netns lab: restarts and upgrades that keep flows, adoption of
//! what an init container left behind, live reloads, inspection (CLI and bpftool), metrics,
//! conntrack GC and teardown.

use std::{
    collections::BTreeSet,
    process::Stdio,
    time::{Duration, Instant},
};

use egress_common::{FlowEntry, FlowKey, flow_kind};
use egress_tests::{
    egress_router_bin,
    lab::{CLIENT_IP, EGRESS_SOURCE, GATEWAY_IP, Lab, METRICS_PORT, ROUTER_POD_IP, SERVER_IP},
    netns::{run_bounded, wait_bounded},
    util::{peer_server, run_ok, tempdir, wait_listening},
};
use egress_user::dataplane::maps::MapSet;

/// One line through a redirect port: what the peer server saw ("IP PORT"), or "" on failure.
fn ask(lab: &Lab, port: u16) -> String {
    let out = run_bounded(
        lab.client.command("sh").args([
            "-c",
            &format!("printf 'hi\\n' | nc -N -w 3 {ROUTER_POD_IP} {port}"),
        ]),
        Duration::from_secs(10),
    )
    .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `egress-router ARGS` in the router namespace (the caller's mount namespace), with the
/// lab's EGRESS_SOURCE and EGRESS_GATEWAY.
fn router_cli(lab: &Lab, instance: &str, args: &[&str]) -> String {
    let out = run_bounded(
        lab.router
            .command(egress_router_bin())
            .env("EGRESS_SOURCE", EGRESS_SOURCE.to_string())
            .env("EGRESS_GATEWAY", GATEWAY_IP.to_string())
            .arg("--bpffs")
            .arg(lab.bpffs.path())
            .args(["--instance", instance])
            .args(args),
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "egress-router {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metrics(lab: &Lab) -> prometheus_parse::Scrape {
    let body = run_ok(
        &lab.client,
        "curl",
        &[
            "-sf",
            "--max-time",
            "5",
            &format!("http://{ROUTER_POD_IP}:{METRICS_PORT}/metrics"),
        ],
        10,
    );
    // The text format demands HELP/TYPE before samples and a value per sample line.
    for line in body.lines() {
        assert!(
            line.starts_with("# HELP ")
                || line.starts_with("# TYPE ")
                || line
                    .rsplit_once(' ')
                    .is_some_and(|(_, v)| v.parse::<f64>().is_ok()),
            "not a Prometheus text line: {line:?}"
        );
    }
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn metric(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let samples: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(samples.len(), 1, "one sample of {name} {label:?}");
    match samples[0].value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

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
    std::fs::write(&file, format!("5201 tcp {SERVER_IP}\n")).unwrap();
    let file_arg = file.to_str().unwrap().to_owned();
    let agent_args = ["--config-file", file_arg.as_str()];
    let first = lab.start_agent("iperf", "", &agent_args).unwrap();

    let start = Instant::now();
    let client = lab
        .client
        .command("iperf3")
        .args(["-c", &ROUTER_POD_IP.to_string(), "-p", "5201", "-t", "30"])
        .args(["-i", "0.5", "-b", "200M", "-J"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
    std::fs::write(
        &file,
        format!("5201 tcp {SERVER_IP}\n8080 tcp {SERVER_IP} 80\n"),
    )
    .unwrap();
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

    let log = String::from_utf8_lossy(&lab.stop_daemon(second).unwrap().stderr).into_owned();
    assert!(
        log.contains("adopted the running data plane"),
        "the restarted agent took over the maps: {log}"
    );
    assert!(log.contains("configuration reloaded"), "{log}");
    std::fs::remove_dir_all(dir).unwrap();
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
    let pgrep = run_bounded(
        std::process::Command::new("pgrep").args(["-f", "egress-router.*op-adopt"]),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(pgrep.stdout.is_empty(), "no egress-router process is left");

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
    let mut agent = netns_exec(&["--metrics-address", "off"]);
    agent.env("EGRESS_ROUTER_MODE", "legacy");
    let index = lab.daemons_len();
    lab.spawn(agent).unwrap();
    let listed = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            let json = |args: &[&str]| -> Option<serde_json::Value> {
                let out = run_bounded(
                    std::process::Command::new("ip")
                        .args(["netns", "exec", lab.router.name()])
                        .arg(egress_router_bin())
                        .args(args),
                    Duration::from_secs(10),
                )
                .ok()?;
                serde_json::from_slice(&out.stdout).ok()
            };
            let flows = json(&["conntrack", "--json"])?;
            let status = json(&["status", "--json"])?;
            // The agent is up once its programs replaced those of the init container.
            (status["programs"].as_array()?.len() == 3).then_some(flows)
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
    };
    maps.put_flow(&aged_key, &aged).unwrap();
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
    assert!(metric(&later, "egress_router_conntrack_capacity", None) > 0.0);
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

/// The configuration file is read once per load: an edit that lands while the agent is
/// still setting up (after it read the file, before it runs) is applied once it runs, not
/// taken for what was applied.
#[test]
fn an_edit_during_start_up_is_applied() {
    use std::os::unix::ffi::OsStrExt as _;

    let mut lab = Lab::new("op-startedit").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let dir = tempdir("op-startedit");
    let file = dir.join("destination");
    // A FIFO at first: the agent's read of it is the moment the test knows the file was read.
    let c_path = std::ffi::CString::new(file.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let agent = lab
        .spawn_agent("startedit", "", &["--config-file", file.to_str().unwrap()])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let fd = loop {
        // SAFETY: as above; fails with ENXIO until the agent opens the FIFO to read it.
        let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK) };
        if fd >= 0 {
            break fd;
        }
        assert!(Instant::now() < deadline, "the agent never read the file");
        std::thread::sleep(Duration::from_millis(10));
    };
    let first = format!("80 tcp {SERVER_IP}\n");
    // SAFETY: a valid fd and buffer; a pipe takes this much at once.
    let written = unsafe { libc::write(fd, first.as_ptr().cast(), first.len()) };
    // SAFETY: closing our own fd; the agent then reads to the end.
    unsafe { libc::close(fd) };
    assert_eq!(written, first.len() as isize);
    // The agent is setting up now (load, network, a 0.5 s announcement): edit the file, as
    // a ConfigMap update does, by swapping in a new one.
    let next = dir.join("next");
    std::fs::write(
        &next,
        format!("80 tcp {SERVER_IP}\n8080 tcp {SERVER_IP} 80\n"),
    )
    .unwrap();
    std::fs::rename(&next, &file).unwrap();
    lab.wait_healthy(agent, Duration::from_secs(20)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = String::new();
    while Instant::now() < deadline && answer.is_empty() {
        answer = ask(&lab, 8080);
    }
    assert!(
        answer.starts_with(&format!("{EGRESS_SOURCE} ")),
        "the edit made during start-up was applied: {answer:?}"
    );
    let log = String::from_utf8_lossy(&lab.stop_daemon(agent).unwrap().stderr).into_owned();
    assert!(log.contains("configuration reloaded"), "{log}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn invalid_reload_is_rejected_counted_and_rules_stay() {
    let mut lab = Lab::new("op-reload").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let dir = tempdir("op-reload");
    let file = dir.join("destination");
    std::fs::write(&file, format!("80 tcp {SERVER_IP}\n")).unwrap();
    let agent = lab
        .start_agent(
            "reload",
            "",
            &[
                "--config-file",
                file.to_str().unwrap(),
                "--log-format",
                "json",
            ],
        )
        .unwrap();
    let rules_before = router_cli(&lab, "reload", &["status", "--json"]);
    std::fs::write(&file, format!("80 tcp {SERVER_IP}\n8080 tcp nowhere\n")).unwrap();
    let failures = (0..50)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            let v = metric(
                &metrics(&lab),
                "egress_router_config_reload_failures_total",
                None,
            );
            (v >= 1.0).then_some(v)
        })
        .expect("the rejected reload is counted");
    assert_eq!(failures, 1.0);
    // SIGHUP re-reads the same bad file: rejected again.
    let pid = lab.daemon_pid(agent).unwrap();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let twice = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        metric(
            &metrics(&lab),
            "egress_router_config_reload_failures_total",
            None,
        ) >= 2.0
    });
    assert!(twice, "SIGHUP triggers a reload");
    let status = |text: &str| -> serde_json::Value {
        let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
        v["rules"].as_array_mut().unwrap().iter_mut().for_each(|r| {
            r["packets"] = 0.into();
            r["bytes"] = 0.into();
        });
        v["rules"].clone()
    };
    assert_eq!(
        status(&router_cli(&lab, "reload", &["status", "--json"])),
        status(&rules_before),
        "the running rules stay"
    );
    assert!(ask(&lab, 80).starts_with(&format!("{EGRESS_SOURCE} ")));
    assert_eq!(
        metric(&metrics(&lab), "egress_router_config_reloads_total", None),
        0.0
    );

    let out = lab.stop_daemon(agent).unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let rejected: Vec<serde_json::Value> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .filter(|v| v["level"] == "ERROR")
        .collect();
    assert_eq!(rejected.len(), 2, "{log}");
    assert_eq!(
        rejected[0]["error"],
        "EGRESS_DESTINATION value '8080 tcp nowhere' is invalid"
    );
    assert!(
        rejected[0]["message"]
            .as_str()
            .unwrap()
            .contains("running rules stay"),
        "{log}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn teardown_leaves_nothing_of_the_instance() {
    let lab = Lab::new("op-teardown").unwrap();
    let before = lab.router.network_state().unwrap();
    lab.init_router("td", &format!("80 tcp {SERVER_IP}"), &[])
        .unwrap();
    assert!(lab.pin_dir("td").exists());
    router_cli(&lab, "td", &["teardown"]);
    assert!(!lab.pin_dir("td").exists(), "pins removed");
    let filters =
        |dev: &str, dir: &str| run_ok(&lab.router, "tc", &["filter", "show", "dev", dev, dir], 5);
    for (dev, dir) in [
        ("eth0", "ingress"),
        ("macvlan0", "ingress"),
        ("macvlan0", "egress"),
    ] {
        assert_eq!(filters(dev, dir).trim(), "", "{dev} {dir} filters removed");
    }
    let after = lab.router.network_state().unwrap();
    let ours = |state: &str| {
        state
            .lines()
            .filter(|l| {
                l.contains(&EGRESS_SOURCE.to_string()) || l.contains(&GATEWAY_IP.to_string())
            })
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ours(&after),
        Vec::<String>::new(),
        "addresses and routes removed: {after}"
    );
    assert!(ours(&before).is_empty());
    // The macvlan came from the cluster network, not from us: it stays.
    assert!(after.contains("macvlan0"));

    // A macvlan the instance created goes away with it.
    lab.router
        .ip(&[
            "link", "add", "parent1", "type", "veth", "peer", "name", "parent1p",
        ])
        .unwrap();
    lab.router.ip(&["link", "set", "parent1", "up"]).unwrap();
    lab.init_router(
        "td2",
        &format!("80 tcp {SERVER_IP}"),
        &[
            "--egress-interface",
            "egress1",
            "--macvlan-parent",
            "parent1",
        ],
    )
    .unwrap();
    let link = run_ok(&lab.router, "ip", &["-d", "link", "show", "egress1"], 5);
    assert!(link.contains("alias egress-router:td2"), "{link}");
    router_cli(&lab, "td2", &["--egress-interface", "egress1", "teardown"]);
    let links = run_ok(&lab.router, "ip", &["-o", "link", "show"], 5);
    assert!(!links.contains("egress1"), "created link removed: {links}");
    assert!(!lab.pin_dir("td2").exists());
}

/// An upgrade from a release whose RULES map had another layout (the first release's
/// 8-byte value, before rule flags), found through the instance's pins: `init` takes the
/// pinned conntrack over, so the flow stays, and starts RULES afresh with the rules
/// rewritten in this build's layout.
#[test]
fn upgrade_from_an_older_rules_layout_keeps_flows_and_rewrites_the_rules() {
    use egress_user::dataplane::discover;

    let mut lab = Lab::new("op-upgrade").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let destination = format!("80 tcp {SERVER_IP}");
    lab.init_router("up", &destination, &[]).unwrap();
    let before = ask(&lab, 80);
    assert!(
        before.starts_with(&format!("{EGRESS_SOURCE} ")),
        "{before:?}"
    );
    let nat_flows = |json: &str| -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(json)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "nat")
            .map(|f| f["original"].clone())
            .collect()
    };
    let flows_before = nat_flows(&router_cli(&lab, "up", &["conntrack", "--json"]));
    assert_eq!(flows_before.len(), 1, "{flows_before:?}");

    // What the earlier release left: its pins, with RULES in the old layout, and no
    // program on the interfaces (they went with its pod).
    let detached = lab
        .router
        .enter(|| discover::detach_all("eth0", "macvlan0").unwrap())
        .unwrap();
    assert_eq!(detached, 3);
    let rules_pin = lab.pin_dir("up").join("RULES");
    std::fs::remove_file(&rules_pin).unwrap();
    let pin = rules_pin.to_str().unwrap();
    let create = [
        "map", "create", pin, "type", "hash", "key", "4", "value", "8", "entries", "4096", "name",
        "RULES",
    ];
    run_ok_root("bpftool", &create);
    assert!(
        run_ok_root("bpftool", &["-j", "map", "show", "pinned", pin]).contains("\"bytes_value\":8")
    );

    let log = lab.init_router("up", &destination, &[]).unwrap();
    assert!(
        log.contains("adopted the running data plane") && log.contains("pinned map RULES"),
        "conntrack taken over, RULES replaced: {log}"
    );
    let shown = run_ok_root("bpftool", &["-j", "map", "show", "pinned", pin]);
    assert!(
        shown.contains("\"bytes_value\":12"),
        "RULES in this build's layout: {shown}"
    );
    let flows_after = nat_flows(&router_cli(&lab, "up", &["conntrack", "--json"]));
    assert!(
        flows_before.iter().all(|f| flows_after.contains(f)),
        "the earlier flow was kept: {flows_before:?} -> {flows_after:?}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&router_cli(&lab, "up", &["status", "--json"])).unwrap();
    let targets: Vec<_> = status["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r["port"], r["target"].as_str().unwrap()))
        .collect();
    assert_eq!(targets, [format!("80 {SERVER_IP}:80")], "{status}");
    assert_eq!(status["programs"].as_array().unwrap().len(), 3, "{status}");
    let after = ask(&lab, 80);
    assert!(
        after.starts_with(&format!("{EGRESS_SOURCE} ")),
        "through the upgraded data plane: {after:?}"
    );
}

/// Runs a tool in the test's own namespaces (bpftool on the lab's bpffs) and returns its
/// stdout; panics if it fails.
fn run_ok_root(program: &str, args: &[&str]) -> String {
    let out = run_bounded(
        std::process::Command::new(program).args(args),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
