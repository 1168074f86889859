//! What the running kernel offers: every kernel feature the data plane and the agents use,
//! found by probing the kernel (never from its version string), whether it is there, and
//! what is used in its place when it is not. Every mode checks this list before it changes
//! anything, and refuses to start when a feature without a fallback is missing.
//!
//! | module | concern |
//! |---|---|
//! | [`features`] | the list: each feature, who needs it, since when, and its fallback |
//! | [`report`] | a probed kernel: what was found, whether each data plane can run |
//! | [`probe`] | the probes that ask the kernel directly (program and map types, helpers, syscalls) |
//! | [`scratch`] | the probes that need interfaces: run in a network namespace of their own |

pub mod features;
pub mod probe;
pub mod report;
pub mod scratch;

pub use features::{Feature, Plane};
pub use probe::Status;
pub use report::{Found, Missing, Report};

use crate::dataplane::attach::{self, Choice};

/// What a data plane checks of the kernel before it changes anything: the attachment
/// `choice` made for the process ([`attach::choose`]), and every feature `plane` uses
/// probed. Refuses with the first feature `plane` cannot run without; logs each feature
/// that is missing and what is used in its place.
pub fn ready(plane: Plane, choice: Choice) -> Result<Report, Missing> {
    attach::choose(choice);
    let report = Report::probe();
    report.require(plane)?;
    if choice == Choice::Tcx && !report.usable("tcx") {
        let tcx = report.get("tcx").expect("in FEATURES").feature;
        return Err(Missing::of(tcx, plane));
    }
    for found in &report.found {
        let feature = found.feature;
        if feature.planes.contains(&plane)
            && let (Status::Missing(why), Some(fallback)) = (&found.status, feature.fallback)
        {
            tracing::info!(
                feature = feature.name,
                since = feature.since,
                instead = fallback,
                why = %why,
                "kernel feature missing: using what takes its place"
            );
        }
    }
    Ok(report)
}
