//! Node mode's failover, as the tests and the benchmark take it: in a two-node lab
//! ([`NodeLab::two_nodes`]) whose router pod 0 runs on node A, node A dies (its agent
//! killed, its uplink gone, with no clean shutdown) and the replacement router pod starts
//! on node B with the same EGRESS_SOURCE; a client retries until a connection through
//! node B is answered.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::nodelab::{NodeLab, router_ip};

/// How long a failover took.
#[derive(Clone, Debug)]
pub struct Failover {
    /// From the replacement's start (its `node-register`) to the first answered
    /// connection through node B.
    pub first_connection: Duration,
    /// How long its `node-register` ran.
    pub registered: Duration,
    /// The answer (the server's view of the peer).
    pub body: String,
    /// The failed attempts before it, with their time and curl's message.
    pub attempts: Vec<String>,
}

/// Kills node A (daemon `agent_a`, then its uplink) and starts the replacement of router
/// pod 0 as router pod 1 on node B with EGRESS_DESTINATION `destination`; a client pod
/// tries every 20 ms (at most 10 s).
pub fn fail_over(lab: &mut NodeLab, agent_a: usize, destination: &str) -> Result<Failover> {
    lab.kill_daemon(agent_a)?;
    lab.node.ip(&["link", "del", "uplink"])?;
    let started = Instant::now();
    lab.register_as(1, 0, destination)?;
    let registered = started.elapsed();
    let url = format!("http://{}/", router_ip(1));
    let mut attempts = Vec::new();
    loop {
        let out = crate::netns::run_bounded(
            lab.clients[0].command("curl").args([
                "-sS",
                "--connect-timeout",
                "0.5",
                "-m",
                "1",
                &url,
            ]),
            Duration::from_secs(5),
        )?;
        if out.status.success() {
            return Ok(Failover {
                first_connection: started.elapsed(),
                registered,
                body: String::from_utf8_lossy(&out.stdout).into_owned(),
                attempts,
            });
        }
        let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        attempts.push(format!("{:?}: {said}", started.elapsed()));
        if started.elapsed() > Duration::from_secs(10) {
            bail!("no connection through node B in 10 s: {attempts:#?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
