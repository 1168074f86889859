//! A probed kernel: what each feature's probe found, whether a data plane can run, and the
//! report `egress-router features` prints.

use std::fmt;

use super::{
    features::{FEATURES, Feature, Plane},
    probe::{self, Probe, Status},
    scratch,
};

/// One feature and what its probe found.
#[derive(Clone, Debug)]
pub struct Found {
    pub feature: &'static Feature,
    pub status: Status,
}

impl Found {
    /// Whether egress-router can use the feature (an unknown counts as present).
    #[must_use]
    pub fn usable(&self) -> bool {
        !matches!(self.status, Status::Missing(_))
    }
}

/// Every feature, probed.
#[derive(Clone, Debug)]
pub struct Report {
    pub found: Vec<Found>,
}

/// A feature a data plane cannot run without, and the others it also lacks (so that the
/// one line names the release that has them all).
#[derive(Debug, thiserror::Error)]
#[error(
    "this kernel lacks {name} ({what}; Linux {since} or later), which {plane} needs: nothing \
     was changed{}",
    also_text(.also)
)]
pub struct Missing {
    pub name: &'static str,
    pub what: &'static str,
    pub since: &'static str,
    pub plane: &'static str,
    /// The other features `plane` cannot run without that are missing: name and release.
    pub also: Vec<(&'static str, &'static str)>,
}

/// ` (it also lacks check_mtu, Linux 5.12; lookup_and_delete, Linux 5.14)`, or nothing.
fn also_text(also: &[(&str, &str)]) -> String {
    if also.is_empty() {
        return String::new();
    }
    let list: Vec<String> = also
        .iter()
        .map(|(name, since)| format!("{name}, Linux {since}"))
        .collect();
    format!(" (it also lacks {})", list.join("; "))
}

impl Missing {
    /// `feature`, which `plane` needs.
    #[must_use]
    pub fn of(feature: &Feature, plane: Plane) -> Self {
        Self {
            name: feature.name,
            what: feature.what,
            since: feature.since,
            plane: plane.name(),
            also: Vec::new(),
        }
    }
}

impl Report {
    /// Probes every feature of [`FEATURES`].
    #[must_use]
    pub fn probe() -> Self {
        let scratch = scratch::probe_all();
        let found = FEATURES
            .iter()
            .map(|feature| Found {
                feature,
                status: match feature.probe {
                    Probe::Scratch(which) => scratch.status(which),
                    other => probe::status(other),
                },
            })
            .collect();
        Self { found }
    }

    /// What was found of the feature named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Found> {
        self.found.iter().find(|f| f.feature.name == name)
    }

    /// Whether the feature named `name` can be used (unknown counts as usable).
    #[must_use]
    pub fn usable(&self, name: &str) -> bool {
        self.get(name).is_some_and(Found::usable)
    }

    /// The first feature `plane` cannot run without, if any (one without a fallback, or
    /// both ways to attach at once), with the others it lacks.
    pub fn require(&self, plane: Plane) -> Result<(), Missing> {
        let mut lacking: Vec<&Feature> = self
            .found
            .iter()
            .filter(|found| {
                let feature = found.feature;
                feature.planes.contains(&plane) && !found.usable() && feature.fallback.is_none()
            })
            .map(|found| found.feature)
            .collect();
        if !self.usable("tcx") && !self.usable("cls_bpf") {
            lacking.push(self.get("cls_bpf").expect("in FEATURES").feature);
        }
        let Some((first, others)) = lacking.split_first() else {
            return Ok(());
        };
        Err(Missing {
            also: others.iter().map(|f| (f.name, f.since)).collect(),
            ..Missing::of(first, plane)
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<20} {:<8} {:<6} {:<10} in its place / detail",
            "feature", "status", "since", "used by"
        )?;
        for found in &self.found {
            let feature = found.feature;
            let planes = feature
                .planes
                .iter()
                .map(|p| match p {
                    Plane::Pod => "pod",
                    Plane::Node => "node",
                })
                .collect::<Vec<_>>()
                .join(",");
            let (status, detail) = match &found.status {
                Status::Present => ("yes", String::new()),
                Status::Missing(why) => (
                    "no",
                    feature.fallback.map_or_else(
                        || format!("nothing: required ({why})"),
                        |fallback| format!("{fallback} ({why})"),
                    ),
                ),
                Status::Unknown(why) => ("unknown", format!("not probed: {why}")),
            };
            writeln!(
                f,
                "{:<20} {:<8} {:<6} {:<10} {detail}",
                feature.name, status, feature.since, planes
            )?;
        }
        Ok(())
    }
}

/// The JSON form of a report: one object per feature.
#[derive(serde::Serialize)]
pub struct JsonRow<'a> {
    pub name: &'static str,
    pub what: &'static str,
    pub since: &'static str,
    pub planes: &'static [Plane],
    pub fallback: Option<&'static str>,
    #[serde(flatten)]
    pub status: &'a Status,
}

impl Report {
    /// One JSON object per feature.
    #[must_use]
    pub fn json_rows(&self) -> Vec<JsonRow<'_>> {
        self.found
            .iter()
            .map(|found| JsonRow {
                name: found.feature.name,
                what: found.feature.what,
                since: found.feature.since,
                planes: found.feature.planes,
                fallback: found.feature.fallback,
                status: &found.status,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(missing: &[&str]) -> Report {
        Report {
            found: FEATURES
                .iter()
                .map(|feature| Found {
                    feature,
                    status: if missing.contains(&feature.name) {
                        Status::Missing("test".into())
                    } else {
                        Status::Present
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = FEATURES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn a_missing_feature_with_a_fallback_is_no_refusal() {
        let r = report(&["tcx", "managed_neighbours", "for_each_map_elem", "btf"]);
        assert!(r.require(Plane::Pod).is_ok());
        assert!(r.require(Plane::Node).is_ok());
    }

    #[test]
    fn a_required_feature_names_itself_and_its_kernel() {
        let err = report(&["check_mtu"]).require(Plane::Pod).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("check_mtu") && text.contains("Linux 5.12"),
            "{text}"
        );
        assert!(err.also.is_empty(), "{text}");
        // Every missing one is named, so the line says which release has them all.
        let err = report(&["ktime_get_coarse_ns", "check_mtu", "lookup_and_delete"])
            .require(Plane::Node)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "this kernel lacks ktime_get_coarse_ns (bpf_ktime_get_coarse_ns: the conntrack \
             clock; Linux 5.11 or later), which node mode needs: nothing was changed (it also \
             lacks check_mtu, Linux 5.12; lookup_and_delete, Linux 5.14)"
        );
        // XDP is node mode's alone.
        assert!(report(&["xdp"]).require(Plane::Pod).is_ok());
        assert!(report(&["xdp"]).require(Plane::Node).is_err());
    }

    #[test]
    fn no_way_to_attach_is_a_refusal() {
        assert!(report(&["cls_bpf"]).require(Plane::Pod).is_ok());
        let err = report(&["tcx", "cls_bpf"]).require(Plane::Pod).unwrap_err();
        assert_eq!(err.name, "cls_bpf");
    }
}
