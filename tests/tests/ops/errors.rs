//! Errors through the real binary: real failures (a missing pin, a map write the kernel
//! refuses, interfaces that do not exist, an unreadable `--config-file`) print "what failed:
//! why: root cause" with each clause once and the cause (the errno's text) exactly once.
//! Each message says what failed and leaves its cause to `source()` (aya's rule); the CLI
//! and the logs print the chain with `egress_user::error_chain`.

use std::{process::Output, time::Duration};

use egress_tests::{
    egress_router_bin,
    lab::{EGRESS_SOURCE, GATEWAY_IP, Lab, SERVER_IP},
    netns::run_bounded,
    util::{run_ok_here, tempdir},
};

/// The last line of `out`'s stderr, the error it exited 1 with.
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr.lines().last().unwrap_or_default().to_owned()
}

/// Asserts that no clause of `line` (the text between ": " separators) appears twice, and
/// that each of `once` appears exactly once.
fn assert_clauses_once(line: &str, once: &[&str]) {
    let clauses: Vec<&str> = line.split(": ").collect();
    for (i, clause) in clauses.iter().enumerate() {
        assert!(
            !clauses[i + 1..].contains(clause),
            "{clause:?} twice in {line:?}"
        );
    }
    for text in once {
        assert_eq!(line.matches(text).count(), 1, "{text:?} once in {line:?}");
    }
}

/// `egress-router init` in the lab's router namespace, instance `errors`, with
/// EGRESS_DESTINATION `destination` and `extra` arguments.
fn init(lab: &Lab, destination: &str, extra: &[&str]) -> Output {
    run_bounded(
        lab.router
            .command(egress_router_bin())
            .env("EGRESS_SOURCE", format!("{EGRESS_SOURCE}/24"))
            .env("EGRESS_GATEWAY", GATEWAY_IP.to_string())
            .env("EGRESS_DESTINATION", destination)
            .env("EGRESS_ROUTER_MODE", "init")
            .arg("--bpffs")
            .arg(lab.bpffs.path())
            .args(["--instance", "errors"])
            .args(extra),
        Duration::from_secs(30),
    )
    .unwrap()
}

#[test]
fn a_missing_pin_and_an_unreadable_file_name_their_cause_once() {
    // No node data plane pinned there: the first pin opened is missing.
    let dir = tempdir("errors-pins");
    let out = run_bounded(
        std::process::Command::new(egress_router_bin())
            .arg("--bpffs")
            .arg(&*dir)
            .arg("node-status"),
        Duration::from_secs(20),
    )
    .unwrap();
    let line = error_line(&out);
    let pin = dir.join("node/STATS");
    assert!(
        line.starts_with(&format!(
            "egress-router: no node data plane pinned in {}: opening pin {}: ",
            dir.join("node").display(),
            pin.display()
        )),
        "{line}"
    );
    assert_clauses_once(
        &line,
        &[
            "`BPF_OBJ_GET` failed",
            "No such file or directory (os error 2)",
        ],
    );

    // A configuration error is printed bare, its cause once.
    let missing = dir.join("missing");
    let out = run_bounded(
        std::process::Command::new(egress_router_bin())
            .env("EGRESS_ROUTER_MODE", "unit-test")
            .env("EGRESS_SOURCE", EGRESS_SOURCE.to_string())
            .env("EGRESS_GATEWAY", GATEWAY_IP.to_string())
            .arg("--config-file")
            .arg(&missing),
        Duration::from_secs(20),
    )
    .unwrap();
    let line = error_line(&out);
    assert_eq!(
        line,
        format!(
            "reading --config-file {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

#[test]
fn a_refused_map_write_and_a_missing_interface_name_their_cause_once() {
    let lab = Lab::new("errors").unwrap();
    // Interfaces that do not exist: nothing is set up.
    let out = init(
        &lab,
        &format!("80 tcp {SERVER_IP}"),
        &[
            "--egress-interface",
            "nosuch0",
            "--macvlan-parent",
            "nosuch1",
        ],
    );
    let line = error_line(&out);
    assert_eq!(
        line,
        "egress-router: network set-up: macvlan parent interface nosuch1 does not exist"
    );
    assert_clauses_once(&line, &["nosuch1"]);

    // An instance set up, then its rules map frozen (read-only from user space, as the
    // kernel enforces it): the next set-up's rule change is refused by the kernel.
    let out = init(&lab, &format!("80 tcp {SERVER_IP}"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = lab.pin_dir("errors").join("RULES");
    run_ok_here(
        "bpftool",
        &["map", "freeze", "pinned", rules.to_str().unwrap()],
    );
    let out = init(&lab, &format!("81 tcp {SERVER_IP}"), &[]);
    let line = error_line(&out);
    assert!(
        line.starts_with("egress-router: data plane: map RULES: `bpf_map_"),
        "{line}"
    );
    assert_clauses_once(
        &line,
        &["map RULES", "Operation not permitted (os error 1)"],
    );
}
