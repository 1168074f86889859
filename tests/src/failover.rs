//! A lab with two nodes on one egress segment, for failover: the router pod runs on node A,
//! node A dies (its namespaces vanish, no clean shutdown), and the replacement starts on
//! node B, as a Deployment's controller would start it.
//!
//! ```text
//!  client ns                 router A ns (pod A)   node A ns          switch ns      gateway ns   server ns
//!  eth0 192.0.2.2/25 ------- eth0 192.0.2.1/25     uplink -- pA ---+
//!                            macvlan0 (on uplink A)                 br0 -- pG -- lan0 198.51.100.1
//!  eth1 192.0.2.130/25 ----- eth0 192.0.2.129/25   uplink -- pB ---+              wan0 -------- eth0 203.0.113.10
//!                            router B ns (pod B)   node B ns
//! ```
//!
//! With `port_security`, the switch drops frames from a node's port whose source MAC is not
//! allowed there, as OpenStack's port security does: each node port allows the stable MAC
//! of EGRESS_SOURCE (the allowed-address pair an admin configures once) and nothing else.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    asset,
    bpffs::Bpffs,
    egress_router_bin,
    lab::{EGRESS_SOURCE, GATEWAY_IP, NETNS_PREFIX, SERVER_IP},
    netns::{Netns, run_bounded},
};

pub const POD_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const POD_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 129);
/// The rule port of the lab's echo server (connections that stay open).
pub const ECHO_PORT: u16 = 81;

/// How a failover is set up.
#[derive(Clone, Copy, Debug, Default)]
pub struct FailoverOptions {
    /// The routers keep their interfaces' own MACs (`--keep-mac`).
    pub keep_mac: bool,
    /// The switch allows only the stable MAC from the nodes' ports.
    pub port_security: bool,
}

/// What one failover measured.
#[derive(Clone, Debug)]
pub struct Failover {
    /// From the replacement's start to the first connection through it that the server
    /// answered; None if none did within the limit.
    pub to_first_connection: Option<Duration>,
    /// How long the replacement's init container ran.
    pub init: Duration,
    /// The gateway's neighbour entry for EGRESS_SOURCE before node A died and after the
    /// first connection through B ("MAC STATE").
    pub gateway_before: String,
    pub gateway_after: String,
    /// The MACs of the two routers' egress interfaces.
    pub mac_a: String,
    pub mac_b: String,
}

/// A process killed on Drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The two-node lab.
pub struct FailoverLab {
    pub client: Netns,
    pub router_a: Option<Netns>,
    pub node_a: Option<Netns>,
    /// Node A's bpffs: it goes with the node.
    bpffs_a: Option<Bpffs>,
    bpffs_b: Bpffs,
    pub router_b: Netns,
    pub node_b: Netns,
    pub switch: Netns,
    pub gateway: Netns,
    pub server: Netns,
    server_processes: Vec<Guard>,
}

impl FailoverLab {
    pub fn new(tag: &str, opts: FailoverOptions) -> Result<Self> {
        let id = format!("{NETNS_PREFIX}{}-{tag}", std::process::id());
        let ns = |name: &str| Netns::new(&format!("{id}-{name}"));
        let lab = Self {
            client: ns("client")?,
            router_a: Some(ns("routerA")?),
            node_a: Some(ns("nodeA")?),
            bpffs_a: Some(Bpffs::mount(
                &std::env::temp_dir().join(format!("{id}-bpffsA")),
            )?),
            bpffs_b: Bpffs::mount(&std::env::temp_dir().join(format!("{id}-bpffsB")))?,
            router_b: ns("routerB")?,
            node_b: ns("nodeB")?,
            switch: ns("switch")?,
            gateway: ns("gateway")?,
            server: ns("server")?,
            server_processes: Vec::new(),
        };
        lab.wire(opts).context("building the failover lab")?;
        Ok(lab)
    }

    fn wire(&self, opts: FailoverOptions) -> Result<()> {
        let (router_a, node_a) = (
            self.router_a.as_ref().context("router A")?,
            self.node_a.as_ref().context("node A")?,
        );
        self.switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        self.switch.ip(&["link", "set", "br0", "up"])?;
        let port = |node: &Netns, name: &str| -> Result<()> {
            node.ip(&[
                "link",
                "add",
                "uplink",
                "type",
                "veth",
                "peer",
                "name",
                name,
                "netns",
                self.switch.name(),
            ])?;
            self.switch
                .ip(&["link", "set", name, "master", "br0", "up"])?;
            node.ip(&["link", "set", "uplink", "up"])
        };
        port(node_a, "pA")?;
        port(&self.node_b, "pB")?;
        self.gateway.ip(&[
            "link",
            "add",
            "lan0",
            "type",
            "veth",
            "peer",
            "name",
            "pG",
            "netns",
            self.switch.name(),
        ])?;
        self.switch
            .ip(&["link", "set", "pG", "master", "br0", "up"])?;
        crate::lab::wire_server(&self.gateway, &self.server)?;
        let pod = |router: &Netns, client_if: &str, pod_ip: Ipv4Addr, client_ip: &str| {
            router.ip(&[
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                client_if,
                "netns",
                self.client.name(),
            ])?;
            up(router, "eth0", &format!("{pod_ip}/25"))?;
            up(&self.client, client_if, client_ip)
        };
        pod(router_a, "eth0", POD_A, "192.0.2.2/25")?;
        pod(&self.router_b, "eth1", POD_B, "192.0.2.130/25")?;
        for (node, router) in [(node_a, router_a), (&self.node_b, &self.router_b)] {
            node.ip(&[
                "link", "add", "macvlan0", "link", "uplink", "type", "macvlan", "mode", "private",
            ])?;
            node.ip(&["link", "set", "macvlan0", "netns", router.name()])?;
        }
        up(&self.gateway, "lan0", &format!("{GATEWAY_IP}/24"))?;
        self.gateway.sysctl("net.ipv4.ip_forward", "1")?;
        if opts.port_security {
            let stable = crate::failover::stable_mac_text();
            let rules = format!(
                "table bridge portsec {{\n\
                   chain forward {{\n\
                     type filter hook forward priority 0; policy accept;\n\
                     iifname {{ \"pA\", \"pB\" }} ether saddr != {stable} counter drop\n\
                   }}\n\
                 }}\n"
            );
            self.switch.nft(&rules, "the port security rules")?;
        }
        Ok(())
    }

    /// Node B's bpffs.
    pub fn bpffs_b(&self) -> &Bpffs {
        &self.bpffs_b
    }

    /// Node A's bpffs, while node A lives.
    pub fn bpffs_a(&self) -> Option<&Bpffs> {
        self.bpffs_a.as_ref()
    }

    /// The lab's peer servers (tests/assets/peer_server.py) on the server: `tcp` on port
    /// 80, `echo` on [`ECHO_PORT`].
    pub fn start_server(&mut self) -> Result<()> {
        for (kind, port) in [("tcp", "80"), ("echo", "81")] {
            let child = self
                .server
                .command("python3")
                .arg(asset("peer_server.py"))
                .args([kind, &SERVER_IP.to_string(), port])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("peer server")?;
            self.server_processes.push(Guard(child));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = run_bounded(
                self.server
                    .command("ss")
                    .args(["-Htln", "( sport = :80 or sport = :81 )"]),
                Duration::from_secs(5),
            )?;
            if String::from_utf8_lossy(&out.stdout).lines().count() == 2 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the peer server did not listen");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The init container of a router pod on `router`: `egress-router` with
    /// EGRESS_ROUTER_MODE=init, pinning on `bpffs` (the node's).
    pub fn init_command(router: &Netns, bpffs: &Bpffs, keep_mac: bool) -> Command {
        let mut cmd = router.command(egress_router_bin());
        cmd.env_clear()
            .env("EGRESS_SOURCE", format!("{EGRESS_SOURCE}/24"))
            .env("EGRESS_GATEWAY", GATEWAY_IP.to_string())
            .env(
                "EGRESS_DESTINATION",
                format!("80 tcp {SERVER_IP}\n{ECHO_PORT} tcp {SERVER_IP}"),
            )
            .env("EGRESS_ROUTER_MODE", "init")
            .env("EGRESS_ROUTER_BPFFS", bpffs.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if keep_mac {
            cmd.env("EGRESS_ROUTER_KEEP_MAC", "1");
        }
        cmd
    }

    /// One connection from the client to `pod`:80 and the server's answer ("IP PORT"), or
    /// an error; each step bounded by `limit`.
    pub fn ask(&self, pod: Ipv4Addr, limit: Duration) -> Result<String> {
        use std::io::{BufRead as _, Write as _};
        let addr = SocketAddr::from((pod, 80));
        let answer = self.client.enter(|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&addr, limit)?;
            stream.set_read_timeout(Some(limit))?;
            stream.write_all(b"hi\n")?;
            let mut line = String::new();
            std::io::BufReader::new(stream).read_line(&mut line)?;
            Ok(line.trim().to_owned())
        })??;
        if answer.is_empty() {
            bail!("no answer");
        }
        Ok(answer)
    }

    /// The gateway's neighbour entry for EGRESS_SOURCE: "MAC STATE", or "none".
    pub fn gateway_entry(&self) -> Result<String> {
        let out = run_bounded(
            self.gateway.command("ip").args([
                "-j",
                "neigh",
                "show",
                &EGRESS_SOURCE.to_string(),
                "dev",
                "lan0",
            ]),
            Duration::from_secs(5),
        )?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        Ok(v.get(0).map_or_else(
            || "none".to_owned(),
            |e| {
                format!(
                    "{} {}",
                    e["lladdr"].as_str().unwrap_or("-"),
                    e["state"]
                        .as_array()
                        .and_then(|s| s.first())
                        .and_then(|s| s.as_str())
                        .unwrap_or("-")
                )
            },
        ))
    }

    /// The router pod on node A, then node A's death, then the replacement on node B:
    /// measured from B's start to the first connection through B that the server answered
    /// (at most `limit`).
    pub fn fail_over(&mut self, opts: FailoverOptions, limit: Duration) -> Result<Failover> {
        let router_a = self.router_a.as_ref().context("router A is gone")?;
        let bpffs_a = self.bpffs_a.as_ref().context("node A's bpffs is gone")?;
        let out = run_bounded(
            &mut Self::init_command(router_a, bpffs_a, opts.keep_mac),
            Duration::from_secs(30),
        )?;
        if !out.status.success() {
            bail!("init on node A: {}", String::from_utf8_lossy(&out.stderr));
        }
        let answer = self.ask(POD_A, Duration::from_secs(3))?;
        if !answer.starts_with(&format!("{EGRESS_SOURCE} ")) {
            bail!("through node A the server saw {answer}");
        }
        let mac_a = crate::util::mac_of(router_a, "macvlan0");
        let gateway_before = self.gateway_entry()?;

        // Node A dies: its link to the switch goes at once (deleting a namespace finishes
        // asynchronously, and A's macvlan would answer ARP meanwhile), then its namespaces
        // vanish with the pod's macvlan; nothing is cleaned up.
        self.switch.ip(&["link", "del", "pA"])?;
        self.router_a = None;
        self.node_a = None;
        self.bpffs_a = None;

        let started = Instant::now();
        let mut init = Self::init_command(&self.router_b, &self.bpffs_b, opts.keep_mac)
            .spawn()
            .context("init on node B")?;
        let mut init_time = None;
        let mut first = None;
        while started.elapsed() < limit {
            if init_time.is_none() && init.try_wait()?.is_some() {
                init_time = Some(started.elapsed());
            }
            let answered = self
                .ask(POD_B, Duration::from_millis(200))
                .is_ok_and(|a| a.starts_with(&format!("{EGRESS_SOURCE} ")));
            if answered {
                first = Some(started.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = crate::netns::wait_bounded(init, Duration::from_secs(30))?;
        if !out.status.success() {
            bail!("init on node B: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(Failover {
            to_first_connection: first,
            init: init_time.unwrap_or_else(|| started.elapsed()),
            gateway_before,
            gateway_after: self.gateway_entry()?,
            mac_a,
            mac_b: crate::util::mac_of(&self.router_b, "macvlan0"),
        })
    }
}

/// The stable MAC of the lab's EGRESS_SOURCE, as text.
#[must_use]
pub fn stable_mac_text() -> String {
    egress_user::network::mac::mac_text(egress_user::network::mac::stable_mac(EGRESS_SOURCE.into()))
}

fn up(ns: &Netns, dev: &str, cidr: &str) -> Result<()> {
    ns.ip(&["addr", "add", cidr, "dev", dev])?;
    ns.ip(&["link", "set", dev, "up"])
}
