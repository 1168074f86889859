//! The agent (legacy mode after set-up): keeps the maps in sync with the configuration
//! (SIGHUP, `--config-file` changes), collects expired conntrack entries, serves metrics and
//! health, forwards per-packet debug events, and leaves the data plane running when it exits.

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{
    config::{Config, ConfigError, Raw},
    metrics::{self, Listen, Shared},
    redirect::{self, Report},
};

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The raw configuration it started from (the environment).
    pub raw: Raw,
    /// A file holding EGRESS_DESTINATION (a ConfigMap key mounted as a file).
    pub config_file: Option<PathBuf>,
    /// How often the file is checked for changes.
    pub config_poll: Duration,
    pub metrics: Listen,
    /// The longest interval between conntrack GC passes (used when the table is empty).
    pub gc_max_interval: Duration,
    pub instance: String,
    pub pod_interface: String,
    pub egress_interface: String,
    pub local_tcp_ports: Vec<u16>,
}

/// Signals the agent acts on, installed before set-up so none is missed.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Completes at the first SIGTERM or SIGINT.
    pub async fn terminated(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Reads the configuration file: its content is the EGRESS_DESTINATION value.
pub fn read_config_file(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("reading --config-file {}", path.display()))
}

/// Validates `raw` with `destination` in place of EGRESS_DESTINATION, and the agent's own
/// ports against the rules.
pub fn validate(raw: &Raw, destination: Option<String>, local_tcp_ports: &[u16]) -> Result<Config> {
    let mut raw = raw.clone();
    if destination.is_some() {
        raw.destination = destination;
    }
    let config = Config::from_raw(&raw)?;
    check_local_ports(&config, local_tcp_ports)?;
    Ok(config)
}

/// The agent's own TCP ports must not also be redirect rules.
pub fn check_local_ports(config: &Config, local_tcp_ports: &[u16]) -> Result<()> {
    for rule in &config.destinations.rules {
        if rule.proto == crate::config::Proto::Tcp && local_tcp_ports.contains(&rule.local_port) {
            anyhow::bail!(
                "EGRESS_DESTINATION: TCP port {} is also the agent's metrics port; choose \
                 another --metrics-address port or remove the rule",
                rule.local_port
            );
        }
    }
    Ok(())
}

/// GC interval for a table `fill` full (0..=1): the maximum when empty, down to one second
/// as it fills, so expired flows give their ports and slots back before the LRU has to
/// evict live ones.
#[must_use]
pub fn gc_interval(fill: f64, max: Duration) -> Duration {
    let free = (1.0 - fill.clamp(0.0, 1.0)).powi(2);
    max.mul_f64(free).max(Duration::from_secs(1)).min(max)
}

/// Runs the agent until SIGTERM or SIGINT.
///
/// With `names` (DNS proxy mode), the rules are not reloaded from the configuration: their
/// names are resolved again as TTLs expire, and SIGHUP resolves them all at once.
pub async fn run(
    mut report: Report,
    config: Config,
    opts: Options,
    mut signals: Signals,
    mut names: Option<crate::dns_proxy::Names>,
) -> Result<()> {
    let shared = Arc::new(Shared {
        instance: opts.instance.clone(),
        pod_interface: opts.pod_interface.clone(),
        egress_interface: opts.egress_interface.clone(),
        maps: report
            .dataplane
            .maps()
            .reopen()
            .context("opening the maps for metrics")?,
        rules: std::sync::Mutex::new(report.rules.clone()),
        counters: metrics::AgentCounters::default(),
    });
    let metrics_task = match opts.metrics {
        Listen::Off => None,
        listen => {
            let addr = match listen {
                Listen::At(addr) => addr,
                Listen::PodIp(port) => {
                    (std::net::Ipv4Addr::from(report.config.pod_ip), port).into()
                }
                Listen::Off => unreachable!(),
            };
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for metrics on {addr}"))?;
            tracing::info!(%addr, "serving /metrics and /healthz");
            Some(tokio::spawn(metrics::serve(listener, shared.clone())))
        }
    };

    let mut logger = if report.config.flags & egress_common::config_flags::DEBUG != 0 {
        let logger = report
            .dataplane
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

    let mut applied_file = match &opts.config_file {
        Some(path) => Some(read_config_file(path)?),
        None => None,
    };
    let mut config = config;
    let mut poll = tokio::time::interval(opts.config_poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_gc = tokio::time::Instant::now();
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    let mut connection_log = tokio::time::interval(Duration::from_secs(1));

    loop {
        tokio::select! {
            _ = signals.term.recv() => break,
            _ = signals.int.recv() => break,
            () = tokio::time::sleep_until(
                names.as_ref().map_or_else(tokio::time::Instant::now, crate::dns_proxy::Names::next_due)
            ), if names.is_some() => {
                if let Some(names) = names.as_mut() {
                    names.refresh(report.dataplane.maps_mut(), false).await;
                }
            }
            _ = connection_log.tick(), if names.as_ref().is_some_and(|n| n.debug) => {
                if let Some(names) = names.as_mut() {
                    names.log_new_connections(report.dataplane.maps());
                }
            }
            _ = signals.hup.recv() => {
                if let Some(names) = names.as_mut() {
                    tracing::info!("SIGHUP: resolving every name again");
                    names.refresh(report.dataplane.maps_mut(), true).await;
                    continue;
                }
                let text = opts.config_file.as_deref().map(read_config_file).transpose();
                if let Ok(Some(current)) = &text {
                    applied_file = Some(current.clone());
                }
                reload(&mut report, &mut config, &opts, &shared, text, "SIGHUP");
            }
            _ = poll.tick(), if opts.config_file.is_some() => {
                let path = opts.config_file.as_deref().expect("checked");
                // A ConfigMap update swaps a symlink; reading by path follows it.
                let current = std::fs::read_to_string(path).ok();
                if current.is_some() && current != applied_file {
                    reload(&mut report, &mut config, &opts, &shared, Ok(current.clone()), "config file changed");
                    applied_file = current;
                }
            }
            () = tokio::time::sleep_until(next_gc) => {
                let interval = collect_garbage(&mut report, &shared, opts.gc_max_interval);
                next_gc = tokio::time::Instant::now() + interval;
            }
            ready = async {
                match logger.as_mut() {
                    Some(fd) => fd.readable_mut().await.map(|mut g| { g.get_inner_mut().flush(); g.clear_ready(); }),
                    None => std::future::pending().await,
                }
            } => ready.context("reading the data plane's log events")?,
            _ = flush.tick(), if logger.is_some() => {
                // In case a ring-buffer wake-up was coalesced away.
                if let Some(fd) = logger.as_mut() {
                    fd.get_mut().flush();
                }
            }
        }
    }
    if let Some(fd) = logger.as_mut() {
        fd.get_mut().flush();
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    tracing::info!("terminating; the data plane stays attached");
    Ok(())
}

fn reload(
    report: &mut Report,
    config: &mut Config,
    opts: &Options,
    shared: &Shared,
    file: Result<Option<String>>,
    why: &str,
) {
    let result = file.and_then(|text| validate(&opts.raw, text, &opts.local_tcp_ports));
    let new = match result {
        Ok(new) => new,
        Err(err) => {
            shared
                .counters
                .reload_failures
                .fetch_add(1, Ordering::Relaxed);
            let message = match err.downcast_ref::<ConfigError>() {
                Some(config) => config.to_string(),
                None => format!("{err:#}"),
            };
            tracing::error!(
                trigger = why,
                file = ?opts.config_file,
                error = %message,
                "configuration rejected; the running rules stay as they were"
            );
            return;
        }
    };
    if new.source != config.source || new.gateway != config.gateway || new.mode != config.mode {
        tracing::warn!(
            trigger = why,
            "EGRESS_SOURCE, EGRESS_GATEWAY and EGRESS_ROUTER_MODE are not reloaded; restart to change them"
        );
    }
    match redirect::reconfigure(
        report.dataplane.maps_mut(),
        &report.config,
        &new,
        &opts.local_tcp_ports,
    ) {
        Ok((router, rules)) => {
            let before = report.rules.len();
            report.config = router;
            report.rules.clone_from(&rules);
            *shared
                .rules
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = rules;
            shared.counters.reloads.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                trigger = why,
                rules_before = before,
                rules_now = report.rules.len(),
                fallback = new.destinations.fallback.map(|ip| ip.to_string()),
                "configuration reloaded"
            );
            *config = new;
        }
        Err(err) => {
            shared
                .counters
                .reload_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(trigger = why, error = %err, "applying the configuration failed");
        }
    }
}

fn collect_garbage(report: &mut Report, shared: &Shared, max: Duration) -> Duration {
    let now = crate::inspect::monotonic_ns();
    match report.dataplane.maps_mut().collect_garbage(now) {
        Ok(pass) => {
            let c = &shared.counters;
            c.gc_runs.fetch_add(1, Ordering::Relaxed);
            c.gc_expired.fetch_add(pass.expired, Ordering::Relaxed);
            let left = pass.entries.saturating_sub(pass.expired);
            c.conntrack_entries.store(left, Ordering::Relaxed);
            c.conntrack_capacity.store(pass.capacity, Ordering::Relaxed);
            let fill = left as f64 / pass.capacity.max(1) as f64;
            let interval = gc_interval(fill, max);
            c.gc_interval_ms.store(
                u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            if pass.expired > 0 {
                tracing::debug!(
                    expired = pass.expired,
                    entries = left,
                    capacity = pass.capacity,
                    "conntrack GC"
                );
            }
            if fill > 0.9 {
                tracing::warn!(
                    entries = left,
                    capacity = pass.capacity,
                    "conntrack table over 90% full; consider a larger --conntrack-size"
                );
            }
            interval
        }
        Err(err) => {
            tracing::error!(error = %err, "conntrack GC failed");
            max
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_runs_more_often_as_the_table_fills() {
        let max = Duration::from_secs(30);
        assert_eq!(gc_interval(0.0, max), max);
        assert!(gc_interval(0.5, max) < gc_interval(0.1, max));
        assert_eq!(gc_interval(0.95, max), Duration::from_secs(1));
        assert_eq!(
            gc_interval(1.0, Duration::from_millis(500)),
            Duration::from_millis(500)
        );
    }
}
