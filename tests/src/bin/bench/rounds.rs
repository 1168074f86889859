//! One lab round of a variant: its lab set up, the three loads run in it, and what the
//! router dropped meanwhile.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::{
    traffic::{self, Windows},
    variant::{self, Setup, Variant},
};

/// One round of one variant in the lab.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LabRound {
    pub round: usize,
    pub variant: Variant,
    /// Small UDP frames per second that reached the gateway.
    pub pps: f64,
    /// iperf3 goodput, Gbit/s, one stream (None where the variant does not translate).
    pub tcp1_gbps: Option<f64>,
    /// iperf3 goodput, Gbit/s, four streams.
    pub tcp4_gbps: Option<f64>,
    /// Short TCP connections per second.
    pub conn_per_s: Option<f64>,
    /// egress-router's drop counters by reason after the round (A only; empty when none
    /// moved).
    #[serde(default)]
    pub router_drops: std::collections::BTreeMap<String, u64>,
}

pub(crate) fn lab_round(
    variant: Variant,
    round: usize,
    windows: Windows,
    connrate: &Path,
) -> Result<LabRound> {
    traffic::settle()?;
    if matches!(variant, Variant::N | Variant::P) {
        let mut lab = variant::node_setup(variant, round)?;
        return loads(&mut lab, variant, round, windows, connrate);
    }
    let mut setup = Setup::new(variant, round)?;
    let mut result = loads(&mut setup.lab, variant, round, windows, connrate)?;
    // What the router dropped or retried during the round, for the report: a load whose
    // packets the router dropped measured something else.
    if matches!(variant, Variant::A | Variant::A6) {
        result.router_drops = variant::router_events(&setup.lab);
    }
    Ok(result)
}

/// Prints one lab round's figures (and what the router dropped meanwhile).
pub(crate) fn print(result: &LabRound) {
    let show =
        |v: Option<f64>, digits: usize| v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"));
    eprintln!(
        "bench: round {} {:<28} {:>8.0} pps  tcp1 {:>6} tcp4 {:>6} Gbit/s  {:>7} conn/s",
        result.round,
        result.variant.label(),
        result.pps,
        show(result.tcp1_gbps, 2),
        show(result.tcp4_gbps, 2),
        show(result.conn_per_s, 0)
    );
    if !result.router_drops.is_empty() {
        eprintln!(
            "bench: round {} router drops {:?}",
            result.round, result.router_drops
        );
    }
}

/// The loads of one round in `lab`.
fn loads(
    lab: &mut impl egress_tests::bed::Bed,
    variant: Variant,
    round: usize,
    windows: Windows,
    connrate: &Path,
) -> Result<LabRound> {
    let pps = traffic::small_packet_rate(lab, variant, windows)?;
    let (mut tcp1, mut tcp4, mut conn) = (None, None, None);
    if variant.translates() {
        traffic::start_servers(
            lab,
            connrate,
            variant.server(),
            variant::expected_source(variant),
        )?;
        traffic::settle()?;
        tcp1 = Some(traffic::tcp_throughput(lab, variant.target(), 1, windows)?);
        tcp4 = Some(traffic::tcp_throughput(lab, variant.target(), 4, windows)?);
        conn = Some(traffic::connection_rate(
            lab,
            connrate,
            variant.target(),
            windows,
        )?);
    }
    Ok(LabRound {
        round,
        variant,
        pps,
        tcp1_gbps: tcp1,
        tcp4_gbps: tcp4,
        conn_per_s: conn,
        router_drops: Default::default(),
    })
}
