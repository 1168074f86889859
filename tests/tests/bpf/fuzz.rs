//! The packet fuzzer (see `egress_tests::fuzz`) with a fixed seed, so that CI runs the same
//! frames every time; `cargo xtask fuzz` runs it longer with a new seed
//! (`EGRESS_FUZZ_SEED`, `EGRESS_FUZZ_FRAMES`).

use egress_tests::fuzz::Fuzzer;

#[test]
fn fuzzed_frames_keep_every_invariant() {
    let seed = std::env::var("EGRESS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    let frames = std::env::var("EGRESS_FUZZ_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30_000);
    eprintln!("fuzz: seed {seed}, {frames} frames");
    let mut fuzzer = Fuzzer::new(seed);
    fuzzer.run(frames, 2_000);
    assert_eq!(fuzzer.frames(), frames);
}
