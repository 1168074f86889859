//! The netns lab: the topology of an egress router pod, built fresh for each test.
//!
//! ```text
//!  client ns            router ns (the egress router pod)            gateway ns          server ns
//!  eth0 192.0.2.2 ----- eth0 192.0.2.1 (pod interface)
//!                       macvlan0 (EGRESS_SOURCE goes here) --+
//!                                                            | parent
//!                       node ns: uplink ---------------------+---- lan0 198.51.100.1
//!                                                                   wan0 203.0.113.1 ---- eth0 203.0.113.10
//! ```
//!
//! The macvlan is created in the node namespace on the uplink and moved into the router
//! namespace, the way the cluster network creates it for the pod. Every link lives only
//! inside the lab's namespaces; the root namespace gets no link, address or route. Only
//! documentation address ranges are used. Everything is removed on Drop, panics included.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    bpffs::Bpffs,
    daemon::{Daemon, Daemons},
    netns::Netns,
};

/// Prefix of every lab namespace name: `er-lab-<pid>-<n>-<tag>-<role>`.
pub const NETNS_PREFIX: &str = "er-lab-";

/// The client pod's address on the pod network.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The egress router pod's address on the pod network (`eth0`).
pub const ROUTER_POD_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Prefix length of the pod network.
pub const POD_PREFIX: u8 = 24;
/// The gateway's address on the node network (`EGRESS_GATEWAY`).
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The address the lab reserves for `EGRESS_SOURCE` on the node network.
pub const EGRESS_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
/// Prefix length of the node network.
pub const NODE_PREFIX: u8 = 24;
/// The gateway's address towards the server.
pub const GATEWAY_WAN_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The remote server.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Prefix length of the server network.
pub const SERVER_PREFIX: u8 = 24;

/// The lab's nameserver (dnsmasq, [`Lab::start_nameserver`]), on the pod network like a
/// cluster DNS service: a second address of the client namespace.
pub const NAMESERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

/// The agent's default metrics and health port on the pod IP.
pub const METRICS_PORT: u16 = 9469;

/// Knobs of the lab topology.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// MTU of the pod network (client and router `eth0`).
    pub pod_mtu: u32,
    /// MTU of the node network (uplink, macvlan, gateway).
    pub node_mtu: u32,
    /// Mode of the macvlan (`private` like openshift-sdn, `bridge`, ...).
    pub macvlan_mode: &'static str,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            pod_mtu: 1500,
            node_mtu: 1500,
            macvlan_mode: "private",
        }
    }
}

/// One lab: five namespaces, their links, a bpffs, and the processes started in them.
pub struct Lab {
    // Drop order matters: processes first, then namespaces, then the bpffs.
    daemons: Daemons,
    pub client: Netns,
    pub router: Netns,
    pub node: Netns,
    pub gateway: Netns,
    pub server: Netns,
    pub bpffs: Bpffs,
}

impl Lab {
    /// Builds the default topology. `tag` names the test in the namespace names.
    pub fn new(tag: &str) -> Result<Self> {
        Self::with_options(tag, &LabOptions::default())
    }

    /// Builds the topology with `opts`.
    pub fn with_options(tag: &str, opts: &LabOptions) -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{NETNS_PREFIX}{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // Each namespace is owned as soon as it exists, so a failure below cleans up.
        let client = Netns::new(&format!("{id}-client"))?;
        let router = Netns::new(&format!("{id}-router"))?;
        let node = Netns::new(&format!("{id}-node"))?;
        let gateway = Netns::new(&format!("{id}-gateway"))?;
        let server = Netns::new(&format!("{id}-server"))?;
        let bpffs = Bpffs::mount(&std::env::temp_dir().join(format!("{id}-bpffs")))?;
        let lab = Self {
            daemons: Daemons::new(std::env::temp_dir().join(format!("{id}-bpffs"))),
            client,
            router,
            node,
            gateway,
            server,
            bpffs,
        };
        lab.wire(opts).context("building the lab topology")?;
        Ok(lab)
    }

    fn wire(&self, opts: &LabOptions) -> Result<()> {
        let (pod_mtu, node_mtu) = (opts.pod_mtu.to_string(), opts.node_mtu.to_string());
        // Pod network: client eth0 <-> router eth0.
        self.router.ip(&[
            "link",
            "add",
            "eth0",
            "mtu",
            &pod_mtu,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "mtu",
            &pod_mtu,
            "netns",
            self.client.name(),
        ])?;
        // Node network: node uplink <-> gateway lan0; gateway wan0 <-> server eth0.
        self.node.ip(&[
            "link",
            "add",
            "uplink",
            "mtu",
            &node_mtu,
            "type",
            "veth",
            "peer",
            "name",
            "lan0",
            "mtu",
            &node_mtu,
            "netns",
            self.gateway.name(),
        ])?;
        wire_server(&self.gateway, &self.server)?;
        // The pod's macvlan, created on the node's uplink and handed to the pod.
        self.node.ip(&[
            "link",
            "add",
            "macvlan0",
            "mtu",
            &node_mtu,
            "link",
            "uplink",
            "type",
            "macvlan",
            "mode",
            opts.macvlan_mode,
        ])?;
        self.node
            .ip(&["link", "set", "macvlan0", "netns", self.router.name()])?;
        self.node.ip(&["link", "set", "uplink", "up"])?;

        addr_up(&self.client, "eth0", CLIENT_IP, POD_PREFIX)?;
        addr_up(&self.router, "eth0", ROUTER_POD_IP, POD_PREFIX)?;
        addr_up(&self.gateway, "lan0", GATEWAY_IP, NODE_PREFIX)?;
        self.gateway.sysctl("net.ipv4.ip_forward", "1")?;
        Ok(())
    }

    /// The lab's daemons.
    pub fn daemons_mut(&mut self) -> &mut Daemons {
        &mut self.daemons
    }

    /// Starts a long-running process (a server, an agent) that is killed when the lab drops.
    /// Its output goes to files (see [`Daemon`]).
    pub fn spawn(&mut self, cmd: Command) -> Result<&mut Daemon> {
        self.daemons.spawn(cmd)
    }

    /// Runs `egress-router` in `EGRESS_ROUTER_MODE=init` in the router namespace with the
    /// lab's EGRESS_SOURCE and EGRESS_GATEWAY, the given EGRESS_DESTINATION, instance
    /// `instance` pinned on the lab's bpffs, and `extra` arguments; fails unless it exits 0.
    pub fn init_router(&self, instance: &str, destination: &str, extra: &[&str]) -> Result<String> {
        let (source, gateway) = (EGRESS_SOURCE.to_string(), GATEWAY_IP.to_string());
        self.init_router_as(instance, [&source, &gateway], destination, extra)
    }

    /// [`Lab::init_router`] with `[EGRESS_SOURCE, EGRESS_GATEWAY]` as given.
    pub fn init_router_as(
        &self,
        instance: &str,
        [source, gateway]: [&str; 2],
        destination: &str,
        extra: &[&str],
    ) -> Result<String> {
        let out = crate::netns::run_bounded(
            self.router
                .command(crate::egress_router_bin())
                .env("EGRESS_SOURCE", source)
                .env("EGRESS_GATEWAY", gateway)
                .env("EGRESS_DESTINATION", destination)
                .env("EGRESS_ROUTER_MODE", "init")
                .arg("--bpffs")
                .arg(self.bpffs.path())
                .args(["--instance", instance])
                .args(extra),
            Duration::from_secs(30),
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!("egress-router init failed ({}): {stderr}", out.status);
        }
        Ok(stderr)
    }

    /// The init container of OpenShift's proxy Deployments: `egress-router` with only
    /// `EGRESS_ROUTER_MODE=mode` (`http-proxy` or `dns-proxy`) and the lab's EGRESS_SOURCE
    /// and EGRESS_GATEWAY, which sets up the network only; fails unless it exits 0.
    pub fn init_proxy_network(&self, mode: &str) -> Result<()> {
        let (source, gateway) = (EGRESS_SOURCE.to_string(), GATEWAY_IP.to_string());
        self.init_proxy_network_as(mode, [&source, &gateway])
    }

    /// [`Lab::init_proxy_network`] with `[EGRESS_SOURCE, EGRESS_GATEWAY]` as given.
    pub fn init_proxy_network_as(&self, mode: &str, [source, gateway]: [&str; 2]) -> Result<()> {
        let out = crate::netns::run_bounded(
            self.router
                .command(crate::egress_router_bin())
                .env_clear()
                .env("EGRESS_SOURCE", source)
                .env("EGRESS_GATEWAY", gateway)
                .env("EGRESS_ROUTER_MODE", mode),
            Duration::from_secs(20),
        )?;
        if !out.status.success() {
            bail!(
                "egress-router {mode} (init) failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts `egress-router` in legacy mode (the agent) in the router namespace, like
    /// [`Lab::init_router`], and waits until its `/healthz` on the pod IP answers 200 (set-up
    /// done, programs attached). Returns the daemon's index.
    pub fn start_agent(
        &mut self,
        instance: &str,
        destination: &str,
        extra: &[&str],
    ) -> Result<usize> {
        let index = self.spawn_agent(instance, destination, extra)?;
        self.wait_healthy(index, Duration::from_secs(20))?;
        Ok(index)
    }

    /// [`Lab::start_agent`] without the wait: returns as soon as the process runs.
    pub fn spawn_agent(
        &mut self,
        instance: &str,
        destination: &str,
        extra: &[&str],
    ) -> Result<usize> {
        let cmd = self.agent_command(instance, destination, extra);
        let index = self.daemons_len();
        self.spawn(cmd)?;
        Ok(index)
    }

    /// The command of an agent (legacy mode) for `instance` in the router namespace, with
    /// the lab's EGRESS_SOURCE and EGRESS_GATEWAY, on the lab's bpffs.
    pub fn agent_command(&self, instance: &str, destination: &str, extra: &[&str]) -> Command {
        let mut cmd = self.router.command(crate::egress_router_bin());
        cmd.env("EGRESS_SOURCE", EGRESS_SOURCE.to_string())
            .env("EGRESS_GATEWAY", GATEWAY_IP.to_string())
            .env("EGRESS_DESTINATION", destination)
            .env("EGRESS_ROUTER_MODE", "legacy")
            .arg("--bpffs")
            .arg(self.bpffs.path())
            .args(["--instance", instance])
            .args(extra);
        cmd
    }

    /// Waits until the agent's `/healthz` answers 200, failing early if daemon `index` died.
    pub fn wait_healthy(&mut self, index: usize, limit: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(child) = self.daemons[index].child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                let out = self.daemons[index].stop(Duration::from_secs(1));
                bail!("the agent exited with {status} before it was healthy: {out:?}");
            }
            let out = crate::netns::run_bounded(
                self.client.command("curl").args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "1",
                    &format!("http://{ROUTER_POD_IP}:{METRICS_PORT}/healthz"),
                ]),
                Duration::from_secs(3),
            )?;
            if out.stdout == b"200" {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("the agent was not healthy within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Number of daemons started so far; a daemon's index is the count before its start.
    pub fn daemons_len(&self) -> usize {
        self.daemons.len()
    }

    /// Stops daemon `index` (SIGTERM, 5 s grace) and returns its output.
    pub fn stop_daemon(&mut self, index: usize) -> Result<std::process::Output> {
        self.daemons.stop(index)
    }

    /// What daemon `index` has written to stderr so far (an agent's log), running or not.
    pub fn daemon_stderr(&self, index: usize) -> String {
        self.daemons.stderr(index)
    }

    /// Waits (at most `limit`) until daemon `index`'s stderr contains `text`; returns it.
    pub fn wait_for_log(&self, index: usize, text: &str, limit: Duration) -> Result<String> {
        self.daemons.wait_for_log(index, text, limit)
    }

    /// The process id of daemon `index`, if it runs.
    pub fn daemon_pid(&self, index: usize) -> Option<i32> {
        self.daemons.pid(index)
    }

    /// Kills daemon `index` with SIGKILL (no clean-up of its own) and returns its output.
    pub fn kill_daemon(&mut self, index: usize) -> Result<std::process::Output> {
        self.daemons[index].kill()
    }

    /// Starts dnsmasq at [`NAMESERVER_IP`] answering from `hosts` (an /etc/hosts-style file,
    /// re-read on SIGHUP, records with a TTL of `ttl` seconds) and nothing else. Writes a
    /// resolv.conf naming it into `dir` and returns its path and the daemon's index.
    pub fn start_nameserver(
        &mut self,
        dir: &Path,
        hosts: &Path,
        ttl: u32,
    ) -> Result<(PathBuf, usize)> {
        self.start_nameserver_at(dir, hosts, ttl, NAMESERVER_IP.into())
    }

    /// [`Lab::start_nameserver`] at `ip` (an IPv6 address for an IPv6-only pod: the
    /// client namespace's IPv6 must be on).
    pub fn start_nameserver_at(
        &mut self,
        dir: &Path,
        hosts: &Path,
        ttl: u32,
        ip: std::net::IpAddr,
    ) -> Result<(PathBuf, usize)> {
        let (family, prefix) = if ip.is_ipv6() {
            ("-6", 64)
        } else {
            ("-4", POD_PREFIX)
        };
        let mut add = vec![family, "addr", "add"];
        let addr = format!("{ip}/{prefix}");
        add.extend([addr.as_str(), "dev", "eth0"]);
        if ip.is_ipv6() {
            add.push("nodad");
        }
        self.client.ip(&add)?;
        let mut cmd = self.client.command("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-negcache",
            "--bind-interfaces",
            "--user=root",
            "--pid-file",
            "--log-facility=-",
        ])
        .arg(format!("--listen-address={ip}"))
        .arg(format!("--addn-hosts={}", hosts.display()))
        .arg(format!("--local-ttl={ttl}"));
        let index = self.daemons_len();
        self.spawn(cmd)?;
        let resolv_conf = dir.join("resolv.conf");
        std::fs::write(
            &resolv_conf,
            format!("nameserver {ip}\noptions timeout:1\n"),
        )?;
        let socket = std::net::SocketAddr::new(ip, 53);
        // Ready when it answers.
        for _ in 0..50 {
            let out = crate::netns::run_bounded(
                self.client
                    .command("ss")
                    .args(["-Hlun", &format!("src = {socket}")]),
                Duration::from_secs(3),
            )?;
            if !out.stdout.is_empty() {
                return Ok((resolv_conf, index));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("dnsmasq did not listen on {socket}")
    }

    /// Sends SIGHUP to daemon `index` (dnsmasq re-reads its hosts files and empties its cache).
    pub fn hangup_daemon(&self, index: usize) -> Result<()> {
        let pid = self
            .daemon_pid(index)
            .context("the daemon is not running")?;
        // SAFETY: a plain kill(2) of our own child.
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            bail!("kill -HUP {pid}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The pin directory of egress-router instance `instance` on the lab's bpffs.
    pub fn pin_dir(&self, instance: &str) -> PathBuf {
        self.bpffs.path().join(instance)
    }
}

/// The server side every lab shares: the gateway's `wan0` to the server's `eth0`, their
/// addresses, and the server's default route back through the gateway.
pub(crate) fn wire_server(gateway: &Netns, server: &Netns) -> Result<()> {
    gateway.ip(&[
        "link",
        "add",
        "wan0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        server.name(),
    ])?;
    addr_up(gateway, "wan0", GATEWAY_WAN_IP, SERVER_PREFIX)?;
    addr_up(server, "eth0", SERVER_IP, SERVER_PREFIX)?;
    server.ip(&[
        "route",
        "add",
        "default",
        "via",
        &GATEWAY_WAN_IP.to_string(),
    ])
}

pub(crate) fn addr_up(ns: &Netns, dev: &str, ip: Ipv4Addr, prefix: u8) -> Result<()> {
    ns.ip(&["addr", "add", &format!("{ip}/{prefix}"), "dev", dev])?;
    ns.ip(&["link", "set", dev, "up"])
}
