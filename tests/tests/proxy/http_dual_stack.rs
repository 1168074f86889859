//! The HTTP proxy over both families, in the dual-stack lab: the init container sets up
//! both halves of EGRESS_SOURCE; the main container (EGRESS_SOURCE read from the egress
//! interface, as OpenShift's image runs it) listens on the pod's IPv4 and IPv6 addresses
//! and connects out from EGRESS_SOURCE of the destination's family; IPv6 rules deny by
//! address and CIDR as IPv4 ones do, also for a name that resolves to a denied address.

use std::time::Duration;

use egress_tests::{
    egress_router_bin,
    lab::{EGRESS_SOURCE, Lab, NAMESERVER_IP, ROUTER_POD_IP, SERVER_IP},
    lab6::{EGRESS_SOURCE6, ROUTER_POD_IP6, SERVER_IP6, dual_stack_env},
    util::{peer_server_at, run_ok, tempdir, wait_sockets},
};

/// The server's second IPv6 address, which the rules deny.
const DENIED6: &str = "2001:db8:f::11";

/// `curl URL` through the proxy at `proxy`: "STATUS BODY".
fn fetch(lab: &Lab, proxy: &str, url: &str) -> String {
    egress_tests::util::fetch_via(lab, proxy, url, &[])
}

#[test]
fn the_http_proxy_serves_and_leaves_in_both_families() {
    let dir = tempdir("proxy-dual");
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "{SERVER_IP} v4.example.com\n\
             {SERVER_IP6} v6.example.com\n\
             {SERVER_IP} both.example.com\n\
             {SERVER_IP6} both.example.com\n\
             {DENIED6} denied.example.com\n"
        ),
    )
    .unwrap();
    let mut lab = Lab::new("proxy-dual").unwrap();
    lab.enable_ipv6().unwrap();
    lab.add_server_ip6(DENIED6).unwrap();
    lab.start_nameserver(&dir, &hosts, 60).unwrap();
    let resolv = dir.join("resolv.pod");
    std::fs::write(&resolv, format!("nameserver {NAMESERVER_IP}\n")).unwrap();
    for addr in [
        SERVER_IP.to_string(),
        SERVER_IP6.to_string(),
        DENIED6.to_owned(),
    ] {
        peer_server_at(&mut lab, "http", &addr, 80, &[]);
    }
    wait_sockets(&lab.server, &["-Htln", "sport = :80"], |n| n == 3);

    let [source, gateway] = dual_stack_env();
    lab.init_proxy_network_as("http-proxy", [&source, &gateway])
        .unwrap();
    let mut proxy = lab.router.command(egress_router_bin());
    proxy
        .env_clear()
        .env(
            "EGRESS_HTTP_PROXY_DESTINATION",
            format!("!{DENIED6}/128\n*\n"),
        )
        .arg("--resolv-conf")
        .arg(&resolv);
    let index = lab.daemons_len();
    lab.spawn(proxy).unwrap();
    // Listening on both of the pod's addresses.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while run_ok(&lab.router, "ss", &["-Htln", "sport = :8080"], 5)
        .lines()
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy does not listen on both addresses: {}",
            lab.daemon_stderr(index)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let over4 = format!("http://{ROUTER_POD_IP}:8080");
    let over6 = format!("http://[{ROUTER_POD_IP6}]:8080");

    // Each destination is reached from EGRESS_SOURCE of its family, whichever family the
    // client reached the proxy over.
    for proxy in [&over4, &over6] {
        let v6 = fetch(&lab, proxy, "http://v6.example.com/");
        assert!(
            v6.starts_with(&format!("200 {EGRESS_SOURCE6} ")),
            "{proxy}: {v6}"
        );
        let literal = fetch(&lab, proxy, &format!("http://[{SERVER_IP6}]/"));
        assert!(
            literal.starts_with(&format!("200 {EGRESS_SOURCE6} ")),
            "{proxy}: {literal}"
        );
        let v4 = fetch(&lab, proxy, "http://v4.example.com/");
        assert!(
            v4.starts_with(&format!("200 {EGRESS_SOURCE} ")),
            "{proxy}: {v4}"
        );
        // A name with both: IPv4 first.
        let both = fetch(&lab, proxy, "http://both.example.com/");
        assert!(
            both.starts_with(&format!("200 {EGRESS_SOURCE} ")),
            "{proxy}: {both}"
        );
        // The denied IPv6 address, as a literal and behind a name.
        for url in [
            format!("http://[{DENIED6}]/"),
            "http://denied.example.com/".to_owned(),
        ] {
            let denied = fetch(&lab, proxy, &url);
            assert!(denied.starts_with("403 "), "{proxy} {url}: {denied}");
        }
    }
    let log = lab.daemon_stderr(index);
    assert!(
        log.contains(&EGRESS_SOURCE6.to_string()),
        "sources logged: {log}"
    );
}
