//! One instance of the node agent's: served (its host-side interface found, its gateways
//! kept resolved, its programs attached and its maps written, its address announced),
//! changed, dropped; and the gateways resolved again where the kernel cannot keep them so.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use egress_common::{NODE_INSTANCES_MAX, RouterConfig, config_flags};

use crate::{
    dataplane::{
        attach,
        programs::{Interfaces, Mode},
    },
    error_chain,
    network::{
        announce::{announce, announce6},
        claim::who,
        interface::{ifname, link_facts},
        mac::mac_text,
        probe::{Probe, new_claim, probe},
        probe6::probe6,
        route::{keep_resolved, route_interface, use_neighbour},
    },
    node::{
        agent::{ANNOUNCE_AGAIN, ANNOUNCE_LAST, FOUND_FREE, NodeAgent, PROBE_AGAIN, Served},
        configs::{NodeConfigs, check_ipv6, node_configs, sources},
        registration::{NodeInstance, Registration},
    },
};

impl NodeAgent {
    /// Asks the kernel to resolve every served instance's gateway again (where it has no
    /// managed neighbours to do it by itself).
    pub(super) async fn refresh_gateways(&self) {
        let mut gateways = BTreeSet::new();
        for served in self.served.values() {
            let instance = served.config.instance;
            if let Ok(hop) = self.dp.maps().node_hop(instance) {
                let v4 = Ipv4Addr::from(hop.next_hop[1].to_ne_bytes());
                if !v4.is_unspecified() {
                    gateways.insert(IpAddr::V4(v4));
                }
            }
            let v6 = std::net::Ipv6Addr::from(served.config6.next_hop_addr());
            if !v6.is_unspecified() {
                gateways.insert(IpAddr::V6(v6));
            }
        }
        for gateway in gateways {
            if let Err(err) = use_neighbour(self.uplink, gateway).await {
                tracing::warn!(%gateway, error = %error_chain(&err), "resolving a gateway again");
            }
        }
    }

    /// Serves one registration (new, changed or as it was). `Ok(false)`: the pod has no
    /// interface on this node (any more).
    pub(super) async fn serve(
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
        // An address the node does not serve yet is probed for first, as a router pod
        // probes: another node, router pod or host that holds it keeps it.
        let new4 = v4
            .map(|v4| v4.source.ip)
            .filter(|ip| current.is_none_or(|c| c.config.egress_source != ip.octets()));
        let new6 = v6
            .map(|v6| v6.source.ip)
            .filter(|ip| current.is_none_or(|c| c.config6.egress_source != ip.octets()));
        if self.opts.arp && (new4.is_some() || new6.is_some()) {
            self.check_free(new4, new6).await?;
        }
        let current = self.served.get(&instance.pod_ip);
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
            let kept = if self.opts.managed_neighbours {
                keep_resolved(self.uplink, gateway).await
            } else {
                use_neighbour(self.uplink, gateway).await
            };
            kept.with_context(|| format!("resolving EGRESS_GATEWAY {gateway}"))?;
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
                        && let Err(err) =
                            announce(&uplink, index, mac, ip, ANNOUNCE_AGAIN, None).await
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

    /// The addresses of `instances` the node does not serve yet, probed for on the uplink
    /// all at once: each found free or held (with the refusal), for [`Self::check_free`].
    pub(super) async fn probe_new(&mut self, instances: &[&NodeInstance]) {
        if !self.opts.arp {
            return;
        }
        let now = tokio::time::Instant::now();
        self.held.retain(|_, (at, _)| now < *at + PROBE_AGAIN);
        self.free.retain(|_, at| now < *at + FOUND_FREE);
        let served: BTreeSet<IpAddr> = self
            .served
            .values()
            .flat_map(|s| {
                [
                    IpAddr::V4(s.config.egress_source.into()),
                    IpAddr::V6(s.config6.egress_source.into()),
                ]
            })
            .collect();
        let wanted: BTreeSet<IpAddr> = instances
            .iter()
            .flat_map(|i| {
                [
                    i.egress.v4.map(|v4| IpAddr::V4(v4.source.ip)),
                    i.egress.v6.map(|v6| IpAddr::V6(v6.source.ip)),
                ]
            })
            .flatten()
            .filter(|ip| {
                !served.contains(ip) && !self.held.contains_key(ip) && !self.free.contains_key(ip)
            })
            .collect();
        self.probe_addresses(wanted).await;
    }

    /// Probes for `ips` on the uplink all at once, from the uplink's MAC: each recorded as
    /// free or held (with the refusal).
    async fn probe_addresses(&mut self, ips: BTreeSet<IpAddr>) {
        let now = tokio::time::Instant::now();
        let (index, mac) = (self.uplink, self.uplink_mac);
        let claim = new_claim();
        let mut probes = tokio::task::JoinSet::new();
        for ip in ips {
            probes.spawn_blocking(move || {
                let found = match ip {
                    IpAddr::V4(v4) => probe(index, mac, v4, Probe::default(), claim),
                    IpAddr::V6(v6) => probe6(index, mac, v6, Probe::default(), claim),
                };
                (ip, found)
            });
        }
        while let Some(done) = probes.join_next().await {
            let Ok((ip, found)) = done else { continue };
            match found {
                Ok(None) => {
                    self.free.insert(ip, now);
                }
                Ok(Some(holder)) => {
                    let refusal = crate::network::error::Error::SourceInUse {
                        ip,
                        mac: mac_text(holder.mac),
                        iface: self.opts.uplink.clone(),
                        who: who(&holder, claim),
                    }
                    .to_string();
                    self.held.insert(ip, (now, refusal));
                }
                Err(err) => tracing::warn!(
                    %ip,
                    error = %error_chain(&err),
                    "probing for EGRESS_SOURCE on the uplink"
                ),
            }
        }
    }

    /// Fails if another host answers for `v4` or `v6` on the uplink, as
    /// [`Self::probe_new`] found (an address it did not probe is probed now). An address
    /// found held is not probed again for [`PROBE_AGAIN`]: the refusal stands meanwhile.
    async fn check_free(&mut self, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Result<()> {
        let ips: Vec<IpAddr> = [v4.map(IpAddr::V4), v6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
            .collect();
        let now = tokio::time::Instant::now();
        let unknown: BTreeSet<IpAddr> = ips
            .iter()
            .filter(|ip| {
                self.free.get(ip).is_none_or(|at| now >= *at + FOUND_FREE)
                    && self
                        .held
                        .get(ip)
                        .is_none_or(|(at, _)| now >= *at + PROBE_AGAIN)
            })
            .copied()
            .collect();
        if !unknown.is_empty() {
            self.probe_addresses(unknown).await;
        }
        for ip in &ips {
            if let Some((at, refusal)) = self.held.get(ip)
                && now < *at + PROBE_AGAIN
            {
                bail!("{refusal}");
            }
        }
        Ok(())
    }

    /// The lowest instance number no served instance has.
    fn free_number(&self) -> Result<u8> {
        (1..=NODE_INSTANCES_MAX)
            .filter_map(|n| u8::try_from(n).ok())
            .find(|n| !self.served.values().any(|s| s.config.instance == *n))
            .with_context(|| format!("the node serves {NODE_INSTANCES_MAX} instances already"))
    }

    pub(super) fn drop_instance(&mut self, pod_ip: Ipv4Addr) -> Result<()> {
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
