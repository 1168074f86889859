//! A client pod cannot starve the agent's health check: slow connections (half a request
//! line each, reopened whenever the agent closes them) from one client to the metrics port
//! and to the health port, while the probes, as the manifests give them (`/healthz` on the
//! health port, 1 s), keep answering 200 from another address; and `/healthz` on the
//! metrics port too, since one source holds only a few of its connections.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use egress_tests::{
    lab::{Lab, METRICS_PORT, ROUTER_POD_IP},
    netns::run_bounded,
};

/// The health port as the manifests set it (`EGRESS_ROUTER_HEALTH_ADDRESS=:9470`).
const HEALTH_PORT: u16 = 9470;
/// The address the probes come from: another than the attacking client's.
const PROBE_IP: &str = "192.0.2.3";
/// Connections the attacker keeps open to each port.
const SLOW: usize = 80;

/// One slow connection to `port`: half a request line, never finished.
fn slow_connection(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from((ROUTER_POD_IP, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.write_all(b"GET /healthz HT").ok()?;
    stream.set_nonblocking(true).ok()?;
    Some(stream)
}

/// Whether the agent has closed (or answered and closed) `stream`.
fn closed(mut stream: &TcpStream) -> bool {
    let mut buf = [0u8; 256];
    // Anything read (an answer, the end) means the agent is done with it.
    stream
        .read(&mut buf)
        .map_or_else(|err| err.kind() != ErrorKind::WouldBlock, |_read| true)
}

/// Keeps [`SLOW`] slow connections open to each of `ports` until `stop`, reopening those the
/// agent closes. Returns, per port, the connections open at the end and how many were
/// reopened.
fn attack(ports: &[u16], stop: &AtomicBool) -> Vec<(usize, usize)> {
    let mut held: Vec<Vec<TcpStream>> = ports.iter().map(|_| Vec::new()).collect();
    let mut reopened = vec![0; ports.len()];
    while !stop.load(Ordering::Relaxed) {
        for (i, &port) in ports.iter().enumerate() {
            let before = held[i].len();
            held[i].retain(|s| !closed(s));
            reopened[i] += before - held[i].len();
            while held[i].len() < SLOW {
                match slow_connection(port) {
                    Some(s) => held[i].push(s),
                    None => break,
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // What the agent still holds: the last round's closes settle first.
    std::thread::sleep(Duration::from_millis(200));
    held.iter()
        .zip(reopened)
        .map(|(conns, again)| (conns.iter().filter(|s| !closed(s)).count(), again))
        .collect()
}

/// `/healthz` on `port` from [`PROBE_IP`] as kubelet probes it (1 s): the status, or why not.
fn probe(lab: &Lab, port: u16) -> String {
    let out = run_bounded(
        lab.client.command("curl").args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "1",
            "--interface",
            PROBE_IP,
            &format!("http://{ROUTER_POD_IP}:{port}/healthz"),
        ]),
        Duration::from_secs(3),
    )
    .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn slow_clients_cannot_starve_the_health_check() {
    let mut lab = Lab::new("op-health").unwrap();
    lab.client
        .ip(&[
            "addr",
            "add",
            &format!("{PROBE_IP}/24"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    let agent = lab
        .start_agent(
            "health",
            "80 tcp 203.0.113.10\n",
            &["--health-address", &format!(":{HEALTH_PORT}")],
        )
        .unwrap();
    assert_eq!(probe(&lab, HEALTH_PORT), "200", "before the attack");

    let stop = AtomicBool::new(false);
    let (answers, seen) = std::thread::scope(|s| {
        let attacker = s.spawn(|| {
            lab.client
                .enter(|| attack(&[METRICS_PORT, HEALTH_PORT], &stop))
                .unwrap()
        });
        // The attacker's connections in place first.
        std::thread::sleep(Duration::from_secs(1));
        let mut answers = Vec::new();
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until {
            answers.push((HEALTH_PORT, probe(&lab, HEALTH_PORT)));
            answers.push((METRICS_PORT, probe(&lab, METRICS_PORT)));
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, Ordering::Relaxed);
        (answers, attacker.join().unwrap())
    });
    let failed: Vec<_> = answers.iter().filter(|(_, code)| code != "200").collect();
    assert!(
        failed.is_empty(),
        "{} of {} probes failed during the attack: {failed:?}",
        failed.len(),
        answers.len()
    );
    for (port, (open, reopened)) in [METRICS_PORT, HEALTH_PORT].iter().zip(&seen) {
        assert!(
            *open <= 4,
            "port {port}: one client holds {open} connections; the cap is 4"
        );
        assert!(
            *reopened >= SLOW - 4,
            "port {port}: the agent closed only {reopened} of the client's connections"
        );
    }
    lab.stop_daemon(agent).unwrap();
}
