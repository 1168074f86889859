//! The node lab: node mode's topology, pods wired the way routed CNIs wire them.
//!
//! ```text
//!  client pod i   eth0 192.0.2.(100+i)/32 ---- cli<i>  (node ns, /32 route, proxy ARP)
//!  router pod i   eth0 192.0.2.(10+i)/32  ---- pod<i>  (node ns, /32 route, proxy ARP)
//!  node ns: uplink 198.51.100.2/24 ---- lan0 198.51.100.1 (gateway ns)
//!                                       wan0 203.0.113.1  ---- eth0 203.0.113.10 (server ns)
//! ```
//!
//! Each pod has its address as /32 and a default route out of `eth0`; the node routes each
//! pod address to its host-side veth and answers the pods' ARP for everything (proxy ARP,
//! without the kernel's default delay), as Calico does. Instance i's EGRESS_SOURCE is 198.51.100.(100+i) on the node network,
//! answered by the node agent's XDP program with the uplink's MAC. Only documentation
//! ranges; nothing in the root namespace; everything removed on Drop.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{
    bpffs::Bpffs,
    daemon::{Daemon, Daemons},
    lab::{GATEWAY_IP, NETNS_PREFIX, addr_up, wire_server},
    labbpf::{self, LabBpf},
    netns::Netns,
};

/// The node's own address on the uplink.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Node B's, in a two-node lab.
pub const NODE_B_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);

/// Router pod `i`'s IP.
#[must_use]
pub fn router_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 10 + i as u8)
}

/// Client pod `i`'s IP.
#[must_use]
pub fn client_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 100 + i as u8)
}

/// Instance `i`'s EGRESS_SOURCE.
#[must_use]
pub fn egress_source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 100 + i as u8)
}

/// One node lab: the node, gateway and server namespaces, router pods and client pods, a
/// bpffs and a spool directory.
pub struct NodeLab {
    // Drop order: processes first, then namespaces, then the bpffs.
    daemons: Daemons,
    /// Keeps an XDP program on the gateway's side of the uplink (see [`NodeLab::new`]).
    _gateway_napi: Option<LabBpf>,
    pub clients: Vec<Netns>,
    pub routers: Vec<Netns>,
    pub node: Netns,
    /// The second node of a two-node lab ([`NodeLab::two_nodes`]), on the same segment.
    pub node_b: Option<Netns>,
    pub gateway: Netns,
    pub server: Netns,
    pub bpffs: Bpffs,
    pub spool: PathBuf,
    /// Node B's spool (its own hostPath).
    pub spool_b: PathBuf,
}

impl NodeLab {
    /// Builds the topology with `pods` router pods and as many client pods.
    pub fn new(tag: &str, pods: usize) -> Result<Self> {
        Self::with_pods(tag, pods, pods)
    }

    /// Builds the topology with `routers` router pods and `clients` client pods (at most
    /// 64 of each).
    pub fn with_pods(tag: &str, routers: usize, clients: usize) -> Result<Self> {
        Self::build(tag, routers, clients, false)
    }

    /// Two nodes on one segment, for failover: node A (`node`, uplink 198.51.100.2) holds
    /// router pod 0; node B (`node_b`, uplink 198.51.100.3) holds router pod 1 and the
    /// client pod. The gateway bridges the two uplinks; each node routes the other's pods
    /// through it, as a flat cluster network does.
    pub fn two_nodes(tag: &str) -> Result<Self> {
        Self::build(tag, 2, 1, true)
    }

    fn build(tag: &str, routers: usize, clients: usize, two: bool) -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        assert!(
            routers <= 64 && clients <= 64,
            "the lab's address plan has room for 64 pods of each kind"
        );
        let id = format!(
            "{NETNS_PREFIX}{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let node = Netns::new(&format!("{id}-node"))?;
        let node_b = two
            .then(|| Netns::new(&format!("{id}-nodeb")))
            .transpose()?;
        let gateway = Netns::new(&format!("{id}-gw"))?;
        let server = Netns::new(&format!("{id}-srv"))?;
        let bpffs = Bpffs::mount(&std::env::temp_dir().join(format!("{id}-bpffs")))?;
        let spool = PathBuf::from(format!("{}-spool", bpffs.path().display()));
        let spool_b = PathBuf::from(format!("{}-spool-b", bpffs.path().display()));
        let mut lab = Self {
            daemons: Daemons::new(bpffs.path().to_owned()),
            _gateway_napi: None,
            clients: Vec::new(),
            routers: Vec::new(),
            node,
            node_b,
            gateway,
            server,
            bpffs,
            spool,
            spool_b,
        };
        for dir in [&lab.spool, &lab.spool_b] {
            std::fs::create_dir_all(dir).context("creating a spool")?;
        }
        let lans = lab.wire_network().context("wiring the node network")?;
        for i in 0..routers {
            lab.routers.push(Netns::new(&format!("{id}-r{i}"))?);
            let node = if i == 0 {
                &lab.node
            } else {
                lab.node_of_others()
            };
            wire_pod(node, &lab.routers[i], &format!("pod{i}"), router_ip(i))?;
        }
        for i in 0..clients {
            lab.clients.push(Netns::new(&format!("{id}-c{i}"))?);
            wire_pod(
                lab.node_of_others(),
                &lab.clients[i],
                &format!("cli{i}"),
                client_ip(i),
            )?;
        }
        if let Some(b) = &lab.node_b {
            // Each node reaches the other's pods through it.
            let on_b = (1..routers)
                .map(router_ip)
                .chain((0..clients).map(client_ip));
            for ip in on_b {
                let dst = format!("{ip}/32");
                lab.node
                    .ip(&["route", "add", &dst, "via", &NODE_B_IP.to_string()])?;
            }
            b.ip(&[
                "route",
                "add",
                &format!("{}/32", router_ip(0)),
                "via",
                &NODE_IP.to_string(),
            ])?;
        }
        // A veth sends what an XDP program transmits (the ARP responder's answers) only
        // into a peer whose receive path runs in NAPI, which an XDP program of its own
        // turns on; a NIC needs nothing of the kind.
        let napi = lab
            .gateway
            .enter(|| -> Result<LabBpf> {
                let mut napi = LabBpf::load()?;
                let prog = napi.xdp_program(labbpf::programs::LAB_XDP_PASS)?;
                for lan in &lans {
                    prog.attach(lan, aya::programs::XdpMode::Driver)?;
                }
                Ok(napi)
            })?
            .context("the gateway's XDP pass program")?;
        lab._gateway_napi = Some(napi);
        Ok(lab)
    }

    /// For the benchmark: the gateway's neighbour entries for the first `instances`
    /// egress addresses fixed to the uplink's MAC, and the gateway's XDP program removed.
    /// That program is only there so that a veth delivers the ARP responder's XDP_TX
    /// answers; on a veth it also takes GSO off its peer, the node's uplink, which then
    /// cuts every TCP segment in software (a lab artefact: a NIC peer has no such effect).
    /// The ARP responder's own path is what the tests cover.
    pub fn without_gateway_xdp(&mut self, instances: usize) -> Result<()> {
        let mac = self.node.mac("uplink")?;
        for i in 0..instances {
            let ip = egress_source(i).to_string();
            let args = ["neigh", "replace", &ip, "lladdr", &mac, "nud", "permanent"];
            self.gateway.ip(&[&args[..], &["dev", "lan0"]].concat())?;
        }
        self._gateway_napi = None;
        Ok(())
    }

    /// Router pod 0 in pod mode, as OpenShift's egress router pod runs on this node: a
    /// macvlan on the node's uplink handed to the pod, and `egress-router` with
    /// `EGRESS_ROUTER_MODE=init` (instance `instance`) in the pod. The benchmark compares
    /// node mode with this, the same topology and routing hop.
    pub fn pod_mode_router(&self, instance: &str, destination: &str) -> Result<String> {
        let router = &self.routers[0];
        let args = [
            "link", "add", "macvlan0", "link", "uplink", "type", "macvlan",
        ];
        self.node.ip(&[&args[..], &["mode", "private"]].concat())?;
        self.node
            .ip(&["link", "set", "macvlan0", "netns", router.name()])?;
        let out = crate::netns::run_bounded(
            router
                .command(crate::egress_router_bin())
                .env("EGRESS_SOURCE", format!("{}/24", egress_source(0)))
                .env("EGRESS_GATEWAY", GATEWAY_IP.to_string())
                .env("EGRESS_DESTINATION", destination)
                .env("EGRESS_ROUTER_MODE", "init")
                .arg("--bpffs")
                .arg(self.bpffs.path())
                .args(["--instance", instance]),
            Duration::from_secs(30),
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        anyhow::ensure!(out.status.success(), "egress-router init failed: {stderr}");
        Ok(stderr)
    }

    /// `egress-router --instance INSTANCE stats` on the lab's pins, in the node's namespace:
    /// `node` for the node agent's counters, or a pod-mode router's instance.
    pub fn stats(&self, instance: &str) -> Result<String> {
        let mut cmd = self.node.command(crate::egress_router_bin());
        cmd.args(["--instance", instance, "stats", "--bpffs"])
            .arg(self.bpffs.path());
        let out = crate::netns::run_bounded(&mut cmd, Duration::from_secs(10))?;
        anyhow::ensure!(
            out.status.success(),
            "egress-router stats: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// GRO on the node's uplink, as a NIC has it by default (a veth has not).
    pub fn uplink_gro(&self) -> Result<()> {
        crate::netns::run_checked(
            self.node
                .command("ethtool")
                .args(["-K", "uplink", "gro", "on"]),
        )
        .context("GRO on the node's uplink")
    }

    /// `egress-router node-status --json` on the lab's pins, parsed.
    pub fn status_json(&self) -> Result<serde_json::Value> {
        let mut cmd = self.node.command(crate::egress_router_bin());
        cmd.args(["node-status", "--json", "--bpffs"])
            .arg(self.bpffs.path());
        let out = crate::netns::run_bounded(&mut cmd, Duration::from_secs(10))?;
        anyhow::ensure!(
            out.status.success(),
            "node-status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The node of every pod but router pod 0: node B in a two-node lab.
    fn node_of_others(&self) -> &Netns {
        self.node_b.as_ref().unwrap_or(&self.node)
    }

    /// The segment: one uplink to the gateway's `lan0`, or two uplinks on a bridge that
    /// holds the gateway's address. Returns the gateway's ports toward the nodes.
    fn wire_network(&self) -> Result<Vec<&'static str>> {
        let gw = &self.gateway;
        let mut nodes = vec![(&self.node, NODE_IP, "lan0")];
        if let Some(b) = &self.node_b {
            nodes = vec![(&self.node, NODE_IP, "lana"), (b, NODE_B_IP, "lanb")];
        }
        for (node, ip, lan) in &nodes {
            node.ip(&[
                "link",
                "add",
                "uplink",
                "type",
                "veth",
                "peer",
                "name",
                lan,
                "netns",
                gw.name(),
            ])?;
            addr_up(node, "uplink", *ip, 24)?;
            node.ip(&["route", "add", "default", "via", &GATEWAY_IP.to_string()])?;
            node.sysctl("net.ipv4.ip_forward", "1")?;
        }
        if nodes.len() == 1 {
            addr_up(gw, "lan0", GATEWAY_IP, 24)?;
        } else {
            gw.ip(&["link", "add", "br0", "type", "bridge"])?;
            for (_, _, lan) in &nodes {
                gw.ip(&["link", "set", lan, "master", "br0", "up"])?;
            }
            addr_up(gw, "br0", GATEWAY_IP, 24)?;
        }
        wire_server(gw, &self.server)?;
        gw.sysctl("net.ipv4.ip_forward", "1")?;
        Ok(nodes.into_iter().map(|(_, _, lan)| lan).collect())
    }

    /// The lab's daemons.
    pub fn daemons_mut(&mut self) -> &mut Daemons {
        &mut self.daemons
    }

    /// Starts a long-running process, killed when the lab drops.
    pub fn spawn(&mut self, cmd: Command) -> Result<&mut Daemon> {
        self.daemons.spawn(cmd)
    }

    /// Kills daemon `index` outright (SIGKILL) and returns its output.
    pub fn kill_daemon(&mut self, index: usize) -> Result<std::process::Output> {
        self.daemons.kill(index)
    }

    /// What daemon `index` wrote to stderr so far.
    #[must_use]
    pub fn daemon_stderr(&self, index: usize) -> String {
        self.daemons.stderr(index)
    }

    /// Waits until daemon `index` logged `text` (at most `limit`).
    pub fn wait_for_log(&self, index: usize, text: &str, limit: Duration) -> Result<String> {
        self.daemons.wait_for_log(index, text, limit)
    }

    /// The node agent serving this node: `egress-router node` in the node namespace on
    /// the uplink, the lab's spool, pins on the lab's bpffs, the spool read every 50 ms
    /// unless `extra` says otherwise.
    pub fn agent_command(&self, extra: &[&str]) -> Command {
        self.agent_command_on(false, extra)
    }

    /// [`NodeLab::agent_command`] for node B (its own spool, and pins in `b/`).
    fn agent_command_on(&self, b: bool, extra: &[&str]) -> Command {
        let (node, spool, bpffs) = match &self.node_b {
            Some(node_b) if b => (node_b, &self.spool_b, self.bpffs.path().join("b")),
            _ => (&self.node, &self.spool, self.bpffs.path().to_owned()),
        };
        let mut cmd = node.command(crate::egress_router_bin());
        cmd.args(["node", "--uplink", "uplink"])
            .arg("--spool")
            .arg(spool)
            .arg("--bpffs")
            .arg(bpffs)
            .args(extra)
            .env("EGRESS_ROUTER_LOG", "info");
        if !extra.contains(&"--rescan-ms") {
            cmd.args(["--rescan-ms", "50"]);
        }
        cmd
    }

    /// Starts the node agent ([`NodeLab::agent_command`]) and waits until it serves;
    /// returns its daemon index.
    pub fn start_agent(&mut self, extra: &[&str]) -> Result<usize> {
        self.start_agent_on(false, extra)
    }

    /// [`NodeLab::start_agent`] on node B.
    pub fn start_agent_b(&mut self, extra: &[&str]) -> Result<usize> {
        self.start_agent_on(true, extra)
    }

    fn start_agent_on(&mut self, b: bool, extra: &[&str]) -> Result<usize> {
        let cmd = self.agent_command_on(b, extra);
        self.spawn(cmd)?;
        let index = self.daemons.len() - 1;
        self.wait_for_log(index, "node agent serving", Duration::from_secs(30))?;
        Ok(index)
    }

    /// Router pod `i`'s main container in node mode: `node-register --stay`, which keeps
    /// the registration while it runs; returns its daemon index.
    pub fn stay_registered(&mut self, i: usize, destination: &str) -> Result<usize> {
        let mut cmd = self.routers[i].command(crate::egress_router_bin());
        cmd.args(["node-register", "--stay", "--spool"])
            .arg(self.spool_of(i))
            .env("EGRESS_SOURCE", format!("{}/24", egress_source(i)))
            .env("EGRESS_GATEWAY", GATEWAY_IP.to_string())
            .env("EGRESS_DESTINATION", destination);
        self.spawn(cmd)?;
        Ok(self.daemons.len() - 1)
    }

    /// Stops daemon `index` (SIGTERM) and returns its output.
    pub fn stop_daemon(&mut self, index: usize) -> Result<std::process::Output> {
        self.daemons.stop(index)
    }

    /// Registers router pod `i` with EGRESS_DESTINATION `destination` as its init
    /// container does (`egress-router node-register` in the pod's namespace).
    pub fn register(&self, i: usize, destination: &str) -> Result<String> {
        self.register_as(i, i, destination)
    }

    /// [`NodeLab::register`] with instance `source`'s EGRESS_SOURCE (a replacement pod
    /// takes its predecessor's), into the spool of the pod's node.
    pub fn register_as(&self, i: usize, source: usize, destination: &str) -> Result<String> {
        let mut cmd = self.routers[i].command(crate::egress_router_bin());
        cmd.arg("node-register")
            .arg("--spool")
            .arg(self.spool_of(i))
            .env("EGRESS_SOURCE", format!("{}/24", egress_source(source)))
            .env("EGRESS_GATEWAY", GATEWAY_IP.to_string())
            .env("EGRESS_DESTINATION", destination);
        let out = crate::netns::run_bounded(&mut cmd, Duration::from_secs(10))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(out.status.success(), "node-register failed: {text}");
        Ok(text)
    }

    /// Registers router pod `i` as configured by the node agent's static instance `name`
    /// (`node-register --config-name`).
    pub fn register_static(&self, i: usize, name: &str) -> Result<String> {
        let mut cmd = self.routers[i].command(crate::egress_router_bin());
        cmd.args(["node-register", "--config-name", name, "--spool"])
            .arg(self.spool_of(i));
        let out = crate::netns::run_bounded(&mut cmd, Duration::from_secs(10))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(out.status.success(), "node-register failed: {text}");
        Ok(text)
    }

    /// Router pod `i`'s directory in its node's spool, as `deploy/node/router.yaml` mounts
    /// it (`subPathExpr: $(POD_IP)`): the pod sees only this directory.
    pub fn spool_of(&self, i: usize) -> PathBuf {
        let spool = if i > 0 && self.node_b.is_some() {
            &self.spool_b
        } else {
            &self.spool
        };
        let dir = spool.join(router_ip(i).to_string());
        std::fs::create_dir_all(&dir).expect("the pod's spool directory");
        dir
    }

    /// The spool file of router pod `i`.
    #[must_use]
    pub fn spool_file(&self, i: usize) -> PathBuf {
        self.spool_of(i).join(format!("{}.json", router_ip(i)))
    }

    /// The spool directory.
    #[must_use]
    pub fn spool(&self) -> &Path {
        &self.spool
    }
}

impl Drop for NodeLab {
    fn drop(&mut self) {
        for daemon in self.daemons.iter_mut() {
            let _ = daemon.kill();
        }
        let _ = std::fs::remove_dir_all(&self.spool);
        let _ = std::fs::remove_dir_all(&self.spool_b);
    }
}

/// A pod `ns` at `ip`/32 on `node`, its host side `host` there.
fn wire_pod(node: &Netns, ns: &Netns, host: &str, ip: Ipv4Addr) -> Result<()> {
    node.ip(&[
        "link",
        "add",
        host,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns.name(),
    ])?;
    node.sysctl(&format!("net.ipv4.conf.{host}.proxy_arp"), "1")?;
    // Answered at once, as Calico sets it: by default the kernel delays proxy answers by
    // up to 0.8 s.
    node.sysctl(&format!("net.ipv4.neigh.{host}.proxy_delay"), "0")?;
    node.ip(&["link", "set", host, "up"])?;
    node.ip(&["route", "add", &format!("{ip}/32"), "dev", host])?;
    addr_up(ns, "eth0", ip, 32)?;
    ns.ip(&["route", "add", "default", "dev", "eth0"])
}
