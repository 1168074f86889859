//! The data plane's counters, summed over CPUs, as `egress-router stats` prints them.

use egress_common::{DropReason, PacketCount, Stat};

/// Counters of the data plane, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Path counters, in [`Stat::ALL`] order.
    pub paths: Vec<(Stat, PacketCount)>,
    /// Drop counters, in [`DropReason::ALL`] order.
    pub drops: Vec<(DropReason, PacketCount)>,
}

impl Stats {
    /// The counter of one path.
    #[must_use]
    pub fn path(&self, stat: Stat) -> PacketCount {
        self.paths
            .iter()
            .find(|(s, _)| *s == stat)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }

    /// The drop counter of one reason.
    #[must_use]
    pub fn drop(&self, reason: DropReason) -> PacketCount {
        self.drops
            .iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (stat, count) in &self.paths {
            writeln!(
                f,
                "{:<24} {:>12} packets {:>14} bytes",
                stat.name(),
                count.packets,
                count.bytes
            )?;
        }
        for (reason, count) in &self.drops {
            writeln!(
                f,
                "drop:{:<19} {:>12} packets {:>14} bytes",
                reason.name(),
                count.packets,
                count.bytes
            )?;
        }
        Ok(())
    }
}
