//! Setting an instance up, in an order that changes nothing until every check that can fail
//! without side effects has passed (interfaces resolved, BPF object verified).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use egress_common::{Claim, ClaimId, RouterConfig6, config_flags};
use etherparse::ArpOperation;

use crate::{
    config::fields::Egress,
    dataplane::{attach, handover::Handover, load, programs::Interfaces, rules::RuleSet},
    instance::{
        Instance,
        claim::{ClaimWatch, Rival, ktime_ns, stepped_down},
        clients::client_nets,
        router::{nat_secret, router_config, router_config6},
        set_fallback,
        teardown::Teardown,
    },
    network::{
        announce::{announce_once, announce6_once},
        error::Error as NetworkError,
        interface::{interface_facts, link_facts},
        mac::stable_mac,
        plan::{Applied, MacvlanMode, NetworkPlan, owner_alias},
        probe::{Probe, new_claim},
    },
};

/// Errors of the set-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pod interface")]
    PodInterface(#[source] NetworkError),
    #[error("egress interface")]
    EgressInterface(#[source] NetworkError),
    #[error("network set-up")]
    Network(#[source] NetworkError),
    #[error("data plane")]
    Dataplane(#[from] load::Error),
    #[error("a rule sends to {0}, the pod IP: it would loop back into the router pod")]
    LoopsBack(IpAddr),
}

impl From<crate::dataplane::maps::Error> for Error {
    fn from(err: crate::dataplane::maps::Error) -> Self {
        Self::Dataplane(err.into())
    }
}

/// Everything about an instance that is not in the OpenShift variables.
#[derive(Clone, Debug)]
pub struct Settings {
    pub pod_interface: String,
    pub egress_interface: String,
    /// Create the egress interface as a macvlan on this parent when it does not exist.
    pub macvlan_parent: Option<String>,
    pub macvlan_mode: MacvlanMode,
    /// Root of the per-instance pin directories.
    pub bpffs_root: PathBuf,
    /// The instance's name: its pin directory below the root.
    pub instance: String,
    pub conntrack_flows: u32,
    /// `--client-cidrs`: the networks clients come from (empty: any that can be a client).
    pub client_cidrs: Vec<(IpAddr, u8)>,
    /// Per-packet events through aya-log.
    pub debug: bool,
    /// Delay of the gratuitous ARP request after the unsolicited reply.
    pub arp_request_after: Duration,
    /// TCP ports on the pod IP served by the agent itself (metrics, health): delivered to
    /// the pod even when a fallback takes everything else.
    pub local_tcp_ports: Vec<u16>,
    /// Give the egress interface the MAC derived from EGRESS_SOURCE (else keep its own).
    pub stable_mac: bool,
    /// Claim EGRESS_SOURCE even when another host answers for it.
    pub force_source: bool,
}

impl Settings {
    /// The plan of the egress interface: EGRESS_SOURCE and the routes via the gateways.
    #[must_use]
    pub fn network_plan(&self, egress: &Egress) -> NetworkPlan {
        NetworkPlan {
            egress_interface: self.egress_interface.clone(),
            macvlan_parent: self.macvlan_parent.clone(),
            macvlan_mode: self.macvlan_mode,
            v4: egress.v4,
            v6: egress.v6,
            owner: owner_alias(&self.instance),
            mac: self.stable_mac.then(|| stable_mac(egress.mac_address())),
        }
    }
}

impl Instance {
    /// Sets the data plane up in the current network namespace with `rules`, taking over
    /// the maps of one already running there (attached to the pod interface, or pinned for
    /// the instance) so that a restart or an upgrade keeps every flow. With `network`, the
    /// egress interface is set up too (EGRESS_SOURCE, routes, announcement); without, it is
    /// taken as an init container left it.
    pub async fn start(
        settings: &Settings,
        egress: &Egress,
        network: bool,
        rules: RuleSet,
    ) -> Result<Self, Error> {
        let source = egress.mac_address();
        // Checks without side effects first.
        let pod = interface_facts(&settings.pod_interface)
            .await
            .map_err(Error::PodInterface)?;
        // IPv4 clients reach the router at the pod's IPv4 address (none is needed, nor
        // used, by an instance with IPv6 alone).
        let pod_ip = match egress.v4 {
            Some(_) => *pod.ipv4.first().ok_or_else(|| {
                Error::PodInterface(NetworkError::NoIpv4(settings.pod_interface.clone()))
            })?,
            None => pod.ipv4.first().copied().unwrap_or(Ipv4Addr::UNSPECIFIED),
        };
        // IPv6 clients reach the router at the pod's global IPv6 address.
        let pod_ip6 = match egress.v6 {
            Some(_) => Some(*pod.ipv6.first().ok_or_else(|| {
                Error::PodInterface(NetworkError::NoIpv6(settings.pod_interface.clone()))
            })?),
            None => None,
        };
        let remotes = rules
            .rules
            .iter()
            .filter(|(_, target)| !target.is_local() && !target.by_name())
            .map(|(_, target)| IpAddr::from(target.remote_ip))
            .chain(rules.fallback.map(IpAddr::V4));
        let remotes6 = rules
            .rules6
            .iter()
            .filter(|(_, target)| !target.is_local() && !target.by_name())
            .map(|(_, target)| IpAddr::from(target.remote_ip))
            .chain(rules.fallback6.map(IpAddr::V6));
        let pod_ips: Vec<IpAddr> = pod
            .ipv4
            .iter()
            .map(|&ip| IpAddr::V4(ip))
            .chain(pod.ipv6.iter().map(|&ip| IpAddr::V6(ip)))
            .collect();
        if let Some(ip) = remotes.chain(remotes6).find(|ip| pod_ips.contains(ip)) {
            return Err(Error::LoopsBack(ip));
        }
        let started = std::time::Instant::now();
        let phase = |name: &str| {
            tracing::debug!(ms = started.elapsed().as_millis() as u64, "set-up: {name}");
        };
        // Two checks at once, as both take a while and change nothing that stays: that no
        // other host holds EGRESS_SOURCE (the ARP probe, 250 ms), and loading the BPF
        // object (maps created, programs verified). The probe carries this router's claim
        // (instance/claim.rs), new unless the running data plane has one.
        let mut claim = new_claim();
        let probe = match network {
            true if settings.force_source => {
                tracing::warn!(%source, "EGRESS_SOURCE claimed without checking for another holder");
                None
            }
            true => Some(settings.network_plan(egress)),
            false => None,
        };
        let mut handover = Handover::prepare(
            &settings.bpffs_root,
            &settings.instance,
            &settings.pod_interface,
        );
        let new_pin_dir = handover
            .pin_dir()
            .filter(|dir| !dir.exists())
            .map(Path::to_owned);
        let flows = settings.conntrack_flows;
        let ipv6 = egress.v6.is_some();
        let (free, loaded) = tokio::join!(
            async {
                match &probe {
                    Some(plan) => plan.check_source_free(Probe::default(), claim).await,
                    None => Ok(()),
                }
            },
            tokio::task::spawn_blocking(move || {
                let loaded = handover.load(flows, ipv6);
                (handover, loaded)
            }),
        );
        let (handover, loaded) = loaded.map_err(|err| Error::Dataplane(load::Error::Task(err)))?;
        if let Err(err) = free {
            // The pins this load made go with it: nothing stays.
            drop(loaded);
            if let Some(dir) = new_pin_dir {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(Error::Network(err));
        }
        let mut dataplane = loaded?;
        // A running data plane's claim stays (a restart, an upgrade): the address has been
        // held since it was made. Not the claim of pins alone, which an earlier pod left
        // when it went: the address was let go since.
        if handover.takes_over_attached()
            && let Some(running) = dataplane.maps().claim()?.filter(|c| c.claimed_at_ms != 0)
        {
            claim = running.id();
        }
        phase("EGRESS_SOURCE free, BPF object loaded");

        // Now change the system: network, maps, attachments.
        let applied = match network {
            true => Some(
                settings
                    .network_plan(egress)
                    .apply()
                    .await
                    .map_err(Error::Network)?,
            ),
            false => None,
        };
        phase("network applied");
        let egress_facts = interface_facts(&settings.egress_interface)
            .await
            .map_err(Error::EgressInterface)?;
        let source4 = egress.v4.map_or(Ipv4Addr::UNSPECIFIED, |v4| v4.source.ip);
        let mut router = router_config(source4, pod_ip, &pod, &egress_facts, settings.debug);
        // The port-choice key of the running data plane, so that its flows are re-created
        // with the same translation; a new one for a new data plane.
        let running = dataplane.maps().config()?;
        router.nat_secret = match running {
            Some(running) if running.nat_secret != 0 => running.nat_secret,
            _ => nat_secret(),
        };
        let interfaces = Interfaces::pod(&settings.pod_interface, &settings.egress_interface);
        // The clsact qdiscs the tc attachment makes are recorded as ours, for teardown.
        router.flags |= attach::clsact_flags(&interfaces, running.map_or(0, |r| r.flags))?;
        let mut router6 = match (egress.v6, pod_ip6) {
            (Some(v6), Some(pod_ip6)) => {
                router.flags |= config_flags::IPV6;
                router_config6(&v6, pod_ip6, &pod, &egress_facts)
            }
            _ => RouterConfig6::default(),
        };
        set_fallback(&mut router, &mut router6, &rules);
        // New flows only from where clients can be (the client networks written before the
        // configuration that arms the check).
        router.flags |= config_flags::CHECK_SOURCES;
        dataplane.maps_mut().set_client_nets(&client_nets(
            &settings.client_cidrs,
            egress,
            &pod_ips,
        ))?;
        let ipv6 = router.flags & config_flags::IPV6 != 0;
        let rules = rules.with_local(&settings.local_tcp_ports, ipv6);
        let (rules, rules6) =
            dataplane
                .maps_mut()
                .configure_dual(&router, &router6, &rules.rules, &rules.rules6)?;
        // The claim before the programs: from their attachment on, they answer probes for
        // EGRESS_SOURCE with it.
        let egress_mac = match &applied {
            Some(applied) => applied.egress_mac,
            None => link_facts(&settings.egress_interface)
                .await
                .map_err(Error::EgressInterface)?
                .mac
                .unwrap_or_default(),
        };
        dataplane.maps_mut().set_claim(claim, egress_mac)?;
        let attached_at = ktime_ns();
        dataplane.attach(&interfaces, ipv6)?;
        if let Some(copied) = dataplane.finish_migration()? {
            tracing::info!(
                copied,
                "conntrack of an earlier layout: flows created during the hand-over copied too"
            );
        }
        let handover = handover.finish();
        phase("attached");

        if applied.is_some() && egress.v4.is_none() {
            tracing::warn!(
                "EGRESS_SOURCE is IPv6 alone: another router with it is found by the probe at \
                 start, not while both run (the claim is carried in ARP)"
            );
        }
        if let Some(applied) = &applied {
            // A router that holds the address with an older claim, and missed our probe
            // (it was setting up itself), answers the first announcement with its claim,
            // which the data plane records: this one steps down before the second (so the
            // holder's answer is the last frame from the MAC the switch saw), undoing what
            // it did.
            let mut watch = ClaimWatch::new(claim, attached_at);
            let rival = announce_source(settings, egress, applied, claim, || {
                match watch.check(dataplane.maps()) {
                    Rival::Older(rival) => Some(rival),
                    Rival::Younger | Rival::None => None,
                }
            })
            .await?;
            phase("announced");
            if let Some(rival) = rival {
                drop(dataplane);
                undo(settings, egress, handover.pin_dir.as_deref()).await;
                let ip = egress.mac_address();
                return Err(Error::Network(stepped_down(
                    ip,
                    &settings.egress_interface,
                    &rival,
                    claim,
                )));
            }
        }
        Ok(Self {
            dataplane,
            router,
            router6,
            rules,
            rules6,
            local_tcp_ports: settings.local_tcp_ports.clone(),
            handover,
            created_macvlan: applied.is_some_and(|a| a.created_macvlan),
            claim,
            claim_since: attached_at,
        })
    }

    /// Logs what the set-up did.
    pub fn log_started(&self, settings: &Settings) {
        let flows = self
            .maps()
            .conntrack()
            .map(|t| t.len() / 2)
            .unwrap_or_default();
        let report = &self.handover;
        match &report.adopted {
            Some(source) => tracing::info!(%source, flows, "adopted the running data plane"),
            None => tracing::info!("started a new data plane"),
        }
        let resized = &self.dataplane.reuse().resized;
        if !resized.is_empty() {
            tracing::info!(
                maps = ?resized,
                ipv6 = self.has_ipv6(),
                "IPv6 tables sized anew: the instance gained or lost IPv6"
            );
        }
        if let Some(why) = &report.adopt_warning {
            tracing::warn!(reason = %why, "could not take over the running data plane's state");
        }
        let has_fallback = self.router.flags & config_flags::HAS_FALLBACK != 0;
        let has_fallback6 = self.router6.flags & config_flags::HAS_FALLBACK != 0;
        tracing::info!(
            rules = self.rules.iter().filter(|(_, t)| !t.is_local()).count(),
            fallback = has_fallback.then(|| Ipv4Addr::from(self.router.fallback_ip).to_string()),
            ipv6 = self.has_ipv6(),
            rules6 = self.rules6.iter().filter(|(_, t)| !t.is_local()).count(),
            fallback6 =
                has_fallback6.then(|| Ipv6Addr::from(self.router6.fallback_ip).to_string()),
            pod_ip6 = self
                .has_ipv6()
                .then(|| Ipv6Addr::from(self.router6.pod_ip).to_string()),
            pod_interface = %settings.pod_interface,
            egress_interface = %settings.egress_interface,
            "data plane set up"
        );
        match (&report.pin_dir, &report.pin_warning) {
            (Some(dir), _) => tracing::info!(dir = %dir.display(), "maps pinned"),
            (None, Some(why)) => {
                tracing::warn!(reason = %why, "maps not pinned; the data plane works without pins");
            }
            (None, None) => {}
        }
    }
}

/// Announces EGRESS_SOURCE: gratuitous ARP, and unsolicited neighbour advertisements for
/// its IPv6 address, at once, and again after `arp_request_after`, unless `rival` (asked
/// in between) names an older claim: then that rival.
async fn announce_source(
    settings: &Settings,
    egress: &Egress,
    applied: &Applied,
    claim: ClaimId,
    mut rival: impl FnMut() -> Option<Claim>,
) -> Result<Option<Claim>, Error> {
    let iface = &settings.egress_interface;
    let (index, mac) = (applied.egress_ifindex, applied.egress_mac);
    let send = |operation| -> Result<(), NetworkError> {
        if let Some(v4) = egress.v4 {
            announce_once(iface, index, mac, v4.source.ip, operation, Some(claim))?;
        }
        if let Some(v6) = egress.v6 {
            announce6_once(iface, index, mac, v6.source.ip)?;
        }
        Ok(())
    };
    send(ArpOperation::REPLY).map_err(Error::Network)?;
    tokio::time::sleep(settings.arp_request_after).await;
    if let Some(older) = rival() {
        return Ok(Some(older));
    }
    send(ArpOperation::REQUEST).map_err(Error::Network)?;
    Ok(None)
}

/// Removes what [`Instance::start`] set up (a router stepping down): its programs, pins and
/// network changes. Failures are logged; the refusal that follows says why it stepped down.
async fn undo(settings: &Settings, egress: &Egress, pin_dir: Option<&Path>) {
    let default_dir = settings.bpffs_root.join(&settings.instance);
    let teardown = Teardown {
        instance: &settings.instance,
        pod_interface: &settings.pod_interface,
        egress_interface: &settings.egress_interface,
        pin_dir: pin_dir.unwrap_or(&default_dir),
        macvlan_mode: settings.macvlan_mode,
        source: Some(crate::config::fields::Dual {
            v4: egress.v4.map(|v4| v4.source),
            v6: egress.v6.map(|v6| v6.source),
        }),
        gateway: Some(crate::config::fields::Dual {
            v4: egress.v4.map(|v4| v4.gateway),
            v6: egress.v6.map(|v6| v6.gateway),
        }),
    };
    teardown.silence_and_run().await;
}
