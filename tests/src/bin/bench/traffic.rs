//! The three loads, with real clients in the client namespace: trafgen (small UDP frames),
//! iperf3 (TCP throughput) and connrate (short TCP connections).

use std::{
    net::{IpAddr, SocketAddr},
    os::unix::process::CommandExt as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use egress_tests::{bed::Bed, netns::run_bounded};

use crate::variant::{self, CONN_PORT, IPERF_PORT, UDP_PORT, Variant};

/// Flows of the small-packet load: distinct client source ports.
pub(crate) const UDP_FLOWS: u16 = 2048;
/// First client source port of the small-packet load.
const UDP_SPORT_MIN: u16 = 10_000;
/// Upper bound of frames one trafgen run may send, whatever the window.
const TRAFGEN_MAX_FRAMES: u64 = 40_000_000;

/// How long each load runs.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub(crate) struct Windows {
    pub warmup: Duration,
    pub measure: Duration,
}

/// Waits (at most 5 s) until the machine is idle: below 5 % busy over a quarter second.
/// Namespaces deleted by the previous set-up are torn down by the kernel in the background,
/// and that work must not land in the next variant's measurement.
pub(crate) fn settle() -> Result<()> {
    fn busy_idle() -> Result<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let line = stat.lines().next().context("empty /proc/stat")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        anyhow::ensure!(v.len() >= 8, "short cpu line in /proc/stat: {line}");
        // user nice system idle iowait irq softirq steal
        Ok((v[0] + v[1] + v[2] + v[5] + v[6], v[3] + v[4]))
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (b0, i0) = busy_idle()?;
        std::thread::sleep(Duration::from_millis(250));
        let (b1, i1) = busy_idle()?;
        let (busy, idle) = (b1 - b0, i1 - i0);
        if busy * 20 <= busy + idle || Instant::now() > deadline {
            return Ok(());
        }
    }
}

/// Packets per second of 64-byte UDP frames (60 bytes on the veth, plus the 4-byte FCS a
/// wire would carry) that crossed the router and reached the gateway's ingress.
pub(crate) fn small_packet_rate(
    lab: &mut impl Bed,
    variant: Variant,
    windows: Windows,
) -> Result<f64> {
    variant::drop_at_gateway(lab, variant)?;
    settle()?;
    let conf = trafgen_config(lab, variant.client(), variant.target())?;
    let path = std::env::temp_dir().join(format!("{}-trafgen.cfg", lab.client().name()));
    std::fs::write(&path, conf)?;
    let result = measure_trafgen(lab, &path, windows);
    let _ = std::fs::remove_file(&path);
    result
}

fn measure_trafgen(lab: &mut impl Bed, conf: &Path, windows: Windows) -> Result<f64> {
    let mut cmd = lab.client().command("trafgen");
    cmd.args(["--dev", "eth0", "--conf"])
        .arg(conf)
        // Leave the system-wide socket memory sysctls and IRQ affinities alone; one process
        // per CPU (the default).
        .args(["--no-sock-mem", "--notouch-irq", "--no-cpu-stats"])
        .args(["--num", &TRAFGEN_MAX_FRAMES.to_string()])
        // Its own process group: trafgen's forked senders stop on a group-wide SIGINT,
        // like ^C in a terminal.
        .process_group(0);
    let index = lab.daemons().len();
    lab.daemons().spawn(cmd)?;
    std::thread::sleep(windows.warmup);
    let (c0, t0) = (variant::crossed(lab, "crossed")?, Instant::now());
    std::thread::sleep(windows.measure);
    let (c1, t1) = (variant::crossed(lab, "crossed")?, Instant::now());
    if let Some(pid) = lab.daemons().pid(index) {
        // SAFETY: plain syscall on our own child's process group.
        unsafe { libc::kill(-pid, libc::SIGINT) };
    }
    let out = lab.daemons().stop(index)?;
    if c1 <= c0 {
        bail!(
            "no frame reached the gateway: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let wrong = variant::crossed(lab, "untranslated")?;
    if wrong > 0 {
        bail!("{wrong} frames reached the gateway with the wrong source address");
    }
    Ok((c1 - c0) as f64 / (t1 - t0).as_secs_f64())
}

/// A trafgen packet: Ethernet to the router's pod interface, IP from `client` to
/// `target`, UDP from one of [`UDP_FLOWS`] source ports to [`UDP_PORT`], 18 bytes of
/// payload: 60 bytes over IPv4, 80 over IPv6 (its header is 20 bytes longer).
fn trafgen_config(lab: &impl Bed, client: IpAddr, target: IpAddr) -> Result<String> {
    let (hop, dev) = lab.client_next_hop();
    let router_mac = hop.mac(dev)?;
    let client_mac = lab.client().mac("eth0")?;
    let (lo, hi) = (UDP_SPORT_MIN, UDP_SPORT_MIN + UDP_FLOWS - 1);
    let ip = match target {
        IpAddr::V4(_) => format!("ipv4(saddr={client}, daddr={target}, ttl=64)"),
        IpAddr::V6(_) => format!("ipv6(saddr={client}, daddr={target}, hoplimit=64, nexthdr=17)"),
    };
    Ok(format!(
        "{{\n  eth(da={router_mac}, sa={client_mac}),\n  \
         {ip},\n  \
         udp(sport=dinc({lo}, {hi}), dport={UDP_PORT}),\n  \
         fill(0x00, 18)\n}}\n"
    ))
}

/// Starts the servers of the TCP loads at `server` in the server namespace and waits for
/// them; the connection server answers `peer` only (EGRESS_SOURCE where the router
/// translates).
pub(crate) fn start_servers(
    lab: &mut impl Bed,
    connrate: &Path,
    server: IpAddr,
    peer: IpAddr,
) -> Result<()> {
    let mut iperf = lab.server().command("iperf3");
    iperf.args([
        "-s",
        "-B",
        &server.to_string(),
        "-p",
        &IPERF_PORT.to_string(),
    ]);
    lab.daemons().spawn(iperf)?;
    let mut conn = lab.server().command(connrate);
    conn.args([
        "serve",
        &SocketAddr::new(server, CONN_PORT).to_string(),
        "4",
        &peer.to_string(),
    ]);
    lab.daemons().spawn(conn)?;
    for port in [IPERF_PORT, CONN_PORT] {
        egress_tests::util::wait_listening_in(lab.server(), port);
    }
    Ok(())
}

/// TCP goodput in Gbit/s that the iperf3 server received from `streams` parallel streams
/// through the router at `target` (the first second, slow start, is left out).
pub(crate) fn tcp_throughput(
    lab: &impl Bed,
    target: IpAddr,
    streams: u32,
    windows: Windows,
) -> Result<f64> {
    let secs = windows.measure.as_secs().max(1);
    let out = run_bounded(
        lab.client().command("iperf3").args([
            "-c",
            &target.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-P",
            &streams.to_string(),
            "-t",
            &secs.to_string(),
            "-O",
            "1",
            "--connect-timeout",
            "3000",
            "-J",
        ]),
        Duration::from_secs(secs + 20),
    )?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 output: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    if let Some(err) = json["error"].as_str() {
        bail!("iperf3: {err}");
    }
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .context("iperf3 JSON without end.sum_received.bits_per_second")
}

/// Short TCP connections per second through the router to `target` (the router pod's
/// address, or the server where nothing translates): connect, a 22-byte request, a
/// 43-byte reply, close; `workers` clients in parallel. Fails when more than 1 % fail.
pub(crate) fn connection_rate(
    lab: &impl Bed,
    connrate: &Path,
    target: IpAddr,
    windows: Windows,
) -> Result<f64> {
    // The client keeps Linux's default ephemeral range (32768-60999), as a client pod does:
    // the server closes first, so a port is free again as soon as its connection ends.
    let secs = windows.measure.as_secs_f64();
    let out = run_bounded(
        lab.client().command(connrate).args([
            "client",
            &SocketAddr::new(target, CONN_PORT).to_string(),
            &secs.to_string(),
            "4",
        ]),
        Duration::from_secs_f64(secs + 15.0),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Result<f64> {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .with_context(|| format!("connrate printed no {name}: {text}"))
    };
    let (done, errors, seconds) = (field("connections")?, field("errors")?, field("seconds")?);
    let slow = field("slow")?;
    eprintln!(
        "bench: connrate {done} connections, {errors} errors, {slow} waited for a retransmission"
    );
    if errors > done / 100.0 {
        bail!("connrate: {errors} of {} connections failed", done + errors);
    }
    Ok(done / seconds)
}
