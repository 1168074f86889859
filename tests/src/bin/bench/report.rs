//! Summaries of the raw rounds (what bench/results.json holds); the outputs are
//! BENCHMARKS.md ([`crate::markdown`]) and the chart ([`crate::chart`]).

use serde::{Deserialize, Serialize};

use crate::{progcost::CostRound, variant::Variant};

/// The head of the tables with one column per variant and the ratios A/B and A/C.
pub(crate) const VARIANT_TABLE_HEAD: &str = "| figure | A egress-router | B iptables (classic) | C stateless BPF forwarder | A/B | A/C |\n|---|---|---|---|---|---|";

/// Median of `values` (sorted in place); NaN when empty.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Median and range of one figure over the rounds.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        let median = median(&mut v);
        Self {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
            n: v.len(),
        }
    }

    /// `median (min-max; rounds)` with `digits` decimals, each value divided by `scale`.
    pub(crate) fn show(&self, scale: f64, digits: usize) -> String {
        if self.n == 0 {
            return "n/a".into();
        }
        format!(
            "{:.d$} ({:.d$}-{:.d$}; {})",
            self.median / scale,
            self.min / scale,
            self.max / scale,
            self.n,
            d = digits
        )
    }
}

/// A data-plane target and whether the median meets it.
pub(crate) struct Target {
    pub what: &'static str,
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

/// A target of at most `limit` (in `unit`, shown with `digits` decimals).
pub(crate) fn at_most(
    what: &'static str,
    spread: Spread,
    limit: f64,
    unit: &str,
    digits: usize,
) -> Target {
    Target {
        what,
        goal: format!("<= {limit} {unit}"),
        measured: format!("{} {unit}", spread.show(1.0, digits)),
        met: spread.median <= limit,
    }
}

/// A target of a ratio of at least `limit`.
pub(crate) fn at_least(what: &'static str, spread: Spread, limit: f64) -> Target {
    Target {
        what,
        goal: format!(">= {limit}x"),
        measured: format!("{}x", spread.show(1.0, 2)),
        met: spread.median >= limit,
    }
}

/// The four rows of two set-ups side by side and their ratio: small UDP frames (labelled
/// `frames`), TCP with 1 and 4 streams, short connections.
pub(crate) fn pair_rows(
    w: &mut String,
    frames: &str,
    pair: &[[Spread; 2]; 4],
    ratio: &[Spread; 4],
) {
    use std::fmt::Write as _;
    let rows = [
        (frames, 1e3, 0),
        ("TCP, 1 stream, Gbit/s", 1.0, 2),
        ("TCP, 4 streams, Gbit/s", 1.0, 2),
        ("short TCP connections/s", 1.0, 0),
    ];
    for (i, (what, scale, digits)) in rows.into_iter().enumerate() {
        let _ = writeln!(
            w,
            "| {what} | {} | {} | {} |",
            pair[i][0].show(scale, digits),
            pair[i][1].show(scale, digits),
            ratio[i].show(1.0, 2)
        );
    }
}

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

/// Conntrack map memory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Memory {
    pub capacity_flows: u32,
    pub memlock_bytes: u64,
    pub bytes_per_flow: f64,
    pub entries_at_1m: usize,
    /// CPU seconds of the agent's conntrack GC passes over the 1M-flow table (absent in
    /// results of earlier versions).
    #[serde(default)]
    pub gc_pass_cpu_s: Vec<f64>,
    /// The same over 1M IPv6 flows (absent in results of earlier versions).
    #[serde(default)]
    pub gc6_pass_cpu_s: Vec<f64>,
}

/// Everything one `cargo xtask bench` measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Results {
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub rounds: usize,
    pub warmup_s: f64,
    pub measure_s: f64,
    pub udp_flows: u16,
    pub calls_per_cost: usize,
    pub lab: Vec<LabRound>,
    /// The proxy modes' HTTP load (absent in results of earlier versions).
    #[serde(default)]
    pub http: Vec<crate::http::HttpRound>,
    /// Failovers across nodes (absent in results of earlier versions).
    #[serde(default)]
    pub failover: Vec<crate::failover::FailoverRound>,
    /// When and by what command the failovers were measured, if apart from the rest
    /// (`--failover-only`).
    #[serde(default)]
    pub failover_measured: Option<String>,
    /// The Method section written when these figures were measured (absent in results of
    /// earlier versions).
    #[serde(default)]
    pub method: Option<String>,
    /// The per-core mode's rounds (absent in results of earlier versions).
    #[serde(default)]
    pub per_core: Vec<crate::percore::CoreRound>,
    /// When, at which commit and by what command the per-core rounds were measured, if
    /// apart from the rest (`--core-only`).
    #[serde(default)]
    pub per_core_measured: Option<String>,
    /// Node mode's unsolicited flood (absent in results of earlier versions).
    #[serde(default)]
    pub flood: Vec<crate::flood::FloodRound>,
    /// Node mode's failovers to another node (absent in results of earlier versions).
    #[serde(default)]
    pub node_failover: Vec<crate::nodemode::NodeFailover>,
    /// Node mode's reply path under a download (absent in results of earlier versions).
    #[serde(default)]
    pub node_replies: Vec<crate::replypath::ReplyPath>,
    /// When, at which commit and by what command node mode's rounds were measured, if
    /// apart from the rest (`--node-only`).
    #[serde(default)]
    pub node_measured: Option<String>,
    pub costs: Vec<CostRound>,
    pub memory: Memory,
    pub elapsed_s: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub commit: String,
}

/// The figures the report and the chart show, derived from the rounds.
pub(crate) struct Summary {
    pub pps: [Spread; 3],
    pub tcp1: [Spread; 3],
    pub tcp4: [Spread; 3],
    pub conn: [Spread; 3],
    /// 2e9/pps(X) - 2e9/pps(C) per round, for A and B.
    pub overhead: [Spread; 2],
    pub pps_a_over_b: Spread,
    pub pps_a_over_c: Spread,
    pub pps_c_over_b: Spread,
    pub tcp1_a_over_b: Spread,
    pub tcp4_a_over_b: Spread,
    pub conn_a_over_b: Spread,
    /// Per table (1k, 1M): no-op, and established / new flow / reply minus the no-op.
    pub noop: [Spread; 2],
    pub forwarder: [Spread; 2],
    pub established: [Spread; 2],
    pub new_flow: [Spread; 2],
    pub reply: [Spread; 2],
    /// 1M over 1k of the net costs, per round.
    pub growth: [Spread; 3],
    /// The per-core mode.
    pub core: crate::corereport::CoreSummary,
    /// Node mode.
    pub node: crate::nodemode::NodeSummary,
    /// IPv6: A6 and B6 in small UDP frames, TCP 1 and 4 streams, connections; and the
    /// ratios A6/B6 of each, in that order.
    pub v6: [[Spread; 2]; 4],
    pub v6_a_over_b: [Spread; 4],
}

impl Summary {
    pub(crate) fn of(r: &Results) -> Self {
        let per = |v: Variant, f: &dyn Fn(&LabRound) -> Option<f64>| {
            Spread::of(r.lab.iter().filter(|x| x.variant == v).filter_map(f))
        };
        let all = |f: &dyn Fn(&LabRound) -> Option<f64>| {
            [per(Variant::A, f), per(Variant::B, f), per(Variant::C, f)]
        };
        // Paired by round: the variants of a round ran back to back.
        let paired = |x: Variant, y: Variant, f: &dyn Fn(&LabRound, &LabRound) -> Option<f64>| {
            Spread::of((0..r.rounds).filter_map(|round| {
                let get = |v| r.lab.iter().find(|l| l.round == round && l.variant == v);
                f(get(x)?, get(y)?)
            }))
        };
        let ratio =
            |f: fn(&LabRound) -> Option<f64>| move |a: &LabRound, b: &LabRound| Some(f(a)? / f(b)?);
        let overhead = |a: &LabRound, c: &LabRound| Some(2e9 / a.pps - 2e9 / c.pps);
        let figures: [fn(&LabRound) -> Option<f64>; 4] = [
            |x| Some(x.pps),
            |x| x.tcp1_gbps,
            |x| x.tcp4_gbps,
            |x| x.conn_per_s,
        ];
        let costs = |flows: u32, f: &dyn Fn(&CostRound) -> f64| {
            Spread::of(r.costs.iter().filter(|c| c.flows == flows).map(f))
        };
        let net = |f: fn(&CostRound) -> f64| move |c: &CostRound| f(c) - c.noop_ns;
        let tables = |f: &dyn Fn(&CostRound) -> f64| [costs(1_000, f), costs(1_000_000, f)];
        let growth = |f: fn(&CostRound) -> f64| {
            Spread::of((0..r.rounds).filter_map(|round| {
                let get = |n| r.costs.iter().find(|c| c.round == round && c.flows == n);
                let (small, big) = (get(1_000)?, get(1_000_000)?);
                Some((f(big) - big.noop_ns) / (f(small) - small.noop_ns))
            }))
        };
        Self {
            pps: all(&|x| Some(x.pps)),
            tcp1: all(&|x| x.tcp1_gbps),
            tcp4: all(&|x| x.tcp4_gbps),
            conn: all(&|x| x.conn_per_s),
            overhead: [
                paired(Variant::A, Variant::C, &overhead),
                paired(Variant::B, Variant::C, &overhead),
            ],
            pps_a_over_b: paired(Variant::A, Variant::B, &ratio(|x| Some(x.pps))),
            pps_a_over_c: paired(Variant::A, Variant::C, &ratio(|x| Some(x.pps))),
            pps_c_over_b: paired(Variant::C, Variant::B, &ratio(|x| Some(x.pps))),
            tcp1_a_over_b: paired(Variant::A, Variant::B, &ratio(|x| x.tcp1_gbps)),
            tcp4_a_over_b: paired(Variant::A, Variant::B, &ratio(|x| x.tcp4_gbps)),
            conn_a_over_b: paired(Variant::A, Variant::B, &ratio(|x| x.conn_per_s)),
            noop: tables(&|c| c.noop_ns),
            forwarder: tables(&net(|c| c.forwarder_ns)),
            established: tables(&net(|c| c.established_ns)),
            new_flow: tables(&net(|c| c.new_flow_ns)),
            reply: tables(&net(|c| c.reply_ns)),
            growth: [
                growth(|c| c.established_ns),
                growth(|c| c.new_flow_ns),
                growth(|c| c.reply_ns),
            ],
            core: crate::corereport::CoreSummary::of(&r.per_core),
            node: crate::nodemode::NodeSummary::of(r),
            v6: figures.map(|f| [per(Variant::A6, &f), per(Variant::B6, &f)]),
            v6_a_over_b: figures.map(|f| {
                paired(
                    Variant::A6,
                    Variant::B6,
                    &move |a: &LabRound, b: &LabRound| Some(f(a)? / f(b)?),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Spread, median};

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn spread_ignores_missing_values_and_shows_scaled() {
        let s = Spread::of([2000.0, f64::NAN, 1000.0, 3000.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (2000.0, 1000.0, 3000.0, 3));
        assert_eq!(
            s.show(1e3, 1),
            "2.0 (1.0-3.0; 3)",
            "median (min-max; rounds)"
        );
        assert_eq!(Spread::of([]).show(1.0, 0), "n/a");
    }
}
