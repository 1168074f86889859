//! The per-core mode (issue 17, items 2 and 4): the router's packet processing on a CPU of
//! its own, so that its rate and its CPU time are the router's, not the generator's. How
//! and why: [`crate::corereport::section`] (the report's text).

use std::{
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use aya::programs::{XdpMode, tc::TcAttachType};
use egress_common::RouterConfig;
use egress_tests::{
    bed::Bed,
    labbpf::{LabBpf, maps, programs},
    netns::Netns,
    pktgen,
};

use crate::{
    corelab::{Sender, generator_frame, has_xdp, live_frames, queue_counts, route_back},
    coreround::CoreRound,
    cpus::{self, CpuTimes, Pinned, install_wake_handler, napi_threads, online_cpus, set_affinity},
    traffic::{self, Windows},
    variant::{self, Setup, Variant},
};

/// The CPU the router's packet processing is steered to.
pub(crate) const ROUTER_CPU: usize = 1;
/// The CPU of the generator, the clients, the servers, the gateway and this process.
pub(crate) const LOAD_CPU: usize = 0;
/// How much more the paced generator offers than the router takes (a full queue at all
/// times, and little to recycle).
const SURPLUS: f64 = 0.3;
/// Upper bound of the frames one generator run sends (tens of seconds at the rates here).
/// A run is stopped by a signal at the window's end: each run costs an RCU grace period
/// (the kernel swaps the XDP dispatcher's program in and out), so short runs would leave
/// gaps in the load.
const GEN_FRAMES_MAX: u32 = 200_000_000;

/// The small-packet load's rate, the router core's busy share, its NAPI threads' share, and
/// the programs' times.
type Sample = (f64, f64, f64, std::collections::BTreeMap<String, f64>);

/// `rounds` interleaved rounds of A, B and C in the per-core mode.
pub(crate) fn rounds(
    rounds: usize,
    variants: &[Variant],
    windows: Windows,
    connrate: &Path,
) -> Result<Vec<CoreRound>> {
    let mut out = Vec::new();
    for n in 0..rounds {
        for &variant in variants {
            let r = round(variant, n, windows, connrate)
                .with_context(|| format!("per-core round {n}, {}", variant.label()))?;
            r.print();
            out.push(r);
        }
    }
    Ok(out)
}

/// Runs one variant's per-core round on a fresh lab.
pub(crate) fn round(
    variant: Variant,
    round: usize,
    windows: Windows,
    connrate: &Path,
) -> Result<CoreRound> {
    ensure!(
        online_cpus() > ROUTER_CPU,
        "the per-core mode needs two CPUs"
    );
    traffic::settle()?;
    // This thread and everything it starts (the router's set-up, the servers, connrate)
    // stay off the router's CPU; the guard gives the thread all CPUs back.
    let _pinned = Pinned::to(LOAD_CPU)?;
    if Variant::NODE.contains(&variant) {
        let mut lab = variant::node_setup(variant, round)?;
        return measure(&mut lab, variant, round, windows, connrate);
    }
    let mut setup = Setup::new(variant, round)?;
    // Connections for all three: C's are the baseline, the router's least possible work
    // per connection (lab_forward one way, lab_return back: no NAT, no conntrack).
    if let Some(forwarder) = setup.forwarder.as_mut() {
        route_back(&setup.lab, forwarder)?;
    }
    measure(&mut setup.lab, variant, round, windows, connrate)
}

/// The round's two loads in `lab`, with the router's receive paths on its own CPU.
fn measure(
    lab: &mut impl Bed,
    variant: Variant,
    round: usize,
    windows: Windows,
    connrate: &Path,
) -> Result<CoreRound> {
    // Its XDP links go before the lab's namespaces (dropped at the end of this function).
    let mut harness = Harness::new(lab)?;
    traffic::settle()?;
    let (pps, pps_router_busy, pps_threads_busy, program_ns) =
        harness.small_packets(lab, variant, windows)?;
    let pps_threads_busy = Some(pps_threads_busy);
    harness.steer(lab.gateway(), "lan0", LOAD_CPU)?;
    traffic::start_servers(
        lab,
        connrate,
        variant.server(),
        variant::expected_source(variant),
    )?;
    traffic::settle()?;
    let (before, threads, t0) = (
        CpuTimes::now()?,
        cpus::runtime(&harness.router_threads)?,
        Instant::now(),
    );
    let conn_per_s = traffic::connection_rate(lab, connrate, variant.target(), windows)?;
    let conn_router_busy = CpuTimes::now()?.busy_since(&before, ROUTER_CPU)?;
    let conn_threads_busy = Some(cpus::share(
        cpus::runtime(&harness.router_threads)? - threads,
        t0.elapsed(),
    ));
    Ok(CoreRound {
        round,
        variant,
        pps,
        pps_router_busy,
        conn_per_s,
        conn_router_busy,
        pps_threads_busy,
        conn_threads_busy,
        program_ns,
        generator: harness.generator.clone(),
    })
}

/// The generator and the NAPI switches: the lab's object (its LAB_CONFIG holds the
/// generator's target), attached in four namespaces.
pub(crate) struct Harness {
    lab: LabBpf,
    /// The NAPI threads pinned to the router's CPU: the router's work runs in them.
    pub router_threads: Vec<i32>,
    /// The small-packet generator, where not `lab_xdp_gen` (see [`live_frames`]).
    pub generator: Option<String>,
}

impl Harness {
    pub(crate) fn new(lab: &impl Bed) -> Result<Self> {
        let mut lab_bpf = LabBpf::load()?;
        lab_bpf.xdp_program(programs::LAB_XDP_PASS)?;
        lab_bpf.xdp_program(programs::LAB_XDP_GEN)?;
        let mut harness = Self {
            lab: lab_bpf,
            router_threads: Vec::new(),
            generator: None,
        };
        let path = lab
            .router_path()
            .into_iter()
            .map(|(ns, dev)| (ns, dev, ROUTER_CPU));
        for (ns, dev, cpu) in path.chain([(lab.client(), "eth0", LOAD_CPU)]) {
            harness
                .steer(ns, dev, cpu)
                .with_context(|| format!("steering {dev} in {} to CPU {cpu}", ns.name()))?;
        }
        Ok(harness)
    }

    /// Puts `dev`'s receive path in threaded NAPI and its kernel thread on `cpu`. A veth
    /// has NAPI with an XDP program: the no-op one, unless it has one already (node mode's
    /// uplink).
    fn steer(&mut self, ns: &Netns, dev: &str, cpu: usize) -> Result<()> {
        if !has_xdp(ns, dev)? {
            let prog = self.lab.xdp_program(programs::LAB_XDP_PASS)?;
            ns.enter(|| prog.attach(dev, XdpMode::Driver))??;
        }
        let before = napi_threads()?;
        // sysfs shows the namespace it was mounted in: `ip netns exec` mounts the right one.
        egress_tests::netns::run_checked(Command::new("ip").args([
            "netns",
            "exec",
            ns.name(),
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{dev}/threaded"),
        ]))?;
        let new: Vec<i32> = napi_threads()?.difference(&before).copied().collect();
        ensure!(
            !new.is_empty(),
            "no NAPI thread appeared for {dev} (threaded mode)"
        );
        for pid in new {
            set_affinity(pid, cpu)?;
            if cpu == ROUTER_CPU {
                self.router_threads.push(pid);
            }
        }
        Ok(())
    }

    /// Paces the generator over `warmup` so that it offers about [`SURPLUS`] more frames than
    /// the router takes; returns the surplus of the last step (frames dropped at the
    /// router's veth queue over frames it took). The generator's time per frame grows
    /// linearly with the pacing spins: each step aims at the target from the last two
    /// (spins, time per frame) points (the secant method), starting from none and 64.
    fn pace(&mut self, first_hop: (&Netns, &str), warmup: Duration) -> Result<f64> {
        const STEPS: u32 = 6;
        let step = warmup / STEPS;
        let mut points: Vec<(f64, f64)> = Vec::new();
        let (mut spins, mut surplus) = (0.0f64, f64::NAN);
        self.set_pace(0)?;
        let mut last = queue_counts(first_hop)?;
        for n in 0..STEPS {
            std::thread::sleep(step);
            let now = queue_counts(first_hop)?;
            let (took, dropped) = (now.0 - last.0, now.1 - last.1);
            last = now;
            if took == 0 {
                continue;
            }
            surplus = dropped as f64 / took as f64;
            // Seconds per offered frame now, and the target.
            let per_frame = step.as_secs_f64() / (took + dropped) as f64;
            let target = step.as_secs_f64() / ((1.0 + SURPLUS) * took as f64);
            points.push((spins, per_frame));
            let aim = match points[..] {
                [.., (n0, t0), (n1, t1)] if (t1 - t0).abs() > f64::EPSILON && n1 != n0 => {
                    n1 + (target - t1) * (n1 - n0) / (t1 - t0)
                }
                _ if n == 0 => 64.0,
                _ => spins,
            };
            // At most halved or doubled per step, and halved at least while the router's
            // queue was not kept full.
            let (low, high) = (spins / 2.0, spins * 2.0 + 64.0);
            spins = aim.clamp(low, high);
            if surplus < SURPLUS / 4.0 {
                spins = spins.min(low);
            }
            spins = spins.clamp(0.0, 100_000.0);
            self.set_pace(spins as u32)?;
        }
        Ok(surplus)
    }

    fn set_pace(&mut self, spins: u32) -> Result<()> {
        aya::maps::Array::<_, u32>::try_from(self.lab.map(maps::LAB_PACE)?)?.set(0, spins, 0)?;
        Ok(())
    }

    /// The sink's count at `index` (0: translated, 1: not), summed over the CPUs.
    fn sunk(&mut self, index: u32) -> Result<u64> {
        let map = aya::maps::PerCpuArray::<_, u64>::try_from(self.lab.map(maps::LAB_SINK)?)?;
        Ok(map.get(&index, 0)?.iter().sum())
    }

    /// Small UDP frames from the generator through the router: the router's output rate
    /// and its CPU's busy share over the window.
    fn small_packets(
        &mut self,
        lab: &impl Bed,
        variant: Variant,
        windows: Windows,
    ) -> Result<Sample> {
        let std::net::IpAddr::V4(source) = variant::expected_source(variant) else {
            anyhow::bail!("the per-core mode is IPv4 only");
        };
        let sink = self.lab.program(programs::LAB_SINK)?;
        lab.node()
            .enter(|| sink.attach("uplink", TcAttachType::Egress))?
            .context("attaching the sink to the node's uplink")?;
        let frame = generator_frame(lab, variant)?;
        let from = (lab.client(), "eth0");
        let measure = |h: &mut Self, surplus: f64| {
            let (c0, cpu0, t0) = (h.sunk(0)?, CpuTimes::now()?, Instant::now());
            let threads0 = cpus::runtime(&h.router_threads)?;
            std::thread::sleep(windows.measure);
            let (c1, t1) = (h.sunk(0)?, Instant::now());
            let busy = CpuTimes::now()?.busy_since(&cpu0, ROUTER_CPU)?;
            let threads = cpus::share(cpus::runtime(&h.router_threads)? - threads0, t1 - t0);
            ensure!(c1 > c0, "no frame left the router");
            let wrong = h.sunk(1)?;
            ensure!(
                wrong == 0,
                "{wrong} frames left the router with the wrong source address"
            );
            let rate = (c1 - c0) as f64 / (t1 - t0).as_secs_f64();
            eprintln!(
                "bench: per-core {variant:?}: {rate:.0} frames/s through the router core, {:.0} % busy; the generator offered {:.0} % more than it took",
                busy * 100.0,
                surplus * 100.0
            );
            let programs = cpus::load_program_times(Duration::from_millis(500))?;
            Ok((rate, busy, threads, programs))
        };
        let pass = {
            use std::os::fd::{AsFd as _, AsRawFd as _};
            let prog = self.lab.xdp_program(programs::LAB_XDP_PASS)?;
            prog.fd()?.as_fd().as_raw_fd()
        };
        if live_frames(pass) {
            return self.generate(
                from,
                source,
                &frame,
                lab.client_next_hop(),
                windows,
                measure,
            );
        }
        // No live frames here: a sender of this process's.
        self.lab.configure(&RouterConfig {
            egress_source: source.octets(),
            ..RouterConfig::default()
        })?;
        let (_sender, surplus) = Sender::warm_up(lab, &frame, LOAD_CPU, windows.warmup)?;
        self.generator = Some("AF_PACKET".to_owned());
        measure(self, surplus)
    }

    /// Runs the generator from `from` (namespace and interface) with `frame` as template
    /// (its source port varied), paced over the warm-up against the queue of `first_hop`,
    /// then `measure` (given the harness and the last surplus); stops the generator. The
    /// sink counts frames from `source` as translated.
    pub(crate) fn generate<T>(
        &mut self,
        (sender, dev): (&Netns, &str),
        source: std::net::Ipv4Addr,
        frame: &[u8],
        first_hop: (&Netns, &str),
        windows: Windows,
        measure: impl FnOnce(&mut Self, f64) -> Result<T>,
    ) -> Result<T> {
        let ifindex = sender
            .enter(|| egress_user::network::interface::ifindex(dev))?
            .with_context(|| format!("no {dev} in {}", sender.name()))?;
        self.lab.configure(&RouterConfig {
            egress_ifindex: ifindex,
            egress_source: source.octets(),
            ..RouterConfig::default()
        })?;
        let mut template = [0u8; maps::LAB_FRAME_LEN];
        template[..frame.len()].copy_from_slice(frame);
        aya::maps::Array::<_, [u8; maps::LAB_FRAME_LEN]>::try_from(self.lab.map(maps::LAB_FRAME)?)?
            .set(0, template, 0)?;
        let fd = {
            use std::os::fd::{AsFd as _, AsRawFd as _};
            let prog = self.lab.xdp_program(programs::LAB_XDP_GEN)?;
            prog.fd()?.as_fd().as_raw_fd()
        };
        install_wake_handler()?;
        let (stop, thread) = (AtomicBool::new(false), AtomicU64::new(0));
        let limit = windows.warmup + windows.measure + Duration::from_secs(10);
        std::thread::scope(|s| -> Result<T> {
            let generator = s.spawn(|| {
                sender.enter(|| -> Result<()> {
                    set_affinity(0, LOAD_CPU)?;
                    // SAFETY: plain libc call.
                    thread.store(unsafe { libc::pthread_self() }, Ordering::SeqCst);
                    let start = Instant::now();
                    while !stop.load(Ordering::SeqCst) && start.elapsed() < limit {
                        match pktgen::run_live(fd, frame, GEN_FRAMES_MAX) {
                            Ok(()) => {}
                            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                            Err(e) => return Err(e).context("BPF_PROG_TEST_RUN (live frames)"),
                        }
                    }
                    Ok(())
                })?
            });
            let measured = self
                .pace(first_hop, windows.warmup)
                .and_then(|surplus| measure(self, surplus));
            stop.store(true, Ordering::SeqCst);
            // Interrupt the run in progress (at most 10 s of tries; the run ends by itself
            // within `limit` and GEN_FRAMES_MAX anyway).
            for _ in 0..1000 {
                let tid = thread.load(Ordering::SeqCst);
                if generator.is_finished() {
                    break;
                }
                if tid != 0 {
                    // SAFETY: the thread is alive (not finished) and in this scope.
                    unsafe { libc::pthread_kill(tid, libc::SIGUSR1) };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            generator
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            measured
        })
    }
}
