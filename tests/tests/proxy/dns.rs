//! The DNS proxy in the netns lab, deployed as OpenShift deploys it: an init container
//! (`EGRESS_ROUTER_MODE=dns-proxy`: the network and a rule-less data plane) and a main
//! container of the same image that has only the proxy variable.

use std::time::{Duration, Instant};

use egress_tests::{
    echo::Echo,
    egress_router_bin,
    lab::{EGRESS_SOURCE, Lab, ROUTER_POD_IP},
    util::{peer_server_at, run_ok, tempdir, wait_listening_in},
};

const DNS_ROUTES: &str = "
# name, address with RPORT, a name with two addresses
7000 app.example.com
7100 203.0.113.10 7000
7200 multi.example.com 7000
7300 missing.example.com 7000
";

/// A new connection to `port` and the server address it reached; the client's port goes
/// to `clients`.
fn reached(lab: &Lab, port: u16, clients: &mut Vec<u16>) -> std::io::Result<String> {
    let mut echo = Echo::connect(lab, port)?;
    let egress_tests::echo::Seen { peer, local, .. } = echo.ask("hello")?;
    assert_eq!(peer, EGRESS_SOURCE.to_string(), "the server saw {peer}");
    clients.push(echo.port);
    Ok(local)
}

/// OpenShift's dns-proxy pod in the lab; `privileged` selects the data plane, else the main
/// container runs as nobody without capabilities and serves with the userspace relay.
fn dns_proxy_follows_the_records(privileged: bool) {
    let tag = if privileged {
        "dnsproxy-bpf"
    } else {
        "dnsproxy-relay"
    };
    let dir = tempdir(tag);
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        "203.0.113.20 app.example.com\n203.0.113.20 multi.example.com\n203.0.113.21 multi.example.com\n",
    )
    .unwrap();
    let mut lab = Lab::new(tag).unwrap();
    let (resolv_conf, nameserver) = lab.start_nameserver(&dir, &hosts, 2).unwrap();
    for ip in ["203.0.113.20/24", "203.0.113.21/24"] {
        lab.server.ip(&["addr", "add", ip, "dev", "eth0"]).unwrap();
    }
    peer_server_at(&mut lab, "echo", "0.0.0.0", 7000, &[]);
    egress_tests::util::wait_listening(&lab, 7000);
    lab.init_proxy_network("dns-proxy").unwrap();

    // The main container: the same image, only the DNS proxy's variables.
    let index = egress_tests::util::spawn_dns_proxy(&mut lab, DNS_ROUTES, &resolv_conf, privileged);

    // The name's address, once serving.
    let mut clients = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        match reached(&lab, 7000, &mut clients) {
            Ok(local) => break local,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(err) => {
                let out = lab.stop_daemon(index).unwrap();
                panic!(
                    "port 7000 never answered: {err}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            }
        }
    };
    assert_eq!(first, "203.0.113.20");
    assert_eq!(
        reached(&lab, 7100, &mut clients).unwrap(),
        "203.0.113.10",
        "address route, RPORT"
    );
    let mut spread = std::collections::BTreeSet::new();
    for _ in 0..24 {
        spread.insert(reached(&lab, 7200, &mut clients).unwrap());
    }
    assert_eq!(
        spread.into_iter().collect::<Vec<_>>(),
        ["203.0.113.20", "203.0.113.21"],
        "new connections spread over both addresses of the name"
    );

    // A name without a record: no connection. The data plane counts the dropped SYNs.
    assert!(
        reached(&lab, 7300, &mut clients).is_err(),
        "missing.example.com has no address"
    );
    if privileged {
        let stats = run_ok(
            &lab.router,
            egress_router_bin().to_str().unwrap(),
            &["stats"],
            10,
        );
        let unresolved = stats
            .lines()
            .find(|l| l.starts_with("drop:unresolved"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<u64>().ok());
        assert!(unresolved.is_some_and(|n| n >= 1), "{stats}");
    }

    // An open connection, then the record changes (TTL 2 s).
    let mut open = Echo::connect(&lab, 7000).unwrap();
    clients.push(open.port);
    assert_eq!(open.ask("before").unwrap().local, "203.0.113.20");
    std::fs::write(&hosts, "203.0.113.21 app.example.com\n").unwrap();
    lab.hangup_daemon(nameserver).unwrap();
    let changed = Instant::now();
    loop {
        if reached(&lab, 7000, &mut clients).unwrap() == "203.0.113.21" {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(15),
            "new connections still go to the old address"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        open.ask("after").unwrap().local,
        "203.0.113.20",
        "the open connection keeps its address"
    );

    // Idle connections are not cut (HAProxy would after one minute).
    let mut fresh = Echo::connect(&lab, 7000).unwrap();
    clients.push(fresh.port);
    assert_eq!(fresh.ask("new").unwrap().local, "203.0.113.21");
    std::thread::sleep(Duration::from_secs(70));
    assert_eq!(open.ask("idle").unwrap().local, "203.0.113.20");
    assert_eq!(fresh.ask("idle").unwrap().local, "203.0.113.21");

    let out = lab.stop_daemon(index).unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let relay = log.contains("userspace relay");
    assert_eq!(relay, !privileged, "{log}");
    // EGRESS_DNS_PROXY_DEBUG: every connection is in the log.
    assert!(clients.len() >= 29);
    let missing: Vec<u16> = clients
        .iter()
        .copied()
        .filter(|port| {
            !log.lines().any(|l| {
                l.contains(" connection ") && l.contains(&format!("client=192.0.2.2:{port} "))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "connections not logged: {missing:?}\n{log}"
    );
}

#[test]
fn dns_proxy_in_the_data_plane_follows_the_records() {
    dns_proxy_follows_the_records(true);
}

#[test]
fn dns_proxy_unprivileged_relay_follows_the_records() {
    dns_proxy_follows_the_records(false);
}

/// The userspace relay serves `--dns-proxy-max-connections` at once: with two connections
/// held open, a third is closed at once (before, every connection got a task and two
/// sockets, without bound).
#[test]
fn the_relay_bounds_its_connections() {
    let mut lab = Lab::new("relay-limit").unwrap();
    peer_server_at(&mut lab, "echo", "0.0.0.0", 7000, &[]);
    egress_tests::util::wait_listening(&lab, 7000);
    lab.init_proxy_network("dns-proxy").unwrap();
    let mut relay = egress_tests::util::unprivileged_router(&lab);
    relay
        .env_clear()
        .env("EGRESS_DNS_PROXY_DESTINATION", "7100 203.0.113.10 7000")
        .args(["--dns-proxy-max-connections", "2"])
        .arg("--bpffs")
        .arg(lab.bpffs.path());
    lab.spawn(relay).unwrap();
    wait_listening_in(&lab.router, 7100);
    let script = format!(
        "import socket, time\n\
         socks = [socket.create_connection(('{ROUTER_POD_IP}', 7100), timeout=5) for _ in range(3)]\n\
         time.sleep(0.5)\n\
         states = []\n\
         for s in socks:\n\
         \x20   s.settimeout(0.3)\n\
         \x20   try:\n\
         \x20       states.append('closed' if s.recv(16) == b'' else 'data')\n\
         \x20   except socket.timeout:\n\
         \x20       states.append('open')\n\
         \x20   except OSError:\n\
         \x20       states.append('closed')\n\
         print(' '.join(states))\n"
    );
    let states = run_ok(&lab.client, "python3", &["-c", &script], 20);
    assert_eq!(states.trim(), "open open closed");
}

/// SIGHUP makes the DNS-proxy agent resolve its names at once (not when their TTL, an
/// hour here, ends); a resolution that fails (the nameserver is gone) keeps the last
/// addresses for new connections, and says so.
#[test]
fn dns_proxy_resolves_on_sighup_and_keeps_the_last_addresses_when_resolution_fails() {
    let dir = tempdir("dnsproxy-hup");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "203.0.113.20 app.example.com\n").unwrap();
    let mut lab = Lab::new("dnsproxy-hup").unwrap();
    let (resolv_conf, nameserver) = lab.start_nameserver(&dir, &hosts, 3600).unwrap();
    for ip in ["203.0.113.20/24", "203.0.113.21/24"] {
        lab.server.ip(&["addr", "add", ip, "dev", "eth0"]).unwrap();
    }
    peer_server_at(&mut lab, "echo", "0.0.0.0", 7000, &[]);
    wait_listening_in(&lab.server, 7000);
    lab.init_proxy_network("dns-proxy").unwrap();
    let mut proxy = lab.router.command(egress_router_bin());
    proxy
        .env_clear()
        .env("EGRESS_DNS_PROXY_DESTINATION", "7000 app.example.com\n")
        .args(["--log-format", "json", "--resolv-conf"])
        .arg(&resolv_conf)
        .arg("--bpffs")
        .arg(lab.bpffs.path());
    let agent = lab.daemons_len();
    lab.spawn(proxy).unwrap();
    let reach = |lab: &Lab| {
        Echo::connect(lab, 7000)
            .and_then(|mut echo| echo.ask("hi"))
            .map(|seen| seen.local)
    };
    let until = |lab: &Lab, want: &str, why: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match reach(lab) {
                Ok(local) if local == want => return,
                other => assert!(Instant::now() < deadline, "{why}: {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    until(&lab, "203.0.113.20", "serving the first address");

    // The record changes; the nameserver answers the new address at once, but the agent
    // holds the old one for its TTL (an hour) unless told.
    std::fs::write(&hosts, "203.0.113.21 app.example.com\n").unwrap();
    lab.hangup_daemon(nameserver).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(reach(&lab).unwrap(), "203.0.113.20", "the TTL holds");
    lab.hangup_daemon(agent).unwrap();
    until(&lab, "203.0.113.21", "SIGHUP resolves at once");

    // The nameserver goes away: SIGHUP, resolution fails, the last address stays.
    lab.stop_daemon(nameserver).unwrap();
    lab.hangup_daemon(agent).unwrap();
    let log = lab
        .wait_for_log(
            agent,
            "resolution failed; new connections keep the last addresses",
            Duration::from_secs(15),
        )
        .unwrap();
    let failed = log
        .lines()
        .find(|l| l.contains("resolution failed"))
        .unwrap();
    assert!(failed.contains("203.0.113.21"), "{failed}");
    assert_eq!(reach(&lab).unwrap(), "203.0.113.21");
}
