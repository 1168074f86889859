//! Summaries of the raw rounds (what bench/results.json holds); the outputs are
//! BENCHMARKS.md ([`crate::markdown`]) and the chart ([`crate::chart`]).

use serde::{Deserialize, Serialize};

use crate::{
    figures::Spread,
    nodemode::{NodeRounds, NodeRun},
    progcost::CostRound,
    rounds::LabRound,
    variant::Variant,
};

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
    pub per_core: Vec<crate::coreround::CoreRound>,
    /// When, at which commit and by what command the per-core rounds were measured, if
    /// apart from the rest (`--core-only`).
    #[serde(default)]
    pub per_core_measured: Option<String>,
    /// T (A attached with tc) against A (TCX) (absent in results of earlier versions).
    #[serde(default)]
    pub attach: Option<crate::attachkind::AttachRun>,
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

impl Results {
    /// Puts `run` in place of the node-mode rounds.
    pub(crate) fn replace_node(&mut self, run: NodeRun) {
        let node = |v: &Variant| Variant::NODE.contains(v);
        self.lab.retain(|r| !node(&r.variant));
        self.lab.extend(run.lab);
        self.per_core.retain(|r| !node(&r.variant));
        self.per_core.extend(run.core);
        self.flood = run.flood;
        self.node_failover = run.failover;
        self.node_replies = run.replies;
    }
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
            node: crate::nodemode::NodeSummary::of(&NodeRounds {
                lab: &r.lab,
                per_core: &r.per_core,
                flood: &r.flood,
                failover: &r.node_failover,
                replies: &r.node_replies,
            }),
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
