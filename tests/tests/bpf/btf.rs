//! The embedded object carries BTF for its maps, so bpftool shows field names to operators.

use std::{process::Command, time::Duration};

use egress_tests::netns::run_bounded;
use egress_user::EBPF_OBJECT;

#[test]
fn bpftool_lists_map_structs_by_name() {
    let path = std::env::temp_dir().join(format!("egress-btf-{}.o", std::process::id()));
    std::fs::write(&path, EBPF_OBJECT).unwrap();
    let out = run_bounded(
        Command::new("bpftool")
            .args(["btf", "dump", "file"])
            .arg(&path),
        Duration::from_secs(10),
    );
    std::fs::remove_file(&path).unwrap();
    let out = out.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "STRUCT 'PacketCount'",
        "'packets'",
        "'bytes'",
        "VAR 'STATS'",
    ] {
        assert!(text.contains(needle), "{needle} missing from BTF:\n{text}");
    }
}
