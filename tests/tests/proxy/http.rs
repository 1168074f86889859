//! The HTTP proxy in the netns lab, deployed as OpenShift deploys it: an init container
//! (`EGRESS_ROUTER_MODE=http-proxy`: the network and a rule-less data plane) and a main
//! container of the same image that has only the proxy variable.

use std::{path::Path, process::Command, time::Duration};

use egress_tests::{
    egress_router_bin,
    lab::{EGRESS_SOURCE, Lab, ROUTER_POD_IP},
    netns::run_bounded,
    util::{peer_server_at, run_ok, tempdir, wait_listening_in},
};

/// The lab's names (dnsmasq), all on the server's addresses.
const HOSTS: &str = "\
203.0.113.10 www.example.com blocked.example.com other.example.com badexample.org
203.0.113.11 example.org api.example.org secure.example.org outside.example.net
203.0.113.12 cidr.example.net
";

const HTTP_RULES: &str = "
# the lab's rules
!blocked.example.com
www.example.com
*.example.org
203.0.113.12/32
";

/// The server addresses behind the gateway, with HTTP on 80 and HTTPS on 8443 on all.
fn start_servers(lab: &mut Lab, dir: &Path) {
    for ip in ["203.0.113.11/24", "203.0.113.12/24"] {
        lab.server.ip(&["addr", "add", ip, "dev", "eth0"]).unwrap();
    }
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = run_bounded(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=secure.example.org", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    peer_server_at(lab, "http", "0.0.0.0", 80, &[]);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    peer_server_at(lab, "https", "0.0.0.0", 8443, &[&cert, &key]);
    for port in [80, 8443] {
        egress_tests::util::wait_listening(lab, port);
    }
}

/// `curl` from the client through the proxy: (HTTP status, body). For CONNECT, the status
/// is the proxy's answer to CONNECT when it refused, else the origin's.
fn via_proxy(lab: &Lab, url: &str) -> (u16, String) {
    let proxy = format!("http://{ROUTER_POD_IP}:8080");
    let out = run_bounded(
        lab.client.command("curl").args([
            "-sk",
            "--max-time",
            "10",
            "--proxy",
            &proxy,
            "-w",
            "\n%{http_code} %{http_connect}",
            url,
        ]),
        Duration::from_secs(15),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, codes) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut codes = codes
        .split_whitespace()
        .map(|c| c.parse::<u16>().unwrap_or(0));
    let (http, connect) = (codes.next().unwrap_or(0), codes.next().unwrap_or(0));
    let status = if http == 0 { connect } else { http };
    (status, body.to_owned())
}

#[test]
fn http_proxy_allows_denies_tunnels_and_sends_from_egress_source() {
    let dir = tempdir("http-proxy");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, HOSTS).unwrap();
    let mut lab = Lab::new("httpproxy").unwrap();
    let (resolv_conf, _) = lab.start_nameserver(&dir, &hosts, 60).unwrap();
    start_servers(&mut lab, &dir);
    lab.init_proxy_network("http-proxy").unwrap();

    // The main container: the same image, only EGRESS_HTTP_PROXY_DESTINATION.
    let mut proxy = lab.router.command(egress_router_bin());
    proxy
        .env_clear()
        .env("EGRESS_HTTP_PROXY_DESTINATION", HTTP_RULES)
        .arg("--resolv-conf")
        .arg(&resolv_conf);
    let index = lab.daemons_len();
    lab.spawn(proxy).unwrap();
    wait_listening_in(&lab.router, 8080);

    let source = EGRESS_SOURCE.to_string();
    let allowed = [
        ("plain hostname", "http://www.example.com/"),
        ("*.example.org: a subdomain", "http://api.example.org/"),
        ("*.example.org: the domain itself", "http://example.org/"),
        ("CIDR: a name resolving inside", "http://cidr.example.net/"),
        ("CIDR: an address inside", "http://203.0.113.12/"),
        ("CONNECT to TLS", "https://secure.example.org:8443/"),
    ];
    for (what, url) in allowed {
        let (status, body) = via_proxy(&lab, url);
        assert_eq!(status, 200, "{what}: {url}: {body}");
        assert!(
            body.starts_with(&format!("{source} ")),
            "{what}: the server saw {body:?}, not EGRESS_SOURCE {source}"
        );
    }
    let denied = [
        (
            "deny rule",
            "http://blocked.example.com/",
            "'!blocked.example.com'",
        ),
        ("no rule", "http://other.example.com/", "no rule"),
        (
            "*.example.org is not a suffix match",
            "http://badexample.org/",
            "no rule",
        ),
        (
            "CIDR: a name resolving outside",
            "http://outside.example.net/",
            "no rule",
        ),
        (
            "CIDR: an address outside",
            "http://203.0.113.11/",
            "no rule",
        ),
    ];
    for (what, url, reason) in denied {
        let (status, body) = via_proxy(&lab, url);
        assert_eq!(status, 403, "{what}: {url}: {body}");
        assert!(
            body.contains(reason),
            "{what}: 403 body {body:?} lacks {reason:?}"
        );
    }
    let (status, _) = via_proxy(&lab, "https://other.example.com:8443/");
    assert_eq!(status, 403, "CONNECT to a host no rule allows");
    let (status, body) = via_proxy(&lab, "http://www.example.com:81/");
    assert_eq!(status, 502, "nothing listens on port 81: {body}");

    // Keep-alive: several URLs on one client connection, all answered.
    let out = run_ok(
        &lab.client,
        "curl",
        &[
            "-s",
            "--max-time",
            "10",
            "--proxy",
            &format!("http://{ROUTER_POD_IP}:8080"),
            "http://www.example.com/a",
            "http://www.example.com/b",
            "http://api.example.org/c",
        ],
        15,
    );
    assert_eq!(out.lines().count(), 3, "{out}");

    // Never on EGRESS_SOURCE: from the gateway side, the proxy's port is closed.
    let out = run_bounded(
        lab.gateway.command("curl").args([
            "-s",
            "--max-time",
            "3",
            &format!("http://{EGRESS_SOURCE}:8080/"),
        ]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(!out.status.success(), "the proxy answered on EGRESS_SOURCE");
    let listening = run_ok(&lab.router, "ss", &["-Htln", "sport = :8080"], 5);
    assert!(
        listening.contains(&format!("{ROUTER_POD_IP}:8080"))
            && !listening.contains("0.0.0.0:8080")
            && !listening.contains(&EGRESS_SOURCE.to_string()),
        "{listening}"
    );

    // One access-log line per request, naming the rule.
    let out = lab.stop_daemon(index).unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" access:")).collect();
    assert_eq!(lines.len(), 6 + 5 + 2 + 3, "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("status=403") && l.contains("rule=!blocked.example.com")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("method=CONNECT") && l.contains("status=200")),
        "{log}"
    );
}
