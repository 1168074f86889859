//! Helpers shared by the lab tests.

use std::time::Duration;

use crate::{
    asset,
    lab::{Lab, SERVER_IP},
    netns::{Netns, run_bounded},
};

/// Runs a command in `ns`, bounded in time; returns stdout, panics with stderr on failure.
pub fn run_ok(ns: &Netns, program: &str, args: &[&str], limit: u64) -> String {
    let out = run_bounded(ns.command(program).args(args), Duration::from_secs(limit)).unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}\n{}",
        ns.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts a peer server (tests/assets/peer_server.py) in the server namespace.
pub fn peer_server(lab: &mut Lab, kind: &str, port: u16) {
    let script = asset("peer_server.py");
    let mut cmd = lab.server.command("python3");
    cmd.arg(script)
        .args([kind, &SERVER_IP.to_string(), &port.to_string()]);
    lab.spawn(cmd).unwrap();
}

/// Starts a peer server of `kind` (see tests/assets/peer_server.py) on `addr`:`port` in the
/// server namespace, with `extra` arguments (the certificate and key of `https`).
pub fn peer_server_at(lab: &mut Lab, kind: &str, addr: &str, port: u16, extra: &[&str]) {
    let mut cmd = lab.server.command("python3");
    cmd.arg(asset("peer_server.py"))
        .args([kind, addr, &port.to_string()])
        .args(extra);
    lab.spawn(cmd).unwrap();
}

/// Waits until something listens on TCP `port` in the server namespace.
pub fn wait_listening(lab: &Lab, port: u16) {
    wait_listening_in(&lab.server, port);
}

/// Waits (at most 10 s) until something listens on TCP `port` in `ns`.
pub fn wait_listening_in(ns: &Netns, port: u16) {
    for _ in 0..100 {
        let out = run_ok(ns, "ss", &["-Htln", &format!("sport = :{port}")], 5);
        if !out.trim().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on {port} in {}", ns.name());
}

/// A scratch directory for a test's files (served pages, downloads), unique per process.
pub fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("er-test-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
