//! How the HTTP proxy serves: a slow client is cut, `--max-connections` bounds connections
//! and tunnels alike, an idle tunnel is closed, and serving threads reuse upstream
//! connections and answer bad requests with their status. The proxy pods are
//! `http_rules.rs`'s.

use egress_tests::{
    lab::{EGRESS_SOURCE, Lab, ROUTER_POD_IP},
    util::{run_ok, wait_sockets},
};

use super::http_rules::{fetch, proxy_lab_as, proxy_lab_with};

/// Slow clients cannot hold the proxy: a client that does not finish its headers within
/// `--header-timeout` is disconnected, and `--max-connections` bounds what the proxy
/// serves at once (one more connection is closed at once).
#[test]
fn slow_clients_are_cut_and_connections_are_bounded() {
    let (mut lab, _dir) = proxy_lab_with(
        "proxy-slow",
        "203.0.113.11 www.example.com\n",
        "*",
        "",
        &[
            "http-proxy",
            "--header-timeout",
            "5",
            "--max-connections",
            "4",
        ],
    );
    let slow = |lab: &Lab, count: &str, wait: &str| {
        run_ok(
            &lab.client,
            "python3",
            &[
                egress_tests::asset("slow_clients.py").to_str().unwrap(),
                &ROUTER_POD_IP.to_string(),
                "8080",
                count,
                wait,
            ],
            20,
        )
    };
    // Four slow clients take every slot, and are all cut after the header timeout.
    assert_eq!(slow(&lab, "4", "7").trim(), "4", "closed by the proxy");
    // While four slow clients hold the slots (for 5 s: time enough for the check below on
    // a loaded machine), a fifth client is turned away ...
    let mut hold = lab.client.command("python3");
    hold.arg(egress_tests::asset("slow_clients.py")).args([
        &ROUTER_POD_IP.to_string(),
        "8080",
        "4",
        "9",
    ]);
    lab.spawn(hold).unwrap();
    let established = |lab: &Lab| {
        run_ok(
            &lab.router,
            "ss",
            &["-Htn", "state", "established", "sport = :8080"],
            5,
        )
        .lines()
        .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while established(&lab) < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow clients did not connect"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let proxy = format!("http://{ROUTER_POD_IP}:8080");
    let waiting = egress_tests::netns::run_bounded(
        lab.client.command("curl").args([
            "-s",
            "--max-time",
            "1",
            "--proxy",
            &proxy,
            "http://www.example.com/",
        ]),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert!(
        !waiting.status.success(),
        "served beyond --max-connections: {}",
        String::from_utf8_lossy(&waiting.stdout)
    );
    // ... and is served once the slow ones are cut.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let out = egress_tests::netns::run_bounded(
            lab.client.command("curl").args([
                "-s",
                "--max-time",
                "2",
                "--proxy",
                &proxy,
                "http://www.example.com/",
            ]),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            assert!(body.starts_with(&format!("{EGRESS_SOURCE} ")), "{body:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not served after the slow clients were cut"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// CONNECT tunnels count against `--max-connections` for as long as they last (before,
/// a tunnel left the count once upgraded, so any number could be held), and one idle for
/// `--tunnel-idle-timeout` is closed.
#[test]
fn tunnels_are_bounded_and_closed_when_idle() {
    let (lab, _dir) = proxy_lab_with(
        "proxy-tunnel",
        "203.0.113.11 www.example.com\n",
        "*",
        "",
        &[
            "http-proxy",
            "--max-connections",
            "2",
            "--tunnel-idle-timeout",
            "2",
        ],
    );
    let tunnels = |lab: &Lab, count: &str, wait: &str| {
        run_ok(
            &lab.client,
            "python3",
            &[
                egress_tests::asset("tunnels.py").to_str().unwrap(),
                &ROUTER_POD_IP.to_string(),
                "8080",
                "203.0.113.11:80",
                count,
                wait,
            ],
            20,
        )
    };
    // Three tunnels asked for, two held: the third is turned away at once.
    assert_eq!(
        tunnels(&lab, "3", "0.5").trim(),
        "2 0",
        "established, closed"
    );
    // The proxy has let the tunnels go (and their permits) once their sockets are gone.
    wait_sockets(
        &lab.router,
        &["-Htn", "state", "established", "sport = :8080"],
        |n| n == 0,
    );
    // Two idle tunnels outlive no idle timeout.
    assert_eq!(
        tunnels(&lab, "2", "3.5").trim(),
        "2 2",
        "established, closed"
    );
}

/// The proxy as OpenShift runs it (nobody, no capabilities) with three serving threads:
/// three SO_REUSEPORT listeners share the port and every connection is served; requests on
/// one kept-alive client connection reuse one upstream connection (the server sees one
/// peer port); a request in origin form (not a proxy request) gets 400, and a name that
/// does not resolve gets 502, each with a body saying why.
#[test]
fn unprivileged_threads_reuse_upstreams_and_bad_requests_get_their_status() {
    let hosts = "203.0.113.11 www.example.com\n";
    let (lab, _dir) = proxy_lab_as(
        "proxy-threads",
        hosts,
        "*\n",
        "",
        &[],
        &[("EGRESS_HTTP_PROXY_THREADS", "3")],
        true,
    );
    let listeners = run_ok(&lab.router, "ss", &["-Htln", "sport = :8080"], 5);
    assert_eq!(listeners.lines().count(), 3, "{listeners}");
    // The proxy is the lab's last daemon; setpriv exec'd it as nobody without capabilities.
    let pid = lab.daemon_pid(lab.daemons_len() - 1).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
            .unwrap()
    };
    assert_eq!(field("Name:"), "egress-router");
    assert_eq!(field("Uid:"), "65534 65534 65534 65534");
    assert_eq!(field("CapEff:"), "0000000000000000");
    for i in 0..12 {
        let got = fetch(&lab, &format!("http://www.example.com/{i}"), &[]);
        assert!(
            got.starts_with(&format!("200 {EGRESS_SOURCE} ")),
            "request {i}: {got}"
        );
    }

    // Two requests on one client connection: one upstream connection.
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
        ],
        15,
    );
    let ports: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or("?"))
        .collect();
    assert_eq!(ports.len(), 2, "{out}");
    assert_eq!(
        ports[0], ports[1],
        "the upstream connection was reused: {out}"
    );

    // Origin form: a request for the proxy itself, not through it.
    let origin = run_ok(
        &lab.client,
        "curl",
        &[
            "-s",
            "--max-time",
            "10",
            "-w",
            " %{http_code}",
            &format!("http://{ROUTER_POD_IP}:8080/some/path"),
        ],
        15,
    );
    assert!(origin.ends_with(" 400"), "{origin}");
    let unresolved = fetch(&lab, "http://nowhere.example.com/", &[]);
    assert!(unresolved.starts_with("502 "), "{unresolved}");
    assert!(unresolved.contains("nowhere.example.com"), "{unresolved}");
}
