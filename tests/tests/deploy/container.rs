//! The image in a real container runtime, the way a kubelet runs OpenShift's egress router
//! Deployments: the privileged init container in the router pod's network namespace runs
//! to completion, then the main container starts in the same namespace; real clients go
//! through it and the server sees EGRESS_SOURCE. One test per mode.

use std::time::{Duration, Instant};

use egress_tests::{
    container::{Container, run_init},
    lab::{EGRESS_SOURCE, GATEWAY_IP, Lab, METRICS_PORT, ROUTER_POD_IP, SERVER_IP},
    netns::run_bounded,
    util::{ask, peer_server, peer_server_at, run_ok, wait_listening},
};

fn source() -> String {
    format!("{EGRESS_SOURCE}/24")
}

fn gateway() -> String {
    GATEWAY_IP.to_string()
}

/// The init container of a proxy pod: `EGRESS_ROUTER_MODE=mode`, the network only.
fn init_proxy_pod(lab: &Lab, mode: &str) {
    let (source, gateway) = (source(), gateway());
    run_init(
        lab,
        &[
            ("EGRESS_SOURCE", source.as_str()),
            ("EGRESS_GATEWAY", gateway.as_str()),
            ("EGRESS_ROUTER_MODE", mode),
        ],
    )
    .unwrap();
}

/// Retries `f` for up to 20 s until it returns Some: the main container's start.
fn within<T>(what: &str, container: &Container, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; the container's log:\n{}",
            container.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Redirect mode: the init container sets up the network and the data plane and exits;
/// the main container, the same image in `legacy` mode, adopts the data plane and serves
/// /healthz and /metrics on the pod IP.
#[test]
fn redirect_pod_init_then_agent_container() {
    let mut lab = Lab::new("ctr-redirect").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let destination = format!("80 tcp {SERVER_IP}\n8080 tcp {SERVER_IP} 80\n");
    let (source, gateway) = (source(), gateway());
    let env = [
        ("EGRESS_SOURCE", source.as_str()),
        ("EGRESS_GATEWAY", gateway.as_str()),
        ("EGRESS_DESTINATION", destination.as_str()),
        ("EGRESS_ROUTER_MODE", "init"),
    ];
    run_init(&lab, &env).unwrap();
    // The data plane outlived the init container (and its bpffs).
    assert!(ask(&lab, 80).starts_with(&format!("{EGRESS_SOURCE} ")));

    let mut env = env;
    env[3].1 = "legacy";
    let agent = Container::start(&lab, "agent", &env, true).unwrap();
    let healthz = format!("http://{ROUTER_POD_IP}:{METRICS_PORT}/healthz");
    // Not listening yet (curl fails) is "not yet" too: the main container is starting.
    within("the agent's /healthz on the pod IP", &agent, || {
        let out = run_bounded(
            lab.client.command("curl").args([
                "-s",
                "--max-time",
                "2",
                "-w",
                "%{http_code}",
                &healthz,
            ]),
            Duration::from_secs(5),
        )
        .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .ends_with("200")
            .then_some(())
    });
    for port in [80, 8080] {
        let seen = ask(&lab, port);
        assert!(
            seen.starts_with(&format!("{EGRESS_SOURCE} ")),
            "{port}: {seen}"
        );
    }
    let metrics = run_ok(
        &lab.client,
        "curl",
        &[
            "-s",
            "--max-time",
            "5",
            &format!("http://{ROUTER_POD_IP}:{METRICS_PORT}/metrics"),
        ],
        10,
    );
    // One connection before the agent started, two after: the agent counts all three.
    assert!(
        metrics.contains("egress_router_packets_total{path=\"flows_created\"} 3\n"),
        "{metrics}"
    );
    assert!(agent.running().unwrap(), "{}", agent.logs());
    assert!(
        agent.logs().contains("adopted the running data plane"),
        "{}",
        agent.logs()
    );
}

/// HTTP proxy mode: the init container (`EGRESS_ROUTER_MODE=http-proxy`) sets up the
/// network; the main container has only EGRESS_HTTP_PROXY_DESTINATION and runs as an
/// arbitrary user without capabilities, as OpenShift runs it.
#[test]
fn http_proxy_pod_init_then_unprivileged_proxy_container() {
    let mut lab = Lab::new("ctr-http").unwrap();
    peer_server_at(&mut lab, "http", &SERVER_IP.to_string(), 80, &[]);
    wait_listening(&lab, 80);
    init_proxy_pod(&lab, "http-proxy");
    let rules = format!("!203.0.113.99\n{SERVER_IP}/32\n");
    let proxy = Container::start(
        &lab,
        "proxy",
        &[("EGRESS_HTTP_PROXY_DESTINATION", rules.as_str())],
        false,
    )
    .unwrap();
    // curl's output, or None while the proxy does not answer yet (the container was just
    // started: connection refused until it listens).
    let fetch = |url: &str| {
        let mut curl = lab.client.command("curl");
        curl.args([
            "-s",
            "--max-time",
            "3",
            "-w",
            " %{http_code}",
            "--proxy",
            &format!("http://{ROUTER_POD_IP}:8080"),
            url,
        ]);
        let out = run_bounded(&mut curl, Duration::from_secs(10)).unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let body = within("an answer through the proxy", &proxy, || {
        fetch(&format!("http://{SERVER_IP}/")).filter(|out| out.ends_with(" 200"))
    });
    assert!(body.starts_with(&format!("{EGRESS_SOURCE} ")), "{body}");
    let refused = fetch("http://203.0.113.99/");
    assert!(
        refused.as_deref().is_some_and(|o| o.ends_with(" 403")),
        "{refused:?}"
    );
    assert!(proxy.logs().contains("access:"), "{}", proxy.logs());
}

/// DNS proxy mode: the init container (`EGRESS_ROUTER_MODE=dns-proxy`) sets up the network;
/// the main container, unprivileged, serves the ports with the userspace relay.
#[test]
fn dns_proxy_pod_init_then_unprivileged_relay_container() {
    let mut lab = Lab::new("ctr-dns").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    init_proxy_pod(&lab, "dns-proxy");
    let routes = format!("7000 {SERVER_IP} 80\n");
    let relay = Container::start(
        &lab,
        "relay",
        &[("EGRESS_DNS_PROXY_DESTINATION", routes.as_str())],
        false,
    )
    .unwrap();
    let seen = within("an answer through the relay", &relay, || {
        Some(ask(&lab, 7000)).filter(|s| !s.is_empty())
    });
    assert!(seen.starts_with(&format!("{EGRESS_SOURCE} ")), "{seen}");
    assert!(relay.logs().contains("userspace relay"), "{}", relay.logs());
}
