//! The node agent's loop: the spool directory read again and again, each registration
//! validated and matched to its router pod's host-side interface, the data plane brought
//! to what the spool says (instances added, changed, dropped), and the conntrack GC
//! ([`crate::agent::gc`], as the pod agent runs it).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use egress_common::{NODE_INSTANCES_MAX, NodeUplink, RouterConfig, RouterConfig6};

use crate::{
    agent::gc::Collector,
    dataplane::{
        attach,
        load::{Dataplane, LoadOptions},
        programs::{Interfaces, Mode},
    },
    error_chain,
    network::{interface::link_facts, route::REFRESH},
    node::{
        registration::{NodeInstance, Registration, read_spool},
        statics::{self, StaticInstance},
    },
};

/// When a new instance's address is announced again (a gratuitous ARP request after the
/// unsolicited reply, as OpenShift's router does).
pub(super) const ANNOUNCE_AGAIN: Duration = Duration::from_millis(100);
/// When it is announced a last time: past a Linux neighbour's `locktime` (1 s by default),
/// within which it ignores a new MAC for an entry it just updated, as after traffic to
/// the old node moments before the failover (seen in the failover test).
pub(super) const ANNOUNCE_LAST: Duration = Duration::from_millis(1100);

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The node's interface toward the egress network.
    pub uplink: String,
    /// Where router pods register (a hostPath both mount).
    pub spool: PathBuf,
    /// Static instances that registrations may name (a ConfigMap directory).
    pub instances: Option<PathBuf>,
    /// The node's pin directory on a persistent bpffs, if any.
    pub pin_dir: Option<PathBuf>,
    pub conntrack_flows: u32,
    /// Answer ARP and neighbour solicitations for the egress addresses (off in cloud mode).
    pub arp: bool,
    /// Serve IPv6 (the IPv6 tables sized): instances with an IPv6 EGRESS_SOURCE.
    pub ipv6: bool,
    /// How often the spool is read.
    pub rescan: Duration,
    /// Longest interval between conntrack GC passes.
    pub gc_max_interval: Duration,
    /// Flows one client may hold on the node (`None`: a quarter of the conntrack
    /// capacity; 0: no limit).
    pub max_flows_per_source: Option<u32>,
    /// The kernel keeps managed neighbour entries resolved (Linux 5.16); without them the
    /// agent asks it to resolve each gateway again every [`REFRESH`].
    pub managed_neighbours: bool,
}

/// An instance being served: its registration as last applied (none for one adopted
/// from the pinned maps, until the spool is read), and its configuration.
#[derive(Clone, Debug)]
pub(super) struct Served {
    pub(super) registration: Option<Registration>,
    pub(super) config: RouterConfig,
    /// Its IPv6 half (zero without IPv6).
    pub(super) config6: RouterConfig6,
    /// The spool file it is served from.
    pub(super) path: Option<PathBuf>,
}

/// A task that ends with its holder.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The agent: the node's data plane and what it serves.
pub struct NodeAgent {
    pub(super) opts: NodeOptions,
    pub(super) dp: Dataplane,
    pub(super) uplink: u32,
    pub(super) uplink_mtu: u32,
    pub(super) uplink_mac: [u8; 6],
    /// By pod IP.
    pub(super) served: BTreeMap<Ipv4Addr, Served>,
    /// Spool and static files refused, with the reason last logged (each reason is logged
    /// once).
    pub(super) refused: HashMap<PathBuf, String>,
    /// Static instances' warnings already logged.
    pub(super) warned: HashSet<String>,
    /// Addresses another host held when last probed for, with when and the refusal:
    /// probed again only after [`PROBE_AGAIN`], so that registrations for held
    /// addresses cannot keep the spool loop probing.
    pub(super) held: BTreeMap<std::net::IpAddr, (tokio::time::Instant, String)>,
    /// Addresses found free by the last probes, with when.
    pub(super) free: BTreeMap<std::net::IpAddr, tokio::time::Instant>,
    pub(super) gc: Collector,
}

/// How long an address another host held is not probed for again.
pub(super) const PROBE_AGAIN: Duration = Duration::from_secs(10);

/// How long an address found free counts as free: the probes of one spool read serve it.
pub(super) const FOUND_FREE: Duration = Duration::from_secs(2);

impl NodeAgent {
    /// Loads and attaches the node's data plane, and takes over the instances a previous
    /// agent left in its pinned maps (their flows go on).
    pub async fn start(opts: NodeOptions) -> Result<Self> {
        let uplink = link_facts(&opts.uplink)
            .await
            .with_context(|| format!("the uplink {}", opts.uplink))?;
        let Some(mac) = uplink.mac else {
            bail!("the uplink {} has no MAC address", opts.uplink);
        };
        std::fs::create_dir_all(&opts.spool)
            .with_context(|| format!("creating the spool {}", opts.spool.display()))?;
        let mut dp = Dataplane::load_for(
            Mode::Node,
            &LoadOptions {
                conntrack_flows: opts.conntrack_flows,
                pin_dir: opts.pin_dir.clone(),
                ipv6: opts.ipv6,
            },
        )
        .context("loading the node data plane")?;
        // The uplink's clsact, if the tc attachment makes it now or an earlier agent did.
        let running = dp.maps().node_uplink()?;
        let flags =
            attach::clsact_flags(&Interfaces::uplink(&opts.uplink), u32::from(running.flags))?;
        dp.maps_mut().set_node_uplink(&NodeUplink {
            mac,
            arp: u8::from(opts.arp),
            flags: flags as u8,
            ifindex: uplink.index,
        })?;
        dp.attach(&Interfaces::uplink(&opts.uplink), opts.ipv6)
            .with_context(|| format!("attaching to the uplink {}", opts.uplink))?;
        let mut served = BTreeMap::new();
        for config in dp.maps().node_instances()? {
            let config6 = dp.maps().node_config6(config.instance)?;
            let pod = Ipv4Addr::from(config.pod_ip);
            served.insert(
                pod,
                Served {
                    registration: None,
                    config,
                    config6,
                    path: None,
                },
            );
            tracing::info!(%pod, "instance adopted from the pinned maps");
        }
        let gc = Collector::new(opts.gc_max_interval, opts.max_flows_per_source);
        Ok(Self {
            opts,
            dp,
            uplink: uplink.index,
            uplink_mtu: uplink.mtu,
            uplink_mac: mac,
            served,
            refused: HashMap::new(),
            warned: HashSet::new(),
            held: BTreeMap::new(),
            free: BTreeMap::new(),
            gc,
        })
    }

    /// Serves until `stop` resolves; with `metrics`, `/metrics` and `/healthz` there too.
    pub async fn run(
        mut self,
        stop: impl std::future::Future<Output = ()>,
        metrics: Option<tokio::net::TcpListener>,
    ) -> Result<()> {
        let _metrics = match metrics {
            Some(listener) => {
                let shared = std::sync::Arc::new(crate::node::metrics::NodeShared {
                    maps: self.dp.maps().reopen()?,
                    uplink: self.opts.uplink.clone(),
                });
                Some(AbortOnDrop(tokio::spawn(crate::node::metrics::serve(
                    listener, shared,
                ))))
            }
            None => None,
        };
        tokio::pin!(stop);
        let mut refreshed = std::time::Instant::now();
        loop {
            self.sync().await;
            if !self.opts.managed_neighbours && refreshed.elapsed() >= REFRESH {
                refreshed = std::time::Instant::now();
                self.refresh_gateways().await;
            }
            if self.gc.due() {
                // On a node, a client's flows to every instance count together for the
                // per-client limit (the tables are shared).
                self.gc.pass(&mut self.dp, self.opts.ipv6);
            }
            tokio::select! {
                () = &mut stop => return Ok(()),
                () = tokio::time::sleep(self.opts.rescan) => {}
            }
        }
    }

    /// The data plane, for inspection.
    #[must_use]
    pub fn dataplane(&self) -> &Dataplane {
        &self.dp
    }

    /// Brings the data plane to what the spool says, one instance at a time: an instance
    /// that cannot be served is logged and left out, the others go on.
    pub async fn sync(&mut self) {
        let wanted = match read_spool(&self.opts.spool, 4 * NODE_INSTANCES_MAX as usize) {
            Ok(wanted) => wanted,
            Err(err) => {
                tracing::warn!(error = %error_chain(&err), "reading the spool");
                return;
            }
        };
        let statics = self.read_statics();
        let mut seen = BTreeMap::new();
        let mut valid = Vec::new();
        for (path, read) in wanted {
            let checked = read.and_then(|r| {
                let resolved = r.resolved(&statics)?;
                let instance = resolved.validate()?;
                Ok((resolved, instance))
            });
            match checked {
                Ok((registration, instance)) => valid.push((path, registration, instance)),
                Err(err) => self.refuse(&path, error_chain(&err).to_string(), &mut seen),
            }
        }
        // The addresses not served yet, probed for all at once (250 ms for any number).
        let instances: Vec<&NodeInstance> = valid.iter().map(|(_, _, i)| i).collect();
        self.probe_new(&instances).await;
        for (path, registration, instance) in valid {
            match self.serve(&path, registration, &instance).await {
                Ok(true) => {
                    self.refused.remove(&path);
                    seen.insert(instance.pod_ip, ());
                }
                // The pod's interface is gone: the pod is, and its file goes too.
                Ok(false) => {
                    tracing::info!(file = %path.display(), "router pod gone; its registration removed");
                    let _ = std::fs::remove_file(&path);
                    // The pod's own directory, if it had one (left empty).
                    if let Some(dir) = path.parent().filter(|d| *d != self.opts.spool) {
                        let _ = std::fs::remove_dir(dir);
                    }
                }
                Err(err) => self.refuse(&path, error_chain(&*err).to_string(), &mut seen),
            }
        }
        let gone: Vec<Ipv4Addr> = self
            .served
            .keys()
            .filter(|ip| !seen.contains_key(*ip))
            .copied()
            .collect();
        for pod_ip in gone {
            if let Err(err) = self.drop_instance(pod_ip) {
                tracing::warn!(pod = %pod_ip, error = %error_chain(&*err), "dropping an instance");
            }
        }
    }

    /// Logs why `path` cannot be served (once per reason). An instance already served
    /// from it stays as it was (`seen`): a bad update changes nothing, as a rejected
    /// reload does in pod mode.
    fn refuse(&mut self, path: &Path, reason: String, seen: &mut BTreeMap<Ipv4Addr, ()>) {
        if self.refused.get(path) != Some(&reason) {
            tracing::error!(file = %path.display(), %reason, "registration refused");
            self.refused.insert(path.to_owned(), reason);
        }
        for (pod_ip, served) in &self.served {
            if served.path.as_deref() == Some(path) {
                seen.insert(*pod_ip, ());
            }
        }
    }

    /// The static instances (`--instances`), their files' problems and warnings logged
    /// once each.
    fn read_statics(&mut self) -> BTreeMap<String, StaticInstance> {
        let Some(dir) = &self.opts.instances else {
            return BTreeMap::new();
        };
        let (found, failed) = statics::read_dir(dir);
        for (path, reason) in failed {
            if self.refused.get(&path) != Some(&reason) {
                tracing::error!(file = %path.display(), %reason, "static instance refused");
                self.refused.insert(path, reason);
            }
        }
        for instance in found.values() {
            for warning in &instance.warnings {
                let said = format!("{}: {warning}", instance.name);
                if self.warned.insert(said) {
                    tracing::warn!(instance = %instance.name, %warning, "static instance");
                }
            }
        }
        found
    }
}
