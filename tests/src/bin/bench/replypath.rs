//! Node mode's reply path under a download (issue 19 asks to choose TC or XDP for the
//! replies by measuring): `iperf3 -R` (one stream, the server sends) in N's lab, and over
//! a window of it the frames the uplink took, how often `node_xdp` ran on them (per frame)
//! and how often `node_reply` did (after GRO, per aggregate), with its time per run. An
//! XDP reply path would translate every frame; TC translates each aggregate once.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use egress_tests::{bed::Bed as _, netns::wait_bounded};

use crate::{
    corelab::queue_counts,
    cpus,
    traffic::{self, Windows},
    variant::{self, IPERF_PORT, Variant},
};

/// One download round.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct ReplyPath {
    pub round: usize,
    /// The download's rate (iperf3's receiver), Gbit/s.
    pub gbps: f64,
    /// Frames per second the uplink took.
    pub frames_per_s: f64,
    /// Runs per second of `node_xdp` and of `node_reply`.
    pub xdp_runs_per_s: f64,
    pub tc_runs_per_s: f64,
    /// `node_reply`'s time per run, ns (statistics on).
    pub tc_ns: f64,
}

impl ReplyPath {
    /// Frames per TC translation.
    pub(crate) fn frames_per_run(&self) -> f64 {
        self.frames_per_s / self.tc_runs_per_s
    }
}

pub(crate) fn round(
    round: usize,
    windows: Windows,
    connrate: &std::path::Path,
) -> Result<ReplyPath> {
    traffic::settle()?;
    let mut lab = variant::node_setup(Variant::N, round)?;
    let server = Variant::N.server();
    traffic::start_servers(
        &mut lab,
        connrate,
        server,
        variant::expected_source(Variant::N),
    )?;
    traffic::settle()?;
    let secs = windows.measure.as_secs().max(1) + 2;
    let child = lab
        .client()
        .command("iperf3")
        .args(["-c", &Variant::N.target().to_string(), "-p"])
        .arg(IPERF_PORT.to_string())
        .args([
            "-R",
            "-t",
            &secs.to_string(),
            "-J",
            "--connect-timeout",
            "3000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("iperf3 -R")?;
    // Past the connection's start, then one window.
    std::thread::sleep(Duration::from_secs(1));
    let uplink = (&lab.node, "uplink");
    let (q0, t0) = (queue_counts(uplink)?.0, Instant::now());
    let stats = cpus::program_stats(windows.measure)?;
    let (q1, t1) = (queue_counts(uplink)?.0, Instant::now());
    let out = wait_bounded(child, Duration::from_secs(secs + 20))?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3: {}", String::from_utf8_lossy(&out.stderr)))?;
    let gbps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON without end.sum_received")?
        / 1e9;
    let window = (t1 - t0).as_secs_f64();
    let runs = |name: &str| stats.get(name).copied().unwrap_or_default();
    let (xdp, tc) = (runs("node_xdp"), runs("node_reply"));
    anyhow::ensure!(tc.0 > 0, "node_reply did not run during the download");
    Ok(ReplyPath {
        round,
        gbps,
        frames_per_s: (q1 - q0) as f64 / window,
        xdp_runs_per_s: xdp.0 as f64 / windows.measure.as_secs_f64(),
        tc_runs_per_s: tc.0 as f64 / windows.measure.as_secs_f64(),
        tc_ns: tc.1,
    })
}
