//! The per-core bench mode's programs (BENCHMARKS.md, "Per router core") do what the report
//! says, checked with BPF_PROG_TEST_RUN: a figure built on a generator that sends the
//! wrong frames, or a sink that counts what it should not, would be wrong without notice.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::{
    maps::{Array, PerCpuArray},
    programs::{TestRun as _, TestRunOptions},
};
use egress_common::RouterConfig;
use egress_tests::{
    labbpf::{LabBpf, maps, programs},
    pktgen,
};

const XDP_ABORTED: u32 = 0;
const XDP_REDIRECT: u32 = 4;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const EGRESS_SOURCE: [u8; 4] = [198, 51, 100, 100];

fn configure(lab: &mut LabBpf, egress_ifindex: u32) {
    lab.configure(&RouterConfig {
        egress_ifindex,
        egress_source: EGRESS_SOURCE,
        ..RouterConfig::default()
    })
    .unwrap();
}

/// Each frame gets the template's headers back whatever the router left in the page, and a
/// source port of one of the 2048 flows; without a target it sends nothing.
#[test]
fn the_generator_rewrites_every_header_and_spreads_the_flows() {
    let mut lab = LabBpf::load().unwrap();
    let fd = lab
        .xdp_program(programs::LAB_XDP_GEN)
        .unwrap()
        .fd()
        .unwrap()
        .as_fd()
        .as_raw_fd();
    let template = pktgen::udp_frame(
        ([192, 0, 2, 2], 10_000),
        ([192, 0, 2, 1], 5001),
        &[0; 18],
        64,
    );
    // What a page holds after the router translated the frame in it.
    let dirty = pktgen::udp_frame(
        (EGRESS_SOURCE, 1234),
        ([203, 0, 113, 10], 5001),
        &[0; 18],
        63,
    );
    assert_eq!(pktgen::run_fd(fd, &dirty).0, XDP_ABORTED, "unconfigured");

    configure(&mut lab, 7);
    let mut value = [0u8; maps::LAB_FRAME_LEN];
    value[..template.len()].copy_from_slice(&template);
    Array::<_, [u8; maps::LAB_FRAME_LEN]>::try_from(lab.map(maps::LAB_FRAME).unwrap())
        .unwrap()
        .set(0, value, 0)
        .unwrap();
    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..512 {
        let (verdict, out) = pktgen::run_fd(fd, &dirty);
        assert_eq!(verdict, XDP_REDIRECT);
        assert_eq!(out.len(), template.len());
        assert_eq!(out[..34], template[..34], "Ethernet and IPv4 headers");
        assert_eq!(
            out[36..],
            template[36..],
            "destination port, length, checksum 0, payload"
        );
        let port = u16::from_be_bytes([out[34], out[35]]);
        assert!((10_000..12_048).contains(&port), "source port {port}");
        ports.insert(port);
    }
    assert!(
        ports.len() > 400,
        "{} distinct ports in 512 frames",
        ports.len()
    );
}

/// The sink counts the UDP load's frames by whether their source is the configured one and
/// drops them; everything else (the TCP loads, other UDP, ARP) passes uncounted.
#[test]
fn the_sink_counts_the_load_by_source_and_passes_the_rest() {
    let mut lab = LabBpf::load().unwrap();
    configure(&mut lab, 0);
    let run = |lab: &mut LabBpf, frame: &[u8]| {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        lab.program(programs::LAB_SINK)
            .unwrap()
            .test_run(opts)
            .unwrap()
            .return_value
    };
    let counts = |lab: &mut LabBpf| -> [u64; 2] {
        let map = PerCpuArray::<_, u64>::try_from(lab.map(maps::LAB_SINK).unwrap()).unwrap();
        [0, 1].map(|i| map.get(&i, 0).unwrap().iter().sum())
    };
    let translated = pktgen::udp_frame((EGRESS_SOURCE, 1024), ([203, 0, 113, 10], 5001), b"x", 64);
    let untranslated = pktgen::udp_frame(
        ([192, 0, 2, 2], 10_000),
        ([203, 0, 113, 10], 5001),
        b"x",
        64,
    );
    let other_udp = pktgen::udp_frame((EGRESS_SOURCE, 1024), ([203, 0, 113, 10], 53), b"x", 64);
    let tcp = pktgen::tcp_frame(
        (EGRESS_SOURCE, 1024),
        ([203, 0, 113, 10], 5001),
        true,
        &[],
        b"",
    );
    let mut arp = translated[..14].to_vec();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);

    for _ in 0..3 {
        assert_eq!(run(&mut lab, &translated), TC_ACT_SHOT);
    }
    assert_eq!(run(&mut lab, &untranslated), TC_ACT_SHOT);
    for frame in [&other_udp, &tcp, &arp] {
        assert_eq!(run(&mut lab, frame), TC_ACT_OK);
    }
    assert_eq!(counts(&mut lab), [3, 1]);
}
