//! The pod agent (legacy mode and the DNS proxy's data plane, after set-up): keeps the rules
//! current through its rule source (SIGHUP, `--config-file` changes, DNS TTLs), collects
//! expired conntrack entries, serves metrics and health, forwards per-packet debug events,
//! and leaves the data plane running when it exits.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{
    agent::{
        gc::{Collected, Collector, entries_left},
        signals::{Asked, Signals},
    },
    conntrack::FamilyPass,
    dataplane::flows::CtFamily,
    instance::{
        Instance,
        claim::Holding,
        source::{Outcome, RuleSource, Trigger},
        teardown::step_down,
    },
    network::interface::pod_ips,
    pod_agent::{
        lock::AgentLock,
        metrics::{self, AgentCounters, Listen, Shared, TableGauges},
    },
};

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where `/metrics` and `/healthz` are served.
    pub metrics: Listen,
    /// Where `/healthz` alone is served, for the probes.
    pub health: Listen,
    /// The longest interval between conntrack GC passes (used when the table is empty).
    pub gc_max_interval: Duration,
    /// Flows one client may hold (both conntrack tables); `None`: a quarter of the
    /// conntrack capacity; 0: no limit.
    pub max_flows_per_source: Option<u32>,
    pub instance: String,
    pub pod_interface: String,
    pub egress_interface: String,
}

/// What the agent needs before the set-up may change anything: its lock (no other agent
/// runs for the instance) and its listeners (the ports are free). Whatever fails here
/// fails with the running data plane untouched.
#[derive(Debug)]
pub struct Prepared {
    _lock: AgentLock,
    metrics: Option<tokio::net::TcpListener>,
    health: Option<tokio::net::TcpListener>,
}

/// Binds `listen` (for `what`), if it is not off.
async fn bind(
    listen: Listen,
    pod_interface: &str,
    what: &str,
) -> Result<Option<tokio::net::TcpListener>> {
    let addr = match listen {
        Listen::Off => return Ok(None),
        Listen::At(addr) => addr,
        // The pod's IPv4 address, or its IPv6 one in a pod without IPv4.
        Listen::PodIp(port) => std::net::SocketAddr::new(pod_ips(pod_interface).await?[0], port),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for {what} on {addr}"))?;
    Ok(Some(listener))
}

/// Takes the instance's lock (see [`AgentLock::acquire`]) and binds the metrics and health
/// listeners.
pub async fn prepare(opts: &Options, take_over: bool) -> Result<Prepared> {
    let lock = AgentLock::acquire(&opts.instance, take_over)?;
    let metrics = bind(opts.metrics, &opts.pod_interface, "metrics").await?;
    let health = bind(opts.health, &opts.pod_interface, "health").await?;
    Ok(Prepared {
        _lock: lock,
        metrics,
        health,
    })
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(
    mut instance: Instance,
    mut rules: impl RuleSource,
    opts: Options,
    mut signals: Signals,
    prepared: Prepared,
) -> Result<()> {
    let shared = Arc::new(Shared {
        instance: opts.instance.clone(),
        pod_interface: opts.pod_interface.clone(),
        egress_interface: opts.egress_interface.clone(),
        maps: instance
            .maps()
            .reopen()
            .context("opening the maps for metrics")?,
        rules: std::sync::Mutex::new(instance.rules().to_vec()),
        counters: AgentCounters::default(),
    });
    let mut served = Vec::new();
    if let Some(listener) = prepared.metrics {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving /metrics and /healthz");
        }
        served.push(tokio::spawn(metrics::serve(listener, shared.clone())));
    }
    if let Some(listener) = prepared.health {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving /healthz");
        }
        served.push(tokio::spawn(metrics::serve_health(
            listener,
            shared.clone(),
        )));
    }

    let mut logger = if instance.router().flags & egress_common::config_flags::DEBUG != 0 {
        let logger = instance
            .dataplane_mut()
            .logger()
            .context("reading the data plane's log events")?;
        // SAFETY: the logger owns its ring buffer fd and keeps it open, unchanged, for as
        // long as the AsyncFd holds it.
        Some(
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    logger,
                    tokio::io::Interest::READABLE,
                )
            }
            .map_err(|err| err.into_parts().1)
            .context("polling the data plane's log events")?,
        )
    } else {
        None
    };

    let mut gc = Collector::new(opts.gc_max_interval, opts.max_flows_per_source);
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    // EGRESS_SOURCE held against another egress-router with the same address.
    let mut holding = Holding::new(&instance, &opts.egress_interface);
    let mut look = tokio::time::interval(Duration::from_secs(1));
    let mut rival = None;

    loop {
        let trigger = tokio::select! {
            asked = signals.next() => match asked {
                Asked::Stop => break,
                Asked::Reload => Some(Trigger::Hangup),
            },
            event = rules.next_event() => Some(Trigger::Event(event)),
            () = tokio::time::sleep_until(gc.next()) => {
                let ipv6 = instance.has_ipv6();
                if let Some(collected) = gc.pass(instance.dataplane_mut(), ipv6) {
                    record_gc(&shared.counters, &collected);
                }
                None
            }
            ready = async {
                match logger.as_mut() {
                    Some(fd) => fd.readable_mut().await.map(|mut g| { g.get_inner_mut().flush(); g.clear_ready(); }),
                    None => std::future::pending().await,
                }
            } => {
                ready.context("reading the data plane's log events")?;
                None
            }
            _ = look.tick() => {
                if let Err(older) = holding.tick(&instance).await {
                    rival = Some(older);
                    break;
                }
                None
            }
            _ = flush.tick(), if logger.is_some() => {
                // In case a ring-buffer wake-up was coalesced away.
                if let Some(fd) = logger.as_mut() {
                    fd.get_mut().flush();
                }
                None
            }
        };
        let Some(trigger) = trigger else { continue };
        let counters = &shared.counters;
        match rules.apply(trigger, &mut instance).await {
            Outcome::Unchanged => {}
            Outcome::Applied => {
                *shared
                    .rules
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = instance.rules().to_vec();
                counters.reloads.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Rejected => {
                counters.reload_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if let Some(fd) = logger.as_mut() {
        fd.get_mut().flush();
    }
    for task in served {
        // Waited for: the listener closes with the task, before the lock goes with
        // `prepared` below, so an agent taking over (which waits for the lock) finds the
        // metrics and health ports free.
        task.abort();
        let _ = task.await;
    }
    if let Some(rival) = rival {
        let names = (
            opts.instance.as_str(),
            opts.pod_interface.as_str(),
            opts.egress_interface.as_str(),
        );
        return Err(step_down(instance, names, &rival).await);
    }
    tracing::info!("terminating; the data plane stays attached");
    Ok(())
}

/// A family's pass into its gauges.
fn record<A: CtFamily>(gauges: &TableGauges, pass: &FamilyPass<A>) {
    let (left, unreplied) = entries_left(pass);
    gauges.entries.store(left, Ordering::Relaxed);
    gauges.capacity.store(pass.capacity, Ordering::Relaxed);
    gauges.unreplied_entries.store(unreplied, Ordering::Relaxed);
    gauges
        .unreplied_capacity
        .store(pass.unreplied_capacity, Ordering::Relaxed);
}

/// A GC pass into the agent's counters.
fn record_gc(c: &AgentCounters, collected: &Collected) {
    let pass = &collected.pass;
    if let Some(enforced) = collected.limited {
        let (v4, v6) = enforced.limited;
        c.limited_sources.store(v4, Ordering::Relaxed);
        c.limited_sources6.store(v6, Ordering::Relaxed);
        let (limit, limit6) = enforced.limits;
        if c.flow_limit.swap(u64::from(limit), Ordering::Relaxed) != u64::from(limit) {
            tracing::info!(
                limit,
                limit6,
                "flows per client (--max-flows-per-source; 0: none)"
            );
        }
        c.flow_limit6.store(u64::from(limit6), Ordering::Relaxed);
    }
    c.gc_runs.fetch_add(1, Ordering::Relaxed);
    c.gc_expired.fetch_add(
        pass.v4.expired_total() + pass.v6.expired_total(),
        Ordering::Relaxed,
    );
    record(&c.conntrack, &pass.v4);
    record(&c.conntrack6, &pass.v6);
    c.gc_interval_ms.store(
        u64::try_from(collected.interval.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}
