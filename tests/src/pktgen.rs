//! Packet tests with BPF_PROG_TEST_RUN, shaped like cilium's PKTGEN -> SETUP -> CHECK:
//! frames built with etherparse, a data plane loaded into the kernel and configured as
//! `EGRESS_DESTINATION` says, and checks that re-parse the output (headers, checksums).

use aya::programs::{TestRun as _, TestRunOptions};
use egress_common::{DropReason, RouterConfig, Stat, config_flags};
use egress_user::{
    config::redirect::{Config, Raw},
    dataplane::{
        flows::CtTable,
        load::{Dataplane, LoadOptions},
        rules::RuleSet,
        stats::Stats,
    },
};
use etherparse::{
    IpNumber, Ipv4Header, TcpHeader, TcpOptionElement, UdpHeader, checksum::Sum16BitWords,
};

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

pub const CLIENT: [u8; 4] = [192, 0, 2, 2];
pub const POD: [u8; 4] = [192, 0, 2, 1];
pub const SOURCE: [u8; 4] = [198, 51, 100, 100];
pub const SERVER: [u8; 4] = [203, 0, 113, 10];
pub const ROUTER_HOP: [u8; 4] = [198, 51, 100, 1];
pub const POD_IFINDEX: u32 = 11;
pub const EGRESS_IFINDEX: u32 = 12;

/// SETUP: a data plane configured as `EGRESS_DESTINATION` says.
pub fn dataplane(destination: &str) -> Dataplane {
    dataplane_with(destination, (1024, 65535))
}

/// [`dataplane`] with translated source ports taken from `nat_ports`.
pub fn dataplane_with(destination: &str, nat_ports: (u16, u16)) -> Dataplane {
    dataplane_configured(destination, |cfg| {
        cfg.nat_port_min = nat_ports.0;
        cfg.nat_port_max = nat_ports.1;
    })
}

/// [`dataplane`] with the configuration as `adjust` leaves it (interfaces, MSS clamp...).
pub fn dataplane_configured(
    destination: &str,
    adjust: impl FnOnce(&mut RouterConfig),
) -> Dataplane {
    dataplane_sized(destination, 1024, adjust)
}

/// [`dataplane_configured`] with a conntrack capacity of `flows`.
pub fn dataplane_sized(
    destination: &str,
    flows: u32,
    adjust: impl FnOnce(&mut RouterConfig),
) -> Dataplane {
    let config = Config::from_raw(&Raw {
        source: Some("198.51.100.100/24".into()),
        gateway: Some("198.51.100.1".into()),
        destination: Some(destination.into()),
        mode: Some("init".into()),
    })
    .unwrap();
    let mut dp = Dataplane::load(&LoadOptions {
        conntrack_flows: flows,
        pin_dir: None,
        ipv6: false,
    })
    .unwrap();
    let mut flags = 0;
    if config.destinations.fallback.is_some() {
        flags |= config_flags::HAS_FALLBACK;
    }
    let mut cfg = RouterConfig {
        pod_ip: POD,
        egress_source: SOURCE,
        fallback_ip: config
            .destinations
            .fallback
            .map(|ip| ip.octets())
            .unwrap_or_default(),
        pod_ifindex: POD_IFINDEX,
        egress_ifindex: EGRESS_IFINDEX,
        flags,
        nat_port_min: 1024,
        nat_port_max: 65535,
        mss_clamp: 1360,
        instance: 0,
        _pad: 0,
        nat_secret: 0x5eed_0001,
    };
    adjust(&mut cfg);
    dp.maps_mut()
        .configure(
            &cfg,
            &RuleSet::from_destinations(&config.destinations).rules,
        )
        .unwrap();
    dp
}

/// Runs `frame` through program `name`; returns the verdict and the output frame.
pub fn run(dp: &mut Dataplane, name: &'static str, frame: &[u8]) -> (u32, Vec<u8>) {
    try_run(dp, name, frame).unwrap()
}

/// [`run`], with the kernel's refusal as an error.
pub fn try_run(
    dp: &mut Dataplane,
    name: &'static str,
    frame: &[u8],
) -> Result<(u32, Vec<u8>), String> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let result = dp
        .program(name)
        .map_err(|e| e.to_string())?
        .test_run(opts)
        .map_err(|e| e.to_string())?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}

/// (packets the programs saw, verdicts they gave, typed drops): every packet ends in one
/// verdict or one drop, so the first is the sum of the other two.
pub fn verdicts(stats: &Stats) -> (u64, u64, u64) {
    let sum = |stats_: &[Stat]| stats_.iter().map(|s| stats.path(*s).packets).sum::<u64>();
    let seen = sum(&[
        Stat::PodIngressSeen,
        Stat::EgressIngressSeen,
        Stat::EgressEgressSeen,
    ]);
    let verdicts = sum(&[
        Stat::PodIngressPassed,
        Stat::Forwarded,
        Stat::Replied,
        Stat::EgressIngressPassed,
        Stat::EgressEgressLocal,
        Stat::EgressEgressPassed,
        Stat::IcmpErrorsSent,
    ]);
    let dropped = DropReason::ALL
        .iter()
        .map(|r| stats.drop(*r).packets)
        .sum::<u64>();
    (seen, verdicts, dropped)
}

/// Panics unless every packet seen ended in one verdict or one drop.
pub fn assert_balanced(stats: &Stats) {
    let (seen, verdicts, dropped) = verdicts(stats);
    assert_eq!(
        seen,
        verdicts + dropped,
        "{seen} packets seen, {verdicts} verdicts and {dropped} drops\n{stats}"
    );
}

pub fn drops(dp: &Dataplane, reason: DropReason) -> u64 {
    dp.maps().stats().unwrap().drop(reason).packets
}

pub fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: IpNumber,
    payload_len: usize,
    ttl: u8,
) -> Ipv4Header {
    let mut ip = Ipv4Header::new(payload_len as u16, ttl, proto, src, dst).unwrap();
    ip.identification = 0x1234;
    ip
}

/// An Ethernet frame around `ip` (checksum filled in) and its payload.
pub fn frame(mut ip: Ipv4Header, payload: &[u8]) -> Vec<u8> {
    ip.header_checksum = ip.calc_header_checksum();
    let mut out = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    ip.write(&mut out).unwrap();
    out.extend_from_slice(payload);
    out
}

pub fn tcp_frame(
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    syn: bool,
    ip_options: &[u8],
    data: &[u8],
) -> Vec<u8> {
    let mut tcp = TcpHeader::new(src.1, dst.1, 1000, 64240);
    tcp.syn = syn;
    tcp.ack = !syn;
    if syn {
        tcp.set_options(&[
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::Timestamp(1, 0),
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(7),
        ])
        .unwrap();
    }
    let mut ip = ipv4(
        src.0,
        dst.0,
        IpNumber::TCP,
        tcp.header_len() + data.len(),
        64,
    );
    ip.options = ip_options.try_into().unwrap();
    ip.total_len = (ip.header_len() + tcp.header_len() + data.len()) as u16;
    tcp.checksum = tcp.calc_checksum_ipv4(&ip, data).unwrap();
    let mut l4 = tcp.to_bytes().to_vec();
    l4.extend_from_slice(data);
    frame(ip, &l4)
}

pub fn udp_frame(src: ([u8; 4], u16), dst: ([u8; 4], u16), data: &[u8], ttl: u8) -> Vec<u8> {
    let ip = ipv4(src.0, dst.0, IpNumber::UDP, 8 + data.len(), ttl);
    let udp = UdpHeader::with_ipv4_checksum(src.1, dst.1, &ip, data).unwrap();
    let mut l4 = udp.to_bytes().to_vec();
    l4.extend_from_slice(data);
    frame(ip, &l4)
}

/// CHECK: parses an output frame, asserting its IPv4 header checksum.
pub fn parse_ip(out: &[u8]) -> (Ipv4Header, &[u8]) {
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    let (ip, rest) = Ipv4Header::from_slice(&out[14..]).unwrap();
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 checksum"
    );
    (ip, rest)
}

/// CHECK: a TCP packet's addresses, ports and checksum.
pub fn check_tcp(out: &[u8], src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> TcpHeader {
    let (ip, rest) = parse_ip(out);
    let (tcp, data) = TcpHeader::from_slice(rest).unwrap();
    assert_eq!((ip.source, tcp.source_port), src, "source");
    assert_eq!((ip.destination, tcp.destination_port), dst, "destination");
    assert_eq!(
        tcp.checksum,
        tcp.calc_checksum_ipv4(&ip, data).unwrap(),
        "TCP checksum"
    );
    tcp
}

pub fn check_udp(out: &[u8], src: ([u8; 4], u16), dst: ([u8; 4], u16)) {
    let (ip, rest) = parse_ip(out);
    let (udp, data) = UdpHeader::from_slice(rest).unwrap();
    assert_eq!((ip.source, udp.source_port), src, "source");
    assert_eq!((ip.destination, udp.destination_port), dst, "destination");
    assert_eq!(
        udp.checksum,
        udp.calc_checksum_ipv4(&ip, data).unwrap(),
        "UDP checksum"
    );
}

pub fn mss(tcp: &TcpHeader) -> Option<u16> {
    tcp.options_iterator().find_map(|opt| match opt {
        Ok(TcpOptionElement::MaximumSegmentSize(mss)) => Some(mss),
        _ => None,
    })
}

pub fn ones_complement(data: &[u8]) -> u16 {
    Sum16BitWords::new()
        .add_slice(data)
        .ones_complement()
        .to_be()
}

/// A TCP segment with explicit numbers: `flags` is a string of `S` (SYN), `A` (ACK), `F`
/// (FIN), `R` (RST), `P` (PSH); `ack` is written whatever the flags.
pub fn tcp_segment(
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    flags: &str,
    seq: u32,
    ack: u32,
    data: &[u8],
) -> Vec<u8> {
    let mut tcp = TcpHeader::new(src.1, dst.1, seq, 64240);
    tcp.acknowledgment_number = ack;
    for flag in flags.chars() {
        match flag {
            'S' => tcp.syn = true,
            'A' => tcp.ack = true,
            'F' => tcp.fin = true,
            'R' => tcp.rst = true,
            'P' => tcp.psh = true,
            other => panic!("unknown TCP flag {other}"),
        }
    }
    let ip = ipv4(
        src.0,
        dst.0,
        IpNumber::TCP,
        tcp.header_len() + data.len(),
        64,
    );
    tcp.checksum = tcp.calc_checksum_ipv4(&ip, data).unwrap();
    let mut l4 = tcp.to_bytes().to_vec();
    l4.extend_from_slice(data);
    frame(ip, &l4)
}

/// Moves every conntrack entry's last packet `seconds` into the past, as if the flows had
/// been idle that long.
pub fn age_flows(dp: &mut Dataplane, seconds: u64) {
    for t in CtTable::ALL {
        for (key, mut entry) in dp.maps().conntrack_table(t).unwrap() {
            entry.last_seen_ns = entry.last_seen_ns.saturating_sub(seconds * 1_000_000_000);
            dp.maps_mut().put_flow(t, &key, &entry).unwrap();
        }
    }
}

/// The state `conntrack` shows for each translated flow, by the client's port.
pub fn flow_states(dp: &Dataplane) -> Vec<(u16, &'static str)> {
    let table = dp.maps().conntrack().unwrap();
    let now = egress_user::conntrack::monotonic_ns();
    egress_user::conntrack::flows(&table, now)
        .into_iter()
        .filter(|f| f.kind == "nat")
        .map(|f| (f.original.sport, f.state))
        .collect()
}

/// The fd of program `name`, for [`run_fd`] from several threads at once (valid while `dp`
/// lives).
pub fn program_fd(dp: &mut Dataplane, name: &'static str) -> i32 {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    dp.program(name).unwrap().fd().unwrap().as_fd().as_raw_fd()
}

/// The `test` member of `union bpf_attr` (BPF_PROG_TEST_RUN).
#[repr(C)]
#[derive(Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// BPF_PROG_TEST_RUN with `attr`.
fn test_run(attr: &mut TestAttr) -> std::io::Result<()> {
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    // SAFETY: the attribute's pointers name buffers of the sizes it gives, alive for the
    // call (the callers' invariant).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            std::ptr::from_mut(attr),
            size_of::<TestAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// [`run`] by program fd, with the raw BPF_PROG_TEST_RUN command: usable from several
/// threads at once (each run happens on the calling thread's CPU).
pub fn run_fd(fd: i32, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestAttr {
        prog_fd: fd as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        ..TestAttr::default()
    };
    if let Err(err) = test_run(&mut attr) {
        panic!("BPF_PROG_TEST_RUN: {err}");
    }
    out.truncate(attr.data_size_out as usize);
    (attr.retval, out)
}

/// Runs the XDP program `fd` `repeat` times on copies of `frame` in live-frames mode
/// (`BPF_F_TEST_XDP_LIVE_FRAMES`): what the program redirects is really sent, in batches,
/// from the calling thread's CPU and network namespace. A traffic generator in the kernel.
pub fn run_live(fd: i32, frame: &[u8], repeat: u32) -> std::io::Result<()> {
    const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
    let mut attr = TestAttr {
        prog_fd: fd as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        ..TestAttr::default()
    };
    test_run(&mut attr)
}

/// Pins the calling thread to CPU `cpu` (modulo the CPUs there are), so that threads run
/// the data plane truly in parallel.
pub fn pin_to_cpu(cpu: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    // SAFETY: a zeroed cpu_set_t with one bit set, passed by pointer with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % cpus, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}
