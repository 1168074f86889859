//! The unsolicited flood (issue 19): small UDP frames from a host on the egress network to
//! an egress address that no flow uses, as fast as one router core takes them, in node
//! mode (dropped by `node_xdp` at the uplink's driver) and in pod mode on the same node lab
//! (through the macvlan to the pod's programs). The router's receive path runs alone on its
//! CPU, as in the per-core mode: the rate is what one core drops, the CPU time is its
//! cost, and the gateway counts what came back.

use std::{collections::BTreeMap, time::Instant};

use anyhow::{Context as _, Result, ensure};
use egress_tests::{netns::Netns, nodelab, util::drops_in};

use crate::{
    corelab::{flood_frame, queue_counts},
    cpus::{self, CpuTimes, Pinned, online_cpus},
    percore::{Harness, LOAD_CPU, ROUTER_CPU},
    traffic::{self, Windows},
    variant::{self, Variant},
};

/// One variant's flood round.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct FloodRound {
    pub round: usize,
    pub variant: Variant,
    /// Frames per second the router core took from the uplink's queue.
    pub pps: f64,
    /// The router CPU's busy share over the window (0-1).
    pub busy: f64,
    /// The router's NAPI threads' CPU time over the window, as a share of it.
    pub threads_busy: f64,
    /// The router's drop counter for unsolicited traffic over the frames taken.
    pub counted: f64,
    /// Frames the gateway received over the window (an answer to the flood would be one).
    pub answered: u64,
    /// Run time per run of the BPF programs that ran, ns, by name.
    pub program_ns: BTreeMap<String, f64>,
    /// Frames the generator offered beyond what the router took, over those taken, at
    /// the end of the pacing: near 0, the generator was the limit, not the router.
    pub surplus: f64,
}

impl FloodRound {
    /// Router CPU time per dropped frame, nanoseconds.
    pub(crate) fn ns_per_packet(&self) -> f64 {
        self.threads_busy * 1e9 / self.pps
    }
}

/// `rounds` interleaved flood rounds of N and P.
pub(crate) fn rounds(rounds: usize, windows: Windows) -> Result<Vec<FloodRound>> {
    let mut out = Vec::new();
    for n in 0..rounds {
        for variant in Variant::NODE {
            let r = round(variant, n, windows)
                .with_context(|| format!("flood round {n}, {}", variant.label()))?;
            eprintln!(
                "bench: round {n} flood {:<28} {:>8.0} pps dropped at {:>3.0} % ({:>4.0} ns/packet), {:.0} % offered beyond, {:.3} counted, {} answered; programs {:?}",
                variant.label(),
                r.pps,
                r.busy * 100.0,
                r.ns_per_packet(),
                r.surplus * 100.0,
                r.counted,
                r.answered,
                r.program_ns
            );
            out.push(r);
        }
    }
    Ok(out)
}

fn round(variant: Variant, round: usize, windows: Windows) -> Result<FloodRound> {
    ensure!(online_cpus() > ROUTER_CPU, "the flood needs two CPUs");
    traffic::settle()?;
    let _pinned = Pinned::to(LOAD_CPU)?;
    let lab = variant::node_setup(variant, round)?;
    // Its XDP links go before the lab's namespaces.
    let mut harness = Harness::new(&lab)?;
    let target = nodelab::egress_source(0);
    // Addressed as the gateway addresses it: to the uplink's MAC (node mode answers ARP
    // with it) or to the pod's macvlan.
    let (to, instance, reason) = if variant == Variant::N {
        ((&lab.node, "uplink"), "node", "unsolicited_early")
    } else {
        ((&lab.routers[0], "macvlan0"), "bench", "unsolicited")
    };
    let frame = flood_frame(&lab, target, to)?;
    let uplink = (&lab.node, "uplink");
    let drops = || -> Result<u64> {
        Ok(drops_in(&lab.stats(instance)?)
            .get(reason)
            .copied()
            .unwrap_or(0))
    };
    traffic::settle()?;
    let from = (&lab.gateway, "lan0");
    harness.generate(from, target, &frame, uplink, windows, |h, surplus| {
        let (q0, d0, back0) = (queue_counts(uplink)?.0, drops()?, received(&lab.gateway)?);
        let (cpu0, threads0, t0) = (
            CpuTimes::now()?,
            cpus::runtime(&h.router_threads)?,
            Instant::now(),
        );
        std::thread::sleep(windows.measure);
        let (q1, t1) = (queue_counts(uplink)?.0, Instant::now());
        let busy = CpuTimes::now()?.busy_since(&cpu0, ROUTER_CPU)?;
        let threads = cpus::share(cpus::runtime(&h.router_threads)? - threads0, t1 - t0);
        let (d1, back1) = (drops()?, received(&lab.gateway)?);
        ensure!(q1 > q0, "no frame of the flood reached the router");
        Ok(FloodRound {
            round,
            variant,
            pps: (q1 - q0) as f64 / (t1 - t0).as_secs_f64(),
            busy,
            threads_busy: threads,
            counted: (d1 - d0) as f64 / (q1 - q0) as f64,
            answered: back1 - back0,
            program_ns: cpus::program_times(std::time::Duration::from_millis(500))?,
            surplus,
        })
    })
}

/// Frames the gateway's `lan0` received so far.
fn received(gateway: &Netns) -> Result<u64> {
    queue_counts((gateway, "lan0")).map(|(packets, _)| packets)
}
