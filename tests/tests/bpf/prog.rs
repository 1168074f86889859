//! BPF_PROG_TEST_RUN tests: frames built in Rust run through the real programs in the kernel.

use aya::programs::{TestRun as _, TestRunOptions};
use egress_common::Stat;
use egress_user::dataplane::{
    flows::CtTable,
    load::{Dataplane, LoadOptions},
};
use etherparse::PacketBuilder;

/// TC_ACT_OK: hand the packet to the stack.
const TC_ACT_OK: u32 = 0;

fn udp_frame(payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1])
        .ipv4([192, 0, 2, 2], [192, 0, 2, 1], 64)
        .udp(40000, 53);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).unwrap();
    frame
}

#[test]
fn pod_ingress_counts_and_passes_a_frame_unchanged() {
    let mut dp = Dataplane::load(&LoadOptions::default()).unwrap();
    let frame = udp_frame(b"first light");
    let mut out = vec![0u8; frame.len() + 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&frame);
    opts.data_out = Some(&mut out);
    let result = dp.pod_ingress().unwrap().test_run(opts).unwrap();

    assert_eq!(result.return_value, TC_ACT_OK);
    assert_eq!(&out[..result.data_size_out as usize], &frame[..]);
    let stats = dp.maps().stats().unwrap();
    let seen = stats.path(Stat::PodIngressSeen);
    assert_eq!(seen.packets, 1, "{stats}");
    assert_eq!(seen.bytes, frame.len() as u64, "{stats}");
}

/// The benchmarks' reference programs do what BENCHMARKS.md says: `lab_forward` and its
/// way back `lab_return` redirect IPv4 untouched once configured (and only then), pass
/// ARP; `lab_noop` passes. (They live in the lab's own object, which has no counters.)
#[test]
fn lab_programs_forward_ipv4_untouched_and_pass_the_rest() {
    use egress_common::RouterConfig;
    use egress_tests::labbpf::{LabBpf, programs};
    const TC_ACT_SHOT: u32 = 2;
    const TC_ACT_REDIRECT: u32 = 7;
    let mut lab = LabBpf::load().unwrap();
    let ipv4 = udp_frame(b"ceiling");
    let mut arp = ipv4[..14].to_vec();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let run = |lab: &mut LabBpf, name, frame: &[u8]| {
        let mut out = vec![0u8; frame.len() + 64];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let result = lab.program(name).unwrap().test_run(opts).unwrap();
        assert_eq!(
            &out[..result.data_size_out as usize],
            frame,
            "{name} changed the frame"
        );
        result.return_value
    };
    assert_eq!(run(&mut lab, programs::LAB_FORWARD, &ipv4), TC_ACT_SHOT);
    assert_eq!(run(&mut lab, programs::LAB_RETURN, &ipv4), TC_ACT_SHOT);
    lab.configure(&RouterConfig {
        pod_ip: [192, 0, 2, 1],
        egress_source: [198, 51, 100, 100],
        fallback_ip: [0; 4],
        pod_ifindex: 11,
        egress_ifindex: 12,
        flags: 0,
        nat_port_min: 1024,
        nat_port_max: 65535,
        mss_clamp: 0,
        instance: 0,
        _pad: 0,
        nat_secret: 0x5eed_0001,
    })
    .unwrap();
    assert_eq!(run(&mut lab, programs::LAB_FORWARD, &ipv4), TC_ACT_REDIRECT);
    assert_eq!(run(&mut lab, programs::LAB_FORWARD, &arp), TC_ACT_OK);
    assert_eq!(run(&mut lab, programs::LAB_RETURN, &ipv4), TC_ACT_REDIRECT);
    assert_eq!(run(&mut lab, programs::LAB_RETURN, &arp), TC_ACT_OK);
    assert_eq!(run(&mut lab, programs::LAB_NOOP, &ipv4), TC_ACT_OK);
}

/// A hash map named `name` created directly with `bpf(BPF_MAP_CREATE)`, as an earlier
/// build's map of another layout would be; returns its ID (the fd stays open in `fds`).
fn raw_hash_map(
    name: &str,
    key_size: u32,
    value_size: u32,
    fds: &mut Vec<std::os::fd::OwnedFd>,
) -> u32 {
    use std::os::fd::FromRawFd as _;
    #[repr(C)]
    #[derive(Default)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        inner_map_fd: u32,
        numa_node: u32,
        map_name: [u8; 16],
    }
    let mut attr = MapCreate {
        map_type: 1, // BPF_MAP_TYPE_HASH
        key_size,
        value_size,
        max_entries: 16,
        ..MapCreate::default()
    };
    attr.map_name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: BPF_MAP_CREATE (0) with a valid attribute of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0,
            &raw const attr,
            size_of::<MapCreate>() as u32,
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new fd owned by nobody else.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let id = aya::maps::MapData::from_fd(fd.try_clone().unwrap())
        .unwrap()
        .info()
        .unwrap()
        .id();
    fds.push(fd);
    id
}

/// A data plane of an earlier build is taken over map by map: its conntrack (and every
/// map with this build's layout) is kept, while a map whose layout changed (RULES, value
/// 8 -> 12 bytes when name rules came) or that is new (RULE_ADDRS) starts afresh. A strict
/// open of the same maps refuses them.
#[test]
fn an_earlier_builds_maps_are_taken_over_where_their_layout_is_unchanged() {
    use egress_common::maps;
    let dp = Dataplane::load(&LoadOptions {
        conntrack_flows: 1024,
        pin_dir: None,
        ipv6: false,
    })
    .unwrap();
    let mut fds = Vec::new();
    let old_rules = raw_hash_map(maps::RULES, 4, 8, &mut fds);
    let ids: Vec<u32> = maps::ALL
        .iter()
        .filter(|&&name| name != maps::RULE_ADDRS)
        .map(|&name| {
            if name == maps::RULES {
                old_rules
            } else {
                dp.maps().info(name).unwrap().id()
            }
        })
        .collect();

    let (kept, left) = egress_user::dataplane::maps::MapSet::compatible_from_ids(&ids).unwrap();
    let mut left_names: Vec<&str> = left.iter().map(|(name, _)| *name).collect();
    left_names.sort_unstable();
    assert_eq!(left_names, [maps::RULES, maps::RULE_ADDRS]);
    assert!(left[0].1.to_string().contains("value 8 B"), "{}", left[0].1);
    for name in [maps::CONNTRACK, maps::CONFIG, maps::STATS, maps::FRAGMENTS] {
        assert!(kept.has(name), "{name} not taken over");
    }
    assert!(!kept.has(maps::RULES));
    assert!(egress_user::dataplane::maps::MapSet::from_ids(&ids).is_err());
}

/// GC judges a flow by both of its entries: a TCP flow reset by the client (RST seen on the
/// forward entry only) goes after the RST timeout, both entries together, instead of living
/// on for the 6 h an established reply entry would get alone. A live flow stays.
#[test]
fn gc_removes_a_reset_flow_as_one_and_keeps_a_live_one() {
    use egress_common::{FlowEntry, FlowKey, flow_kind, proto, tcp_seen};
    use egress_user::conntrack::{collect_garbage, monotonic_ns};

    let mut dp = Dataplane::load(&LoadOptions {
        conntrack_flows: 64,
        pin_dir: None,
        ipv6: false,
    })
    .unwrap();
    let now = monotonic_ns();
    let s = 1_000_000_000;
    let key = |saddr, sport, daddr, dport| FlowKey {
        saddr,
        daddr,
        sport,
        dport,
        proto: proto::TCP,
        _pad: [0; 3],
    };
    // A flow: client 192.0.2.2:40000 -> pod 192.0.2.1:80, as 198.51.100.100:40000 ->
    // 203.0.113.10:80, last seen `age` ago, the client's side with `client_flags`.
    let mut flow = |client_port: u16, age: u64, client_flags: u8| {
        let forward_key = key([192, 0, 2, 2], client_port, [192, 0, 2, 1], 80);
        let translated = key([198, 51, 100, 100], client_port, [203, 0, 113, 10], 80);
        let last_seen = now - age;
        let mut forward =
            FlowEntry::new(&translated, 1, flow_kind::FORWARD, client_flags, last_seen);
        forward.created_ns = last_seen;
        let reply_flags = tcp_seen::SYN | tcp_seen::ACK;
        let reply = FlowEntry::new(
            &forward_key.reversed(),
            1,
            flow_kind::REPLY,
            reply_flags,
            last_seen,
        );
        dp.maps_mut()
            .put_flow(CtTable::Replied, &forward_key, &forward)
            .unwrap();
        dp.maps_mut()
            .put_flow(CtTable::Replied, &translated.reversed(), &reply)
            .unwrap();
        forward_key
    };
    let established = tcp_seen::SYN | tcp_seen::ACK;
    let reset = flow(40000, 20 * s, established | tcp_seen::RST);
    let live = flow(40001, 20 * s, established);
    assert_eq!(dp.maps().conntrack().unwrap().len(), 4);

    let pass = collect_garbage(dp.maps_mut(), monotonic_ns()).unwrap();
    assert_eq!(pass.v4.expired, 2, "both entries of the reset flow");
    let left: Vec<FlowKey> = dp
        .maps()
        .conntrack()
        .unwrap()
        .iter()
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.contains(&reset) && left.contains(&live), "{left:?}");
}
