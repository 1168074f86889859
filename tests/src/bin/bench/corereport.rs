//! The per-core mode's figures in BENCHMARKS.md (the rounds: [`crate::percore`]).

use std::fmt::Write as _;

use crate::{
    coreround::CoreRound,
    figures::Spread,
    percore::{LOAD_CPU, ROUTER_CPU},
    variant::Variant,
};

/// The per-core figures: per variant (A, B, C) and, paired by round, over C and A/B.
pub(crate) struct CoreSummary {
    pub rounds: usize,
    pub pps: [Spread; 3],
    pub busy: [Spread; 3],
    /// Router CPU time per packet, ns.
    pub ns_per_packet: [Spread; 3],
    /// Router CPU per packet minus C's, ns: A, B.
    pub ns_over_c: [Spread; 2],
    pub pps_a_over_b: Spread,
    pub pps_a_over_c: Spread,
    pub conn: [Spread; 3],
    /// Router CPU time per connection, µs.
    pub us_per_conn: [Spread; 3],
    /// Router CPU per connection minus C's, µs: A, B.
    pub us_over_c: [Spread; 2],
    /// A's router CPU per connection over C, divided by B's.
    pub conn_cost_a_over_b: Spread,
    /// Per variant: each BPF program on the router's path, ns per run minus the no-op's
    /// (the statistics' own cost).
    pub programs: [Vec<(String, Spread)>; 3],
}

impl CoreSummary {
    pub(crate) fn of(rounds: &[CoreRound]) -> Self {
        let n = rounds.iter().map(|r| r.round + 1).max().unwrap_or(0);
        let per = |v: Variant, f: fn(&CoreRound) -> f64| {
            Spread::of(rounds.iter().filter(|r| r.variant == v).map(f))
        };
        let all =
            |f: fn(&CoreRound) -> f64| [per(Variant::A, f), per(Variant::B, f), per(Variant::C, f)];
        let paired = |x: Variant, y: Variant, f: &dyn Fn(&CoreRound, &CoreRound) -> f64| {
            Spread::of((0..n).filter_map(|round| {
                let get = |v| rounds.iter().find(|r| r.round == round && r.variant == v);
                Some(f(get(x)?, get(y)?))
            }))
        };
        let ns_over = |a: &CoreRound, c: &CoreRound| a.ns_per_packet() - c.ns_per_packet();
        let us_over = |a: &CoreRound, c: &CoreRound| a.us_per_conn() - c.us_per_conn();
        let conn_cost = Spread::of((0..n).filter_map(|round| {
            let get = |v| rounds.iter().find(|r| r.round == round && r.variant == v);
            let (a, b, c) = (get(Variant::A)?, get(Variant::B)?, get(Variant::C)?);
            Some(us_over(a, c) / us_over(b, c))
        }));
        Self {
            rounds: n,
            pps: all(|r| r.pps),
            busy: all(|r| r.pps_router_busy),
            ns_per_packet: all(CoreRound::ns_per_packet),
            ns_over_c: [
                paired(Variant::A, Variant::C, &ns_over),
                paired(Variant::B, Variant::C, &ns_over),
            ],
            pps_a_over_b: paired(Variant::A, Variant::B, &|a, b| a.pps / b.pps),
            pps_a_over_c: paired(Variant::A, Variant::C, &|a, c| a.pps / c.pps),
            conn: all(|r| r.conn_per_s),
            us_per_conn: all(CoreRound::us_per_conn),
            us_over_c: [
                paired(Variant::A, Variant::C, &us_over),
                paired(Variant::B, Variant::C, &us_over),
            ],
            conn_cost_a_over_b: conn_cost,
            programs: [Variant::A, Variant::B, Variant::C].map(|v| programs(rounds, v)),
        }
    }
}

/// `variant`'s programs (all but the no-op), each a spread over the rounds of its time per
/// run minus the no-op's in the same round.
pub(crate) fn programs(rounds: &[CoreRound], variant: Variant) -> Vec<(String, Spread)> {
    let of = || rounds.iter().filter(move |r| r.variant == variant);
    let names: std::collections::BTreeSet<&String> = of()
        .flat_map(|r| r.program_ns.keys())
        .filter(|n| *n != NOOP)
        .collect();
    names
        .into_iter()
        .map(|name| {
            let net = of().filter_map(|r| Some(r.program_ns.get(name)? - r.program_ns.get(NOOP)?));
            (name.clone(), Spread::of(net))
        })
        .collect()
}

/// The harness's no-op XDP program: its time per run is the statistics' own cost.
pub(crate) const NOOP: &str = "lab_xdp_pass";

/// The section "Per router core": what it answers, the figures, and how they were taken.
pub(crate) fn section(
    w: &mut String,
    s: &CoreSummary,
    rounds: &[CoreRound],
    measured: Option<&str>,
) {
    if s.rounds == 0 {
        return;
    }
    let _ = writeln!(w, "## Per router core\n");
    if let Some(when) = measured {
        let _ = writeln!(
            w,
            "*Measured apart from the rest of this report, {when}.*\n"
        );
    }
    let _ = writeln!(
        w,
        "The figures above share two CPUs between the router and the traffic (generator, \
         sockets, gateway); they answer *how fast is the whole path on this machine*. Here \
         the router's packet processing runs alone on CPU {ROUTER_CPU} and everything else on \
         CPU {LOAD_CPU}, which answers *what does the router itself cost*: packets per second \
         one router core forwards, and the router's CPU time per packet and per connection: \
         the CPU time of the kernel threads that run the router's receive paths, from the \
         scheduler's account (`/proc/<pid>/schedstat`, nanoseconds) over the window, not \
         derived from a rate; the router core's busy share (from /proc/stat) shows whether \
         it was saturated. {} interleaved rounds, each on a fresh lab.\n",
        s.rounds
    );
    if let Some(note) = generator_note(rounds.iter().filter(|r| Variant::ALL.contains(&r.variant)))
    {
        let _ = writeln!(w, "{note}\n");
    }
    let _ = writeln!(w, "{}", crate::figures::VARIANT_TABLE_HEAD);
    // A row of the three variants' figures (C's is 0 in the over-C rows) and the ratio
    // cells, empty where none applies.
    let row = |w: &mut String, what: &str, v: [String; 3], ratios: [&str; 2]| {
        let cell = |r: &str| {
            if r.is_empty() {
                String::new()
            } else {
                format!(" {r}")
            }
        };
        let _ = writeln!(
            w,
            "| {what} | {} | {} | {} |{} |{} |",
            v[0],
            v[1],
            v[2],
            cell(ratios[0]),
            cell(ratios[1])
        );
    };
    let each = |t: &[Spread; 3], scale: f64, digits: usize| t.map(|x| x.show(scale, digits));
    let over_c = |t: &[Spread; 2], digits: usize| {
        [
            t[0].show(1.0, digits),
            t[1].show(1.0, digits),
            "0".to_owned(),
        ]
    };
    let programs = |p: &[(String, Spread)]| {
        if p.is_empty() {
            return "none".to_owned();
        }
        p.iter()
            .map(|(name, t)| format!("`{name}` {}", t.show(1.0, 0)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    row(
        w,
        "small UDP frames through one router core, kpps",
        each(&s.pps, 1e3, 0),
        [&s.pps_a_over_b.show(1.0, 2), &s.pps_a_over_c.show(1.0, 2)],
    );
    row(w, "router core busy, %", each(&s.busy, 0.01, 0), ["", ""]);
    row(
        w,
        "router CPU per packet, ns",
        each(&s.ns_per_packet, 1.0, 0),
        ["", ""],
    );
    row(
        w,
        "router CPU per packet over C, ns",
        over_c(&s.ns_over_c, 0),
        ["", ""],
    );
    row(
        w,
        "BPF programs on the router core, ns per run (kernel statistics, less the no-op's)",
        s.programs.each_ref().map(|p| programs(p)),
        ["", ""],
    );
    row(
        w,
        "short TCP connections/s (load CPU bound)",
        each(&s.conn, 1.0, 0),
        ["", ""],
    );
    row(
        w,
        "router CPU per connection, µs",
        each(&s.us_per_conn, 1.0, 1),
        ["", ""],
    );
    row(
        w,
        "router CPU per connection over C, µs",
        over_c(&s.us_over_c, 1),
        [&s.conn_cost_a_over_b.show(1.0, 2), ""],
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "How: every veth a packet enters the lab by receives in NAPI (an XDP program that \
         passes everything on all four, for A, B and C alike) in threaded mode, with the \
         kernel thread pinned: the router namespace's entries (`eth0` from the client, the \
         node's `uplink` under macvlan0 from the gateway) to CPU {ROUTER_CPU}, the client's \
         `eth0` and the gateway's `lan0` to CPU {LOAD_CPU}; this process, the servers and the \
         clients are pinned to CPU {LOAD_CPU}.\n\n\
         - Small packets: `lab_xdp_gen` run by BPF_PROG_TEST_RUN in live-frames mode on CPU \
           {LOAD_CPU} sends the same 60-byte frames of 2048 UDP flows as trafgen out of the \
           client's `eth0`, paced during the warm-up to offer about 30 % more than the \
           router core takes (an empty `bpf_loop` before each frame, its length tuned in six \
           steps; the surplus is dropped at the router's veth queue, before the router). \
           Unpaced, or paced by dropping frames, the generator returned most of its pages to \
           its page pool's ring, under the lock the router core takes to return the pages of \
           the frames it sent. `lab_sink` on the node's uplink (TC \
           egress) counts the router's output by source address and drops it, so no work of \
           the gateway's lands on the router core; the rate is its count over the window, \
           and a frame with the wrong source fails the round. After the window the kernel's \
           BPF statistics run for half a second (`BPF_ENABLE_STATS`: the programs' run time \
           and count); each program's time per run is given less that of `lab_xdp_pass`, \
           which does nothing, so that the statistics' own two clock reads are left out. The router core's figures \
           include what a NIC driver and the wire would do: the veth's receive (the frame \
           becomes an skb), the macvlan, the TC hook where the sink sits.\n\
         - Connections: connrate as above; C's connections go to the server's address (the \
           client routes the server's network via the router pod, the gateway routes the \
           pod network via EGRESS_SOURCE) and its way back is `lab_return` on macvlan0's \
           ingress, `lab_forward`'s mirror, so C is the least a router does per \
           connection: a redirect each way, no NAT, no conntrack. The client and server share CPU {LOAD_CPU}, which bounds the \
           rate; the router core is not saturated, and each packet wakes a NAPI thread on \
           the other CPU (an IPI and a context switch on this VM), the same for A, B and C: \
           the over-C row takes that out.\n"
    );
}

/// What the report says of `rounds` whose small frames came from another generator than
/// `lab_xdp_gen` (on a kernel that refuses live frames); none when all came from it.
pub(crate) fn generator_note<'a>(
    rounds: impl IntoIterator<Item = &'a CoreRound>,
) -> Option<String> {
    let (mut all, mut other) = (0, 0);
    for r in rounds {
        all += 1;
        other += usize::from(r.generator.is_some());
    }
    (other > 0).then(|| {
        format!(
            "*{other} of these {all} per-core rounds ran on a kernel that refuses live frames \
             (`BPF_F_TEST_XDP_LIVE_FRAMES`: EPERM): their small frames came from an AF_PACKET \
             socket of the bench's on CPU {LOAD_CPU} (qdisc bypassed, `sendmmsg` batches, the \
             same frame and flows), unpaced, instead of `lab_xdp_gen`; what the router's full \
             queue refuses is dropped at the sender.*"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::{CoreRound, Variant, programs};

    fn round(round: usize, variant: Variant, times: &[(&str, f64)]) -> CoreRound {
        CoreRound {
            round,
            variant,
            pps: 1e6,
            pps_router_busy: 1.0,
            conn_per_s: 1e4,
            conn_router_busy: 0.4,
            pps_threads_busy: None,
            conn_threads_busy: None,
            program_ns: times.iter().map(|&(n, t)| (n.to_owned(), t)).collect(),
            generator: None,
        }
    }

    /// Each program's time is taken less the no-op's of the same round, the no-op itself
    /// is not listed, and rounds without the no-op do not count.
    #[test]
    fn program_times_are_net_of_the_noop_round_by_round() {
        let rounds = [
            round(
                0,
                Variant::A,
                &[("pod_ingress", 260.0), ("lab_xdp_pass", 40.0)],
            ),
            round(
                1,
                Variant::A,
                &[("pod_ingress", 300.0), ("lab_xdp_pass", 60.0)],
            ),
            round(2, Variant::A, &[("pod_ingress", 900.0)]),
            round(
                0,
                Variant::C,
                &[("lab_forward", 55.0), ("lab_xdp_pass", 45.0)],
            ),
        ];
        let a = programs(&rounds, Variant::A);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, "pod_ingress");
        assert_eq!(
            (a[0].1.median, a[0].1.min, a[0].1.max, a[0].1.n),
            (230.0, 220.0, 240.0, 2)
        );
        assert_eq!(programs(&rounds, Variant::C)[0].1.median, 10.0);
        assert!(programs(&rounds, Variant::B).is_empty());
    }
}
