//! Floods for BPF_PROG_TEST_RUN tests: what a hostile client can make the router do by
//! sending one packet as fast as it can.

use std::time::{Duration, Instant};

use egress_common::{DropReason, ICMP_ERRORS_BURST, ICMP_ERRORS_PER_SEC, Stat};
use egress_user::dataplane::load::Dataplane;

use crate::pktgen::{TC_ACT_REDIRECT, TC_ACT_SHOT, drops, run};

/// Copies of the packet in a flood: long enough for the limit to show even when the
/// machine is slow (the test checks that it did).
const FLOOD: u64 = 2000;

/// Floods `program` with `frame`, a packet the router answers with an ICMP error of its
/// own, and checks the limit on those errors: at least the burst is answered, at most the
/// burst and the steady rate over the flood's time, and every other copy is dropped under
/// `reason` and counted as held back. After a pause the next copy is answered again
/// (traceroute keeps working): returns that answer.
pub fn assert_errors_limited(
    dp: &mut Dataplane,
    program: &'static str,
    frame: &[u8],
    reason: DropReason,
) -> Vec<u8> {
    let started = Instant::now();
    let mut sent = 0u64;
    for _ in 0..FLOOD {
        match run(dp, program, frame).0 {
            TC_ACT_REDIRECT => sent += 1,
            TC_ACT_SHOT => {}
            verdict => panic!("verdict {verdict}"),
        }
    }
    let took_ms = started.elapsed().as_millis() as u64;
    // The burst, one more per millisecond the flood took, and the coarse clock's tick (up
    // to 4 ms at HZ 250) with rounding.
    let most = ICMP_ERRORS_BURST + (took_ms + 5) * ICMP_ERRORS_PER_SEC / 1000;
    assert!(
        most < FLOOD,
        "the flood took {took_ms} ms, too long to show a limit"
    );
    assert!(
        (ICMP_ERRORS_BURST..=most).contains(&sent),
        "{sent} errors for {FLOOD} packets in {took_ms} ms (at most {most})"
    );
    let stats = dp.maps().stats().unwrap();
    let counted = stats.path(Stat::IcmpErrorsSent).packets;
    let held = stats.path(Stat::IcmpErrorsLimited).packets;
    assert_eq!((counted, held), (sent, FLOOD - sent), "{stats}");
    assert_eq!(drops(dp, reason), FLOOD - sent);

    std::thread::sleep(Duration::from_millis(100));
    let (verdict, out) = run(dp, program, frame);
    assert_eq!(verdict, TC_ACT_REDIRECT, "answered again after a pause");
    out
}
