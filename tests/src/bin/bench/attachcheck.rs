//! How the router pod's programs are attached, asserted: T's with tc (a clsact qdisc and
//! cls_bpf filters in direct-action mode), A's with TCX. Every lab of A or T is checked
//! before its loads (`variant::Setup`).

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use egress_tests::{egress_router_bin, lab::Lab, netns::run_bounded};

/// Checks that the router pod's programs (instance `bench`) are attached as `want` (`tc`
/// or `tcx`) and returns them as `name@interface/direction:kind`; fails otherwise. Two
/// views: `egress-router status`, and iproute2's (`tc filter show`: with tc, each program
/// is a cls_bpf filter in direct-action mode with the ID `status` names; with TCX, none is
/// a filter and the interfaces have no clsact qdisc at all).
pub(crate) fn ensure_attached(lab: &Lab, want: &str) -> Result<Vec<String>> {
    let out = run_bounded(
        lab.router
            .command(egress_router_bin())
            .arg("--bpffs")
            .arg(lab.bpffs.path())
            .args(["--instance", "bench", "status", "--json"]),
        Duration::from_secs(20),
    )?;
    ensure!(
        out.status.success(),
        "egress-router status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("egress-router status --json")?;
    let programs = status["programs"].as_array().context("no programs")?;
    ensure!(
        programs.iter().any(|p| p["name"] == "pod_ingress"),
        "pod_ingress is not attached: {programs:?}"
    );
    let mut found = Vec::new();
    for p in programs {
        let text = |k: &str| p[k].as_str().unwrap_or_default();
        let (name, iface, direction, hook) = (
            text("name"),
            text("interface"),
            text("direction"),
            text("hook"),
        );
        let seen = format!("{name}@{iface}/{direction}:{hook}");
        if hook != want {
            bail!("{seen}, not {want}");
        }
        let filters = tc(lab, &["filter", "show", "dev", iface, direction])?;
        let id = format!(" id {} ", p["id"]);
        let filter = filters
            .lines()
            .find(|l| l.contains(&format!(" {name} ")) || l.contains(&id));
        match (want, filter) {
            ("tc", Some(line)) if line.contains("direct-action") && line.contains(&id) => {}
            ("tcx", None) => {}
            (_, line) => {
                bail!("{seen}, but `tc filter show dev {iface} {direction}` says {line:?}")
            }
        }
        found.push(seen);
    }
    if want == "tcx" {
        for dev in ["eth0", "macvlan0"] {
            let qdiscs = tc(lab, &["qdisc", "show", "dev", dev])?;
            ensure!(
                !qdiscs.contains("clsact"),
                "{dev} has a clsact qdisc: {qdiscs}"
            );
        }
    }
    Ok(found)
}

/// `tc ARGS` in the router pod: its output.
fn tc(lab: &Lab, args: &[&str]) -> Result<String> {
    let out = run_bounded(lab.router.command("tc").args(args), Duration::from_secs(5))?;
    ensure!(
        out.status.success(),
        "tc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
