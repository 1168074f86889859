//! The HTTP proxy's rule check decides what is actually sent: the Host the server is asked
//! for, and the addresses a name stands for. Each case is an attack a client pod could try,
//! or a server the proxy must serve whole.

use egress_tests::{
    egress_router_bin,
    lab::{EGRESS_SOURCE, Lab, NAMESERVER_IP, ROUTER_POD_IP},
    util::{peer_server_at, run_ok, tempdir, unprivileged_router, wait_listening},
};

/// A proxy pod with `rules`, names from `hosts` served by the lab's nameserver, and HTTP
/// servers (answering "PEER_IP PEER_PORT HOST") on 203.0.113.11 and 203.0.113.12: HTTP/1.1
/// on port 80, HTTP/1.0 (the body ends with the connection) on port 81.
/// `resolv` is the pod's resolv.conf after its nameserver line.
fn proxy_lab(
    tag: &str,
    hosts: &str,
    rules: &str,
    resolv: &str,
) -> (Lab, egress_tests::util::TempDir) {
    proxy_lab_with(tag, hosts, rules, resolv, &[])
}

/// [`proxy_lab`] with `args` for the proxy.
pub(super) fn proxy_lab_with(
    tag: &str,
    hosts: &str,
    rules: &str,
    resolv: &str,
    args: &[&str],
) -> (Lab, egress_tests::util::TempDir) {
    proxy_lab_as(tag, hosts, rules, resolv, args, &[], false)
}

/// [`proxy_lab_with`] with variables `env` set too, the proxy run as OpenShift runs the
/// main container when `unprivileged` (user nobody, no capabilities).
pub(super) fn proxy_lab_as(
    tag: &str,
    hosts: &str,
    rules: &str,
    resolv: &str,
    args: &[&str],
    env: &[(&str, &str)],
    unprivileged: bool,
) -> (Lab, egress_tests::util::TempDir) {
    let dir = tempdir(tag);
    let hosts_file = dir.join("hosts");
    std::fs::write(&hosts_file, hosts).unwrap();
    let mut lab = Lab::new(tag).unwrap();
    lab.start_nameserver(&dir, &hosts_file, 60).unwrap();
    let resolv_conf = dir.join("resolv.pod");
    std::fs::write(
        &resolv_conf,
        format!("nameserver {NAMESERVER_IP}\n{resolv}"),
    )
    .unwrap();
    for ip in ["203.0.113.11/24", "203.0.113.12/24"] {
        lab.server.ip(&["addr", "add", ip, "dev", "eth0"]).unwrap();
    }
    peer_server_at(&mut lab, "http", "0.0.0.0", 80, &[]);
    peer_server_at(&mut lab, "http10", "0.0.0.0", 81, &[]);
    wait_listening(&lab, 80);
    wait_listening(&lab, 81);
    lab.init_proxy_network("http-proxy").unwrap();
    let mut proxy = if unprivileged {
        unprivileged_router(&lab)
    } else {
        lab.router.command(egress_router_bin())
    };
    proxy
        .env_clear()
        .env("EGRESS_HTTP_PROXY_DESTINATION", rules)
        .envs(env.iter().copied())
        .arg("--resolv-conf")
        .arg(&resolv_conf)
        .args(args);
    let index = lab.daemons_len();
    lab.spawn(proxy).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while run_ok(&lab.router, "ss", &["-Htln", "sport = :8080"], 5).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy does not listen: {}",
            lab.daemon_stderr(index)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (lab, dir)
}

/// `curl` from the client through the proxy with `extra` arguments: "STATUS BODY".
pub(super) fn fetch(lab: &Lab, url: &str, extra: &[&str]) -> String {
    egress_tests::util::fetch_via(lab, &format!("http://{ROUTER_POD_IP}:8080"), url, extra)
}

/// A Host header naming another site is replaced by the URL's authority (RFC 9112 section
/// 3.2.2): an allowed server behind a shared address is never asked for another virtual host.
#[test]
fn the_server_is_asked_for_the_host_the_rules_allowed() {
    let (lab, _dir) = proxy_lab(
        "proxy-host",
        "203.0.113.11 www.example.com\n",
        "www.example.com",
        "",
    );
    let source = EGRESS_SOURCE.to_string();
    for (url, host) in [
        ("http://www.example.com/", "www.example.com"),
        ("http://WWW.Example.com./", "WWW.Example.com."),
    ] {
        let seen = fetch(&lab, url, &["-H", "Host: blocked.example.com"]);
        assert!(
            seen.starts_with(&format!("200 {source} ")) && seen.ends_with(&format!(" {host}")),
            "{url}: {seen:?}"
        );
    }
}

/// Names are resolved as absolute names, never below the pod's search domains: with
/// Kubernetes' `ndots:5`, whoever can create `www.example.com` in the pod's namespace
/// (a service) would otherwise capture the name, and with it a rule by address.
#[test]
fn names_are_resolved_as_absolute_whatever_the_search_list() {
    let (lab, _dir) = proxy_lab(
        "proxy-abs",
        "203.0.113.11 www.example.com\n203.0.113.12 www.example.com.attacker.svc\n",
        "!203.0.113.12\n203.0.113.0/24",
        "search attacker.svc\noptions ndots:5 timeout:1\n",
    );
    let seen = fetch(&lab, "http://www.example.com/", &[]);
    assert!(
        seen.starts_with(&format!("200 {EGRESS_SOURCE} ")),
        "the name was resolved below the search domain: {seen:?}"
    );
}

/// An HTTP/1.0 server that ends its body by closing: the client gets the whole body and its
/// request ends there, on a keep-alive connection too, instead of waiting for a close that
/// never comes.
#[test]
fn a_body_that_ends_with_the_upstream_close_ends_for_the_client() {
    let (lab, _dir) = proxy_lab("proxy-http10", "203.0.113.11 old.example.com\n", "*", "");
    // Two requests on one client connection: the first must end for the second to be sent
    // (curl gives up after 8 s, and the test fails with it).
    let proxy = format!("http://{ROUTER_POD_IP}:8080");
    let out = run_ok(
        &lab.client,
        "curl",
        &[
            "-s",
            "--max-time",
            "8",
            "--proxy",
            &proxy,
            "http://old.example.com:81/a",
            "http://old.example.com:81/b",
        ],
        15,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "both bodies, whole: {out:?}");
    for line in lines {
        assert!(
            line.starts_with(&format!("{EGRESS_SOURCE} ")) && line.ends_with(" old.example.com:81"),
            "{line:?}"
        );
    }
}

/// Whatever the rules allow, the proxy never connects back into the router pod (the pod IP,
/// EGRESS_SOURCE, loopback), by address, by a mapped IPv6 form or by a name that resolves
/// there; and an IPv4-mapped IPv6 form is its IPv4 address for the rules.
#[test]
fn destinations_never_loop_back_and_mapped_forms_meet_ipv4_rules() {
    let (lab, _dir) = proxy_lab(
        "proxy-loop",
        "192.0.2.1 loop.example.com\n203.0.113.12 denied.example.com\n",
        "!203.0.113.12\n*",
        "",
    );
    for url in [
        "http://127.0.0.1:8080/",
        "http://192.0.2.1:8080/",
        "http://198.51.100.100:8080/",
        "http://[::ffff:192.0.2.1]:8080/",
        "http://loop.example.com:8080/",
    ] {
        let seen = fetch(&lab, url, &[]);
        assert!(
            seen.starts_with("403 egress-router: ") && seen.contains("no address the router"),
            "{url}: {seen:?}"
        );
    }
    for url in [
        "http://[::ffff:203.0.113.12]/",
        "http://[::ffff:cb00:710c]/",
        "http://denied.example.com/",
    ] {
        let seen = fetch(&lab, url, &[]);
        assert!(
            seen.starts_with("403 ") && seen.contains("denied by rule '!203.0.113.12'"),
            "{url}: {seen:?}"
        );
    }
    let allowed = fetch(&lab, "http://[::ffff:203.0.113.11]/", &[]);
    assert!(
        allowed.starts_with(&format!("200 {EGRESS_SOURCE} ")),
        "{allowed:?}"
    );
}
