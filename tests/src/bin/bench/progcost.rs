//! Per-packet cost of the data plane's programs, from BPF_PROG_TEST_RUN on crafted frames in
//! the real kernel: forward on an established flow, forward creating a flow, and the reply
//! direction, each minus a no-op program measured the same way, with 1k and with 1M
//! established flows in the table.
//!
//! Each run executes the program once (repeat 1; with more, the program would see its own
//! rewritten frame), and the kernel reports that run's time. The established and reply
//! frames cycle over flows spread across the whole table, so the 1M case pays the cache
//! misses a busy router pays, not one hot entry.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use aya::programs::{TestRun as _, TestRunOptions};
use egress_common::{FlowKey, RouterConfig, config_flags, maps, programs, proto};
use egress_tests::labbpf::{self, LabBpf};
use egress_user::dataplane::{
    flows::CtTable,
    load::{Dataplane, LoadOptions},
};
use etherparse::{PacketBuilder, TcpOptionElement};

const TC_ACT_REDIRECT: u32 = 7;
const POD: [u8; 4] = [192, 0, 2, 1];
const SOURCE: [u8; 4] = [198, 51, 100, 100];
/// EGRESS_DESTINATION is a fallback IP only, so every destination port is a NAT space.
const FALLBACK: [u8; 4] = [203, 0, 113, 10];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const POD_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// Capacity of both tables, in flows: the same map, so only the fill differs.
pub(crate) const CAPACITY_FLOWS: u32 = 1_100_000;
/// At most this many flows, spread across the table, carry the established and reply runs:
/// with 1M flows their entries (about 16 MiB with the buckets) do not all stay in the
/// CPU caches, as for a router whose many flows are all busy.
pub(crate) const SAMPLES: u32 = 65_536;
/// First flow index of the flows created by the "new flow" runs (never populated).
const NEW_FLOW_BASE: u32 = 4_000_000;

/// The table sizes measured.
pub(crate) const TABLES: [u32; 2] = [1_000, 1_000_000];

/// Medians of one round on one table, in nanoseconds per run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct CostRound {
    pub round: usize,
    pub flows: u32,
    pub noop_ns: f64,
    /// The ceiling's program (`lab_forward`) on the established frames.
    pub forwarder_ns: f64,
    pub established_ns: f64,
    pub new_flow_ns: f64,
    pub reply_ns: f64,
}

/// Flow `i`: 256 destination ports, so that 1M flows fill each NAT port space to 6 %, and
/// within a port a distinct client port, so the client's port is free as the NAT port (as
/// for most real flows; the probing path is the exception). Unique for `i` below 16M.
fn flow(i: u32) -> ([u8; 4], u16, u16) {
    let dport = 20_000 + (i % 256) as u16;
    let sport = 1024 + ((i / 256) % 64_000) as u16;
    let client = [192, 0, 2, 2 + (i / (256 * 64_000)) as u8];
    (client, sport, dport)
}

fn syn(i: u32) -> Vec<u8> {
    let (client, sport, dport) = flow(i);
    let mut out = Vec::with_capacity(80);
    PacketBuilder::ethernet2(CLIENT_MAC, POD_MAC)
        .ipv4(client, POD, 64)
        .tcp(sport, dport, 1000, 64240)
        .syn()
        .options(&[
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(7),
        ])
        .expect("options fit")
        .write(&mut out, &[])
        .expect("writing to a Vec");
    out
}

fn ack(src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    PacketBuilder::ethernet2(CLIENT_MAC, POD_MAC)
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, 1001, 64240)
        .ack(1)
        .write(&mut out, &[])
        .expect("writing to a Vec");
    out
}

/// The translated tuple of an output frame (IPv4 without options, TCP).
fn tuple(frame: &[u8]) -> Result<([u8; 4], u16, [u8; 4], u16)> {
    ensure!(frame.len() >= 38, "output frame of {} bytes", frame.len());
    let addr = |at: usize| -> [u8; 4] { frame[at..at + 4].try_into().expect("4 bytes") };
    let port = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    Ok((addr(26), port(34), addr(30), port(36)))
}

/// CPU seconds this thread has used, user and system together.
pub(crate) fn thread_cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &raw mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Whether `name` is a program of the lab's object (the no-op, the forwarder), not of the
/// data plane's.
fn is_lab(name: &str) -> bool {
    labbpf::programs::ALL.contains(&name)
}

/// One loaded data plane with `flows` flows created by its own program, and the lab's
/// object for the no-op and the ceiling's forwarder, configured alike.
pub(crate) struct Table {
    dp: Dataplane,
    lab: LabBpf,
    pub flows: u32,
    forward: Vec<Vec<u8>>,
    reply: Vec<Vec<u8>>,
    out: Vec<u8>,
}

impl Table {
    pub(crate) fn new(flows: u32) -> Result<Self> {
        let mut dp = Dataplane::load(&LoadOptions {
            conntrack_flows: CAPACITY_FLOWS,
            pin_dir: None,
            ipv6: false,
        })?;
        let cfg = RouterConfig {
            pod_ip: POD,
            egress_source: SOURCE,
            fallback_ip: FALLBACK,
            pod_ifindex: 11,
            egress_ifindex: 12,
            flags: config_flags::HAS_FALLBACK,
            nat_port_min: 1024,
            nat_port_max: 65535,
            mss_clamp: 1360,
            instance: 0,
            _pad: 0,
            nat_secret: 0x5eed_0001,
        };
        dp.maps_mut().configure(&cfg, &[])?;
        let mut lab = LabBpf::load()?;
        lab.configure(&cfg)?;
        lab.program(labbpf::programs::LAB_NOOP)?;
        lab.program(labbpf::programs::LAB_FORWARD)?;
        let mut table = Self {
            dp,
            lab,
            flows,
            forward: Vec::new(),
            reply: Vec::new(),
            out: vec![0; 256],
        };
        let step = (flows / SAMPLES).max(1);
        for i in 0..flows {
            let (verdict, _) = table.run(programs::POD_INGRESS, &syn(i))?;
            ensure!(
                verdict == TC_ACT_REDIRECT,
                "flow {i}: SYN verdict {verdict}"
            );
            let (client, sport, dport) = flow(i);
            let (nat_src, nat_sport, remote, rport) = tuple(&table.out)?;
            let reply = ack((remote, rport), (nat_src, nat_sport));
            // Answered, so the flow moves to the table of answered flows, as a flow with
            // traffic does.
            let (verdict, _) = table.run(programs::EGRESS_INGRESS, &reply)?;
            ensure!(
                verdict == TC_ACT_REDIRECT,
                "flow {i}: answer verdict {verdict}"
            );
            if i % step == 0 {
                table.forward.push(ack((client, sport), (POD, dport)));
                table.reply.push(reply);
            }
        }
        Ok(table)
    }

    fn run(&mut self, name: &'static str, frame: &[u8]) -> Result<(u32, Duration)> {
        self.out.resize(frame.len() + 256, 0);
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut self.out);
        let prog = if is_lab(name) {
            self.lab.program(name)?
        } else {
            self.dp.program(name)?
        };
        let result = prog.test_run(opts)?;
        self.out.truncate(result.data_size_out as usize);
        Ok((result.return_value, result.duration))
    }

    fn expect_redirect(&mut self, name: &'static str, frame: &[u8]) -> Result<Duration> {
        let (verdict, took) = self.run(name, frame)?;
        if verdict != TC_ACT_REDIRECT {
            bail!("{name}: verdict {verdict}, expected redirect");
        }
        Ok(took)
    }

    /// Median run time of `calls` runs of `name` cycling over `frames` from `offset`.
    fn median_over(
        &mut self,
        name: &'static str,
        frames: &[Vec<u8>],
        offset: usize,
        calls: usize,
    ) -> Result<f64> {
        let mut times = Vec::with_capacity(calls);
        for i in 0..calls {
            let frame = &frames[(offset + i) % frames.len()];
            let took = if is_lab(name) {
                self.run(name, frame)?.1
            } else {
                self.expect_redirect(name, frame)?
            };
            times.push(took.as_nanos() as f64);
        }
        Ok(crate::figures::median(&mut times))
    }

    /// One round: no-op, established, reply, new flow (which are then removed again so the
    /// table keeps its size).
    ///
    /// First, untimed, one packet in each direction of every sampled flow: the flows are
    /// established (ACKs seen both ways) and were refreshed within the last second, the
    /// steady state of a flow with traffic. (A flow's first packet after a quiet second also
    /// refreshes its peer entry's timestamp: one more lookup, once per second per flow.)
    pub(crate) fn round(&mut self, round: usize, calls: usize) -> Result<CostRound> {
        let forward = std::mem::take(&mut self.forward);
        let reply = std::mem::take(&mut self.reply);
        let warm = forward.iter().zip(&reply).try_for_each(|(f, r)| {
            self.expect_redirect(programs::POD_INGRESS, f)?;
            self.expect_redirect(programs::EGRESS_INGRESS, r).map(drop)
        });
        let offset = round * calls;
        let noop = self.median_over(labbpf::programs::LAB_NOOP, &forward, offset, calls);
        let forwarder = self.median_over(labbpf::programs::LAB_FORWARD, &forward, offset, calls);
        let established = self.median_over(programs::POD_INGRESS, &forward, offset, calls);
        let replied = self.median_over(programs::EGRESS_INGRESS, &reply, offset, calls);
        self.forward = forward;
        self.reply = reply;
        warm?;
        let new_flow = self.new_flows(round, calls)?;
        Ok(CostRound {
            round,
            flows: self.flows,
            noop_ns: noop?,
            forwarder_ns: forwarder?,
            established_ns: established?,
            new_flow_ns: new_flow,
            reply_ns: replied?,
        })
    }

    fn new_flows(&mut self, round: usize, calls: usize) -> Result<f64> {
        let base = NEW_FLOW_BASE + (round * calls) as u32;
        let frames: Vec<Vec<u8>> = (0..calls as u32).map(|j| syn(base + j)).collect();
        let mut times = Vec::with_capacity(calls);
        let mut created = Vec::with_capacity(calls);
        for (j, frame) in frames.iter().enumerate() {
            let took = self.expect_redirect(programs::POD_INGRESS, frame)?;
            times.push(took.as_nanos() as f64);
            let (client, sport, dport) = flow(base + j as u32);
            let (nat_src, nat_sport, remote, rport) = tuple(&self.out)?;
            created.push([
                FlowKey {
                    saddr: client,
                    daddr: POD,
                    sport,
                    dport,
                    proto: proto::TCP,
                    _pad: [0; 3],
                },
                FlowKey {
                    saddr: remote,
                    daddr: nat_src,
                    sport: rport,
                    dport: nat_sport,
                    proto: proto::TCP,
                    _pad: [0; 3],
                },
            ]);
        }
        for key in created.iter().flatten() {
            if !self.dp.maps_mut().remove_flow(CtTable::Unreplied, key)? {
                bail!("flow {key:?} created by the new-flow run is not in CT_UNREPLIED");
            }
        }
        Ok(crate::figures::median(&mut times))
    }

    /// One pass of the agent's conntrack GC (the sweep in the kernel) over the table as it
    /// is (every flow alive):
    /// (wall seconds, CPU seconds of this thread, user and system together).
    pub(crate) fn gc_pass(&mut self) -> Result<(f64, f64)> {
        let cpu = thread_cpu_s;
        let now = egress_user::conntrack::monotonic_ns();
        // The pass below is the sweep in the kernel, not the agent's own pass it falls back
        // to (untimed check).
        for t in [CtTable::Replied, CtTable::Unreplied] {
            egress_user::conntrack::sweep_only::<[u8; 4]>(&mut self.dp, t, now)?
                .context("the GC sweep overflowed")?;
        }
        let (wall, before) = (std::time::Instant::now(), cpu());
        let pass = egress_user::conntrack::collect_garbage_in_kernel(&mut self.dp, now)?;
        let (cpu_s, wall_s) = (cpu() - before, wall.elapsed().as_secs_f64());
        anyhow::ensure!(
            pass.v4.expired == 0,
            "the GC removed {} live entries",
            pass.v4.expired
        );
        Ok((wall_s, cpu_s))
    }

    /// Conntrack entries in the table now.
    pub(crate) fn entries(&self) -> Result<usize> {
        Ok(self.dp.maps().conntrack()?.len())
    }

    /// Memory the kernel charges for the conntrack maps (`memlock` in their fdinfo: the
    /// answered flows' table and the unreplied one, which is part of every flow's cost),
    /// and the capacity in answered flows.
    pub(crate) fn conntrack_memory(&self) -> Result<(u64, u32)> {
        let mut memlock = 0;
        for name in [maps::CONNTRACK, maps::CT_UNREPLIED] {
            let info = self.dp.maps().info(name)?;
            let fd = info.fd()?;
            let raw = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&fd));
            let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}"))?;
            memlock += fdinfo
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .context("no memlock in the map's fdinfo")?;
        }
        let capacity = self.dp.maps().conntrack_capacity()?;
        Ok((memlock, capacity / 2))
    }
}
