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

/// A feature a data plane cannot run without.
#[derive(Debug, thiserror::Error)]
#[error(
    "this kernel lacks {name} ({what}; Linux {since} or later), which {plane} needs: nothing \
     was changed"
)]
pub struct Missing {
    pub name: &'static str,
    pub what: &'static str,
    pub since: &'static str,
    pub plane: &'static str,
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

    /// The first feature `plane` cannot run without, if any: one without a fallback, or
    /// both ways to attach at once.
    pub fn require(&self, plane: Plane) -> Result<(), Missing> {
        let missing = |feature: &Feature| Missing::of(feature, plane);
        for found in &self.found {
            let feature = found.feature;
            if !feature.planes.contains(&plane) || found.usable() {
                continue;
            }
            if feature.fallback.is_none() {
                return Err(missing(feature));
            }
        }
        if !self.usable("tcx") && !self.usable("cls_bpf") {
            let cls_bpf = self.get("cls_bpf").expect("in FEATURES").feature;
            return Err(missing(cls_bpf));
        }
        Ok(())
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
