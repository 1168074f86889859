//! The conntrack GC as an agent runs it, the pod agent and the node agent alike: a pass in
//! the kernel ([`collect_garbage_in_kernel`]) when one is due, the per-client flow limit
//! after it ([`enforce_source_limits`]), the next pass sooner as the tables fill
//! ([`gc_interval`]), and what went wrong logged with its causes.

use std::time::Duration;

use tokio::time::Instant;

use crate::{
    conntrack::{
        FamilyPass, GcPass, collect_garbage_in_kernel, enforce_source_limits, gc_interval,
        monotonic_ns,
    },
    dataplane::load::Dataplane,
    error_chain,
};

/// When the passes run and what they enforce.
#[derive(Debug)]
pub struct Collector {
    /// The longest interval between passes (used when the tables are empty).
    max_interval: Duration,
    /// Flows one client may hold (each family's table); `None`: a quarter of the table;
    /// 0: no limit.
    max_flows_per_source: Option<u32>,
    next: Instant,
}

/// What a pass did, for an agent's gauges.
#[derive(Debug)]
pub struct Collected {
    pub pass: GcPass,
    /// The limits in force and the clients limited now, IPv4 and IPv6 (`None`: the limit
    /// could not be applied).
    pub limited: Option<crate::conntrack::Enforced>,
    /// Until the next pass.
    pub interval: Duration,
}

/// A family's entries left after `pass`: (answered, not answered yet).
#[must_use]
pub fn entries_left<A: Eq + std::hash::Hash>(pass: &FamilyPass<A>) -> (u64, u64) {
    (
        pass.entries.saturating_sub(pass.expired),
        pass.unreplied_entries
            .saturating_sub(pass.unreplied_expired),
    )
}

impl Collector {
    /// A collector whose first pass is due now.
    #[must_use]
    pub fn new(max_interval: Duration, max_flows_per_source: Option<u32>) -> Self {
        Self {
            max_interval,
            max_flows_per_source,
            next: Instant::now(),
        }
    }

    /// When the next pass is due.
    #[must_use]
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Whether a pass is due.
    #[must_use]
    pub fn due(&self) -> bool {
        Instant::now() >= self.next
    }

    /// One pass over `dp`'s conntrack tables, and the flow limit in each family's table
    /// (IPv6 only with `ipv6`). What fails is logged; a pass that fails is tried again
    /// after the longest interval.
    pub fn pass(&mut self, dp: &mut Dataplane, ipv6: bool) -> Option<Collected> {
        let pass = match collect_garbage_in_kernel(dp, monotonic_ns()) {
            Ok(pass) => pass,
            Err(err) => {
                tracing::error!(error = %error_chain(&err), "conntrack GC failed");
                self.next = Instant::now() + self.max_interval;
                return None;
            }
        };
        let limited = match enforce_source_limits(
            dp.maps_mut(),
            &pass,
            self.max_flows_per_source,
            ipv6,
        ) {
            Ok(limited) => Some(limited),
            Err(err) => {
                tracing::error!(error = %error_chain(&err), "per-client flow limit not applied");
                None
            }
        };
        let fill = pass.fill();
        let interval = gc_interval(fill, self.max_interval);
        self.next = Instant::now() + interval;
        let (left, unreplied) = entries_left(&pass.v4);
        let (left6, unreplied6) = entries_left(&pass.v6);
        if pass.v4.expired_total() + pass.v6.expired_total() > 0 {
            tracing::debug!(
                expired = pass.v4.expired,
                entries = left,
                unreplied_expired = pass.v4.unreplied_expired,
                unreplied = unreplied,
                expired6 = pass.v6.expired_total(),
                entries6 = left6 + unreplied6,
                "conntrack GC"
            );
        }
        if fill > 0.9 {
            tracing::warn!(
                entries = left,
                capacity = pass.v4.capacity,
                unreplied = unreplied,
                unreplied_capacity = pass.v4.unreplied_capacity,
                entries6 = left6,
                unreplied6 = unreplied6,
                "conntrack table over 90% full; consider a larger --conntrack-size"
            );
        }
        Some(Collected {
            pass,
            limited,
            interval,
        })
    }
}
