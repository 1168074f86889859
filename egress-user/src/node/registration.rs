//! What a router pod hands the node agent: a file in the spool directory (a hostPath both
//! mount), named after the pod's IP, that its init container writes once it has validated
//! the same variables as in pod mode. The agent validates it again: the spool is a way in,
//! and a file it cannot trust is refused with its reason, never half applied.

use std::{
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::config::{
    error::ConfigError,
    fields::Egress,
    redirect::{Config, Destinations, Raw},
};

/// A spool file's content (JSON): the pod's IP and the variables as the pod has them, or
/// the name of the node agent's static instance that configures it
/// ([`crate::node::statics`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The router pod's IP: what clients connect to.
    pub pod_ip: Ipv4Addr,
    /// A dual-stack router pod's IPv6 address, what IPv6 clients connect to (the agent
    /// accepts it only when the node routes it to the same interface as `pod_ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ip6: Option<Ipv6Addr>,
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
    #[error(
        "EGRESS_SOURCE has an IPv6 address but the router pod has none (a dual-stack pod's \
         IPv6 address comes from POD_IPS or eth0)"
    )]
    NoPodIp6,
    #[error("the pod IP {0} is EGRESS_SOURCE, the gateway or a destination")]
    PodIpReused(IpAddr),
    #[error("no static instance named {0} (the node agent's --instances directory)")]
    NoStaticInstance(String),
    #[error("static instance {name}: {reason}")]
    StaticInstance { name: String, reason: String },
    #[error(
        "{path}: a registration of {pod_ip}; one is accepted only as <pod IP>.json, and in a \
         pod's own directory only for that pod"
    )]
    Misplaced { path: PathBuf, pod_ip: Ipv4Addr },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A registration validated: an instance the agent can serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInstance {
    pub pod_ip: Ipv4Addr,
    /// The pod's IPv6 address, when EGRESS_SOURCE has an IPv6 one.
    pub pod_ip6: Option<Ipv6Addr>,
    /// EGRESS_SOURCE and EGRESS_GATEWAY, one family or both.
    pub egress: Egress,
    pub destinations: Destinations,
}

impl Registration {
    /// The registration of the pod at `pod_ip` with these variables.
    #[must_use]
    pub fn new(pod_ip: Ipv4Addr, raw: &Raw) -> Self {
        let value = |v: &Option<String>| v.clone().unwrap_or_default();
        Self {
            pod_ip,
            pod_ip6: None,
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
        let pod_ip6 = match egress.v6 {
            Some(_) => Some(self.pod_ip6.ok_or(RegistrationError::NoPodIp6)?),
            None => None,
        };
        let destinations = config.destinations;
        let pods = std::iter::once(IpAddr::V4(self.pod_ip)).chain(pod_ip6.map(IpAddr::V6));
        for pod in pods {
            let ours = [
                egress.v4.map(|v4| IpAddr::V4(v4.source.ip)),
                egress.v4.map(|v4| IpAddr::V4(v4.gateway)),
                egress.v6.map(|v6| IpAddr::V6(v6.source.ip)),
                egress.v6.map(|v6| IpAddr::V6(v6.gateway)),
            ];
            if ours.contains(&Some(pod)) || destinations.remotes().any(|ip| ip == pod) {
                return Err(RegistrationError::PodIpReused(pod));
            }
        }
        Ok(NodeInstance {
            pod_ip: self.pod_ip,
            pod_ip6,
            egress,
            destinations,
        })
    }

    /// The registration of the pod at `pod_ip` configured by static instance `name`.
    #[must_use]
    pub fn of_static(pod_ip: Ipv4Addr, name: &str) -> Self {
        Self {
            pod_ip,
            pod_ip6: None,
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
        resolved.pod_ip6 = self.pod_ip6;
        resolved.instance = Some(name.clone());
        Ok(resolved)
    }

    /// Reads a spool file.
    pub fn read(path: &Path) -> Result<Self, RegistrationError> {
        let read = |source: Box<dyn std::error::Error + Send + Sync>| RegistrationError::Read {
            path: path.to_owned(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(|e| read(e.into()))?;
        serde_json::from_str(&text).map_err(|e| read(e.into()))
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

/// The spool's registrations, by file, in name order, at most `most` files (more than
/// the instances a node serves can never all be served): `<spool>/<pod IP>.json`, and
/// `<spool>/<pod IP>/<pod IP>.json`, where each router pod mounts a directory of its own
/// (`subPathExpr: $(POD_IP)`: the kubelet names it after the pod's IP, which the pod
/// cannot choose). A file named after another address than the one it registers, or in
/// another pod's directory, is refused: a pod cannot register for another pod's IP and
/// so take its traffic. Files being written (`.`-prefixed) are not registrations.
pub fn read_spool(
    spool: &Path,
    most: usize,
) -> std::io::Result<Vec<(PathBuf, Result<Registration, RegistrationError>)>> {
    let visible = |path: &Path| {
        !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    };
    let is_file = |path: &Path| path.extension().is_some_and(|e| e == "json") && visible(path);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(spool)? {
        let Ok(path) = entry.map(|e| e.path()) else {
            continue;
        };
        if is_file(&path) {
            files.push(path);
        } else if path.is_dir() && visible(&path) {
            let inside = std::fs::read_dir(&path)?;
            files.extend(
                inside
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| is_file(p)),
            );
        }
    }
    files.sort();
    files.truncate(most);
    Ok(files
        .into_iter()
        .map(|path| {
            let read = Registration::read(&path).and_then(|r| {
                let ip = r.pod_ip.to_string();
                let named = path.file_stem().is_some_and(|s| *s == *ip);
                let dir = path.parent().filter(|d| *d != spool);
                let own = dir.is_none_or(|d| d.file_name().is_some_and(|n| *n == *ip));
                if named && own {
                    Ok(r)
                } else {
                    Err(RegistrationError::Misplaced {
                        path: path.clone(),
                        pod_ip: r.pod_ip,
                    })
                }
            });
            (path, read)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(source: &str, destination: &str) -> Registration {
        Registration {
            pod_ip: Ipv4Addr::new(192, 0, 2, 10),
            pod_ip6: None,
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
        assert_eq!(instance.egress.v4.unwrap().source.prefix, 24);
        assert_eq!(instance.destinations.rules.len(), 1);
        assert_eq!(
            instance.destinations.fallback,
            Some(Ipv4Addr::new(203, 0, 113, 20))
        );
        // OpenShift's own message for a bad rule.
        let bad = registration("198.51.100.99/24", "80 tcp nowhere");
        assert!(matches!(bad.validate(), Err(RegistrationError::Config(_))));
        // Dual stack: the pod's IPv6 address is needed, and it must not be one of the
        // instance's own.
        let mut six = registration("198.51.100.99/24,2001:db8:e::99/64", "80 tcp 203.0.113.10");
        six.gateway = "198.51.100.1,2001:db8:e::1".to_owned();
        assert!(matches!(six.validate(), Err(RegistrationError::NoPodIp6)));
        six.pod_ip6 = Some("2001:db8:e::99".parse().unwrap());
        assert!(matches!(
            six.validate(),
            Err(RegistrationError::PodIpReused(_))
        ));
        six.pod_ip6 = Some("2001:db8:2::10".parse().unwrap());
        let dual = six.validate().unwrap();
        assert_eq!(dual.pod_ip6, six.pod_ip6);
        assert!(dual.egress.v6.is_some() && dual.egress.v4.is_some());
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

    #[test]
    fn a_pod_cannot_register_for_another_pods_ip() {
        let dir = std::env::temp_dir().join(format!("er-spool-misplaced-{}", std::process::id()));
        let own = dir.join("192.0.2.10");
        std::fs::create_dir_all(&own).unwrap();
        // Its own, in its own directory: accepted.
        registration("198.51.100.99/24", "80 tcp 203.0.113.10")
            .write(&own)
            .unwrap();
        // In its own directory, a file for another pod's IP: refused.
        let mut other = registration("198.51.100.98/24", "443 tcp 203.0.113.66");
        other.pod_ip = Ipv4Addr::new(192, 0, 2, 11);
        other.write(&own).unwrap();
        // A file named after one address that registers another: refused.
        let mut renamed = registration("198.51.100.97/24", "80 tcp 203.0.113.66");
        renamed.pod_ip = Ipv4Addr::new(192, 0, 2, 12);
        std::fs::write(
            dir.join("192.0.2.13.json"),
            serde_json::to_string(&renamed).unwrap(),
        )
        .unwrap();
        let read = read_spool(&dir, 100).unwrap();
        let verdicts: Vec<(String, bool)> = read
            .iter()
            .map(|(p, r)| {
                (
                    p.strip_prefix(&dir).unwrap().display().to_string(),
                    r.is_ok(),
                )
            })
            .collect();
        assert_eq!(
            verdicts,
            [
                ("192.0.2.10/192.0.2.10.json".to_owned(), true),
                ("192.0.2.10/192.0.2.11.json".to_owned(), false),
                ("192.0.2.13.json".to_owned(), false),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
