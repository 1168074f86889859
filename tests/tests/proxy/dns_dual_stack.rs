//! The DNS proxy over both families, in the dual-stack lab: the init container sets up both
//! halves of EGRESS_SOURCE; the main container (EGRESS_SOURCE read from the egress
//! interface, as OpenShift's image runs it) serves clients over IPv4 with a name's A
//! records from EGRESS_SOURCE's IPv4 address and clients over IPv6 with its AAAA records
//! from the IPv6 one; an IPv6 address route serves IPv6 clients only (no NAT46), and a name
//! without AAAA records takes no IPv6 connection. Once in the data plane, once with the
//! unprivileged userspace relay: both keep the client's family.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use egress_tests::{
    echo::{Echo, Seen},
    egress_router_bin,
    lab::{EGRESS_SOURCE, Lab, ROUTER_POD_IP, SERVER_IP},
    lab6::{EGRESS_SOURCE6, ROUTER_POD_IP6, SERVER_IP6, dual_stack_env},
    util::{peer_server_at, run_ok, tempdir, wait_sockets},
};

/// The server's second IPv6 address, a second AAAA record of `both.example.com`.
const SERVER_IP6_B: &str = "2001:db8:f::11";

const ROUTES: &str = "
7000 both.example.com
7100 2001:db8:f::10 7000
7200 v4only.example.com 7000
";

/// What the server saw of one exchange on a new connection to the router pod's `pod_ip`.
fn ask(lab: &Lab, pod_ip: IpAddr, port: u16) -> std::io::Result<Seen> {
    Echo::connect_to(lab, pod_ip, port)?.ask("hello")
}

fn dns_proxy_keeps_the_clients_family(privileged: bool) {
    let tag = if privileged {
        "dns-dual-bpf"
    } else {
        "dns-dual-relay"
    };
    let dir = tempdir(tag);
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "{SERVER_IP} both.example.com\n\
             {SERVER_IP6} both.example.com\n\
             {SERVER_IP6_B} both.example.com\n\
             {SERVER_IP} v4only.example.com\n"
        ),
    )
    .unwrap();
    let mut lab = Lab::new(tag).unwrap();
    lab.enable_ipv6().unwrap();
    lab.add_server_ip6(SERVER_IP6_B).unwrap();
    let (resolv_conf, _) = lab.start_nameserver(&dir, &hosts, 60).unwrap();
    for addr in [
        SERVER_IP.to_string(),
        SERVER_IP6.to_string(),
        SERVER_IP6_B.to_owned(),
    ] {
        peer_server_at(&mut lab, "echo", &addr, 7000, &[]);
    }
    wait_sockets(&lab.server, &["-Htln", "sport = :7000"], |n| n == 3);

    let [source, gateway] = dual_stack_env();
    lab.init_proxy_network_as("dns-proxy", [&source, &gateway])
        .unwrap();
    let index = egress_tests::util::spawn_dns_proxy(&mut lab, ROUTES, &resolv_conf, privileged);

    // Serving in both families once the names are resolved.
    let v4 = IpAddr::from(ROUTER_POD_IP);
    let v6 = IpAddr::from(ROUTER_POD_IP6);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (first4, first6) = loop {
        match (ask(&lab, v4, 7000), ask(&lab, v6, 7000)) {
            (Ok(a), Ok(b)) => break (a, b),
            (a, b) => assert!(
                Instant::now() < deadline,
                "port 7000 never answered in both families: {a:?} {b:?}\n{}",
                lab.daemon_stderr(index)
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        (first4.peer.as_str(), first4.local.as_str()),
        (
            EGRESS_SOURCE.to_string().as_str(),
            SERVER_IP.to_string().as_str()
        ),
        "over IPv4: the A record, from EGRESS_SOURCE's IPv4 address"
    );
    assert_eq!(first6.peer, EGRESS_SOURCE6.to_string(), "{first6:?}");

    // New IPv6 connections spread over both AAAA records, and never leave over IPv4.
    let mut spread = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let seen = ask(&lab, v6, 7000).unwrap();
        assert_eq!(seen.peer, EGRESS_SOURCE6.to_string(), "{seen:?}");
        spread.insert(seen.local);
    }
    assert_eq!(
        spread.into_iter().collect::<Vec<_>>(),
        [SERVER_IP6.to_string(), SERVER_IP6_B.to_owned()],
        "new IPv6 connections spread over both AAAA records"
    );

    // The IPv6 address route: IPv6 clients only.
    let literal = ask(&lab, v6, 7100).unwrap();
    assert_eq!(
        (literal.peer.as_str(), literal.local.as_str()),
        (
            EGRESS_SOURCE6.to_string().as_str(),
            SERVER_IP6.to_string().as_str()
        )
    );
    assert!(
        ask(&lab, v4, 7100).is_err(),
        "an IPv4 client is not sent to an IPv6 address"
    );

    // A name with an A record only: IPv4 clients reach it, IPv6 ones nothing.
    assert_eq!(ask(&lab, v4, 7200).unwrap().local, SERVER_IP.to_string());
    assert!(
        ask(&lab, v6, 7200).is_err(),
        "v4only.example.com has no AAAA record"
    );

    if privileged {
        let bin = egress_router_bin();
        let bin = bin.to_str().unwrap();
        let stats = run_ok(&lab.router, bin, &["stats"], 10);
        let unresolved = stats
            .lines()
            .find(|l| l.starts_with("drop:unresolved"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<u64>().ok());
        assert!(unresolved.is_some_and(|n| n >= 1), "{stats}");
        // status shows the names' current addresses in both families.
        let status = run_ok(&lab.router, bin, &["status"], 10);
        assert!(
            status.contains(&format!("[{SERVER_IP6} {SERVER_IP6_B}]:7000")),
            "{status}"
        );
        assert!(status.contains(&format!("[{SERVER_IP}]:7000")), "{status}");
    }

    let out = lab.stop_daemon(index).unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(log.contains("userspace relay"), !privileged, "{log}");
    // EGRESS_DNS_PROXY_DEBUG logs IPv6 connections too.
    assert!(
        log.lines()
            .any(|l| l.contains(" connection ") && l.contains("client=[2001:db8:2::2]:")),
        "{log}"
    );
}

#[test]
fn dns_proxy_in_the_data_plane_keeps_the_clients_family() {
    dns_proxy_keeps_the_clients_family(true);
}

#[test]
fn dns_proxy_relay_keeps_the_clients_family() {
    dns_proxy_keeps_the_clients_family(false);
}
