//! `egress-router teardown`: removes what an instance added, deciding what to remove
//! before removing anything: its programs on both interfaces, its pin directory, and the
//! egress interface if it created it (its alias says so), otherwise EGRESS_SOURCE and the
//! routes via EGRESS_GATEWAY on it. Running it again finds nothing and succeeds.
//!
//! [`step_down`] is the same removal for a running router that found another
//! egress-router holding EGRESS_SOURCE with an older claim (`crate::instance::claim`).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{Context as _, Result};
use egress_common::{Claim, config_flags};

use crate::{
    config::fields::{Egress4, Egress6, EgressSource, Gateways, Sources},
    dataplane::{
        attach, bpffs, discover,
        programs::{Interfaces, Mode},
    },
    network::plan::{MacvlanMode, NetworkPlan, Removed, owner_alias},
};

/// What a teardown needs to know; EGRESS_SOURCE and EGRESS_GATEWAY may be unknown.
pub struct Teardown<'a> {
    pub instance: &'a str,
    pub pod_interface: &'a str,
    pub egress_interface: &'a str,
    pub pin_dir: &'a Path,
    pub macvlan_mode: MacvlanMode,
    /// From the variable; where a family is unset, from the running data plane.
    pub source: Option<Sources>,
    /// From the variable; where a family is unset, routes via any gateway are removed.
    pub gateway: Option<Gateways>,
}

/// What it removed.
#[derive(Clone, Debug, Default)]
pub struct Done {
    pub programs: usize,
    pub pins: usize,
    pub network: Removed,
}

impl Teardown<'_> {
    /// A router stepping down: the egress interface down first (from the moment the
    /// programs are detached, the stack could send from the MAC it shares with the holder:
    /// IPv6 neighbour discovery), then [`Teardown::run`]. Failures are logged; the
    /// refusal that follows says why it stepped down.
    pub async fn silence_and_run(&self) {
        if let Err(err) = crate::network::claim::set_down(self.egress_interface).await {
            tracing::error!(error = %crate::error_chain(&err), "setting the egress interface down");
        }
        if let Err(err) = self.run().await {
            tracing::error!(error = %crate::error_chain(&*err), "removing what the set-up did");
        }
    }

    pub async fn run(&self) -> Result<Done> {
        let running = discover::open(self.pod_interface, self.pin_dir)
            .ok()
            .flatten()
            .map(|(maps, _)| maps);
        let running_source = running
            .as_ref()
            .and_then(|maps| maps.config().ok().flatten())
            .map(|c| Ipv4Addr::from(c.egress_source))
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| EgressSource { ip, prefix: 32 });
        let running_source6 = running
            .as_ref()
            .and_then(|maps| maps.config6().ok())
            .map(|c| Ipv6Addr::from(c.egress_source))
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| EgressSource { ip, prefix: 128 });
        let given = self.source.unwrap_or_default();
        let gateway = self.gateway.unwrap_or_default();
        let v4 = given.v4.or(running_source).map(|source| Egress4 {
            source,
            gateway: gateway.v4.unwrap_or(Ipv4Addr::UNSPECIFIED),
        });
        let v6 = given.v6.or(running_source6).map(|source| Egress6 {
            source,
            gateway: gateway.v6.unwrap_or(Ipv6Addr::UNSPECIFIED),
        });

        let interfaces = Interfaces::pod(self.pod_interface, self.egress_interface);
        let programs = attach::detach_all(Mode::Pod, &interfaces)?;
        // The clsact qdiscs the tc attachment made, once nobody's filter is on them.
        let flags = running
            .as_ref()
            .and_then(|maps| maps.config().ok().flatten())
            .map_or(0, |c| c.flags);
        for (iface, bit) in [
            (self.pod_interface, config_flags::CLSACT_POD_SIDE),
            (self.egress_interface, config_flags::CLSACT_EGRESS_SIDE),
        ] {
            attach::release_clsact(iface, flags & bit != 0)?;
        }
        let pins = bpffs::remove_pins(self.pin_dir)
            .with_context(|| format!("removing the pins in {}", self.pin_dir.display()))?;
        let network = match (v4, v6) {
            (None, None) => {
                tracing::warn!(
                    "EGRESS_SOURCE unknown (not set, no running data plane): network left as it is"
                );
                Removed::default()
            }
            _ => {
                NetworkPlan {
                    egress_interface: self.egress_interface.to_owned(),
                    macvlan_parent: None,
                    macvlan_mode: self.macvlan_mode,
                    v4,
                    v6,
                    owner: owner_alias(self.instance),
                    mac: None,
                }
                .teardown()
                .await?
            }
        };
        Ok(Done {
            programs,
            pins,
            network,
        })
    }
}

/// Steps a running router down for `rival`: removes its programs, pins and network set-up
/// (so that a restart probes again, and is refused while the rival holds the address), and
/// returns the error the agent exits with.
pub async fn step_down(
    instance: crate::instance::Instance,
    names: (&str, &str, &str),
    rival: &Claim,
) -> anyhow::Error {
    let (name, pod_interface, egress_interface) = names;
    let ours = instance.claim();
    let router = *instance.router();
    let pin_dir = instance.handover().pin_dir.clone();
    drop(instance);
    let ip = if router.egress_source == [0; 4] {
        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        std::net::IpAddr::V4(router.egress_source.into())
    };
    // Without pins (a scratch bpffs, gone with the set-up) the programs and the network
    // are still found on the interfaces: removed all the same, so that a restart probes.
    let pin_dir = pin_dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("egress-router-{name}-unpinned")));
    let teardown = Teardown {
        instance: name,
        pod_interface,
        egress_interface,
        pin_dir: &pin_dir,
        macvlan_mode: crate::network::plan::MacvlanMode::Private,
        source: None,
        gateway: None,
    };
    teardown.silence_and_run().await;
    anyhow::Error::new(crate::instance::claim::stepped_down(
        ip,
        egress_interface,
        rival,
        ours,
    ))
}
