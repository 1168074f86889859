//! The per-core lab's pieces: C's way back for connections, the generator's template
//! frame, the router's veth queue counters the pacing reads, and the generator for kernels
//! that refuse live frames.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use aya::programs::tc::TcAttachType;
use egress_tests::{
    bed::Bed,
    lab::{CLIENT_IP, EGRESS_SOURCE, Lab, POD_PREFIX, ROUTER_POD_IP, SERVER_IP, SERVER_PREFIX},
    labbpf::{LabBpf, programs},
    netns::Netns,
    pktgen,
};

use crate::variant::{UDP_PORT, Variant};

/// C's way back for the connections: the client routes the server's network via the
/// router pod, the gateway routes the pod network via EGRESS_SOURCE, and `lab_return` on
/// macvlan0's ingress sends the replies out of the pod interface, as `lab_forward` sends
/// the requests out of macvlan0.
pub(crate) fn route_back(lab: &Lab, forwarder: &mut LabBpf) -> Result<()> {
    let server_net = format!(
        "{}/{SERVER_PREFIX}",
        Ipv4Addr::from(u32::from(SERVER_IP) & !0xff)
    );
    let pod_net = format!(
        "{}/{POD_PREFIX}",
        Ipv4Addr::from(u32::from(CLIENT_IP) & !0xff)
    );
    lab.client.ip(&[
        "route",
        "add",
        &server_net,
        "via",
        &ROUTER_POD_IP.to_string(),
    ])?;
    lab.gateway
        .ip(&["route", "add", &pod_net, "via", &EGRESS_SOURCE.to_string()])?;
    let prog = forwarder.program(programs::LAB_RETURN)?;
    lab.router
        .enter(|| prog.attach("macvlan0", TcAttachType::Ingress))?
        .context("attaching lab_return to macvlan0")?;
    Ok(())
}

/// The generator's template: the bench's small UDP frame (60 bytes) from the client to the
/// variant's target, with the real MAC addresses and no UDP checksum (the generator
/// changes the source port).
pub(crate) fn generator_frame(lab: &impl Bed, variant: Variant) -> Result<Vec<u8>> {
    let (IpAddr::V4(client), IpAddr::V4(target)) = (variant.client(), variant.target()) else {
        anyhow::bail!("the per-core mode is IPv4 only");
    };
    let (hop, dev) = lab.client_next_hop();
    udp_frame_between((client, (lab.client(), "eth0")), (target, (hop, dev)))
}

/// The flood's template: a small UDP frame from a host on the egress network to `target`
/// (an egress address), sent by the gateway to the MAC of `to` (the interface that holds
/// or answers for the address).
pub(crate) fn flood_frame(lab: &impl Bed, target: Ipv4Addr, to: (&Netns, &str)) -> Result<Vec<u8>> {
    udp_frame_between((FLOOD_SOURCE, (lab.gateway(), "lan0")), (target, to))
}

/// A host on the egress network (the gateway's side) that no flow of the router talks to.
pub(crate) const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 250);

/// The bench's small UDP frame from `from` to `to`, each an address and the interface whose
/// MAC the frame carries.
fn udp_frame_between(
    (src, from): (Ipv4Addr, (&Netns, &str)),
    (dst, to): (Ipv4Addr, (&Netns, &str)),
) -> Result<Vec<u8>> {
    let mut frame = pktgen::udp_frame(
        (src.octets(), 10_000),
        (dst.octets(), UDP_PORT),
        &[0; 18],
        64,
    );
    let mac = |(ns, dev): (&Netns, &str)| -> Result<Vec<u8>> {
        ns.mac(dev)?
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).context("MAC address"))
            .collect()
    };
    frame[0..6].copy_from_slice(&mac(to)?);
    frame[6..12].copy_from_slice(&mac(from)?);
    frame[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    ensure!(
        frame.len() == 60,
        "the generator's frame is {} bytes",
        frame.len()
    );
    Ok(frame)
}

/// Frames `dev` in `ns` (the generator's first hop) took from its veth queue, and frames
/// dropped there because the queue was full.
pub(crate) fn queue_counts((ns, dev): (&Netns, &str)) -> Result<(u64, u64)> {
    let out = ns
        .command("ip")
        .args(["-j", "-s", "link", "show", dev])
        .output()?;
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("ip -j -s link show {dev}"))?;
    let rx = &json[0]["stats64"]["rx"];
    Ok((
        rx["packets"].as_u64().context("no rx packets")?,
        rx["dropped"].as_u64().context("no rx dropped")?,
    ))
}

/// Whether this kernel runs XDP programs in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`),
/// which `lab_xdp_gen` needs: some kernels refuse it (EPERM). Asked once, by running `pass`
/// (an XDP program that passes every frame) on one frame of an EtherType that nothing
/// handles, which the stack drops.
pub(crate) fn live_frames(pass: i32) -> bool {
    static LIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LIVE.get_or_init(|| {
        let mut frame = [0u8; 60];
        frame[12..14].copy_from_slice(&[0x88, 0xb5]);
        let live = pktgen::run_live(pass, &frame, 1);
        if let Err(e) = &live {
            eprintln!(
                "bench: this kernel runs no XDP program in live-frames mode ({e}): the per-core generator is an AF_PACKET sender"
            );
        }
        live.is_ok()
    })
}

/// The per-core generator where the kernel has no live frames: a thread of this process on
/// the load CPU sending the generator's frame out of the client's `eth0` from an AF_PACKET
/// socket (qdisc bypassed, batches by `sendmmsg`, the source port cycling over the 2048
/// flows, as `lab_xdp_gen` does), unpaced: a frame the router's full veth queue refuses is
/// dropped there and counted. (trafgen cannot be it: its socket's default send buffer
/// fills with the frames queued for the router, and it gives up on EAGAIN.) Stops on drop.
pub(crate) struct Sender {
    stop: std::sync::Arc<AtomicBool>,
    /// Frames the interface took, and frames it refused (the router's queue was full).
    counts: std::sync::Arc<[AtomicU64; 2]>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Sender {
    /// Starts the sender and runs it over the warm-up; returns it, and the surplus it
    /// offered over the warm-up (frames refused over frames taken).
    pub(crate) fn warm_up(
        lab: &impl Bed,
        frame: &[u8],
        cpu: usize,
        warmup: Duration,
    ) -> Result<(Self, f64)> {
        let socket = lab.client().enter(|| packet_socket("eth0"))??;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let counts = std::sync::Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let (flag, count, frame) = (stop.clone(), counts.clone(), frame.to_vec());
        let thread = std::thread::spawn(move || send(&socket, &frame, cpu, &flag, &count));
        let sender = Self {
            stop,
            counts,
            thread: Some(thread),
        };
        let before = sender.counts();
        std::thread::sleep(warmup);
        let after = sender.counts();
        let surplus = (after.1 - before.1) as f64 / (after.0 - before.0).max(1) as f64;
        Ok((sender, surplus))
    }

    fn counts(&self) -> (u64, u64) {
        let [took, refused] = &*self.counts;
        (
            took.load(Ordering::Relaxed),
            refused.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(Err(e)) = self.thread.take().and_then(|t| t.join().ok()) {
            eprintln!("bench: the per-core sender failed: {e:#}");
        }
    }
}

/// An AF_PACKET socket on `dev` of the current network namespace for sending: the qdisc
/// bypassed, a send buffer that holds the router's full queue, sends that block at most
/// 100 ms.
fn packet_socket(dev: &str) -> Result<OwnedFd> {
    let ifindex =
        egress_user::network::interface::ifindex(dev).with_context(|| format!("no {dev}"))?;
    // SAFETY: plain syscall; the fd is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    ensure!(
        fd >= 0,
        "socket(AF_PACKET): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new fd of ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &(64i32 << 20))?;
    setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &1i32)?;
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &timeout)?;
    // SAFETY: zeroed plain data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: a valid sockaddr_ll and its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    ensure!(
        rc == 0,
        "bind(AF_PACKET, {dev}): {}",
        std::io::Error::last_os_error()
    );
    Ok(fd)
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> Result<()> {
    // SAFETY: `value` is a valid T for the option, passed with its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as u32,
        )
    };
    ensure!(
        rc == 0,
        "setsockopt({level}, {name}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// The sender's loop, on `cpu`: batches of `frame` with the source port cycling over
/// the flows, until `stop`; `counts` are the frames taken and refused.
fn send(
    socket: &OwnedFd,
    frame: &[u8],
    cpu: usize,
    stop: &AtomicBool,
    counts: &[AtomicU64; 2],
) -> Result<()> {
    const BATCH: usize = 64;
    crate::cpus::set_affinity(0, cpu)?;
    let mut frames = vec![frame.to_vec(); BATCH];
    let mut iov: Vec<libc::iovec> = frames
        .iter_mut()
        .map(|f| libc::iovec {
            iov_base: f.as_mut_ptr().cast(),
            iov_len: f.len(),
        })
        .collect();
    // SAFETY: zeroed plain data; each message points at its own iovec below.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (msg, iov) in msgs.iter_mut().zip(iov.iter_mut()) {
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
    }
    let mut flow = 0u16;
    while !stop.load(Ordering::Relaxed) {
        for v in &iov {
            let port = 10_000 + flow;
            flow = (flow + 1) % crate::traffic::UDP_FLOWS;
            // SAFETY: each iovec points at a frame of `frames`, which outlives the loop;
            // the UDP source port is at 34 (Ethernet 14, IPv4 20), its checksum is 0.
            unsafe {
                let base = v.iov_base.cast::<u8>();
                std::ptr::copy_nonoverlapping(port.to_be_bytes().as_ptr(), base.add(34), 2);
            }
        }
        // SAFETY: BATCH messages, each with one iovec over a live frame.
        let sent =
            unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if sent < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // The router's queue was full (the first frame refused), or the send
                // buffer was, for 100 ms.
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => {
                    counts[1].fetch_add(1, Ordering::Relaxed);
                }
                _ => return Err(e).context("sendmmsg"),
            }
            continue;
        }
        let sent = sent as u64;
        counts[0].fetch_add(sent, Ordering::Relaxed);
        // A batch stops at the first frame refused.
        if sent < BATCH as u64 {
            counts[1].fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Whether `dev` in `ns` has an XDP program attached.
pub(crate) fn has_xdp(ns: &Netns, dev: &str) -> Result<bool> {
    let out = ns
        .command("ip")
        .args(["-j", "link", "show", dev])
        .output()?;
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("ip -j link show {dev}"))?;
    Ok(json[0].get("xdp").is_some())
}
