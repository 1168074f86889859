//! Node mode's figures (issue 19): N (the node agent) against P (pod mode on the same
//! node lab), in the lab with shared CPUs, per router core, and under an unsolicited flood.

use std::{fmt::Write as _, path::Path};

use anyhow::Result;

use crate::{
    flood::{self, FloodRound},
    percore::{self, CoreRound},
    report::{LabRound, Results, Spread},
    rounds,
    traffic::Windows,
    variant::Variant,
};

/// The goal: node mode's small-packet rate over pod mode's, per router core.
pub(crate) const GOAL_N_OVER_P: f64 = 1.5;

/// Node mode's rounds: the lab's, the per-core mode's and the flood's.
pub(crate) struct NodeRun {
    pub lab: Vec<LabRound>,
    pub core: Vec<CoreRound>,
    pub flood: Vec<FloodRound>,
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
    Ok(NodeRun { lab, core, flood })
}

/// Puts `run` into `results` in place of its node-mode rounds.
pub(crate) fn replace(results: &mut Results, run: NodeRun) {
    let node = |v: &Variant| Variant::NODE.contains(v);
    results.lab.retain(|r| !node(&r.variant));
    results.lab.extend(run.lab);
    results.per_core.retain(|r| !node(&r.variant));
    results.per_core.extend(run.core);
    results.flood = run.flood;
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
}

impl NodeSummary {
    pub(crate) fn of(r: &Results) -> Self {
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
            lab: lab_figures.map(|f| both(&r.lab, lab_v, f)),
            lab_n_over_p: lab_figures.map(|f| over(&r.lab, lab_k, f)),
            core: core_figures.map(|f| both(&r.per_core, |x| x.variant, f)),
            core_pps_n_over_p: over(&r.per_core, |x| (x.round, x.variant), |x| Some(x.pps)),
            flood: flood_figures.map(|f| both(&r.flood, |x| x.variant, f)),
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
        }
    }

    /// Whether there are node-mode figures at all (results of earlier versions have none).
    pub(crate) fn measured(&self) -> bool {
        self.lab[0][0].n > 0 || self.core[0][0].n > 0
    }
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
    let rows = [
        ("small UDP frames, kpps", 1e3, 0),
        ("TCP, 1 stream, Gbit/s", 1.0, 2),
        ("TCP, 4 streams, Gbit/s", 1.0, 2),
        ("short TCP connections/s", 1.0, 0),
    ];
    for (i, (what, scale, digits)) in rows.into_iter().enumerate() {
        let _ = writeln!(
            w,
            "| {what} | {} | {} | {} |",
            s.lab[i][0].show(scale, digits),
            s.lab[i][1].show(scale, digits),
            s.lab_n_over_p[i].show(1.0, 2)
        );
    }
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
    if s.flood[3][0].n > 0 && s.flood[3][0].median < 0.1 {
        let _ = writeln!(
            w,
            "The generator (one CPU) could not offer N's core much more than it dropped: N's \
             rate is the generator's limit, a lower bound of what one core drops in XDP; the CPU \
             per frame is measured all the same.\n"
        );
    }
}
