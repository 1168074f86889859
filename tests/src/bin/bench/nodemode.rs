//! Node mode's figures (issue 19): N (the node agent) against P (pod mode on the same
//! node lab), in the lab with shared CPUs, per router core, and under an unsolicited flood.

use std::{fmt::Write as _, path::Path};

use anyhow::Result;

use crate::{
    coreround::CoreRound,
    figures::{Spread, Target, at_least, at_most},
    flood::{self, FloodRound},
    percore,
    replypath::{self, ReplyPath},
    rounds::{self, LabRound},
    traffic::Windows,
    variant::Variant,
};

/// The goal: node mode's small-packet rate over pod mode's, per router core.
pub(crate) const GOAL_N_OVER_P: f64 = 1.5;

/// The goal: a router pod moved to another node is served there within this, from its
/// start to the first connection.
pub(crate) const GOAL_FAILOVER_MS: f64 = 1000.0;

/// Node mode's rounds: the lab's, the per-core mode's, the flood's and the failovers.
pub(crate) struct NodeRun {
    pub lab: Vec<LabRound>,
    pub core: Vec<CoreRound>,
    pub flood: Vec<FloodRound>,
    pub failover: Vec<NodeFailover>,
    pub replies: Vec<ReplyPath>,
}

/// One failover of a router pod to another node (`egress_tests::nodefail`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct NodeFailover {
    pub round: usize,
    /// From the replacement's start to the first answered connection through its node.
    pub first_connection_ms: f64,
    /// How long its init container (`node-register`) ran.
    pub registered_ms: f64,
}

/// One failover round on a fresh two-node lab, both agents reading their spool at the
/// default interval (200 ms), as in a cluster.
fn failover_round(round: usize) -> Result<NodeFailover> {
    crate::traffic::settle()?;
    let mut lab = egress_tests::nodelab::NodeLab::two_nodes(&format!("bench{round}nf"))?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/peer_server.py");
    let mut server = lab.server.command("python3");
    server.args([script, "http", "203.0.113.10", "80"]);
    lab.spawn(server)?;
    egress_tests::util::wait_listening_in(&lab.server, 80);
    let destination = "80 tcp 203.0.113.10 80";
    let agent_a = lab.start_agent(&["--rescan-ms", "200"])?;
    lab.start_agent_b(&["--rescan-ms", "200"])?;
    lab.register(0, destination)?;
    lab.wait_for_log(
        agent_a,
        "serving a new instance",
        std::time::Duration::from_secs(5),
    )?;
    let f = egress_tests::nodefail::fail_over(&mut lab, agent_a, destination)?;
    let source = egress_tests::nodelab::egress_source(0);
    anyhow::ensure!(f.body.starts_with(&format!("{source} ")), "{f:?}");
    Ok(NodeFailover {
        round,
        first_connection_ms: f.first_connection.as_secs_f64() * 1e3,
        registered_ms: f.registered.as_secs_f64() * 1e3,
    })
}

/// `rounds` interleaved rounds of N and P of each kind.
pub(crate) fn run(
    rounds: usize,
    core_rounds: usize,
    windows: Windows,
    connrate: &Path,
) -> Result<NodeRun> {
    let mut lab = Vec::new();
    for round in 0..rounds {
        for variant in Variant::NODE {
            let result = rounds::lab_round(variant, round, windows, connrate)?;
            rounds::print(&result);
            lab.push(result);
        }
    }
    let core = percore::rounds(core_rounds, &Variant::NODE, windows, connrate)?;
    let flood = flood::rounds(rounds, windows)?;
    let mut failover = Vec::new();
    for round in 0..rounds {
        let f = failover_round(round)?;
        eprintln!(
            "bench: round {round} node failover: first connection {:.0} ms after the replacement's start (node-register {:.0} ms)",
            f.first_connection_ms, f.registered_ms
        );
        failover.push(f);
    }
    let mut replies = Vec::new();
    for round in 0..rounds {
        let r = replypath::round(round, windows, connrate)?;
        eprintln!(
            "bench: round {round} node reply path: download {:.2} Gbit/s, uplink {:.0} frames/s, node_xdp {:.0} runs/s, node_reply {:.0} runs/s ({:.1} frames per run, {:.0} ns per run)",
            r.gbps,
            r.frames_per_s,
            r.xdp_runs_per_s,
            r.tc_runs_per_s,
            r.frames_per_run(),
            r.tc_ns
        );
        replies.push(r);
    }
    Ok(NodeRun {
        lab,
        core,
        flood,
        failover,
        replies,
    })
}

/// The rounds node mode's figures are made of, as the results hold them.
pub(crate) struct NodeRounds<'a> {
    pub lab: &'a [LabRound],
    pub per_core: &'a [CoreRound],
    pub flood: &'a [FloodRound],
    pub failover: &'a [NodeFailover],
    pub replies: &'a [ReplyPath],
}

/// The figures of N and P (in that order in each pair), and N over P paired by round.
pub(crate) struct NodeSummary {
    /// Small UDP frames/s, TCP 1 and 4 streams Gbit/s, connections/s (shared CPUs).
    pub lab: [[Spread; 2]; 4],
    pub lab_n_over_p: [Spread; 4],
    /// Per router core: frames/s, router ns per frame, connections/s, µs per connection.
    pub core: [[Spread; 2]; 4],
    pub core_pps_n_over_p: Spread,
    /// The flood: frames/s one core drops, ns per frame, drops counted over frames, the
    /// generator's surplus; frames answered (summed over the rounds), and N's `node_xdp`
    /// ns per run.
    pub flood: [[Spread; 2]; 4],
    pub flood_answered: [u64; 2],
    pub flood_xdp_ns: Spread,
    /// Failover to another node: first connection, ms.
    pub failover_ms: Spread,
    /// The reply path under a download: Gbit/s, frames per `node_reply` run, its ns.
    pub replies: [Spread; 3],
}

impl NodeSummary {
    pub(crate) fn of(r: &NodeRounds<'_>) -> Self {
        const NP: [Variant; 2] = [Variant::N, Variant::P];
        type Get<T> = fn(&T) -> Option<f64>;
        fn both<T>(rounds: &[T], variant: fn(&T) -> Variant, f: Get<T>) -> [Spread; 2] {
            NP.map(|v| Spread::of(rounds.iter().filter(|x| variant(x) == v).filter_map(f)))
        }
        fn over<T>(rounds: &[T], key: fn(&T) -> (usize, Variant), f: Get<T>) -> Spread {
            let get = |round, v| rounds.iter().find(|x| key(x) == (round, v));
            let n = rounds.iter().map(|x| key(x).0 + 1).max().unwrap_or(0);
            Spread::of(
                (0..n).filter_map(|i| Some(f(get(i, Variant::N)?)? / f(get(i, Variant::P)?)?)),
            )
        }
        let lab_figures: [Get<LabRound>; 4] = [
            |x| Some(x.pps),
            |x| x.tcp1_gbps,
            |x| x.tcp4_gbps,
            |x| x.conn_per_s,
        ];
        let core_figures: [Get<CoreRound>; 4] = [
            |x| Some(x.pps),
            |x| Some(x.ns_per_packet()),
            |x| Some(x.conn_per_s),
            |x| Some(x.us_per_conn()),
        ];
        let flood_figures: [Get<FloodRound>; 4] = [
            |x| Some(x.pps),
            |x| Some(x.ns_per_packet()),
            |x| Some(x.counted),
            |x| Some(x.surplus),
        ];
        let (lab_v, lab_k) = (
            |x: &LabRound| x.variant,
            |x: &LabRound| (x.round, x.variant),
        );
        Self {
            lab: lab_figures.map(|f| both(r.lab, lab_v, f)),
            lab_n_over_p: lab_figures.map(|f| over(r.lab, lab_k, f)),
            core: core_figures.map(|f| both(r.per_core, |x| x.variant, f)),
            core_pps_n_over_p: over(r.per_core, |x| (x.round, x.variant), |x| Some(x.pps)),
            flood: flood_figures.map(|f| both(r.flood, |x| x.variant, f)),
            flood_answered: NP.map(|v| {
                r.flood
                    .iter()
                    .filter(|x| x.variant == v)
                    .map(|x| x.answered)
                    .sum()
            }),
            flood_xdp_ns: Spread::of(
                r.flood
                    .iter()
                    .filter(|x| x.variant == Variant::N)
                    .filter_map(|x| x.program_ns.get("node_xdp").copied()),
            ),
            failover_ms: Spread::of(r.failover.iter().map(|f| f.first_connection_ms)),
            replies: [
                Spread::of(r.replies.iter().map(|x| x.gbps)),
                Spread::of(r.replies.iter().map(ReplyPath::frames_per_run)),
                Spread::of(r.replies.iter().map(|x| x.tc_ns)),
            ],
        }
    }

    /// Whether there are node-mode figures at all (results of earlier versions have none).
    pub(crate) fn measured(&self) -> bool {
        self.lab[0][0].n > 0 || self.core[0][0].n > 0
    }
}

/// Node mode's targets, where the run measured it.
pub(crate) fn targets(s: &NodeSummary) -> Vec<Target> {
    let mut targets = Vec::new();
    if s.core[0][0].n > 0 {
        targets.push(at_least(
            "N/P small-packet rate per router core (node mode over pod mode)",
            s.core_pps_n_over_p,
            GOAL_N_OVER_P,
        ));
    }
    if s.failover_ms.n > 0 {
        targets.push(at_most(
            "node mode: failover to another node, to the first connection",
            s.failover_ms,
            GOAL_FAILOVER_MS,
            "ms",
            0,
        ));
    }
    targets
}

/// The section "Node mode".
pub(crate) fn section(w: &mut String, s: &NodeSummary, measured: Option<&str>) {
    if !s.measured() {
        return;
    }
    let _ = writeln!(w, "## Node mode\n");
    if let Some(when) = measured {
        let _ = writeln!(
            w,
            "*Measured apart from the rest of this report, {when}.*\n"
        );
    }
    let _ = writeln!(
        w,
        "N is `egress-router node`: the node agent catches the client's traffic on the router \
         pod's host-side veth (TC egress), translates it and sends it out of the node's uplink; \
         nothing enters the pod. P is pod mode (A) on the same node lab: the router pod with \
         its own macvlan on the uplink, its programs on the pod's `eth0`. Both labs route the \
         client pod through the node to the router pod (tests/src/nodelab.rs), as a routed CNI \
         does, so both pay the node's routing hop, and A's figures above (client wired to the \
         router pod) are not comparable with these. The gateway's neighbour entry for N's \
         EGRESS_SOURCE is set by hand and its side of the uplink has no XDP program: on a veth \
         (not on a NIC) that program would take GSO off the node's uplink; the ARP responder \
         is what the tests cover.\n"
    );
    let _ = writeln!(
        w,
        "| figure, two shared CPUs | N node mode | P pod mode, node lab | N/P |\n|---|---|---|---|"
    );
    crate::figures::pair_rows(w, "small UDP frames, kpps", &s.lab, &s.lab_n_over_p);
    let _ = writeln!(
        w,
        "\nWith two shared CPUs the generator, the client's veth and the gateway's counting take \
         most of the time, the same for both. Per router core (the method of \"Per router \
         core\": the node's receive paths on CPU {} alone, the generator on CPU {}), which is \
         what the goal (N at least {GOAL_N_OVER_P}x P's small-packet rate) is about:\n",
        percore::ROUTER_CPU,
        percore::LOAD_CPU
    );
    let _ = writeln!(
        w,
        "| figure, one router core | N node mode | P pod mode, node lab | N/P |\n|---|---|---|---|"
    );
    let _ = writeln!(
        w,
        "| small UDP frames, kpps | {} | {} | {} |",
        s.core[0][0].show(1e3, 0),
        s.core[0][1].show(1e3, 0),
        s.core_pps_n_over_p.show(1.0, 2)
    );
    let core_rows = [
        ("router CPU per frame, ns", 1, 0),
        (
            "short TCP connections/s (the load's limit, not the core's)",
            2,
            0,
        ),
        ("router CPU per connection, µs", 3, 1),
    ];
    for (what, i, digits) in core_rows {
        let _ = writeln!(
            w,
            "| {what} | {} | {} | |",
            s.core[i][0].show(1.0, digits),
            s.core[i][1].show(1.0, digits)
        );
    }
    let _ = writeln!(
        w,
        "\n**Unsolicited flood.** Small UDP frames from a host on the egress network to \
         EGRESS_SOURCE, to random ports no flow uses, as fast as the router core takes them \
         (the same pacing, generator on CPU {}). N drops them in `node_xdp` at the uplink's \
         driver (`unsolicited_early`); P takes them through the macvlan to the pod's program \
         (`unsolicited`). \"counted\" is the drop counter over the frames taken; \"answered\" \
         the frames the gateway received meanwhile, over all rounds.\n",
        percore::LOAD_CPU
    );
    let _ = writeln!(
        w,
        "| flood | N node mode | P pod mode, node lab |\n|---|---|---|"
    );
    let _ = writeln!(
        w,
        "| frames dropped by one core, kpps | {} | {} |\n\
         | router CPU per frame, ns | {} | {} |\n\
         | counted | {} | {} |\n\
         | answered | {} | {} |\n\
         | generator's offer beyond the frames taken, % | {} | {} |\n\
         | `node_xdp` per run, ns (BPF statistics) | {} | |\n",
        s.flood[0][0].show(1e3, 0),
        s.flood[0][1].show(1e3, 0),
        s.flood[1][0].show(1.0, 0),
        s.flood[1][1].show(1.0, 0),
        s.flood[2][0].show(1.0, 3),
        s.flood[2][1].show(1.0, 3),
        s.flood_answered[0],
        s.flood_answered[1],
        s.flood[3][0].show(0.01, 0),
        s.flood[3][1].show(0.01, 0),
        s.flood_xdp_ns.show(1.0, 0)
    );
    if s.replies[0].n > 0 {
        let _ = writeln!(
            w,
            "**Replies in TC, not XDP.** A download through N (`iperf3 -R`, one stream: the \
             server's data is the reply direction) at {} Gbit/s: the uplink's frames each pass \
             `node_xdp` (ARP, neighbour discovery, the early drop), while `node_reply`, after \
             GRO, runs once per {} frames at {} ns per run (statistics on). An XDP reply path \
             would translate every frame: that is why the replies are TC's \
             (tests/src/bin/bench/replypath.rs).\n",
            s.replies[0].show(1.0, 2),
            s.replies[1].show(1.0, 1),
            s.replies[2].show(1.0, 0)
        );
    }
    if s.failover_ms.n > 0 {
        let _ = writeln!(
            w,
            "**Failover.** A two-node lab (tests/src/nodefail.rs): node A dies (its agent \
             killed, its uplink gone), the replacement router pod registers on node B with \
             the same EGRESS_SOURCE, whose agent reads its spool every 200 ms (the default); a \
             client tries every 20 ms. From the replacement's start to the first answered \
             connection: {} ms (goal <= {GOAL_FAILOVER_MS} ms).\n",
            s.failover_ms.show(1.0, 0)
        );
    }
    if s.flood[3][0].n > 0 && s.flood[3][0].median < 0.1 {
        let _ = writeln!(
            w,
            "The generator (one CPU) could not offer N's core much more than it dropped: N's \
             rate is the generator's limit, a lower bound of what one core drops in XDP; the CPU \
             per frame is measured all the same.\n"
        );
    }
}
