//! Two routers with one EGRESS_SOURCE in the two-node lab ([`crate::failover`]): both
//! router pods' macvlans on one segment, both with the stable MAC. What the switch sees
//! decides who owns the address: [`StableMacWatch`] counts, per node port, the frames that
//! come from the stable MAC.

use std::{
    net::Ipv4Addr,
    process::{Child, Output, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    failover::{FailoverLab, POD_A, POD_B, stable_mac_text},
    netns::{Netns, run_bounded, wait_bounded},
};

/// One of the lab's two routers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    A,
    B,
}

impl Node {
    /// The router pod's IP, which clients connect to.
    #[must_use]
    pub const fn pod(self) -> Ipv4Addr {
        match self {
            Self::A => POD_A,
            Self::B => POD_B,
        }
    }

    #[must_use]
    pub const fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    fn port(self) -> &'static str {
        match self {
            Self::A => "pA",
            Self::B => "pB",
        }
    }
}

/// The router pod's namespace on `node`.
pub fn router(lab: &FailoverLab, node: Node) -> Result<&Netns> {
    match node {
        Node::A => lab.router_a.as_ref().context("node A is gone"),
        Node::B => Ok(&lab.router_b),
    }
}

/// Starts the init container of the router pod on `node` (stable MAC), stderr piped.
pub fn spawn_init(lab: &FailoverLab, node: Node) -> Result<Child> {
    let bpffs = match node {
        Node::A => lab.bpffs_a().context("node A is gone")?,
        Node::B => lab.bpffs_b(),
    };
    FailoverLab::init_command(router(lab, node)?, bpffs, false)
        .spawn()
        .with_context(|| format!("init on node {node:?}"))
}

/// Runs the init container of the router pod on `node` to its end (at most 30 s).
pub fn init(lab: &FailoverLab, node: Node) -> Result<Output> {
    wait_bounded(spawn_init(lab, node)?, Duration::from_secs(30))
}

/// `egress-router teardown` in the router pod on `node`, as a pod's deletion would run it.
pub fn teardown(lab: &FailoverLab, node: Node) -> Result<()> {
    let bpffs = match node {
        Node::A => lab.bpffs_a().context("node A is gone")?,
        Node::B => lab.bpffs_b(),
    };
    let mut cmd = router(lab, node)?.command(crate::egress_router_bin());
    cmd.arg("teardown")
        .env_clear()
        .env("EGRESS_ROUTER_BPFFS", bpffs.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = run_bounded(&mut cmd, Duration::from_secs(30))?;
    if !out.status.success() {
        bail!(
            "teardown on node {node:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Counters on the switch of the frames each node port sends from the stable MAC.
pub struct StableMacWatch<'a> {
    switch: &'a Netns,
}

impl<'a> StableMacWatch<'a> {
    /// Adds the counters (nftables, bridge family, on every frame a port brings in).
    pub fn new(lab: &'a FailoverLab) -> Result<Self> {
        let stable = stable_mac_text();
        let rules = format!(
            "table bridge watch {{\n\
               counter from_pA {{ }}\n\
               counter from_pB {{ }}\n\
               counter broadcast_pA {{ }}\n\
               counter broadcast_pB {{ }}\n\
               chain in {{\n\
                 type filter hook prerouting priority -300; policy accept;\n\
                 iifname \"pA\" ether saddr {stable} counter name \"from_pA\"\n\
                 iifname \"pB\" ether saddr {stable} counter name \"from_pB\"\n\
                 iifname \"pA\" ether saddr {stable} ether daddr ff:ff:ff:ff:ff:ff counter name \"broadcast_pA\"\n\
                 iifname \"pB\" ether saddr {stable} ether daddr ff:ff:ff:ff:ff:ff counter name \"broadcast_pB\"\n\
               }}\n\
             }}\n"
        );
        lab.switch.nft(&rules, "the watch counters")?;
        Ok(Self {
            switch: &lab.switch,
        })
    }

    /// Frames from the stable MAC that came in from `node`'s port so far.
    pub fn frames(&self, node: Node) -> Result<u64> {
        self.counter(&format!("from_{}", node.port()))
    }

    /// The broadcasts among [`StableMacWatch::frames`].
    pub fn broadcasts(&self, node: Node) -> Result<u64> {
        self.counter(&format!("broadcast_{}", node.port()))
    }

    fn counter(&self, name: &str) -> Result<u64> {
        let out = run_bounded(
            self.switch
                .command("nft")
                .args(["-j", "list", "counter", "bridge", "watch", name]),
            Duration::from_secs(5),
        )?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("nft's counter as JSON")?;
        v["nftables"]
            .as_array()
            .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
            .with_context(|| format!("counter {name} in {v}"))
    }
}

/// The switch's forwarding entry for the stable MAC: the port it sends the MAC's frames
/// to, or None.
pub fn stable_mac_port(lab: &FailoverLab) -> Result<Option<String>> {
    let out = run_bounded(
        lab.switch
            .command("bridge")
            .args(["-j", "fdb", "show", "br", "br0"]),
        Duration::from_secs(5),
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let stable = stable_mac_text();
    Ok(v.as_array().and_then(|entries| {
        entries
            .iter()
            .find(|e| e["mac"].as_str() == Some(stable.as_str()))
            .and_then(|e| e["ifname"].as_str().map(str::to_owned))
    }))
}

/// A counter of `egress-router stats` in the router pod on `node` (a path's packets, or
/// `drop:<reason>`).
pub fn stat(lab: &FailoverLab, node: Node, name: &str) -> Result<u64> {
    let bpffs = match node {
        Node::A => lab.bpffs_a().context("node A is gone")?,
        Node::B => lab.bpffs_b(),
    };
    let mut cmd = router(lab, node)?.command(crate::egress_router_bin());
    cmd.arg("stats")
        .env_clear()
        .env("EGRESS_ROUTER_BPFFS", bpffs.path());
    let out = run_bounded(&mut cmd, Duration::from_secs(10))?;
    if !out.status.success() {
        bail!(
            "stats on node {node:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(name)).then(|| words.next()?.parse().ok())?
        })
        .with_context(|| format!("{name} in the stats of node {node:?}: {text}"))
}

/// Sends `count` ARP frames for EGRESS_SOURCE from the gateway's `lan0` (a host on the
/// egress network), as fast as a raw socket takes them, from MAC `mac` with sender address
/// `sender` (0.0.0.0: a probe, RFC 5227; EGRESS_SOURCE: a claim), a request or a `reply`,
/// and the claim `trailer` after the ARP payload if given.
pub fn send_arp(
    lab: &FailoverLab,
    count: u32,
    mac: [u8; 6],
    sender: Ipv4Addr,
    reply: bool,
    trailer: Option<[u8; 16]>,
) -> Result<()> {
    let ip = crate::lab::EGRESS_SOURCE.octets();
    let arp = etherparse::ArpEthIpv4Packet {
        operation: if reply {
            etherparse::ArpOperation::REPLY
        } else {
            etherparse::ArpOperation::REQUEST
        },
        sender_mac: mac,
        sender_ipv4: sender.octets(),
        target_mac: [0; 6],
        target_ipv4: ip,
    };
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&0x0806u16.to_be_bytes());
    frame.extend_from_slice(&arp.to_bytes());
    if let Some(trailer) = trailer {
        frame.extend_from_slice(&trailer);
    }
    frame.resize(frame.len().max(60), 0);
    lab.gateway.enter(|| -> Result<()> {
        let socket = egress_user::network::packet::PacketSocket::bind(
            egress_user::network::interface::ifindex("lan0").context("lan0")?,
            0x0806,
            egress_user::network::packet::Framing::Raw,
        )?;
        for _ in 0..count {
            socket.send(&frame, None)?;
        }
        Ok(())
    })?
}

/// A router pod's agent (`EGRESS_ROUTER_MODE=legacy`: set-up, then the agent) on `node`,
/// killed on Drop; its stderr in a file.
pub struct Agent {
    child: Option<std::process::Child>,
    log: std::path::PathBuf,
}

impl Agent {
    pub fn spawn(lab: &FailoverLab, node: Node) -> Result<Self> {
        let bpffs = match node {
            Node::A => lab.bpffs_a().context("node A is gone")?,
            Node::B => lab.bpffs_b(),
        };
        let log =
            std::env::temp_dir().join(format!("{}-agent-{node:?}.err", router(lab, node)?.name()));
        let stderr = std::fs::File::create(&log).context("the agent's log")?;
        let mut cmd = FailoverLab::init_command(router(lab, node)?, bpffs, false);
        cmd.env("EGRESS_ROUTER_MODE", "legacy").stderr(stderr);
        let child = cmd.spawn().context("the agent")?;
        Ok(Self {
            child: Some(child),
            log,
        })
    }

    /// Its stderr so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log holds `text` (at most `limit`).
    pub fn wait_for_log(&self, text: &str, limit: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + limit;
        while !self.log().contains(text) {
            if std::time::Instant::now() > deadline {
                bail!("no {text:?} in the agent's log: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Waits for its exit (at most `limit`): its exit code, or None if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<Option<i32>> {
        let deadline = std::time::Instant::now() + limit;
        let child = self.child.as_mut().context("already waited for")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(Some(status.code().unwrap_or(-1)));
            }
            if std::time::Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Cuts `node`'s port off the switch (frames in and out dropped, the link stays up), as a
/// partition of the egress network would; [`heal`] ends it.
pub fn partition(lab: &FailoverLab, node: Node) -> Result<()> {
    let port = node.port();
    let rules = format!(
        "table bridge partition {{\n\
           chain forward {{\n\
             type filter hook forward priority -200; policy accept;\n\
             iifname \"{port}\" drop\n\
             oifname \"{port}\" drop\n\
           }}\n\
         }}\n"
    );
    lab.switch.nft(&rules, "the partition")?;
    Ok(())
}

/// Ends the [`partition`].
pub fn heal(lab: &FailoverLab) -> Result<()> {
    let out = run_bounded(
        lab.switch
            .command("nft")
            .args(["delete", "table", "bridge", "partition"]),
        Duration::from_secs(5),
    )?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
