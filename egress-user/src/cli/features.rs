//! `egress-router features`: every kernel feature the data plane and the agents use, as
//! probed on this kernel, with what takes the place of a missing one, and whether each mode
//! can run here.

use anyhow::Result;
use clap::Args;
use egress_user::{
    dataplane::attach,
    kernel::{Plane, Report},
};

use crate::cli::args::Json;

/// `features`'s options.
#[derive(Args)]
pub(crate) struct FeaturesArgs {
    #[command(flatten)]
    pub(crate) json: Json,
}

/// The running kernel's release, as `uname -r` prints it: for the reader only, the probes
/// decide.
fn kernel_release() -> String {
    // SAFETY: utsname is plain data, filled by uname.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".into();
    }
    // SAFETY: uname writes NUL-terminated strings.
    unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

pub(crate) fn execute(args: &FeaturesArgs) -> Result<()> {
    let report = Report::probe();
    let release = kernel_release();
    let verdict = |plane| {
        report
            .require(plane)
            .err()
            .map(|missing| missing.to_string())
    };
    let attach = if report.usable("tcx") {
        attach::Kind::Tcx
    } else {
        attach::Kind::Tc
    };
    if args.json.json {
        let plane = |plane| {
            let missing = verdict(plane);
            serde_json::json!({ "runs": missing.is_none(), "missing": missing })
        };
        let out = serde_json::json!({
            "kernel": release,
            "attach_auto": attach.name(),
            "pod": plane(Plane::Pod),
            "node": plane(Plane::Node),
            "features": report.json_rows(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("kernel {release}");
    print!("{report}");
    println!("--attach auto attaches with {}", attach.name());
    for (plane, name) in [(Plane::Pod, "pod mode"), (Plane::Node, "node mode")] {
        match verdict(plane) {
            None => println!("{name}: runs here"),
            Some(missing) => println!("{name}: cannot run here: {missing}"),
        }
    }
    Ok(())
}
