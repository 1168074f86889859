//! Prometheus `/metrics` and `/healthz` of the pod agent, over hyper. Counters are read from the
//! data plane's maps at scrape time, so they are exact and cost nothing between scrapes.

use std::{
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

pub use crate::agent::prometheus::{counters, family, single};
pub use crate::config::agents::Listen;
use crate::{
    agent::prometheus,
    dataplane::{
        discover,
        maps::MapSet,
        programs::{self, Interfaces, Mode},
    },
    inspect,
};
use egress_common::{DropReason, RuleKey, RuleTarget, Stat, config_flags};

/// What the agent itself counts, next to the data plane's counters.
#[derive(Debug, Default)]
pub struct AgentCounters {
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    pub gc_runs: AtomicU64,
    pub gc_expired: AtomicU64,
    /// The IPv4 conntrack tables at the last GC pass.
    pub conntrack: TableGauges,
    /// The IPv6 ones.
    pub conntrack6: TableGauges,
    /// IPv4 clients whose new flows are refused (over `--max-flows-per-source`).
    pub limited_sources: AtomicU64,
    /// IPv6 ones.
    pub limited_sources6: AtomicU64,
    /// `--max-flows-per-source` in force, IPv4 and IPv6 (0: no limit).
    pub flow_limit: AtomicU64,
    pub flow_limit6: AtomicU64,
    /// Milliseconds to the next GC pass, as last chosen.
    pub gc_interval_ms: AtomicU64,
}

/// One family's conntrack tables at the last GC pass.
#[derive(Debug, Default)]
pub struct TableGauges {
    /// Entries of answered flows, and the table's capacity.
    pub entries: AtomicU64,
    pub capacity: AtomicU64,
    /// Entries of flows not answered yet, and that table's capacity.
    pub unreplied_entries: AtomicU64,
    pub unreplied_capacity: AtomicU64,
}

/// State shared between the agent and the HTTP handlers.
pub struct Shared {
    pub instance: String,
    pub pod_interface: String,
    pub egress_interface: String,
    /// Read-only handles on the data plane's maps.
    pub maps: MapSet,
    /// The rules as written, for labels.
    pub rules: Mutex<Vec<(RuleKey, RuleTarget)>>,
    pub counters: AgentCounters,
}

/// The exposition in Prometheus text format 0.0.4.
pub fn render(shared: &Shared) -> Result<String, crate::dataplane::maps::Error> {
    let stats = shared.maps.stats()?;
    let rule_stats = shared.maps.rule_stats()?;
    let config = shared.maps.config()?;
    let rules = shared
        .rules
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let c = &shared.counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();

    counters(&mut out, &stats);
    let mut views = inspect::rules(&rules, &rule_stats, config.as_ref(), None);
    if config.is_some_and(|c| c.flags & config_flags::IPV6 != 0) {
        views.extend(inspect::rules6(
            &shared.maps.rules6()?,
            &rule_stats,
            &shared.maps.config6()?,
            None,
        ));
    }
    family(
        &mut out,
        "egress_router_rule_packets_total",
        "counter",
        "Packets translated per rule (id 0 is the fallback).",
    );
    let label = |r: &inspect::RuleView| {
        format!(
            "rule=\"{}\",family=\"{}\",proto=\"{}\",port=\"{}\",target=\"{}\"",
            r.id, r.family, r.proto, r.port, r.target
        )
    };
    for r in views.iter().filter(|r| r.target != "local") {
        let _ = writeln!(
            out,
            "egress_router_rule_packets_total{{{}}} {}",
            label(r),
            r.packets
        );
    }
    family(
        &mut out,
        "egress_router_rule_bytes_total",
        "counter",
        "Bytes translated per rule (id 0 is the fallback).",
    );
    for r in views.iter().filter(|r| r.target != "local") {
        let _ = writeln!(
            out,
            "egress_router_rule_bytes_total{{{}}} {}",
            label(r),
            r.bytes
        );
    }
    single(
        &mut out,
        "egress_router_nat_port_retries_total",
        "counter",
        "Source-port allocation retries (the first choice was taken).",
        stats.path(Stat::NatRetries).packets,
    );
    single(
        &mut out,
        "egress_router_nat_allocation_failures_total",
        "counter",
        "New flows dropped because no source port was free.",
        stats.drop(DropReason::NatExhausted).packets,
    );
    single(
        &mut out,
        "egress_router_conntrack_full_total",
        "counter",
        "New flows dropped because the conntrack table refused them.",
        stats.drop(DropReason::ConntrackFull).packets,
    );
    // Per address family; IPv6 only for an instance that has it.
    let ipv6 = config.is_some_and(|c| c.flags & config_flags::IPV6 != 0);
    let families: &[(&str, &TableGauges, &AtomicU64, &AtomicU64)] = if ipv6 {
        &[
            ("ipv4", &c.conntrack, &c.limited_sources, &c.flow_limit),
            ("ipv6", &c.conntrack6, &c.limited_sources6, &c.flow_limit6),
        ]
    } else {
        &[("ipv4", &c.conntrack, &c.limited_sources, &c.flow_limit)]
    };
    let per_family =
        |out: &mut String,
         name: &str,
         help: &str,
         value: &dyn Fn(&TableGauges, &AtomicU64, &AtomicU64) -> u64| {
            family(out, name, "gauge", help);
            for (label, gauges, limited, limit) in families {
                let _ = writeln!(
                    out,
                    "{name}{{family=\"{label}\"}} {}",
                    value(gauges, limited, limit)
                );
            }
        };
    per_family(
        &mut out,
        "egress_router_conntrack_entries",
        "Conntrack entries of answered flows (two per flow) at the last GC pass.",
        &|g, _, _| load(&g.entries),
    );
    per_family(
        &mut out,
        "egress_router_conntrack_unreplied_entries",
        "Conntrack entries of flows not answered yet (two per flow) at the last GC pass.",
        &|g, _, _| load(&g.unreplied_entries),
    );
    per_family(
        &mut out,
        "egress_router_limited_clients",
        "Clients over --max-flows-per-source whose new flows are refused.",
        &|_, l, _| load(l),
    );
    per_family(
        &mut out,
        "egress_router_client_flow_limit",
        "Flows one client may hold (--max-flows-per-source in force; 0: no limit).",
        &|_, _, limit| load(limit),
    );
    per_family(
        &mut out,
        "egress_router_conntrack_unreplied_capacity",
        "Capacity in entries of the table of flows not answered yet.",
        &|g, _, _| load(&g.unreplied_capacity),
    );
    per_family(
        &mut out,
        "egress_router_conntrack_capacity",
        "Capacity in entries of the table of answered flows.",
        &|g, _, _| load(&g.capacity),
    );
    single(
        &mut out,
        "egress_router_conntrack_gc_runs_total",
        "counter",
        "Conntrack garbage-collection passes.",
        load(&c.gc_runs),
    );
    single(
        &mut out,
        "egress_router_conntrack_gc_expired_total",
        "counter",
        "Conntrack entries removed by GC after their timeout.",
        load(&c.gc_expired),
    );
    single(
        &mut out,
        "egress_router_conntrack_gc_interval_seconds",
        "gauge",
        "Current GC interval (shorter as the table fills).",
        load(&c.gc_interval_ms) as f64 / 1000.0,
    );
    single(
        &mut out,
        "egress_router_config_reloads_total",
        "counter",
        "Configuration reloads applied.",
        load(&c.reloads),
    );
    single(
        &mut out,
        "egress_router_config_reload_failures_total",
        "counter",
        "Configuration reloads rejected (the running rules stayed).",
        load(&c.reload_failures),
    );
    Ok(out)
}

fn health(shared: &Shared) -> Result<(), String> {
    let config = shared
        .maps
        .config()
        .map_err(|e| crate::error_chain(&e).to_string())?
        .ok_or("not configured")?;
    let interfaces = Interfaces::pod(&shared.pod_interface, &shared.egress_interface);
    let programs = discover::attached_programs(Mode::Pod, &interfaces)
        .map_err(|e| crate::error_chain(&e).to_string())?;
    // The IPv6 programs too, where the instance has IPv6.
    let expected = programs::wanted(Mode::Pod, config.flags & config_flags::IPV6 != 0).count();
    if programs.len() < expected {
        return Err(format!(
            "{} of {expected} programs attached",
            programs.len()
        ));
    }
    Ok(())
}

/// Serves the agent's `/metrics` and `/healthz` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let health_of = shared.clone();
    prometheus::serve_endpoints(
        listener,
        move || render(&shared).map_err(|err| crate::error_chain(&err).to_string()),
        move || health(&health_of),
    )
    .await;
}

/// Serves the agent's `/healthz` alone on `listener` until the task is dropped.
pub async fn serve_health(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    prometheus::serve_health(listener, move || health(&shared)).await;
}
