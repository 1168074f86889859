//! `cargo xtask bench`: egress-router (A) against the classic iptables egress router (B) and
//! the lab's ceiling, a BPF forwarder (C), in interleaved rounds on fresh netns labs, plus the
//! programs' costs. Writes BENCHMARKS.md and bench/. Needs root; changes nothing but its labs.
//!
//! | module | concern |
//! |---|---|
//! | `args` | the command line |
//! | `figures` | spreads, medians and the targets the report judges |
//! | `variant` | the three set-ups measured side by side (A, B, C) |
//! | `attachkind` | T (A attached with tc) against A (TCX): rounds and report |
//! | `attachcheck` | how A's and T's programs are attached, asserted |
//! | `rounds` | one lab round of a variant |
//! | `traffic` | the three loads: trafgen, iperf3, connrate |
//! | `http` | the proxy modes' load (wrk against nginx) |
//! | `percore` | the per-core mode's rounds |
//! | `corelab` | the per-core lab's pieces |
//! | `coreround` | one round of the per-core mode |
//! | `cpus` | the per-core mode's CPU placement and accounting |
//! | `corereport` | the per-core mode's figures |
//! | `progcost` | per-packet program costs from BPF_PROG_TEST_RUN |
//! | `gc6` | the conntrack GC over a full IPv6 table |
//! | `nodemode` | node mode's figures: N against P |
//! | `flood` | the unsolicited flood |
//! | `replypath` | node mode's reply path under a download |
//! | `failover` | failover across nodes, measured |
//! | `host` | facts about the machine and its tools |
//! | `report` | summaries of the raw rounds |
//! | `markdown` | BENCHMARKS.md |
//! | `method` | the Method section of BENCHMARKS.md |
//! | `chart` | bench/chart.svg |

mod args;
mod attachcheck;
mod attachkind;
mod chart;
mod corelab;
mod corereport;
mod coreround;
mod cpus;
mod failover;
mod figures;
mod flood;
mod gc6;
mod host;
mod http;
mod markdown;
mod method;
mod nodemode;
mod percore;
mod progcost;
mod replypath;
mod report;
mod rounds;
mod traffic;
mod variant;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::Parser as _;

use crate::{
    args::Args,
    progcost::{TABLES, Table},
    report::{Memory, Results, Summary},
    traffic::Windows,
    variant::Variant,
};

fn main() -> Result<()> {
    let args = Args::parse();
    if args.render_only {
        return write(&args.out, &read_results(&args.out)?);
    }
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        bail!("run as root: the benchmarks build network namespaces and load BPF programs");
    }
    for tool in [
        "trafgen",
        "iperf3",
        "nft",
        "iptables-restore",
        "ss",
        "wrk",
        "nginx",
        "squid",
        "haproxy",
        "dnsmasq",
        "ethtool",
    ] {
        if host::which(tool).is_none() {
            bail!("{tool} is not installed: run `cargo xtask setup`");
        }
    }
    let started = Instant::now();
    let mut failovers = Vec::new();
    for round in 0..args.failover_rounds {
        if args.costs_only
            || args.http_only
            || args.lab_only
            || args.core_only
            || args.node_only
            || args.attach_only
        {
            break;
        }
        for own_mac in [false, true] {
            let result = failover::round(round, own_mac)
                .with_context(|| format!("failover round {round}"))?;
            eprintln!(
                "bench: round {round} failover {:<10} first connection {:>6} ms, init {:>5.0} ms, gateway {} -> {}",
                if own_mac { "own MAC" } else { "stable MAC" },
                result
                    .first_connection_ms
                    .map_or_else(|| "none".to_owned(), |ms| format!("{ms:.0}")),
                result.init_ms,
                result.gateway_before,
                result.gateway_after
            );
            failovers.push(result);
        }
    }
    if args.failover_only {
        let mut results = read_results(&args.out)?;
        results.failover = failovers;
        results.failover_measured = Some(format!("on {} by `{}`", host::now_utc()?, args.command));
        return write(&args.out, &results);
    }
    let date = host::now_utc()?;
    let connrate = std::env::current_exe()?
        .parent()
        .context("bench has a directory")?
        .join("connrate");
    let windows = Windows {
        warmup: Duration::from_secs_f64(args.warmup),
        measure: Duration::from_secs_f64(args.measure),
    };

    if args.node_only {
        // Put into bench/results.json in place of the earlier node-mode rounds.
        let run = nodemode::run(args.node_rounds, args.core_rounds, windows, &connrate)?;
        let mut results = read_results(&args.out)?;
        results.replace_node(run);
        results.node_measured = Some(format!(
            "on {} at {} by `{}`",
            host::now_utc()?,
            host::machine()?.commit,
            args.command
        ));
        return write(&args.out, &results);
    }
    if args.attach_only {
        // Put into bench/results.json in place of the earlier T and A rounds.
        let mut run = attachkind::run(args.attach_rounds, windows, &connrate)?;
        let machine = host::machine()?;
        run.measured = Some(format!(
            "on {} at {} on kernel {} by `{}`",
            host::now_utc()?,
            machine.commit,
            machine.kernel,
            args.command
        ));
        let mut results = read_results(&args.out)?;
        results.attach = Some(run);
        return write(&args.out, &results);
    }
    let per_core = if args.costs_only || args.http_only || args.lab_only {
        Vec::new()
    } else {
        // N and P only when named: the full run measures them in the node-mode rounds.
        let named = |v: &Variant| args.variants.contains(&format!("{v:?}"));
        let chosen =
            |v: &Variant| named(v) || (args.variants.is_empty() && !Variant::NODE.contains(v));
        let variants: Vec<Variant> = Variant::ALL
            .into_iter()
            .chain(Variant::NODE)
            .filter(chosen)
            .collect();
        percore::rounds(args.core_rounds, &variants, windows, &connrate)?
    };
    if args.core_only {
        // Put into bench/results.json in place of the earlier rounds, and render again.
        let mut results = read_results(&args.out)?;
        results.per_core = per_core;
        results.per_core_measured = Some(format!(
            "on {} at {} by `{}`",
            host::now_utc()?,
            host::machine()?.commit,
            args.command
        ));
        return write(&args.out, &results);
    }
    let attach = if args.costs_only || args.http_only || args.lab_only || args.attach_rounds == 0 {
        None
    } else {
        Some(attachkind::run(args.attach_rounds, windows, &connrate)?)
    };
    let mut http = Vec::new();
    for round in 0..args.http_rounds {
        if args.costs_only || args.lab_only {
            break;
        }
        for variant in http::HttpVariant::ALL {
            if !args.http_variant.is_empty()
                && !args.http_variant.iter().any(|v| *v == variant.name())
            {
                continue;
            }
            let result = http::round(variant, round, Duration::from_secs_f64(args.http_measure))
                .with_context(|| format!("HTTP round {round}, {}", variant.label()))?;
            eprintln!(
                "bench: round {round} HTTP {:<26} keep-alive {:>8.0} req/s  close {:>8.0} req/s  errors {}",
                variant.label(),
                result.keepalive_rps,
                result.close_rps,
                result.errors
            );
            http.push(result);
        }
    }
    if args.http_only {
        return Ok(());
    }

    // The lab rounds first: creating the 1M-flow table (hundreds of MiB written at once)
    // leaves the kernel busy for a while, which a first lab round measured.
    let mut lab = Vec::new();
    for round in 0..args.rounds {
        for variant in Variant::ALL
            .into_iter()
            .chain(Variant::IPV6)
            .chain(Variant::NODE)
        {
            if args.costs_only {
                break;
            }
            // Node mode has rounds of its own (below): here only when named with --lab-only.
            if Variant::NODE.contains(&variant)
                && !(args.lab_only && args.variants.iter().any(|v| *v == format!("{variant:?}")))
            {
                continue;
            }
            if args.lab_only
                && !args.variants.is_empty()
                && !args.variants.iter().any(|v| *v == format!("{variant:?}"))
            {
                continue;
            }
            let result = rounds::lab_round(variant, round, windows, &connrate)
                .with_context(|| format!("round {round}, {}", variant.label()))?;
            rounds::print(&result);
            lab.push(result);
        }
    }
    if args.lab_only {
        return Ok(());
    }
    let node = if args.costs_only {
        None
    } else {
        Some(nodemode::run(
            args.node_rounds,
            args.core_rounds,
            windows,
            &connrate,
        )?)
    };

    let mut tables = Vec::new();
    let sizes = if args.small_table_only {
        &TABLES[..1]
    } else {
        &TABLES[..]
    };
    for &flows in sizes {
        let t = Instant::now();
        tables.push(Table::new(flows)?);
        eprintln!(
            "bench: {flows} flows created by pod_ingress in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    // The agent's GC over the full table, three passes (issue 17: at most 1 s of CPU).
    let big = tables.last_mut().context("a table")?;
    let mut gc_pass_cpu_s = Vec::new();
    for _ in 0..3 {
        let (gc_wall, gc_cpu) = big.gc_pass()?;
        eprintln!(
            "bench: a conntrack GC pass over {} flows: {:.2} s CPU, {:.2} s wall",
            big.flows, gc_cpu, gc_wall
        );
        gc_pass_cpu_s.push(gc_cpu);
    }
    // The same over 1M IPv6 flows, in a data plane of its own.
    let gc6_pass_cpu_s = if args.small_table_only {
        Vec::new()
    } else {
        gc6::passes(progcost::CAPACITY_FLOWS, big.flows, 3)?
    };
    let t = Instant::now();
    let big = tables.last().context("a table")?;
    let entries = big.entries()?;
    eprintln!(
        "bench: {entries} entries read back in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    if entries != 2 * big.flows as usize {
        bail!(
            "the {}-flow table holds {entries} entries, expected {}",
            big.flows,
            2 * big.flows
        );
    }
    let (memlock, capacity) = big.conntrack_memory()?;
    let memory = Memory {
        capacity_flows: capacity,
        memlock_bytes: memlock,
        bytes_per_flow: memlock as f64 / f64::from(capacity),
        entries_at_1m: entries,
        gc_pass_cpu_s,
        gc6_pass_cpu_s,
    };

    let mut costs = Vec::new();
    for round in 0..args.rounds {
        for table in &mut tables {
            let cost = table.round(round, args.calls)?;
            eprintln!(
                "bench: round {round} test_run {:>7} flows: no-op {:.0} ns, forwarder {:.0}, established {:.0}, new {:.0}, reply {:.0}",
                cost.flows,
                cost.noop_ns,
                cost.forwarder_ns,
                cost.established_ns,
                cost.new_flow_ns,
                cost.reply_ns
            );
            costs.push(cost);
        }
    }
    drop(tables);
    if args.costs_only {
        return Ok(());
    }

    let results = Results {
        date,
        command: args.command.clone(),
        machine: host::machine()?,
        rounds: args.rounds,
        warmup_s: args.warmup,
        measure_s: args.measure,
        udp_flows: traffic::UDP_FLOWS,
        calls_per_cost: args.calls,
        lab,
        http,
        failover: failovers,
        failover_measured: None,
        method: None,
        per_core,
        per_core_measured: None,
        attach,
        flood: Vec::new(),
        node_failover: Vec::new(),
        node_replies: Vec::new(),
        node_measured: None,
        costs,
        memory,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    let mut results = results;
    if let Some(node) = node {
        results.replace_node(node);
    }
    results.method = Some(method::method(&results));
    write(&args.out, &results)
}

/// The results of the last full run, bench/results.json under `out`.
fn read_results(out: &Path) -> Result<Results> {
    let path = out.join("bench/results.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn write(out: &Path, results: &Results) -> Result<()> {
    let summary = Summary::of(results);
    let dir = out.join("bench");
    std::fs::create_dir_all(&dir)?;
    let notes = std::fs::read_to_string(dir.join("NOTES.md")).unwrap_or_default();
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(results)? + "\n",
    )?;
    std::fs::write(dir.join("chart.svg"), chart::svg(&summary))?;
    let md = markdown::markdown(results, &summary, &notes);
    std::fs::write(out.join("BENCHMARKS.md"), &md)?;
    println!("{md}");
    eprintln!(
        "bench: wrote {}, {} and {} in {:.0} s",
        out.join("BENCHMARKS.md").display(),
        dir.join("results.json").display(),
        dir.join("chart.svg").display(),
        results.elapsed_s
    );
    Ok(())
}
