//! An instance of egress-router in the pod's network namespace: the running data plane it
//! owns with its configuration and rules ([`Instance`]), its set-up ([`setup`]), the rule
//! sources that keep its rules current ([`source`]: `EGRESS_DESTINATION`; [`names`]: the DNS
//! proxy's names), and its [`teardown`].

pub mod names;
pub mod setup;
pub mod source;
pub mod teardown;

use std::net::Ipv4Addr;

use egress_common::{RouterConfig, RuleKey, RuleTarget, config_flags};

use crate::dataplane::{
    handover,
    load::{self, Dataplane},
    maps::MapSet,
    rules::RuleSet,
};

/// A running data plane and what it was configured with.
pub struct Instance {
    dataplane: Dataplane,
    router: RouterConfig,
    /// The rules as written, with their ids.
    rules: Vec<(RuleKey, RuleTarget)>,
    local_tcp_ports: Vec<u16>,
    handover: handover::Report,
    created_macvlan: bool,
}

impl Instance {
    /// Applies new rules and a new fallback to the running data plane, reconciled by
    /// difference (unchanged rules keep their id and counters).
    pub fn apply(&mut self, rules: RuleSet) -> Result<(), load::Error> {
        let mut router = self.router;
        set_fallback(&mut router, rules.fallback);
        let rules = self
            .dataplane
            .maps_mut()
            .configure(&router, &rules.with_local(&self.local_tcp_ports).rules)?;
        self.router = router;
        self.rules = rules;
        Ok(())
    }

    /// The configuration in the data plane.
    #[must_use]
    pub fn router(&self) -> &RouterConfig {
        &self.router
    }

    /// The rules as written, with their ids.
    #[must_use]
    pub fn rules(&self) -> &[(RuleKey, RuleTarget)] {
        &self.rules
    }

    #[must_use]
    pub fn maps(&self) -> &MapSet {
        self.dataplane.maps()
    }

    pub fn maps_mut(&mut self) -> &mut MapSet {
        self.dataplane.maps_mut()
    }

    pub fn dataplane_mut(&mut self) -> &mut Dataplane {
        &mut self.dataplane
    }

    /// What the set-up took over from a running data plane, and where the maps are pinned.
    #[must_use]
    pub fn handover(&self) -> &handover::Report {
        &self.handover
    }

    /// Whether the set-up created the egress interface.
    #[must_use]
    pub fn created_macvlan(&self) -> bool {
        self.created_macvlan
    }
}

/// Sets the fallback of the data plane's configuration.
pub(crate) fn set_fallback(router: &mut RouterConfig, fallback: Option<Ipv4Addr>) {
    router.fallback_ip = fallback.unwrap_or(Ipv4Addr::UNSPECIFIED).octets();
    if fallback.is_some() {
        router.flags |= config_flags::HAS_FALLBACK;
    } else {
        router.flags &= !config_flags::HAS_FALLBACK;
    }
}
