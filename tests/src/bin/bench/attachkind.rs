//! T against A (issue 32): pod mode attached with tc (a clsact qdisc and cls_bpf filters in
//! direct-action mode, `--attach tc`, what `auto` takes on kernels before 6.6) against TCX
//! (`auto` on this kernel), in interleaved rounds on fresh labs: the small-packet rate, the
//! router core's time per packet and the programs' own time. Every lab asserts how the
//! programs are attached (`attachcheck`).

use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::{
    coreround::CoreRound,
    figures::Spread,
    percore,
    traffic::{self, Windows},
    variant::{Setup, Variant},
};

/// The variants compared, in the order each round runs them.
pub(crate) const VARIANTS: [Variant; 2] = [Variant::A, Variant::T];

/// One round of A or T.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AttachRound {
    pub round: usize,
    pub variant: Variant,
    /// The programs found attached before the load, `name@interface/direction:kind`.
    pub attached: Vec<String>,
    /// Small UDP frames per second that reached the gateway (trafgen, the lab rounds' load).
    pub pps: f64,
    /// The per-core round on a lab of its own.
    pub core: CoreRound,
}

/// The rounds of T and A, and how and when they were measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct AttachRun {
    pub rounds: Vec<AttachRound>,
    /// When, at which commit and by what command, if apart from the rest
    /// (`--attach-only`).
    #[serde(default)]
    pub measured: Option<String>,
    /// The Method section's paragraph on T, written when they were measured.
    #[serde(default)]
    pub method: Option<String>,
}

/// `rounds` rounds of A then T: each the lab's small-packet load on a fresh lab, then a
/// per-core round on another.
pub(crate) fn run(rounds: usize, windows: Windows, connrate: &Path) -> Result<AttachRun> {
    let mut out = Vec::new();
    for round in 0..rounds {
        for variant in VARIANTS {
            let r = one(variant, round, windows, connrate)
                .with_context(|| format!("attach round {round}, {}", variant.label()))?;
            eprintln!(
                "bench: round {round} attach {:<28} {:>8.0} pps (lab), attached {:?}",
                variant.label(),
                r.pps,
                r.attached
            );
            r.core.print();
            out.push(r);
        }
    }
    Ok(AttachRun {
        rounds: out,
        measured: None,
        method: Some(method()),
    })
}

fn one(variant: Variant, round: usize, windows: Windows, connrate: &Path) -> Result<AttachRound> {
    traffic::settle()?;
    let (attached, pps) = {
        let mut setup = Setup::new(variant, round)?;
        (
            std::mem::take(&mut setup.attached),
            traffic::small_packet_rate(&mut setup.lab, variant, windows)?,
        )
    };
    // Setup::new asserts the kind for the per-core lab too.
    let core = percore::round(variant, round, windows, connrate)?;
    Ok(AttachRound {
        round,
        variant,
        attached,
        pps,
        core,
    })
}

/// The Method section's paragraph on T.
pub(crate) fn method() -> String {
    "**T** (tc against TCX, issue 32): A with `--attach tc` (`EGRESS_ROUTER_ATTACH=tc`, what \
     `auto` takes on kernels before 6.6): the same programs as cls_bpf filters in \
     direct-action mode on a clsact qdisc of `eth0` (ingress) and `macvlan0` (ingress and \
     egress), where A, with `auto` on this kernel, attaches them with TCX. A and T run in \
     rounds of their own, A then T, each round the lab's small-packet load (trafgen, as \
     above) on a fresh lab and then a per-core round (as in *Per router core*) on another. \
     Before the load every lab of either is checked: `egress-router status` names each \
     program's attachment `tc` (T) or `tcx` (A), and `tc filter show` lists T's as \
     `direct-action` filters with the same program IDs, and no clsact qdisc on A's \
     interfaces; a round that finds anything else fails.\n"
        .to_owned()
}

/// The figures of T and A, per variant ([`VARIANTS`]' order) and paired by round.
pub(crate) struct AttachSummary {
    pub rounds: usize,
    pub pps: [Spread; 2],
    pub core_pps: [Spread; 2],
    pub busy: [Spread; 2],
    /// The router's NAPI threads' share of the router core over the packet window.
    pub threads: [Spread; 2],
    pub ns_per_packet: [Spread; 2],
    pub us_per_conn: [Spread; 2],
    /// T over A, per round: lab rate, per-core rate.
    pub pps_t_over_a: Spread,
    pub core_pps_t_over_a: Spread,
    /// T less A, per round: router CPU per packet (ns), per connection (µs).
    pub ns_t_less_a: Spread,
    pub us_t_less_a: Spread,
    /// Per program: A's and T's ns per run (less the no-op's), and T's less A's per round.
    pub programs: Vec<(String, [Spread; 2], Spread)>,
    /// Over the rounds where both had the router core to themselves ([`ALONE`]): T over A
    /// in rate through the core, and T less A in router CPU per packet.
    pub alone: [Spread; 2],
}

/// The router's NAPI threads' least share of the router core over the packet window for a
/// round to count as having had the core to itself: on a shared machine another worker's
/// load lands on that core too, and shares its caches.
pub(crate) const ALONE: f64 = 0.9;

impl AttachSummary {
    pub(crate) fn of(rounds: &[AttachRound]) -> Self {
        let n = rounds.iter().map(|r| r.round + 1).max().unwrap_or(0);
        let each = |f: &dyn Fn(&AttachRound) -> f64| {
            VARIANTS.map(|v| Spread::of(rounds.iter().filter(|r| r.variant == v).map(f)))
        };
        let paired = |f: &dyn Fn(&AttachRound, &AttachRound) -> Option<f64>| {
            Spread::of((0..n).filter_map(|round| {
                let get = |v| rounds.iter().find(|r| r.round == round && r.variant == v);
                f(get(Variant::T)?, get(Variant::A)?)
            }))
        };
        let alone = |r: &AttachRound| r.core.pps_threads_busy.is_some_and(|b| b >= ALONE);
        let paired_alone = |f: fn(&AttachRound, &AttachRound) -> f64| {
            paired(&|t, a| (alone(t) && alone(a)).then(|| f(t, a)))
        };
        let cores: Vec<CoreRound> = rounds.iter().map(|r| r.core.clone()).collect();
        let [a, t] = VARIANTS.map(|v| crate::corereport::programs(&cores, v));
        let net = |r: &AttachRound, name: &str| {
            Some(r.core.program_ns.get(name)? - r.core.program_ns.get(crate::corereport::NOOP)?)
        };
        let programs = a
            .into_iter()
            .filter_map(|(name, spread_a)| {
                let spread_t = t.iter().find(|(n, _)| *n == name)?.1;
                let less = paired(&|t, a| Some(net(t, &name)? - net(a, &name)?));
                Some((name, [spread_a, spread_t], less))
            })
            .collect();
        Self {
            rounds: n,
            pps: each(&|r| r.pps),
            core_pps: each(&|r| r.core.pps),
            busy: each(&|r| r.core.pps_router_busy),
            threads: each(&|r| r.core.pps_threads_busy.unwrap_or(f64::NAN)),
            ns_per_packet: each(&|r| r.core.ns_per_packet()),
            us_per_conn: each(&|r| r.core.us_per_conn()),
            pps_t_over_a: paired(&|t, a| Some(t.pps / a.pps)),
            core_pps_t_over_a: paired(&|t, a| Some(t.core.pps / a.core.pps)),
            ns_t_less_a: paired(&|t, a| Some(t.core.ns_per_packet() - a.core.ns_per_packet())),
            us_t_less_a: paired(&|t, a| Some(t.core.us_per_conn() - a.core.us_per_conn())),
            programs,
            alone: [
                paired_alone(|t, a| t.core.pps / a.core.pps),
                paired_alone(|t, a| t.core.ns_per_packet() - a.core.ns_per_packet()),
            ],
        }
    }
}

/// The section "tc against TCX": the figures of T and A and what they are.
pub(crate) fn section(w: &mut String, run: &AttachRun) {
    use std::fmt::Write as _;
    let s = AttachSummary::of(&run.rounds);
    if s.rounds == 0 {
        return;
    }
    let _ = writeln!(w, "## tc against TCX (pod mode)\n");
    if let Some(when) = &run.measured {
        let _ = writeln!(
            w,
            "*Measured apart from the rest of this report, {when}.*\n"
        );
    }
    let _ = writeln!(
        w,
        "A is egress-router as above, its programs attached with TCX (`auto` on this \
         kernel); T is the same with `--attach tc`, the clsact qdisc and cls_bpf filters \
         that kernels before 6.6 get (see Method). {} rounds, A then T, each on fresh labs: \
         the first row shares both CPUs with the traffic (as *In the lab*), the others are \
         the per-core mode's (as *Per router core*). The last column is T's over or less \
         A's of the same round, which takes out most of what the other work on a shared \
         machine moves from one round to the next.\n",
        s.rounds
    );
    if let Some(note) = crate::corereport::generator_note(run.rounds.iter().map(|r| &r.core)) {
        let _ = writeln!(w, "{note}\n");
    }
    let _ = writeln!(
        w,
        "| figure | A TCX | T tc (clsact, cls_bpf) | T/A or T-A |\n|---|---|---|---|"
    );
    let row =
        |w: &mut String, what: &str, v: [Spread; 2], scale: f64, digits: usize, last: String| {
            let _ = writeln!(
                w,
                "| {what} | {} | {} | {last} |",
                v[0].show(scale, digits),
                v[1].show(scale, digits)
            );
        };
    let times = |x: Spread| format!("{}x", x.show(1.0, 3));
    // Differences may be negative: their range reads "from to".
    let less = |x: Spread, digits: usize| {
        format!(
            "{:+.d$} ({:+.d$} to {:+.d$}; {})",
            x.median,
            x.min,
            x.max,
            x.n,
            d = digits
        )
    };
    row(
        w,
        "small UDP frames, kpps (lab, trafgen)",
        s.pps,
        1e3,
        0,
        times(s.pps_t_over_a),
    );
    row(
        w,
        "small UDP frames through one router core, kpps",
        s.core_pps,
        1e3,
        0,
        times(s.core_pps_t_over_a),
    );
    row(w, "router core busy, %", s.busy, 0.01, 0, String::new());
    row(
        w,
        "of which the router's NAPI threads, %",
        s.threads,
        0.01,
        0,
        String::new(),
    );
    row(
        w,
        "router CPU per packet, ns",
        s.ns_per_packet,
        1.0,
        0,
        less(s.ns_t_less_a, 0),
    );
    for (name, v, diff) in &s.programs {
        row(
            w,
            &format!("`{name}`, ns per run (kernel statistics, less the no-op's)"),
            *v,
            1.0,
            0,
            less(*diff, 0),
        );
    }
    row(
        w,
        "router CPU per connection, µs",
        s.us_per_conn,
        1.0,
        1,
        less(s.us_t_less_a, 1),
    );
    let _ = if s.alone[0].n == 0 {
        writeln!(
            w,
            "\nIn no round did both A and T have the router core to themselves (their NAPI \
             threads {:.0} % of it or more): another worker's load shared it.",
            ALONE * 100.0
        )
    } else {
        writeln!(
            w,
            "\nIn the {} rounds where both A and T had the router core to themselves (their \
             NAPI threads {:.0} % of it or more; in the others another worker's load shared \
             it): T/A {}x through one router core, T-A {} ns of router CPU per packet.",
            s.alone[0].n,
            ALONE * 100.0,
            s.alone[0].show(1.0, 3),
            less(s.alone[1], 0)
        )
    };
    let _ = writeln!(
        w,
        "\nA program's run time (`BPF_ENABLE_STATS`) counts the program alone, under either \
         attachment; the router CPU per packet also counts the hook that calls it (TCX's \
         program array, or the clsact qdisc's classifier chain and cls_bpf).\n"
    );
}

#[cfg(test)]
mod tests {
    use super::{AttachRound, AttachSummary, Variant};
    use crate::coreround::CoreRound;

    fn round(round: usize, variant: Variant, pps: f64, busy: f64, pod: f64) -> AttachRound {
        AttachRound {
            round,
            variant,
            attached: Vec::new(),
            pps,
            core: CoreRound {
                round,
                variant,
                pps,
                pps_router_busy: 1.0,
                conn_per_s: 1e4,
                conn_router_busy: 0.5,
                pps_threads_busy: Some(busy),
                conn_threads_busy: Some(0.5),
                program_ns: [("pod_ingress", pod), ("lab_xdp_pass", 40.0)]
                    .map(|(n, t)| (n.to_owned(), t))
                    .into(),
                generator: None,
            },
        }
    }

    /// T is paired with A of the same round: ratios and differences per round, programs
    /// net of the no-op; a round without its A does not count in the paired figures.
    #[test]
    fn t_is_paired_with_a_round_by_round() {
        let rounds = [
            round(0, Variant::A, 1e6, 1.0, 240.0),
            round(0, Variant::T, 0.8e6, 1.0, 250.0),
            round(1, Variant::A, 0.5e6, 0.5, 240.0),
            round(1, Variant::T, 0.5e6, 0.6, 240.0),
            round(2, Variant::T, 0.1e6, 1.0, 900.0),
        ];
        let s = AttachSummary::of(&rounds);
        assert_eq!(s.rounds, 3);
        assert_eq!((s.pps[0].n, s.pps[1].n), (2, 3));
        let ratio = s.core_pps_t_over_a;
        assert_eq!((ratio.min, ratio.max, ratio.n), (0.8, 1.0, 2));
        // 1000 ns against 1250 in round 0, 1000 against 1200 in round 1.
        let less = s.ns_t_less_a;
        assert_eq!(
            (less.min.round(), less.max.round(), less.n),
            (200.0, 250.0, 2)
        );
        assert_eq!(s.programs.len(), 1);
        let (name, each, diff) = &s.programs[0];
        assert_eq!(name, "pod_ingress");
        assert_eq!((each[0].median, each[1].median), (200.0, 210.0));
        assert_eq!((diff.min, diff.max, diff.n), (0.0, 10.0, 2));
    }
}
