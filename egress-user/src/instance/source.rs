//! Rule sources: what keeps an instance's rules current while the agent runs, so that the
//! agent loop knows no modes. [`Destinations`] follows `EGRESS_DESTINATION` (the variable or
//! `--config-file`); [`crate::instance::names::Names`] follows the DNS records of the DNS
//! proxy's names.

use std::{future::Future, time::Duration};

use crate::{
    config::{
        error::ConfigError,
        redirect::{Config, Raw},
        source::ConfigSource,
    },
    dataplane::rules::RuleSet,
    instance::Instance,
};

/// Why a source is asked to act.
pub enum Trigger<E> {
    /// SIGHUP: everything again, now.
    Hangup,
    /// Something the source itself was waiting for.
    Event(E),
}

/// What applying did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The rules map is as it was (addresses of names may have changed).
    Unchanged,
    /// New rules were applied.
    Applied,
    /// The new configuration was refused; the running rules stay.
    Rejected,
}

/// A source of an instance's rules.
pub trait RuleSource {
    /// What the source waits for.
    type Event;

    /// Completes when the source has something to do. Cancel-safe: the agent polls it in a
    /// `select!` with its other duties.
    fn next_event(&mut self) -> impl Future<Output = Self::Event>;

    /// Does it, on `instance`.
    fn apply(
        &mut self,
        trigger: Trigger<Self::Event>,
        instance: &mut Instance,
    ) -> impl Future<Output = Outcome>;
}

/// `EGRESS_DESTINATION`, loaded and validated with the rest of the configuration: once at
/// start, then on SIGHUP and whenever the `--config-file` content changes (checked every
/// `poll` by reading the path, so the symlink swap of a ConfigMap update is seen).
pub struct Destinations {
    raw: Raw,
    source: ConfigSource,
    local_tcp_ports: Vec<u16>,
    config: Config,
    /// The file content of the last load: what a later read is compared with.
    loaded: Option<String>,
    poll_every: Duration,
    poll: Option<tokio::time::Interval>,
}

/// A `--config-file` content that differs from the last one loaded.
pub struct FileChanged(String);

impl Destinations {
    /// Loads the configuration (reading the file, if any, once) and validates all of it,
    /// the agent's own ports included.
    pub fn load(
        raw: Raw,
        source: ConfigSource,
        local_tcp_ports: Vec<u16>,
        poll_every: Duration,
    ) -> Result<Self, ConfigError> {
        let text = source.load()?;
        let config = validate(&raw, text.clone(), &local_tcp_ports)?;
        Ok(Self {
            loaded: source.file().and(text),
            raw,
            source,
            local_tcp_ports,
            config,
            poll_every,
            poll: None,
        })
    }

    /// The configuration as last applied.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Its rules.
    #[must_use]
    pub fn rules(&self) -> RuleSet {
        RuleSet::from_destinations(&self.config.destinations)
    }

    fn reload(
        &mut self,
        text: Result<Option<String>, ConfigError>,
        instance: &mut Instance,
        why: &str,
    ) -> Outcome {
        let new = match text.and_then(|text| validate(&self.raw, text, &self.local_tcp_ports)) {
            Ok(new) => new,
            Err(err) => {
                tracing::error!(
                    trigger = why,
                    file = ?self.source.file(),
                    error = %crate::error_chain(&err),
                    "configuration rejected; the running rules stay as they were"
                );
                return Outcome::Rejected;
            }
        };
        // Only EGRESS_DESTINATION is re-read: the other variables are the process's
        // environment, fixed for its life (a Deployment edit restarts the pod).
        let before = instance.rules().len();
        match instance.apply(RuleSet::from_destinations(&new.destinations)) {
            Ok(()) => {
                tracing::info!(
                    trigger = why,
                    rules_before = before,
                    rules_now = instance.rules().len(),
                    fallback = new.destinations.fallback.map(|ip| ip.to_string()),
                    "configuration reloaded"
                );
                self.config = new;
                Outcome::Applied
            }
            Err(err) => {
                tracing::error!(trigger = why, error = %crate::error_chain(&err), "applying the configuration failed");
                Outcome::Rejected
            }
        }
    }
}

/// Validates `raw` with `destination` (the loaded value) as EGRESS_DESTINATION, and the
/// agent's own ports against its rules.
fn validate(
    raw: &Raw,
    destination: Option<String>,
    local_tcp_ports: &[u16],
) -> Result<Config, ConfigError> {
    let config = Config::from_raw(&Raw {
        destination,
        ..raw.clone()
    })?;
    config.check_local_ports(local_tcp_ports)?;
    Ok(config)
}

impl RuleSource for Destinations {
    type Event = FileChanged;

    async fn next_event(&mut self) -> FileChanged {
        let Some(path) = self.source.file().map(ToOwned::to_owned) else {
            return std::future::pending().await;
        };
        let every = self.poll_every;
        let poll = self.poll.get_or_insert_with(|| {
            let mut poll = tokio::time::interval(every);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            poll
        });
        loop {
            poll.tick().await;
            // A ConfigMap update swaps a symlink; reading by path follows it.
            if let Ok(text) = std::fs::read_to_string(&path)
                && self.loaded.as_ref() != Some(&text)
            {
                return FileChanged(text);
            }
        }
    }

    async fn apply(&mut self, trigger: Trigger<FileChanged>, instance: &mut Instance) -> Outcome {
        match trigger {
            Trigger::Hangup => {
                let text = self.source.load();
                if let Ok(Some(text)) = &text
                    && self.source.file().is_some()
                {
                    self.loaded = Some(text.clone());
                }
                self.reload(text, instance, "SIGHUP")
            }
            Trigger::Event(FileChanged(text)) => {
                // Not retried every second if it is refused: the next change is.
                self.loaded = Some(text.clone());
                self.reload(Ok(Some(text)), instance, "config file changed")
            }
        }
    }
}
