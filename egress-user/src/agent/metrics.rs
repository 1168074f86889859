//! Prometheus `/metrics` and `/healthz` of the agent, over hyper. Counters are read from the
//! data plane's maps at scrape time, so they are exact and cost nothing between scrapes.

use std::{
    convert::Infallible,
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use egress_common::{DropReason, RuleKey, RuleTarget, Stat, config_flags};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::{
    dataplane::{
        discover,
        maps::MapSet,
        programs::{PROGRAMS, PROGRAMS6},
    },
    inspect,
};

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

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A metric with one unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
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

    family(
        &mut out,
        "egress_router_packets_total",
        "counter",
        "Packets per data-plane path.",
    );
    for (stat, count) in &stats.paths {
        let _ = writeln!(
            out,
            "egress_router_packets_total{{path=\"{}\"}} {}",
            stat.name(),
            count.packets
        );
    }
    family(
        &mut out,
        "egress_router_bytes_total",
        "counter",
        "Bytes per data-plane path.",
    );
    for (stat, count) in &stats.paths {
        let _ = writeln!(
            out,
            "egress_router_bytes_total{{path=\"{}\"}} {}",
            stat.name(),
            count.bytes
        );
    }
    family(
        &mut out,
        "egress_router_drops_total",
        "counter",
        "Packets dropped, by reason.",
    );
    for (reason, count) in &stats.drops {
        let _ = writeln!(
            out,
            "egress_router_drops_total{{reason=\"{}\"}} {}",
            reason.name(),
            count.packets
        );
    }
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
    let families: &[(&str, &TableGauges, &AtomicU64)] = if ipv6 {
        &[
            ("ipv4", &c.conntrack, &c.limited_sources),
            ("ipv6", &c.conntrack6, &c.limited_sources6),
        ]
    } else {
        &[("ipv4", &c.conntrack, &c.limited_sources)]
    };
    let per_family = |out: &mut String,
                      name: &str,
                      help: &str,
                      value: &dyn Fn(&TableGauges, &AtomicU64) -> u64| {
        family(out, name, "gauge", help);
        for (label, gauges, limited) in families {
            let _ = writeln!(
                out,
                "{name}{{family=\"{label}\"}} {}",
                value(gauges, limited)
            );
        }
    };
    per_family(
        &mut out,
        "egress_router_conntrack_entries",
        "Conntrack entries of answered flows (two per flow) at the last GC pass.",
        &|g, _| load(&g.entries),
    );
    per_family(
        &mut out,
        "egress_router_conntrack_unreplied_entries",
        "Conntrack entries of flows not answered yet (two per flow) at the last GC pass.",
        &|g, _| load(&g.unreplied_entries),
    );
    per_family(
        &mut out,
        "egress_router_limited_clients",
        "Clients over --max-flows-per-source whose new flows are refused.",
        &|_, l| load(l),
    );
    per_family(
        &mut out,
        "egress_router_conntrack_unreplied_capacity",
        "Capacity in entries of the table of flows not answered yet.",
        &|g, _| load(&g.unreplied_capacity),
    );
    per_family(
        &mut out,
        "egress_router_conntrack_capacity",
        "Capacity in entries of the table of answered flows.",
        &|g, _| load(&g.capacity),
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
        .map_err(|e| e.to_string())?
        .ok_or("not configured")?;
    let programs = discover::attached_programs(&shared.pod_interface, &shared.egress_interface)
        .map_err(|e| e.to_string())?;
    // The IPv6 programs too, where the instance has IPv6.
    let expected = if config.flags & config_flags::IPV6 != 0 {
        PROGRAMS.len() + PROGRAMS6.len()
    } else {
        PROGRAMS.len()
    };
    if programs.len() < expected {
        return Err(format!(
            "{} of {expected} programs attached",
            programs.len()
        ));
    }
    Ok(())
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = |status: StatusCode, content_type: &'static str, body: String| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(content_type),
        );
        resp
    };
    let plain = "text/plain; charset=utf-8";
    Ok(match req.uri().path() {
        "/metrics" => match render(&shared) {
            Ok(body) => text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            ),
            Err(err) => text(StatusCode::INTERNAL_SERVER_ERROR, plain, format!("{err}\n")),
        },
        "/healthz" => match health(&shared) {
            Ok(()) => text(StatusCode::OK, plain, "ok\n".to_owned()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, plain, format!("{why}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            plain,
            "try /metrics or /healthz\n".to_owned(),
        ),
    })
}

/// Scrapers and probes served at once; one more is closed at once.
const MAX_CONNECTIONS: usize = 64;
/// How long a scraper may take to send a request's headers (or to start its next one).
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `/metrics` and `/healthz` on `listener` until the task is dropped, within
/// [`MAX_CONNECTIONS`] and [`HEADER_TIMEOUT`].
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(error = %err, "metrics: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: connection closed, {MAX_CONNECTIONS} served already");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| handle(shared.clone(), req));
            if let Err(err) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %err, "metrics: connection ended with an error");
            }
        });
    }
}

/// Where the metrics listen: a socket address, a port on the pod IP, or nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    Off,
    /// This port on the pod interface's address.
    PodIp(u16),
    At(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "off" {
            return Ok(Self::Off);
        }
        if let Some(port) = s.strip_prefix(':') {
            return port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .map(Self::PodIp)
                .ok_or_else(|| format!("'{s}': the port must be in the range 1 to 65535"));
        }
        s.parse::<SocketAddr>()
            .map(Self::At)
            .map_err(|_| format!("'{s}' is not ADDRESS:PORT, :PORT or off"))
    }
}
