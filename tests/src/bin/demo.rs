//! `cargo xtask demo`: first light in a netns lab. The loader attaches the data plane to the
//! router pod's `eth0` and exits; a client pings the router pod through it; the counters
//! pinned on the lab's bpffs show what the data plane saw. Everything is removed at the end.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use egress_tests::{
    egress_router_bin,
    lab::{Lab, ROUTER_POD_IP},
    netns::{run_bounded, run_checked},
};

fn main() -> Result<()> {
    let lab = Lab::new("demo").context("building the lab (run as root)")?;
    let bin = egress_router_bin();
    println!(
        "lab: client {} -> router pod eth0 {ROUTER_POD_IP}",
        lab.client.name()
    );
    run_checked(
        lab.router
            .command(&bin)
            .arg("--bpffs")
            .arg(lab.bpffs.path())
            .args(["--instance", "demo", "attach", "--interface", "eth0"]),
    )?;
    println!("egress-router attach: attached to eth0 and exited");

    let ping = run_bounded(
        lab.client.command("ping").args([
            "-c",
            "5",
            "-i",
            "0.2",
            "-W",
            "1",
            &ROUTER_POD_IP.to_string(),
        ]),
        Duration::from_secs(10),
    )?;
    let summary = String::from_utf8_lossy(&ping.stdout);
    let summary = summary
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("(no summary)");
    println!("client: ping {ROUTER_POD_IP}: {summary}");
    ensure!(ping.status.success(), "ping failed");

    let stats = run_bounded(
        lab.router
            .command(&bin)
            .arg("--bpffs")
            .arg(lab.bpffs.path())
            .args(["--instance", "demo", "stats"]),
        Duration::from_secs(5),
    )?;
    ensure!(stats.status.success(), "egress-router stats failed");
    println!("egress-router stats (from the pinned maps, no process running):");
    print!("{}", String::from_utf8_lossy(&stats.stdout));
    Ok(())
}
