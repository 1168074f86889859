//! What a router pod hands the node agent: a file in the spool directory (a hostPath both
//! mount), named after the pod's IP, that its init container writes once it has validated
//! the same variables as in pod mode. The agent validates it again: the spool is a way in,
//! and a file it cannot trust is refused with its reason, never half applied.

use std::{
    io::Write as _,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::config::{
    error::ConfigError,
    fields::Egress4,
    redirect::{Config, Destinations, Raw},
};

/// A spool file's content (JSON): the pod's IP and the variables as the pod has them, or
/// the name of the node agent's static instance that configures it
/// ([`crate::node::statics`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The router pod's IP: what clients connect to.
    pub pod_ip: Ipv4Addr,
    /// The static instance whose configuration this is (the variables are then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(rename = "EGRESS_SOURCE", default)]
    pub source: String,
    #[serde(rename = "EGRESS_GATEWAY", default)]
    pub gateway: String,
    #[serde(rename = "EGRESS_DESTINATION", default)]
    pub destination: String,
}

/// Why a registration cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("node mode serves IPv4 so far: EGRESS_SOURCE has no IPv4 address, or an IPv6 one too")]
    Ipv4Only,
    #[error("EGRESS_DESTINATION has an IPv6 rule or fallback; node mode serves IPv4 so far")]
    Ipv6Destination,
    #[error("the pod IP {0} is EGRESS_SOURCE, the gateway or a destination")]
    PodIpReused(Ipv4Addr),
    #[error("no static instance named {0} (the node agent's --instances directory)")]
    NoStaticInstance(String),
    #[error("static instance {name}: {reason}")]
    StaticInstance { name: String, reason: String },
    #[error("reading {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A registration validated: an instance the agent can serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInstance {
    pub pod_ip: Ipv4Addr,
    pub egress: Egress4,
    pub destinations: Destinations,
}

impl Registration {
    /// The registration of the pod at `pod_ip` with these variables.
    #[must_use]
    pub fn new(pod_ip: Ipv4Addr, raw: &Raw) -> Self {
        let value = |v: &Option<String>| v.clone().unwrap_or_default();
        Self {
            pod_ip,
            instance: None,
            source: value(&raw.source),
            gateway: value(&raw.gateway),
            destination: value(&raw.destination),
        }
    }

    /// Validates it as the pod's own init container does (OpenShift's checks, in its
    /// order), then what node mode adds.
    pub fn validate(&self) -> Result<NodeInstance, RegistrationError> {
        let config = Config::from_raw(&Raw {
            source: Some(self.source.clone()),
            gateway: Some(self.gateway.clone()),
            destination: Some(self.destination.clone()),
            mode: None,
        })?;
        let egress = config.egress();
        let (Some(v4), None) = (egress.v4, egress.v6) else {
            return Err(RegistrationError::Ipv4Only);
        };
        let destinations = config.destinations;
        if destinations.remotes().any(|ip| ip.is_ipv6()) {
            return Err(RegistrationError::Ipv6Destination);
        }
        let pod = IpAddr::V4(self.pod_ip);
        if pod == IpAddr::V4(v4.source.ip)
            || pod == IpAddr::V4(v4.gateway)
            || destinations.remotes().any(|ip| ip == pod)
        {
            return Err(RegistrationError::PodIpReused(self.pod_ip));
        }
        Ok(NodeInstance {
            pod_ip: self.pod_ip,
            egress: v4,
            destinations,
        })
    }

    /// The registration of the pod at `pod_ip` configured by static instance `name`.
    #[must_use]
    pub fn of_static(pod_ip: Ipv4Addr, name: &str) -> Self {
        Self {
            pod_ip,
            instance: Some(name.to_owned()),
            source: String::new(),
            gateway: String::new(),
            destination: String::new(),
        }
    }

    /// The registration with its variables: its own, or its static instance's from
    /// `statics` (whose name must be there, and which must not be mixed with variables).
    pub fn resolved(
        &self,
        statics: &std::collections::BTreeMap<String, crate::node::statics::StaticInstance>,
    ) -> Result<Self, RegistrationError> {
        let Some(name) = &self.instance else {
            return Ok(self.clone());
        };
        if !(self.source.is_empty() && self.gateway.is_empty() && self.destination.is_empty()) {
            return Err(RegistrationError::StaticInstance {
                name: name.clone(),
                reason: "the registration names it and carries variables too".to_owned(),
            });
        }
        let found = statics
            .get(name)
            .ok_or_else(|| RegistrationError::NoStaticInstance(name.clone()))?;
        let mut resolved = Self::new(self.pod_ip, &found.raw);
        resolved.instance = Some(name.clone());
        Ok(resolved)
    }

    /// Reads a spool file.
    pub fn read(path: &Path) -> Result<Self, RegistrationError> {
        let read = |reason: String| RegistrationError::Read {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| read(e.to_string()))
    }

    /// The file of this registration in `spool`.
    #[must_use]
    pub fn path_in(&self, spool: &Path) -> PathBuf {
        spool.join(format!("{}.json", self.pod_ip))
    }

    /// Writes it into `spool` at once for the agent (a file written aside and renamed, so
    /// the agent never reads half of one).
    pub fn write(&self, spool: &Path) -> Result<PathBuf, RegistrationError> {
        let path = self.path_in(spool);
        let aside = spool.join(format!(".{}.json.new", self.pod_ip));
        let write = |source| RegistrationError::Write {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| write(e.into()))?;
        let mut file = std::fs::File::create(&aside).map_err(write)?;
        file.write_all(text.as_bytes()).map_err(write)?;
        file.sync_all().map_err(write)?;
        std::fs::rename(&aside, &path).map_err(write)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(source: &str, destination: &str) -> Registration {
        Registration {
            pod_ip: Ipv4Addr::new(192, 0, 2, 10),
            instance: None,
            source: source.to_owned(),
            gateway: "198.51.100.1".to_owned(),
            destination: destination.to_owned(),
        }
    }

    #[test]
    fn a_registration_is_validated_as_the_pod_validates_it() {
        let ok = registration("198.51.100.99/24", "80 tcp 203.0.113.10\n203.0.113.20");
        let instance = ok.validate().unwrap();
        assert_eq!(instance.egress.source.prefix, 24);
        assert_eq!(instance.destinations.rules.len(), 1);
        assert_eq!(
            instance.destinations.fallback,
            Some(Ipv4Addr::new(203, 0, 113, 20))
        );
        // OpenShift's own message for a bad rule.
        let bad = registration("198.51.100.99/24", "80 tcp nowhere");
        assert!(matches!(bad.validate(), Err(RegistrationError::Config(_))));
        let six = registration("198.51.100.99/24,2001:db8:e::99/64", "80 tcp 203.0.113.10");
        assert!(matches!(
            six.validate(),
            Err(RegistrationError::Config(_) | RegistrationError::Ipv4Only)
        ));
        let reused = registration("192.0.2.10/24", "80 tcp 203.0.113.10");
        assert!(reused.validate().is_err());
    }

    #[test]
    fn a_spool_file_round_trips_and_is_never_read_half_written() {
        let dir = std::env::temp_dir().join(format!("er-spool-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = registration("198.51.100.99/24", "80 tcp 203.0.113.10");
        let path = r.write(&dir).unwrap();
        assert_eq!(path, dir.join("192.0.2.10.json"));
        assert_eq!(Registration::read(&path).unwrap(), r);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["192.0.2.10.json"], "nothing left aside");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
