//! Live configuration in the netns lab: what the agent does with `--config-file` edits and
//! SIGHUP, from start-up on.

use std::time::{Duration, Instant};

use egress_tests::{
    echo::Echo,
    lab::{EGRESS_SOURCE, Lab, METRICS_PORT, SERVER_IP},
    util::{
        ask, metric, metrics, peer_server, peer_server_at, router_cli, run_ok_here, tempdir,
        wait_listening, write_config,
    },
};

/// The agent (legacy mode) of `instance` with its destinations in `file` and JSON logs,
/// once healthy; its daemon index.
fn start_on_file(lab: &mut Lab, instance: &str, file: &std::path::Path) -> usize {
    lab.start_agent(
        instance,
        "",
        &[
            "--config-file",
            file.to_str().unwrap(),
            "--log-format",
            "json",
        ],
    )
    .unwrap()
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
}

#[test]
fn invalid_reload_is_rejected_counted_and_rules_stay() {
    let mut lab = Lab::new("op-reload").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let dir = tempdir("op-reload");
    let file = dir.join("destination");
    write_config(&file, &format!("80 tcp {SERVER_IP}\n"));
    let agent = start_on_file(&mut lab, "reload", &file);
    let rules_before = router_cli(&lab, "reload", &["status", "--json"]);
    write_config(&file, &format!("80 tcp {SERVER_IP}\n8080 tcp nowhere\n"));
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
}

/// Waits (at most 10 s) until the agent has counted `applied` reloads and `rejected`
/// refusals in all, and returns the scrape.
fn wait_reloads(lab: &Lab, applied: f64, rejected: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = metrics(lab);
        let now = (
            metric(&scrape, "egress_router_config_reloads_total", None),
            metric(&scrape, "egress_router_config_reload_failures_total", None),
        );
        if now == (applied, rejected) {
            return;
        }
        assert!(
            now.0 <= applied && now.1 <= rejected && Instant::now() < deadline,
            "reloads (applied, rejected) {now:?}, expected ({applied}, {rejected})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A valid reload that changes a rule's remote, removes a rule and switches the fallback:
/// open connections of all three keep the remote they started with (as kernel NAT does),
/// new ones take the new rules at once, `/metrics` stays reachable on the pod IP while a
/// fallback takes everything else, and a rule on the metrics port is refused.
#[test]
fn a_reload_changes_removes_and_switches_and_open_flows_keep_their_remote() {
    let mut lab = Lab::new("op-rechange").unwrap();
    for ip in ["203.0.113.20/24", "203.0.113.21/24"] {
        lab.server.ip(&["addr", "add", ip, "dev", "eth0"]).unwrap();
    }
    for port in [7000, 7001, 7002] {
        peer_server_at(&mut lab, "echo", "0.0.0.0", port, &[]);
        wait_listening(&lab, port);
    }
    let dir = tempdir("op-rechange");
    let file = dir.join("destination");
    write_config(
        &file,
        "7000 tcp 203.0.113.20\n7001 tcp 203.0.113.20\n203.0.113.20\n",
    );
    let agent = start_on_file(&mut lab, "rechange", &file);
    let open = |port| {
        let mut echo = Echo::connect(&lab, port).unwrap();
        let seen = echo.ask("hello").unwrap();
        assert_eq!(seen.peer, EGRESS_SOURCE.to_string());
        (echo, seen)
    };
    // Changed (7000), removed (7001, which the new fallback then takes) and fallback (7002).
    let mut flows: Vec<_> = [7000, 7001, 7002].into_iter().map(open).collect();
    for (_, seen) in &flows {
        assert_eq!(seen.local, "203.0.113.20");
    }
    metrics(&lab);

    write_config(&file, "7000 tcp 203.0.113.21\n203.0.113.21\n");
    wait_reloads(&lab, 1.0, 0.0);
    for (echo, first) in &mut flows {
        let seen = echo.ask("after").unwrap();
        assert_eq!(
            &seen, first,
            "an open flow keeps its remote and translation"
        );
    }
    for port in [7000, 7001, 7002] {
        let (_, seen) = open(port);
        assert_eq!(seen.local, "203.0.113.21", "a new connection to {port}");
    }
    // The metrics port is the agent's own, fallback or not.
    let scrape = metrics(&lab);
    assert_eq!(
        metric(&scrape, "egress_router_config_reloads_total", None),
        1.0
    );

    write_config(
        &file,
        &format!("7000 tcp 203.0.113.21\n{METRICS_PORT} tcp 203.0.113.21\n203.0.113.21\n"),
    );
    wait_reloads(&lab, 1.0, 1.0);
    metrics(&lab);
    let (_, seen) = open(7000);
    assert_eq!(seen.local, "203.0.113.21", "the running rules stay");

    let log = String::from_utf8_lossy(&lab.stop_daemon(agent).unwrap().stderr).into_owned();
    let rejected: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "ERROR")
        .collect();
    assert_eq!(rejected.len(), 1, "{log}");
    let error = rejected[0]["error"].as_str().unwrap();
    assert!(
        error.contains(&METRICS_PORT.to_string()) && error.contains("EGRESS_DESTINATION"),
        "{error}"
    );
}

/// The most rules an instance holds (4096) load with the agent's own metrics port beside
/// them, a reload can replace all of them with 4096 others, and one more is refused with
/// the limit named.
#[test]
fn the_rule_limit_holds_beside_the_agents_port_and_across_a_full_swap() {
    let mut lab = Lab::new("op-maxrules").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let dir = tempdir("op-maxrules");
    let file = dir.join("destination");
    let rules = |first: u16, count: u16| {
        (first..first + count)
            .map(|port| format!("{port} tcp {SERVER_IP} 80\n"))
            .collect::<String>()
    };
    write_config(&file, &rules(10000, 4096));
    let agent = start_on_file(&mut lab, "maxrules", &file);
    for port in [10000, 14095] {
        assert!(
            ask(&lab, port).starts_with(&format!("{EGRESS_SOURCE} ")),
            "{port}"
        );
    }
    write_config(&file, &rules(20000, 4096));
    wait_reloads(&lab, 1.0, 0.0);
    assert!(ask(&lab, 24095).starts_with(&format!("{EGRESS_SOURCE} ")));
    assert_eq!(ask(&lab, 10000), "", "a removed rule no longer translates");
    let status: serde_json::Value =
        serde_json::from_str(&router_cli(&lab, "maxrules", &["status", "--json"])).unwrap();
    assert_eq!(
        status["rules"].as_array().unwrap().len(),
        4096 + 1,
        "and the metrics port"
    );

    write_config(&file, &rules(30000, 4097));
    wait_reloads(&lab, 1.0, 1.0);
    assert!(ask(&lab, 24095).starts_with(&format!("{EGRESS_SOURCE} ")));
    let log = String::from_utf8_lossy(&lab.stop_daemon(agent).unwrap().stderr).into_owned();
    assert!(
        log.contains("34096 tcp 203.0.113.10 80") && log.contains("at most 4096 rules"),
        "{log}"
    );
}

/// A valid configuration that cannot be written (here the rules map is frozen, as any
/// write failure would be) is counted as a failure, logged as such, and leaves the running
/// rules as they were: nothing half applied.
#[test]
fn a_reload_that_cannot_be_written_changes_nothing() {
    let mut lab = Lab::new("op-applyfail").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let dir = tempdir("op-applyfail");
    let file = dir.join("destination");
    write_config(
        &file,
        &format!("80 tcp {SERVER_IP}\n81 tcp {SERVER_IP} 80\n"),
    );
    let agent = start_on_file(&mut lab, "applyfail", &file);
    let rules = |lab: &Lab| {
        let status: serde_json::Value =
            serde_json::from_str(&router_cli(lab, "applyfail", &["status", "--json"])).unwrap();
        status["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{} {} {}", r["port"], r["id"], r["target"]))
            .collect::<Vec<_>>()
    };
    let before = rules(&lab);
    let pin = lab.pin_dir("applyfail").join("RULES");
    run_ok_here(
        "bpftool",
        &["map", "freeze", "pinned", pin.to_str().unwrap()],
    );

    // One rule removed, one added: neither happens.
    write_config(
        &file,
        &format!("80 tcp {SERVER_IP}\n8080 tcp {SERVER_IP} 80\n"),
    );
    wait_reloads(&lab, 0.0, 1.0);
    assert_eq!(rules(&lab), before);
    for port in [80, 81] {
        assert!(
            ask(&lab, port).starts_with(&format!("{EGRESS_SOURCE} ")),
            "{port}"
        );
    }
    assert_eq!(ask(&lab, 8080), "");
    let log = String::from_utf8_lossy(&lab.stop_daemon(agent).unwrap().stderr).into_owned();
    assert!(
        log.contains("applying the configuration failed")
            && log.contains("Operation not permitted"),
        "{log}"
    );
    assert!(
        !log.contains("writing the previous rules back failed"),
        "{log}"
    );
}
