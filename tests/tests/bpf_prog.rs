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
