//! Dual stack end to end in the netns lab: one instance in init mode with an IPv4 and an
//! IPv6 EGRESS_SOURCE serves clients of both families at once; each leaves in its own
//! family from its own EGRESS_SOURCE; the IPv6 address is announced with an unsolicited
//! neighbour advertisement; the egress network gets nothing back from unsolicited IPv6;
//! teardown removes the IPv6 half too.

use std::time::Duration;

use egress_common::{DropReason, Stat};
use egress_tests::{
    asset,
    echo::Echo,
    lab::{EGRESS_SOURCE, Lab, METRICS_PORT, ROUTER_POD_IP, SERVER_IP},
    lab6::{CLIENT_IP6, EGRESS_SOURCE6, ROUTER_POD_IP6, SERVER_IP6, dual_stack_env},
    netns::run_bounded,
    util::{
        mac_of, metric, metrics, peer_server_at, router_cli, run_ok, teardown_by_hand,
        wait_listening,
    },
};
use egress_user::dataplane::{maps::MapSet, stats::Stats};

fn stats(lab: &Lab, instance: &str) -> Stats {
    MapSet::from_pins(&lab.pin_dir(instance))
        .unwrap()
        .stats()
        .unwrap()
}

/// `curl URL` in the client namespace: the peer server's "IP PORT HOST" line.
fn curl(lab: &Lab, url: &str) -> String {
    run_ok(&lab.client, "curl", &["-sS", "--max-time", "5", url], 10)
}

/// What the gateway's neighbour table holds for EGRESS_SOURCE's IPv6 address.
fn gateway_neighbour6(lab: &Lab) -> String {
    run_ok(
        &lab.gateway,
        "ip",
        &[
            "-6",
            "neigh",
            "show",
            &EGRESS_SOURCE6.to_string(),
            "dev",
            "lan0",
        ],
        5,
    )
}

#[test]
fn both_families_leave_from_their_own_egress_source() {
    let mut lab = Lab::new("dual-redir").unwrap();
    lab.enable_ipv6().unwrap();
    peer_server_at(&mut lab, "http", &SERVER_IP.to_string(), 80, &[]);
    peer_server_at(&mut lab, "http", &SERVER_IP6.to_string(), 8080, &[]);
    peer_server_at(&mut lab, "udp", &SERVER_IP6.to_string(), 5353, &[]);
    wait_listening(&lab, 80);
    wait_listening(&lab, 8080);
    // A neighbour entry for EGRESS_SOURCE6 at a MAC that is not the router's, as a
    // predecessor's would be after a failover: the announcement must override it.
    let stale_mac = "02:00:5e:00:53:01";
    lab.gateway
        .ip(&[
            "-6",
            "neigh",
            "add",
            &EGRESS_SOURCE6.to_string(),
            "lladdr",
            stale_mac,
            "dev",
            "lan0",
            "nud",
            "stale",
        ])
        .unwrap();
    let [source, gateway] = dual_stack_env();
    let destination = format!(
        "80 tcp {SERVER_IP}\n\
         80 tcp {SERVER_IP6} 8080\n\
         5300 udp {SERVER_IP6} 5353\n"
    );
    lab.init_router_as("dual", [&source, &gateway], &destination, &[])
        .unwrap();

    // Announced before any traffic: the gateway now has the router's MAC for it (sent by
    // now; processed asynchronously on the gateway's side: waited for, at most 2 s).
    let macvlan_mac = mac_of(&lab.router, "macvlan0");
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let neighbour = gateway_neighbour6(&lab);
        if neighbour.contains(&macvlan_mac) && !neighbour.contains(stale_mac) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the unsolicited advertisement did not override the entry: {neighbour:?} \
             (macvlan0 is {macvlan_mac})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Both families at once, each from its own EGRESS_SOURCE.
    let seen6 = curl(&lab, &format!("http://[{ROUTER_POD_IP6}]:80/"));
    assert!(
        seen6.starts_with(&format!("{EGRESS_SOURCE6} ")),
        "the IPv6 server saw: {seen6}"
    );
    let seen4 = curl(&lab, &format!("http://{ROUTER_POD_IP}:80/"));
    assert!(
        seen4.starts_with(&format!("{EGRESS_SOURCE} ")),
        "the IPv4 server saw: {seen4}"
    );
    let udp = run_ok(
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
        udp.starts_with(&format!("{EGRESS_SOURCE6} ")),
        "the IPv6 UDP server saw: {udp}"
    );
    // What an operator sees, without an agent: both halves in `status`, IPv6 flows in
    // `conntrack` with their translation.
    let status: serde_json::Value =
        serde_json::from_str(&router_cli(&lab, "dual", &["status", "--json"])).unwrap();
    assert_eq!(
        status["egress_source6"],
        EGRESS_SOURCE6.to_string(),
        "{status}"
    );
    assert_eq!(status["pod_ip6"], ROUTER_POD_IP6.to_string(), "{status}");
    assert_eq!(status["programs"].as_array().unwrap().len(), 6, "{status}");
    assert!(
        status["conntrack6_entries"].as_u64().unwrap() >= 2,
        "{status}"
    );
    let ipv6_rule = status["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["family"] == "ipv6" && r["port"] == 80)
        .unwrap_or_else(|| panic!("no IPv6 rule for port 80: {status}"));
    assert_eq!(ipv6_rule["target"], format!("[{SERVER_IP6}]:8080"));
    assert!(ipv6_rule["packets"].as_u64().unwrap() > 0, "{ipv6_rule}");
    let flows: serde_json::Value =
        serde_json::from_str(&router_cli(&lab, "dual", &["conntrack", "--json"])).unwrap();
    let udp6 = flows
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["proto"] == "udp" && f["original"]["src"] == CLIENT_IP6.to_string())
        .unwrap_or_else(|| panic!("no IPv6 UDP flow: {flows}"));
    assert_eq!(
        udp6["translated"]["src"],
        EGRESS_SOURCE6.to_string(),
        "{udp6}"
    );
    assert_eq!(udp6["translated"]["dst"], SERVER_IP6.to_string(), "{udp6}");
    assert_eq!(udp6["translated"]["dport"], 5353, "{udp6}");

    // No IPv6 rule for 81: the pod's own stack refuses it (no fallback), nothing leaves.
    let refused = run_bounded(
        lab.client.command("curl").args([
            "-sS",
            "--max-time",
            "3",
            &format!("http://[{ROUTER_POD_IP6}]:81/"),
        ]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(!refused.status.success(), "port 81 has no rule");

    // The egress network gets nothing back from unsolicited IPv6 to EGRESS_SOURCE, and
    // the data plane counts it.
    let before = stats(&lab, "dual").drop(DropReason::Unsolicited).packets;
    let ping = run_bounded(
        lab.gateway.command("ping").args([
            "-6",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            &EGRESS_SOURCE6.to_string(),
        ]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(!ping.status.success(), "EGRESS_SOURCE6 answered a ping");
    let probe = run_bounded(
        lab.gateway
            .command("nc")
            .args(["-6", "-z", "-w", "1", &EGRESS_SOURCE6.to_string(), "22"]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        !probe.status.success(),
        "a TCP probe to EGRESS_SOURCE6 connected"
    );
    let stats = stats(&lab, "dual");
    assert!(
        stats.drop(DropReason::Unsolicited).packets >= before + 4,
        "3 pings and a SYN counted as unsolicited: {stats}"
    );
    assert!(stats.path(Stat::FlowsCreated).packets >= 3, "{stats}");

    // Teardown (by hand, without the variables) removes the IPv6 half as well.
    let done = teardown_by_hand(&lab, "dual");
    assert_eq!(
        done["programs"], 6,
        "both families' programs detached: {done}"
    );
    assert_eq!(done["address"], true, "{done}");
    let addresses = run_ok(
        &lab.router,
        "ip",
        &["-6", "addr", "show", "dev", "macvlan0"],
        5,
    );
    assert!(
        !addresses.contains(&EGRESS_SOURCE6.to_string()),
        "{addresses}"
    );
    let routes = run_ok(&lab.router, "ip", &["-6", "route", "show", "default"], 5);
    assert!(
        routes.trim().is_empty(),
        "IPv6 default route left: {routes}"
    );
}

/// The agent adopts what init left, and a restart of the agent (SIGKILL, no clean-up)
/// keeps both families' connections: the IPv6 tables are handed over with the IPv4 ones.
#[test]
fn ipv6_flows_survive_adoption_and_agent_restarts() {
    let mut lab = Lab::new("dual-adopt").unwrap();
    lab.enable_ipv6().unwrap();
    peer_server_at(&mut lab, "echo", &SERVER_IP.to_string(), 7000, &[]);
    peer_server_at(&mut lab, "echo", &SERVER_IP6.to_string(), 7001, &[]);
    wait_listening(&lab, 7000);
    wait_listening(&lab, 7001);
    let [source, gateway] = dual_stack_env();
    let destination = format!("7000 tcp {SERVER_IP}\n7000 tcp {SERVER_IP6} 7001\n");
    lab.init_router_as("adopt", [&source, &gateway], &destination, &[])
        .unwrap();
    let mut v6 = Echo::connect_to(&lab, ROUTER_POD_IP6.into(), 7000).unwrap();
    let mut v4 = Echo::connect(&lab, 7000).unwrap();
    let first6 = v6
        .ask("one")
        .unwrap_or_else(|e| panic!("{e}: {}", lab.daemon_stderr(1)));
    let first4 = v4.ask("one").unwrap();
    assert_eq!(first6.peer, EGRESS_SOURCE6.to_string(), "{first6:?}");
    assert_eq!(first6.local, SERVER_IP6.to_string(), "{first6:?}");
    assert_eq!(first4.peer, EGRESS_SOURCE.to_string(), "{first4:?}");

    let agent = |lab: &mut Lab| {
        let mut cmd = lab.agent_command("adopt", &destination, &["--gc-max-interval", "0.5"]);
        cmd.env("EGRESS_SOURCE", &source)
            .env("EGRESS_GATEWAY", &gateway);
        let index = lab.daemons_len();
        lab.spawn(cmd).unwrap();
        lab.wait_healthy(index, Duration::from_secs(20)).unwrap();
        index
    };
    let first_agent = agent(&mut lab);
    let log = lab.daemon_stderr(first_agent);
    assert!(log.contains("adopted the running data plane"), "{log}");
    assert!(
        !log.contains("started afresh"),
        "nothing left behind: {log}"
    );
    for round in ["adopted", "restarted"] {
        let seen6 = v6.ask(round).unwrap();
        assert_eq!(
            seen6, first6,
            "the IPv6 connection kept its translation ({round})"
        );
        assert_eq!(v4.ask(round).unwrap(), first4, "({round})");
        if round == "adopted" {
            lab.kill_daemon(first_agent).unwrap();
            agent(&mut lab);
        }
    }
    // The agent's metrics: per-family conntrack gauges after a GC pass, and the IPv6
    // rule's counters under family="ipv6".
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let scrape = loop {
        let scrape = metrics(&lab);
        let gauge = scrape.samples.iter().find(|s| {
            s.metric == "egress_router_conntrack_entries" && s.labels.get("family") == Some("ipv6")
        });
        if let Some(sample) = gauge
            && matches!(sample.value, prometheus_parse::Value::Gauge(v) if v >= 2.0)
        {
            break scrape;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no IPv6 conntrack gauge"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        metric(
            &scrape,
            "egress_router_conntrack_capacity",
            Some(("family", "ipv6"))
        ) > 1.0
    );
    assert_eq!(
        metric(
            &scrape,
            "egress_router_limited_clients",
            Some(("family", "ipv6"))
        ),
        0.0
    );
    let rule6 = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "egress_router_rule_packets_total"
                && s.labels.get("family") == Some("ipv6")
                && s.labels.get("port") == Some("7000")
        })
        .expect("the IPv6 rule's counter");
    assert!(
        matches!(rule6.value, prometheus_parse::Value::Counter(v) if v >= 4.0),
        "{rule6:?}"
    );

    // The pins hold the IPv6 half; rule ids come from one space for both families (they
    // share the counters), and the agent's own port is the pod's in both.
    let maps = MapSet::from_pins(&lab.pin_dir("adopt")).unwrap();
    assert!(maps.has(egress_common::maps::CONNTRACK6));
    let (v4_rules, v6_rules) = (ids(&maps.rules().unwrap()), ids(&maps.rules6().unwrap()));
    let routed = |rules: &[(u16, u16, bool)]| -> Vec<u16> {
        rules.iter().filter(|r| !r.2).map(|r| r.1).collect()
    };
    assert_eq!(routed(&v4_rules), [1], "{v4_rules:?}");
    assert_eq!(routed(&v6_rules), [2], "{v6_rules:?}");
    for rules in [&v4_rules, &v6_rules] {
        assert!(
            rules.iter().any(|r| r.0 == METRICS_PORT && r.2),
            "the metrics port is delivered to the pod: {rules:?}"
        );
    }
}

/// (port, rule id, delivered to the pod) of each rule.
fn ids<A: egress_common::Addr>(
    rules: &[(egress_common::RuleKey, egress_common::RuleTarget<A>)],
) -> Vec<(u16, u16, bool)> {
    rules
        .iter()
        .map(|(key, target)| (key.port, target.rule_id, target.is_local()))
        .collect()
}

/// An IPv4 instance that gains IPv6 (an agent restarted with a dual-stack EGRESS_SOURCE)
/// and loses it again keeps its IPv4 flows throughout, warns of nothing, and gives the
/// IPv6 half back: programs detached, tables shrunk to their one-entry placeholders.
#[test]
fn gaining_and_losing_ipv6_keeps_ipv4_flows() {
    let mut lab = Lab::new("dual-gain").unwrap();
    lab.enable_ipv6().unwrap();
    peer_server_at(&mut lab, "echo", &SERVER_IP.to_string(), 7000, &[]);
    peer_server_at(&mut lab, "echo", &SERVER_IP6.to_string(), 7001, &[]);
    wait_listening(&lab, 7000);
    wait_listening(&lab, 7001);
    let v4_only = format!("7000 tcp {SERVER_IP}\n");
    let dual = format!("{v4_only}7000 tcp {SERVER_IP6} 7001\n");
    lab.init_router("gain", &v4_only, &[]).unwrap();
    let mut v4 = Echo::connect(&lab, 7000).unwrap();
    let first4 = v4.ask("one").unwrap();
    let capacity = |lab: &Lab| {
        MapSet::from_pins(&lab.pin_dir("gain"))
            .unwrap()
            .info(egress_common::maps::CONNTRACK6)
            .unwrap()
            .max_entries()
    };
    assert_eq!(capacity(&lab), 1, "no IPv6: a placeholder table");
    let programs = |lab: &Lab| {
        let status: serde_json::Value =
            serde_json::from_str(&router_cli(lab, "gain", &["status", "--json"])).unwrap();
        status["programs"].as_array().unwrap().len()
    };
    assert_eq!(programs(&lab), 3);

    let [source, gateway] = dual_stack_env();
    let mut cmd = lab.agent_command("gain", &dual, &[]);
    cmd.env("EGRESS_SOURCE", &source)
        .env("EGRESS_GATEWAY", &gateway);
    let index = lab.daemons_len();
    lab.spawn(cmd).unwrap();
    lab.wait_healthy(index, Duration::from_secs(20)).unwrap();
    let log = lab.daemon_stderr(index);
    assert!(log.contains("adopted the running data plane"), "{log}");
    // Only that the IPv6 address was claimed without duplicate address detection: the
    // running IPv4 data plane keeps IPv6 off the egress network, the probe too.
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert!(
        warnings
            .iter()
            .all(|l| l.contains("duplicate address detection could not be sent")),
        "an expected change warns of nothing else: {log}"
    );
    assert_eq!(v4.ask("gained").unwrap(), first4, "IPv4 flow kept");
    let mut v6 = Echo::connect_to(&lab, ROUTER_POD_IP6.into(), 7000).unwrap();
    assert_eq!(v6.ask("gained").unwrap().peer, EGRESS_SOURCE6.to_string());
    assert!(capacity(&lab) > 1, "full IPv6 tables");
    assert_eq!(programs(&lab), 6);
    lab.stop_daemon(index).unwrap();

    // IPv4 only again: the IPv6 half goes, the IPv4 flow stays.
    let index = lab.start_agent("gain", &v4_only, &[]).unwrap();
    let log = lab.daemon_stderr(index);
    assert!(!log.contains("WARN"), "{log}");
    assert_eq!(v4.ask("lost").unwrap(), first4, "IPv4 flow kept");
    assert_eq!(programs(&lab), 3, "IPv6 programs detached");
    assert_eq!(capacity(&lab), 1, "IPv6 tables given back");
    let refused = Echo::connect_to(&lab, ROUTER_POD_IP6.into(), 7000)
        .and_then(|mut c| c.ask("nothing translates IPv6 now"));
    assert!(refused.is_err(), "{refused:?}");
}
