//! The node agent's loop: the spool directory read again and again, each registration
//! validated and matched to its router pod's host-side interface, the data plane brought
//! to what the spool says (instances added, changed, dropped), and the conntrack GC
//! ([`crate::agent::gc`], as the pod agent runs it).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use egress_common::{NODE_INSTANCES_MAX, NodeUplink, RouterConfig, RouterConfig6, config_flags};

use crate::{
    agent::gc::Collector,
    dataplane::{
        attach,
        load::{Dataplane, LoadOptions},
        programs::{Interfaces, Mode},
    },
    error_chain,
    network::{
        announce::{announce, announce6},
        interface::{ifname, link_facts},
        route::{keep_resolved, route_interface},
    },
    node::{
        configs::{NodeConfigs, check_ipv6, node_configs, sources},
        registration::{NodeInstance, Registration, read_spool},
        statics::{self, StaticInstance},
    },
};

/// When a new instance's address is announced again (a gratuitous ARP request after the
/// unsolicited reply, as OpenShift's router does).
const ANNOUNCE_AGAIN: Duration = Duration::from_millis(100);
/// When it is announced a last time: past a Linux neighbour's `locktime` (1 s by default),
/// within which it ignores a new MAC for an entry it just updated, as after traffic to
/// the old node moments before the failover (seen in the failover test).
const ANNOUNCE_LAST: Duration = Duration::from_millis(1100);

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
}

/// An instance being served: its registration as last applied (none for one adopted
/// from the pinned maps, until the spool is read), and its configuration.
#[derive(Clone, Debug)]
struct Served {
    registration: Option<Registration>,
    config: RouterConfig,
    /// Its IPv6 half (zero without IPv6).
    config6: RouterConfig6,
    /// The spool file it is served from.
    path: Option<PathBuf>,
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
    opts: NodeOptions,
    dp: Dataplane,
    uplink: u32,
    uplink_mtu: u32,
    uplink_mac: [u8; 6],
    /// By pod IP.
    served: BTreeMap<Ipv4Addr, Served>,
    /// Spool and static files refused, with the reason last logged (each reason is logged
    /// once).
    refused: HashMap<PathBuf, String>,
    /// Static instances' warnings already logged.
    warned: HashSet<String>,
    gc: Collector,
}

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
        loop {
            self.sync().await;
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
        for (path, read) in wanted {
            let valid = read.and_then(|r| {
                let resolved = r.resolved(&statics)?;
                let instance = resolved.validate()?;
                Ok((resolved, instance))
            });
            let (registration, instance) = match valid {
                Ok(valid) => valid,
                Err(err) => {
                    self.refuse(&path, error_chain(&err).to_string(), &mut seen);
                    continue;
                }
            };
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

    /// Serves one registration (new, changed or as it was). `Ok(false)`: the pod has no
    /// interface on this node (any more).
    async fn serve(
        &mut self,
        path: &Path,
        registration: Registration,
        instance: &NodeInstance,
    ) -> Result<bool> {
        let Some(host) = route_interface(IpAddr::V4(instance.pod_ip)).await? else {
            return Ok(false);
        };
        if host == self.uplink {
            bail!(
                "the pod IP {} is routed out of the uplink: the pod is not on this node",
                instance.pod_ip
            );
        }
        let (v4, v6) = (instance.egress.v4, instance.egress.v6);
        check_ipv6(instance, host, self.opts.ipv6).await?;
        let source = v4.map_or([0; 4], |v4| v4.source.ip.octets());
        let source6 = v6.map_or([0; 16], |v6| v6.source.ip.octets());
        let taken = self.served.iter().find(|(ip, s)| {
            **ip != instance.pod_ip
                && ((source != [0; 4] && s.config.egress_source == source)
                    || (source6 != [0; 16] && s.config6.egress_source == source6))
        });
        if let Some((other, _)) = taken {
            bail!("EGRESS_SOURCE is already served for the pod {other}");
        }
        let current = self.served.get(&instance.pod_ip);
        if let Some(current) = current
            && current.registration.as_ref() == Some(&registration)
            && current.config.host_ifindex() == host
        {
            return Ok(true);
        }
        let number = match current {
            Some(current) => current.config.instance,
            None => self.free_number()?,
        };
        let host_name = ifname(host).context("the pod's host-side interface vanished")?;
        let host_mtu = link_facts(&host_name).await?.mtu;
        let nat_secret =
            current.map_or_else(crate::instance::router::nat_secret, |c| c.config.nat_secret);
        let NodeConfigs {
            config,
            config6,
            hop,
            rules,
        } = node_configs(
            instance,
            number,
            [(host, host_mtu), (self.uplink, self.uplink_mtu)],
            nat_secret,
        );
        for gateway in [
            v4.map(|v4| IpAddr::V4(v4.gateway)),
            v6.map(|v6| IpAddr::V6(v6.gateway)),
        ]
        .into_iter()
        .flatten()
        {
            keep_resolved(self.uplink, gateway)
                .await
                .with_context(|| format!("resolving EGRESS_GATEWAY {gateway}"))?;
        }
        // The clsact of the host-side interface, if the tc attachment makes it now or did
        // for this instance before.
        let config = RouterConfig {
            flags: config.flags
                | attach::clsact_flags(
                    &Interfaces::host(&host_name),
                    current
                        .filter(|c| c.config.host_ifindex() == host)
                        .map_or(0, |c| c.config.flags),
                )?,
            ..config
        };
        // Attached before the instance is armed: until its configuration is written, the
        // program lets its packets into the pod as before.
        self.dp
            .attach(&Interfaces::host(&host_name), self.opts.ipv6)
            .with_context(|| format!("attaching to {host_name}"))?;
        self.dp
            .maps_mut()
            .configure_node(&config, &config6, &hop, &rules)
            .context("writing the instance's maps")?;
        let new = current.is_none();
        let moved = current.is_some_and(|c| c.config.host_ifindex() != host);
        if moved && let Some(old) = current {
            detach_host(&old.config)?;
        }
        self.served.insert(
            instance.pod_ip,
            Served {
                registration: Some(registration),
                config,
                config6,
                path: Some(path.to_owned()),
            },
        );
        tracing::info!(
            file = %path.display(),
            pod = %instance.pod_ip,
            source = %sources(&instance.egress),
            instance = number,
            interface = %host_name,
            "{}",
            if new { "serving a new instance" } else { "instance updated" }
        );
        if new && self.opts.arp {
            // The gateway learns the address at the uplink's MAC now, not at its next ARP
            // (after a failover: not after its entry for the old node has failed). In the
            // background, so that the other instances of this scan do not wait for the
            // second announcement.
            let (uplink, index, mac) = (self.opts.uplink.clone(), self.uplink, self.uplink_mac);
            let (ip, ip6) = (v4.map(|v4| v4.source.ip), v6.map(|v6| v6.source.ip));
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                for at in [Duration::ZERO, ANNOUNCE_LAST] {
                    tokio::time::sleep_until(started + at).await;
                    if let Some(ip) = ip
                        && let Err(err) = announce(&uplink, index, mac, ip, ANNOUNCE_AGAIN).await
                    {
                        tracing::warn!(error = %error_chain(&err), "announcing EGRESS_SOURCE");
                    }
                    if let Some(ip6) = ip6
                        && let Err(err) = announce6(&uplink, index, mac, ip6, ANNOUNCE_AGAIN).await
                    {
                        tracing::warn!(error = %error_chain(&err), "announcing EGRESS_SOURCE's IPv6 address");
                    }
                }
            });
        }
        Ok(true)
    }

    /// The lowest instance number no served instance has.
    fn free_number(&self) -> Result<u8> {
        (1..=NODE_INSTANCES_MAX)
            .filter_map(|n| u8::try_from(n).ok())
            .find(|n| !self.served.values().any(|s| s.config.instance == *n))
            .with_context(|| format!("the node serves {NODE_INSTANCES_MAX} instances already"))
    }

    fn drop_instance(&mut self, pod_ip: Ipv4Addr) -> Result<()> {
        let Some(served) = self.served.remove(&pod_ip) else {
            return Ok(());
        };
        self.dp.maps_mut().remove_node_instance(&served.config)?;
        detach_host(&served.config)?;
        tracing::info!(pod = %pod_ip, instance = served.config.instance, "instance dropped");
        Ok(())
    }
}

/// Detaches the programs of an instance's host-side interface, if it is still there (gone
/// with its pod, it took them along), and the clsact the agent made on it.
fn detach_host(config: &RouterConfig) -> Result<()> {
    if let Some(name) = ifname(config.host_ifindex()) {
        attach::detach_all(Mode::Node, &Interfaces::host(&name))?;
        attach::release_clsact(&name, config.flags & config_flags::CLSACT_POD_SIDE != 0)?;
    }
    Ok(())
}
