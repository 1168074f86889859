//! `cargo xtask demo`: redirect mode in a netns lab. `egress-router` in init mode sets up the
//! router pod (macvlan address, routes, BPF programs on eth0 and macvlan0) and exits; a
//! client fetches a page and sends a UDP datagram through the router pod's IP; the servers
//! say which client address they saw. Everything is removed at the end.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, ensure};
use egress_tests::{
    asset, egress_router_bin,
    lab::{CLIENT_IP, EGRESS_SOURCE, Lab, ROUTER_POD_IP, SERVER_IP},
    netns::run_bounded,
};

fn main() -> Result<()> {
    let mut lab = Lab::new("demo").context("building the lab (run as root)")?;
    let destination = format!("80 tcp {SERVER_IP}\n5300 udp {SERVER_IP} 5353");
    println!(
        "lab: client {CLIENT_IP} -> router pod {ROUTER_POD_IP} -> gateway -> server {SERVER_IP}"
    );
    println!(
        "EGRESS_SOURCE={EGRESS_SOURCE} EGRESS_DESTINATION='{}'",
        destination.replace('\n', "\\n")
    );

    let dir = std::env::temp_dir().join(format!("er-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveDir(dir.clone());
    std::fs::write(dir.join("index.html"), "hello from the server\n")?;
    let mut http = lab.server.command("python3");
    http.args(["-m", "http.server", "80", "--bind", &SERVER_IP.to_string()])
        .arg("--directory")
        .arg(&dir);
    let http_index = lab.daemons_len();
    lab.spawn(http)?;
    let mut udp = lab.server.command("python3");
    udp.arg(asset("peer_server.py"))
        .args(["udp", &SERVER_IP.to_string(), "5353"]);
    lab.spawn(udp)?;
    std::thread::sleep(Duration::from_millis(500));

    lab.init_router("demo", &destination, &[])?;
    println!("egress-router (EGRESS_ROUTER_MODE=init): set up and exited");

    let curl = run_bounded(
        lab.client.command("curl").args([
            "-sS",
            "--max-time",
            "5",
            &format!("http://{ROUTER_POD_IP}/"),
        ]),
        Duration::from_secs(10),
    )?;
    ensure!(
        curl.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&curl.stderr)
    );
    println!(
        "client: curl http://{ROUTER_POD_IP}/ -> {}",
        String::from_utf8_lossy(&curl.stdout).trim()
    );
    let ask = run_bounded(
        lab.client
            .command("python3")
            .arg(asset("udp_ask.py"))
            .args([&ROUTER_POD_IP.to_string(), "5300"]),
        Duration::from_secs(10),
    )?;
    ensure!(ask.status.success(), "UDP request failed");
    println!(
        "client: UDP {ROUTER_POD_IP}:5300 -> server {SERVER_IP}:5353 saw the client as {}",
        String::from_utf8_lossy(&ask.stdout).trim()
    );

    let log = lab.stop_daemon(http_index)?;
    let log = String::from_utf8_lossy(&log.stderr);
    for line in log.lines().filter(|l| l.contains("\"GET ")) {
        println!("server HTTP log: {line}");
    }

    let stats = run_bounded(
        lab.router
            .command(egress_router_bin())
            .arg("--bpffs")
            .arg(lab.bpffs.path())
            .args(["--instance", "demo", "stats"]),
        Duration::from_secs(5),
    )?;
    ensure!(stats.status.success(), "egress-router stats failed");
    println!("egress-router stats (read from the pinned maps; no egress-router process runs):");
    for line in String::from_utf8_lossy(&stats.stdout).lines() {
        // Only what moved, to keep the demo short.
        if !line.contains(" 0 packets") {
            println!("  {line}");
        }
    }
    Ok(())
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
