//! An instance of egress-router in the pod's network namespace: the running data plane it
//! owns with its configuration and rules ([`Instance`]).
//!
//! | module | concern |
//! |---|---|
//! | [`setup`] | setting an instance up, changing nothing until every check has passed |
//! | [`claim`] | holding EGRESS_SOURCE against another egress-router: the older claim stays |
//! | [`clients`] | the client networks: `--client-cidrs` less where no client can be |
//! | [`router`] | the data plane's view of an instance (`RouterConfig`, `RouterConfig6`) |
//! | [`source`] | the rule sources that keep its rules current: `EGRESS_DESTINATION` |
//! | [`names`] | the DNS proxy in the data plane: rules whose addresses follow names |
//! | [`teardown`] | `egress-router teardown`: what an instance added, removed; a router stepping down |

pub mod claim;
pub mod clients;
pub mod names;
pub mod router;
pub mod setup;
pub mod source;
pub mod teardown;

use std::net::{Ipv4Addr, Ipv6Addr};

use egress_common::{RouterConfig, RouterConfig6, RuleKey, RuleTarget, RuleTarget6, config_flags};

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
    /// The IPv6 half (zero without IPv6).
    router6: RouterConfig6,
    /// The rules as written, with their ids.
    rules: Vec<(RuleKey, RuleTarget)>,
    rules6: Vec<(RuleKey, RuleTarget6)>,
    local_tcp_ports: Vec<u16>,
    handover: handover::Report,
    created_macvlan: bool,
    /// This router's claim of EGRESS_SOURCE (`claim`).
    claim: egress_common::ClaimId,
    /// Since when (`claim::ktime_ns`) the data plane answers with it: rivals it recorded
    /// from then on are news to the agent.
    claim_since: u64,
}

impl Instance {
    /// Applies new rules and a new fallback to the running data plane, reconciled by
    /// difference (unchanged rules keep their id and counters).
    pub fn apply(&mut self, rules: RuleSet) -> Result<(), load::Error> {
        let (mut router, mut router6) = (self.router, self.router6);
        set_fallback(&mut router, &mut router6, &rules);
        let rules = rules.with_local(&self.local_tcp_ports, self.has_ipv6());
        let (rules, rules6) = self.dataplane.maps_mut().configure_dual(
            &router,
            &router6,
            &rules.rules,
            &rules.rules6,
        )?;
        self.router = router;
        self.router6 = router6;
        self.rules = rules;
        self.rules6 = rules6;
        Ok(())
    }

    /// This router's claim of EGRESS_SOURCE.
    #[must_use]
    pub const fn claim(&self) -> egress_common::ClaimId {
        self.claim
    }

    /// Since when the data plane answers with [`Instance::claim`].
    #[must_use]
    pub const fn claim_since(&self) -> u64 {
        self.claim_since
    }

    /// The configuration in the data plane.
    #[must_use]
    pub fn router(&self) -> &RouterConfig {
        &self.router
    }

    /// The IPv6 configuration in the data plane, when the instance has IPv6.
    #[must_use]
    pub fn router6(&self) -> Option<&RouterConfig6> {
        (self.router.flags & config_flags::IPV6 != 0).then_some(&self.router6)
    }

    /// The rules as written, with their ids.
    #[must_use]
    pub fn rules(&self) -> &[(RuleKey, RuleTarget)] {
        &self.rules
    }

    /// The IPv6 rules as written, with their ids.
    #[must_use]
    pub fn rules6(&self) -> &[(RuleKey, RuleTarget6)] {
        &self.rules6
    }

    /// Whether the instance translates IPv6.
    #[must_use]
    pub fn has_ipv6(&self) -> bool {
        self.router.flags & config_flags::IPV6 != 0
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

/// Sets the fallbacks of the data plane's configuration: `rules`' of each family. An
/// instance without IPv6 takes no IPv6 fallback (validation refuses one without an IPv6
/// EGRESS_SOURCE).
pub(crate) fn set_fallback(
    router: &mut RouterConfig,
    router6: &mut RouterConfig6,
    rules: &RuleSet,
) {
    fn set(flags: &mut u32, on: bool) {
        if on {
            *flags |= config_flags::HAS_FALLBACK;
        } else {
            *flags &= !config_flags::HAS_FALLBACK;
        }
    }
    router.fallback_ip = rules.fallback.unwrap_or(Ipv4Addr::UNSPECIFIED).octets();
    set(&mut router.flags, rules.fallback.is_some());
    let fallback6 = rules
        .fallback6
        .filter(|_| router.flags & config_flags::IPV6 != 0);
    router6.fallback_ip = fallback6.unwrap_or(Ipv6Addr::UNSPECIFIED).octets();
    set(&mut router6.flags, fallback6.is_some());
}
