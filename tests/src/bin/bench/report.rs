//! Summaries of the raw rounds and the three outputs: the JSON of every round, BENCHMARKS.md
//! and the SVG chart.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::http::HttpVariant;

use crate::{progcost::CostRound, variant::Variant};

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

    /// `median (min-max)` with `digits` decimals, each value divided by `scale`.
    pub(crate) fn show(&self, scale: f64, digits: usize) -> String {
        if self.n == 0 {
            return "n/a".into();
        }
        format!(
            "{:.d$} ({:.d$}-{:.d$})",
            self.median / scale,
            self.min / scale,
            self.max / scale,
            d = digits
        )
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
}

/// Conntrack map memory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Memory {
    pub capacity_flows: u32,
    pub memlock_bytes: u64,
    pub bytes_per_flow: f64,
    pub entries_at_1m: usize,
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
        }
    }
}

/// A data-plane target and whether the median meets it.
struct Target {
    what: &'static str,
    goal: String,
    measured: String,
    met: bool,
}

fn targets(s: &Summary) -> Vec<Target> {
    let at_most = |what, spread: Spread, limit: f64, unit: &str, digits: usize| Target {
        what,
        goal: format!("<= {limit} {unit}"),
        measured: format!("{} {unit}", spread.show(1.0, digits)),
        met: spread.median <= limit,
    };
    let at_least = |what, spread: Spread, limit: f64| Target {
        what,
        goal: format!(">= {limit}x"),
        measured: format!("{}x", spread.show(1.0, 2)),
        met: spread.median >= limit,
    };
    vec![
        at_most(
            "A overhead over the ceiling",
            s.overhead[0],
            150.0,
            "ns/packet",
            0,
        ),
        at_least("A/C small-packet rate", s.pps_a_over_c, 0.96),
        at_least("A/B small-packet rate", s.pps_a_over_b, 1.25),
        at_most(
            "established forward (1k flows)",
            s.established[0],
            100.0,
            "ns",
            0,
        ),
        at_most("reply (1k flows)", s.reply[0], 100.0, "ns", 0),
        at_most("new flow (1k flows)", s.new_flow[0], 400.0, "ns", 0),
        at_most("growth 1k -> 1M, established", s.growth[0], 1.3, "x", 2),
        at_most("growth 1k -> 1M, new flow", s.growth[1], 1.3, "x", 2),
        at_most("growth 1k -> 1M, reply", s.growth[2], 1.3, "x", 2),
        at_least("A/B TCP throughput, 1 stream", s.tcp1_a_over_b, 1.0),
        at_least("A/B TCP throughput, 4 streams", s.tcp4_a_over_b, 1.0),
        at_least("A/B connection rate", s.conn_a_over_b, 1.5),
    ]
}

/// BENCHMARKS.md: the run's context, the medians with their ranges, the ratios, the
/// targets, the method, and the hand-written analysis in `notes`.
pub(crate) fn markdown(r: &Results, s: &Summary, notes: &str) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Generated by `{}` on {} in {:.0} s. Raw rounds: [bench/results.json](bench/results.json); \
         chart: [bench/chart.svg](bench/chart.svg). Every figure is the median over {} \
         interleaved rounds (A B C A B C ...), with the range (min-max) in brackets.\n",
        r.command, r.date, r.elapsed_s, r.rounds
    );
    let m = &r.machine;
    let _ = writeln!(w, "| machine | |\n|---|---|");
    let _ = writeln!(w, "| CPU | {} x {} |", m.cpus, m.cpu);
    let _ = writeln!(w, "| memory | {:.1} GiB |", m.memory_gib);
    let _ = writeln!(w, "| kernel | {} |", m.kernel);
    let _ = writeln!(w, "| commit | {} |", m.commit);
    let _ = writeln!(w, "| date (UTC) | {} |\n", r.date);

    let _ = writeln!(w, "## In the lab\n");
    let _ = writeln!(
        w,
        "| figure | A egress-router | B iptables (classic) | C stateless BPF forwarder | A/B | A/C |\n\
         |---|---|---|---|---|---|"
    );
    let _ = writeln!(
        w,
        "| small UDP frames, kpps | {} | {} | {} | {} | {} |",
        s.pps[0].show(1e3, 0),
        s.pps[1].show(1e3, 0),
        s.pps[2].show(1e3, 0),
        s.pps_a_over_b.show(1.0, 2),
        s.pps_a_over_c.show(1.0, 2)
    );
    let _ = writeln!(
        w,
        "| CPU per packet over C, ns (2e9/pps(X) - 2e9/pps(C)) | {} | {} | 0 | | |",
        s.overhead[0].show(1.0, 0),
        s.overhead[1].show(1.0, 0)
    );
    // The rows C has no figure for (nothing translates, so TCP cannot get through).
    let ab_rows = [
        ("TCP, 1 stream, Gbit/s", &s.tcp1, s.tcp1_a_over_b, 2),
        ("TCP, 4 streams, Gbit/s", &s.tcp4, s.tcp4_a_over_b, 2),
        ("short TCP connections/s", &s.conn, s.conn_a_over_b, 0),
    ];
    for (what, spread, ratio, digits) in ab_rows {
        let _ = writeln!(
            w,
            "| {what} | {} | {} | n/a | {} | |",
            spread[0].show(1.0, digits),
            spread[1].show(1.0, digits),
            ratio.show(1.0, 2)
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "C over B in small-packet rate: {}x.\n",
        s.pps_c_over_b.show(1.0, 2)
    );

    if !r.http.is_empty() {
        http_section(w, r);
    }

    let _ = writeln!(w, "## Per packet, BPF_PROG_TEST_RUN\n");
    let _ = writeln!(
        w,
        "Nanoseconds per run above the no-op program, medians of {} runs per round.\n",
        r.calls_per_cost
    );
    let _ = writeln!(
        w,
        "| path | 1k flows | 1M flows | 1M/1k |\n|---|---|---|---|"
    );
    let rows = [
        ("no-op itself (subtracted)", s.noop, None),
        ("the ceiling's program (lab_forward)", s.forwarder, None),
        (
            "forward, established flow",
            s.established,
            Some(s.growth[0]),
        ),
        ("forward, new flow", s.new_flow, Some(s.growth[1])),
        ("reply", s.reply, Some(s.growth[2])),
    ];
    for (what, t, growth) in rows {
        let _ = writeln!(
            w,
            "| {what} | {} | {} | {} |",
            t[0].show(1.0, 0),
            t[1].show(1.0, 0),
            growth.map(|g| g.show(1.0, 2)).unwrap_or_default()
        );
    }
    let mem = &r.memory;
    let _ = writeln!(
        w,
        "\nConntrack memory: the CONNTRACK map (LRU hash, preallocated, two entries per flow) \
         sized for {} flows is charged {:.1} MiB (`memlock`), {:.0} bytes per flow, whether \
         the flows exist or not. With 1M flows it held {} entries.\n",
        mem.capacity_flows,
        mem.memlock_bytes as f64 / (1 << 20) as f64,
        mem.bytes_per_flow,
        mem.entries_at_1m
    );

    let _ = writeln!(w, "## Targets (data plane)\n");
    let _ = writeln!(w, "| target | goal | measured | |\n|---|---|---|---|");
    for t in targets(s) {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            t.what,
            t.goal,
            t.measured,
            if t.met { "met" } else { "**not met**" }
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "## Method\n\n\
         Each round builds a fresh netns lab per variant (client, router pod, node, gateway, \
         server; veth pairs and a private-mode macvlan, as in the tests) and runs the loads in \
         the same order:\n\n\
         - **A**: `egress-router` (release build) in `EGRESS_ROUTER_MODE=init` with \
           `EGRESS_DESTINATION` = `{udp} udp 203.0.113.10`, `{iperf} tcp 203.0.113.10`, \
           `{conn} tcp 203.0.113.10`.\n\
         - **B**: OpenShift's egress-router.sh network set-up (EGRESS_SOURCE/32 and a default \
           route via EGRESS_GATEWAY on macvlan0, `ip_forward=1`) and its `iptables-restore` \
           of one DNAT per line on `eth0` and `-A POSTROUTING -j SNAT --to-source \
           EGRESS_SOURCE` (iptables-nft, kernel conntrack).\n\
         - **C**: the same network set-up and `lab_forward` on `eth0` (TC ingress): \
           `bpf_redirect_neigh` to macvlan0 for IPv4, the helper A uses, no NAT, no \
           conntrack, no counters. The frames are addressed to the remote directly, since \
           nothing translates them.\n\n\
         Before each set-up and each load the bench waits (at most 5 s) until the machine is \
         below 5 % busy, so the kernel's teardown of the previous lab's namespaces does not \
         land in the next measurement.\n\n\
         Loads, in the client namespace:\n\n\
         - small packets: `trafgen --no-sock-mem` (one process per CPU, the default) sends \
           60-byte frames (64 with the FCS a wire adds) of {flows} UDP flows (source ports \
           10000-{last}); an nftables netdev-ingress rule on the gateway's `lan0` counts and \
           drops them (ARP passes). {warm:.0} s warm-up, then packets counted over {meas:.0} s.\n\
         - TCP: `iperf3 -P 1` and `-P 4`, {meas:.0} s plus 1 s omitted.\n\
         - connections: `connrate` (tests/src/bin/connrate.rs), 4 client threads: connect, \
           22-byte request, 43-byte reply, close, for {meas:.0} s.\n\n\
         BPF_PROG_TEST_RUN, after the lab rounds (in rounds of its own): one data plane per \
         table size, both with a CONNTRACK map sized \
         for {cap} flows, filled by its own `pod_ingress` with TCP SYNs (fallback IP, 256 \
         destination ports so the NAT port spaces stay sparse). Established and reply frames \
         are TCP ACKs cycling over up to {samples} flows spread over the whole table (each refreshed by one untimed packet per direction at the start of the round); new flows are \
         SYNs of flows never seen, removed again after each round. Each run is one program \
         execution (repeat 1); `lab_noop`, run the same way, is the harness's own cost.\n",
        udp = crate::variant::UDP_PORT,
        iperf = crate::variant::IPERF_PORT,
        conn = crate::variant::CONN_PORT,
        flows = r.udp_flows,
        last = 10_000 + u32::from(r.udp_flows) - 1,
        warm = r.warmup_s,
        meas = r.measure_s,
        cap = mem.capacity_flows,
        samples = crate::progcost::SAMPLES,
    );
    if !notes.trim().is_empty() {
        let _ = writeln!(w, "## Analysis\n\n{}", notes.trim());
    }
    md
}

/// Requests/s of `variant` per round: (round, keep-alive, close).
fn http_rounds(r: &Results, variant: HttpVariant) -> Vec<(usize, f64, f64)> {
    r.http
        .iter()
        .filter(|h| h.variant == variant)
        .map(|h| (h.round, h.keepalive_rps, h.close_rps))
        .collect()
}

/// Per-round ratios of `a` over `b` (same round): (keep-alive, close).
fn http_ratio(r: &Results, a: HttpVariant, b: HttpVariant) -> (Spread, Spread) {
    let (a, b) = (http_rounds(r, a), http_rounds(r, b));
    let pairs: Vec<((f64, f64), (f64, f64))> = a
        .iter()
        .filter_map(|&(round, ka, ca)| {
            b.iter()
                .find(|x| x.0 == round)
                .map(|&(_, kb, cb)| ((ka, ca), (kb, cb)))
        })
        .collect();
    (
        Spread::of(pairs.iter().map(|((ka, _), (kb, _))| ka / kb)),
        Spread::of(pairs.iter().map(|((_, ca), (_, cb))| ca / cb)),
    )
}

/// The proxy modes' HTTP load: figures and their targets.
fn http_section(w: &mut String, r: &Results) {
    let rounds = r.http.iter().map(|h| h.round).max().map_or(0, |m| m + 1);
    let _ = writeln!(w, "## Proxy modes: HTTP through the router pod\n");
    let _ = writeln!(
        w,
        "`wrk -t{t} -c{c}` from the client namespace to nginx in the server namespace, \
         {rounds} interleaved rounds, each set-up on a fresh lab. Requests/s.\n",
        t = crate::http::WRK_THREADS,
        c = crate::http::WRK_CONNECTIONS,
    );
    let _ = writeln!(
        w,
        "| set-up | keep-alive | `Connection: close` | failed requests |\n|---|---|---|---|"
    );
    for variant in HttpVariant::ALL {
        let rows = http_rounds(r, variant);
        if rows.is_empty() {
            continue;
        }
        let errors: u64 = r
            .http
            .iter()
            .filter(|h| h.variant == variant)
            .map(|h| h.errors)
            .sum();
        let _ = writeln!(
            w,
            "| {} | {} | {} | {errors} |",
            variant.label(),
            Spread::of(rows.iter().map(|x| x.1)).show(1.0, 0),
            Spread::of(rows.iter().map(|x| x.2)).show(1.0, 0),
        );
    }
    let (proxy_ka, proxy_close) = http_ratio(r, HttpVariant::HttpProxy, HttpVariant::Squid);
    let (dns_ka, dns_close) = http_ratio(r, HttpVariant::DnsProxy, HttpVariant::Dnat);
    let (haproxy_ka, haproxy_close) = http_ratio(r, HttpVariant::DnsProxy, HttpVariant::Haproxy);
    let _ = writeln!(
        w,
        "\ndns-proxy over HAProxy (what OpenShift's DNS proxy runs): {}x keep-alive, {}x \
         close.\n",
        haproxy_ka.show(1.0, 2),
        haproxy_close.show(1.0, 2)
    );
    let _ = writeln!(w, "### Targets (proxy modes)\n");
    let _ = writeln!(w, "| target | goal | measured | |\n|---|---|---|---|");
    let rows = [
        ("http-proxy / squid, keep-alive", proxy_ka, 3.0),
        ("http-proxy / squid, Connection: close", proxy_close, 3.0),
        ("dns-proxy / iptables DNAT, keep-alive", dns_ka, 1.0),
        (
            "dns-proxy / iptables DNAT, Connection: close",
            dns_close,
            1.0,
        ),
    ];
    for (what, spread, goal) in rows {
        let _ = writeln!(
            w,
            "| {what} | >= {goal}x | {}x | {} |",
            spread.show(1.0, 2),
            if spread.median >= goal {
                "met"
            } else {
                "**not met**"
            }
        );
    }
    let _ = writeln!(
        w,
        "\nSet-ups (the router pod's side; nginx 2 workers, `return 200`, keep-alive \
         unlimited):\n\n\
         - **squid**: `http_port` on the pod IP, `tcp_outgoing_address` EGRESS_SOURCE, allow \
           all, no cache, no access log (OpenShift's HTTP proxy image runs squid).\n\
         - **HAProxy**: TCP mode, 2 threads, `source` EGRESS_SOURCE (OpenShift's DNS proxy \
           image runs HAProxy in TCP mode).\n\
         - **iptables DNAT**: B above, one DNAT rule for port 80.\n\
         - **egress-router http-proxy**: the init container (`EGRESS_ROUTER_MODE=http-proxy`) \
           and the main container with `EGRESS_HTTP_PROXY_DESTINATION=203.0.113.10/32`, \
           info logs off (squid's access log is off too).\n\
         - **egress-router dns-proxy**: the init container (`dns-proxy`) and the main \
           container with `EGRESS_DNS_PROXY_DESTINATION=80 web.example.com`, resolved \
           through dnsmasq in the lab: the data plane.\n\n\
         Proxies get absolute URLs (`wrk.path`), the others `/`; every request carries \
         `Host: 203.0.113.10`. One second of warm-up, then the measured run.\n"
    );
}

const COLORS: [&str; 3] = ["#2b7bb9", "#c0392b", "#7f8c8d"];

/// One bar of a panel: label, colour, spread.
type Bar = (&'static str, &'static str, Spread);

/// The chart: one panel per figure, bars at the median, whiskers from min to max.
pub(crate) fn svg(s: &Summary) -> String {
    let [a, b, c] = COLORS;
    let mut panels: Vec<(&str, &str, f64, Vec<Bar>)> = vec![
        (
            "Small UDP frames",
            "kpps (higher is better)",
            1e3,
            vec![("A", a, s.pps[0]), ("B", b, s.pps[1]), ("C", c, s.pps[2])],
        ),
        (
            "CPU per packet over C",
            "ns (lower is better)",
            1.0,
            vec![("A", a, s.overhead[0]), ("B", b, s.overhead[1])],
        ),
        (
            "TCP throughput",
            "Gbit/s (higher is better)",
            1.0,
            vec![
                ("A 1", a, s.tcp1[0]),
                ("B 1", b, s.tcp1[1]),
                ("A 4", a, s.tcp4[0]),
                ("B 4", b, s.tcp4[1]),
            ],
        ),
        (
            "Short TCP connections",
            "connections/s (higher is better)",
            1.0,
            vec![("A", a, s.conn[0]), ("B", b, s.conn[1])],
        ),
    ];
    for (t, title) in [
        "Program cost, 1k flows in the table",
        "Program cost, 1M flows in the table",
    ]
    .into_iter()
    .enumerate()
    {
        panels.push((
            title,
            "ns above the no-op (lower is better)",
            1.0,
            vec![
                ("C prog", c, s.forwarder[t]),
                ("est", a, s.established[t]),
                ("new", a, s.new_flow[t]),
                ("reply", a, s.reply[t]),
            ],
        ));
    }
    let (pw, ph, top, bottom, left) = (300.0, 260.0, 50.0, 40.0, 50.0);
    let cols = 3;
    let rows = panels.len().div_ceil(cols);
    let (width, height) = (pw * cols as f64, ph * rows as f64 + 45.0);
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="10" y="18" font-size="13" font-weight="bold">egress-router benchmarks: A egress-router, B iptables (classic), C stateless BPF forwarder</text><text x="10" y="33" fill="gray">bars: medians over the rounds; whiskers: min-max. Raw rounds in bench/results.json.</text>"#
    );
    for (i, (title, unit, scale, bars)) in panels.iter().enumerate() {
        let x0 = (i % cols) as f64 * pw;
        let y0 = 45.0 + (i / cols) as f64 * ph;
        let plot_h = ph - top - bottom;
        let max = bars
            .iter()
            .map(|(_, _, sp)| sp.max / scale)
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max)
            .max(1e-9)
            * 1.1;
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" font-weight="bold">{title}</text><text x="{}" y="{}" fill="gray">{unit}</text>"#,
            x0 + left,
            y0 + 14.0,
            x0 + left,
            y0 + 28.0
        );
        let base = y0 + top + plot_h;
        let _ = writeln!(
            o,
            "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{base}\" stroke=\"#999\"/><line x1=\"{x}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#999\"/>",
            y0 + top,
            x0 + pw - 20.0,
            x = x0 + left,
        );
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="end" fill="gray">{}</text><text x="{}" y="{base}" text-anchor="end" fill="gray">0</text>"#,
            x0 + left - 4.0,
            y0 + top + 4.0,
            fmt_axis(max),
            x0 + left - 4.0
        );
        let slot = (pw - left - 30.0) / bars.len() as f64;
        for (j, (label, color, sp)) in bars.iter().enumerate() {
            let cx = r1(x0 + left + slot * (j as f64 + 0.5));
            let y = |v: f64| r1(base - (v / scale).max(0.0) / max * plot_h);
            let bw = r1(slot * 0.6);
            if sp.n > 0 {
                let _ = writeln!(
                    o,
                    r#"<rect x="{}" y="{}" width="{bw}" height="{}" fill="{color}"/>"#,
                    r1(cx - bw / 2.0),
                    y(sp.median),
                    r1(base - y(sp.median))
                );
                let _ = writeln!(
                    o,
                    "<line x1=\"{cx}\" y1=\"{}\" x2=\"{cx}\" y2=\"{}\" stroke=\"black\"/>",
                    y(sp.min),
                    y(sp.max)
                );
                let _ = writeln!(
                    o,
                    r#"<text x="{cx}" y="{}" text-anchor="middle">{}</text>"#,
                    y(sp.max) - 4.0,
                    fmt_axis(sp.median / scale)
                );
            }
            let _ = writeln!(
                o,
                r#"<text x="{cx}" y="{}" text-anchor="middle">{label}</text>"#,
                base + 14.0
            );
        }
    }
    let _ = writeln!(o, "</svg>");
    out
}

/// Rounded to 0.1: coordinates that read the same after a JSON round trip.
fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn fmt_axis(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
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
        assert_eq!(s.show(1e3, 1), "2.0 (1.0-3.0)");
        assert_eq!(Spread::of([]).show(1.0, 0), "n/a");
    }
}
