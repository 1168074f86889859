//! BPF_PROG_TEST_RUN tests: frames built in Rust run through the real programs in the kernel.

use aya::programs::{TestRun as _, TestRunOptions};
use egress_common::Stat;
use egress_user::dataplane::{Dataplane, LoadOptions};
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
    let stats = dp.stats().unwrap();
    let seen = stats.path(Stat::PodIngressSeen);
    assert_eq!(seen.packets, 1, "{stats}");
    assert_eq!(seen.bytes, frame.len() as u64, "{stats}");
}

/// The benchmarks' reference programs do what BENCHMARKS.md says: `lab_forward` redirects
/// IPv4 untouched once configured (and only then), passes ARP; `lab_noop` passes; neither
/// counts anything.
#[test]
fn lab_programs_forward_ipv4_untouched_and_pass_the_rest() {
    use egress_common::{RouterConfig, programs};
    const TC_ACT_SHOT: u32 = 2;
    const TC_ACT_REDIRECT: u32 = 7;
    let mut dp = Dataplane::load(&LoadOptions {
        conntrack_flows: 1024,
        pin_dir: None,
    })
    .unwrap();
    for name in [programs::LAB_FORWARD, programs::LAB_NOOP] {
        dp.program(name).unwrap().load().unwrap();
    }
    let ipv4 = udp_frame(b"ceiling");
    let mut arp = ipv4[..14].to_vec();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let run = |dp: &mut Dataplane, name, frame: &[u8]| {
        let mut out = vec![0u8; frame.len() + 64];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let result = dp.program(name).unwrap().test_run(opts).unwrap();
        assert_eq!(
            &out[..result.data_size_out as usize],
            frame,
            "{name} changed the frame"
        );
        result.return_value
    };
    assert_eq!(run(&mut dp, programs::LAB_FORWARD, &ipv4), TC_ACT_SHOT);
    dp.configure(
        &RouterConfig {
            pod_ip: [192, 0, 2, 1],
            egress_source: [198, 51, 100, 100],
            fallback_ip: [0; 4],
            pod_ifindex: 11,
            egress_ifindex: 12,
            flags: 0,
            nat_port_min: 1024,
            nat_port_max: 65535,
            mss_clamp: 0,
            _pad: 0,
        },
        &[],
    )
    .unwrap();
    assert_eq!(run(&mut dp, programs::LAB_FORWARD, &ipv4), TC_ACT_REDIRECT);
    assert_eq!(run(&mut dp, programs::LAB_FORWARD, &arp), TC_ACT_OK);
    assert_eq!(run(&mut dp, programs::LAB_NOOP, &ipv4), TC_ACT_OK);
    assert_eq!(dp.stats().unwrap().path(Stat::PodIngressSeen).packets, 0);
}
