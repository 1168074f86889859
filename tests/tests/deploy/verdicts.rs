//! `unit-test` refuses what `legacy` refuses, with the same message, so a CI check built on
//! it passes only configurations the agent takes: the same configurations through both in a
//! router pod's namespace. A refusal of legacy leaves the namespace and the pins as they
//! were (it validates before it changes anything); an accepted configuration sets up, and
//! the agent is stopped before the next.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use egress_tests::{
    egress_router_bin,
    lab::{EGRESS_SOURCE, GATEWAY_IP, Lab},
    netns::run_bounded,
    util::{pins, tempdir},
};

/// (what, EGRESS_DESTINATION, extra arguments, what a refusal says: `None` for a
/// configuration both take).
type Case = (
    &'static str,
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
);

const REFUSED: &[Case] = &[
    (
        "TCP on the default metrics port",
        "80 tcp 203.0.113.10\n9469 tcp 203.0.113.11",
        &[],
        Some(
            "EGRESS_DESTINATION: TCP port 9469 is also the agent's metrics or health port; \
             choose another --metrics-address or --health-address port or remove the rule",
        ),
    ),
    (
        "TCP on a metrics port on the pod IP",
        "8080 tcp 203.0.113.10 80",
        &["--metrics-address", ":8080"],
        Some("EGRESS_DESTINATION: TCP port 8080 is also the agent's metrics or health port"),
    ),
    (
        "TCP on the health port",
        "9470 tcp 203.0.113.10",
        &["--health-address", ":9470"],
        Some("EGRESS_DESTINATION: TCP port 9470 is also the agent's metrics or health port"),
    ),
    (
        "TCP on the port of a metrics address",
        "8080 tcp 203.0.113.10",
        &["--metrics-address", "192.0.2.1:8080"],
        Some("EGRESS_DESTINATION: TCP port 8080 is also the agent's metrics or health port"),
    ),
    (
        "a GC interval below 0.1 s",
        "80 tcp 203.0.113.10",
        &["--gc-max-interval", "0.05"],
        Some("--gc-max-interval (EGRESS_ROUTER_GC_MAX_INTERVAL) 0.05: must be from 0.1 to"),
    ),
    (
        "a GC interval no timer holds",
        "80 tcp 203.0.113.10",
        &["--gc-max-interval", "1e300"],
        Some("--gc-max-interval (EGRESS_ROUTER_GC_MAX_INTERVAL) 1e300: must be from 0.1 to"),
    ),
    (
        "no conntrack",
        "80 tcp 203.0.113.10",
        &["--conntrack-size", "0"],
        Some("--conntrack-size (EGRESS_ROUTER_CONNTRACK_SIZE) must be at least 1"),
    ),
    (
        "a local port twice",
        "80 tcp 203.0.113.10\n80 udp 203.0.113.11",
        &[],
        Some("EGRESS_DESTINATION localport 80 is already used"),
    ),
    (
        "a rule to EGRESS_SOURCE",
        "80 tcp 198.51.100.100",
        &[],
        Some("EGRESS_DESTINATION: 198.51.100.100 is not a destination"),
    ),
];

const TAKEN: &[Case] = &[
    (
        "a rule and a fallback",
        "80 tcp 203.0.113.10\n203.0.113.20",
        &[],
        None,
    ),
    (
        "UDP on the metrics port",
        "9469 udp 203.0.113.10",
        &[],
        None,
    ),
    (
        "TCP 9469 with the metrics off",
        "9469 tcp 203.0.113.10",
        &["--metrics-address", "off"],
        None,
    ),
    (
        "TCP 9470 with no health listener (the default)",
        "9470 tcp 203.0.113.10",
        &[],
        None,
    ),
];

/// What a mode made of a configuration.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Taken,
    /// Exit status 1 with this on stderr.
    Refused(String),
}

/// `egress-router` in the lab's router namespace with the case's configuration, in `mode`.
fn router(lab: &Lab, mode: &str, (_, destination, extra, _): &Case) -> Command {
    let mut cmd = lab.router.command(egress_router_bin());
    cmd.env_clear()
        .env("EGRESS_ROUTER_MODE", mode)
        .env("EGRESS_SOURCE", format!("{EGRESS_SOURCE}/24"))
        .env("EGRESS_GATEWAY", GATEWAY_IP.to_string())
        .env("EGRESS_DESTINATION", destination)
        .env("EGRESS_ROUTER_BPFFS", lab.bpffs.path())
        .args(["--instance", "verdicts"])
        .args(*extra);
    cmd
}

fn verdict(status: std::process::ExitStatus, stderr: &[u8]) -> Verdict {
    let stderr = String::from_utf8_lossy(stderr).trim().to_owned();
    match status.code() {
        Some(0) => Verdict::Taken,
        Some(1) => Verdict::Refused(stderr),
        other => panic!("exit {other:?}: {stderr}"),
    }
}

fn unit_test(lab: &Lab, case: &Case) -> Verdict {
    let out = run_bounded(&mut router(lab, "unit-test", case), Duration::from_secs(10)).unwrap();
    let verdict = verdict(out.status, &out.stderr);
    if verdict == Verdict::Taken {
        let plan = String::from_utf8_lossy(&out.stdout);
        assert!(plan.starts_with("egress-router plan v1\n"), "{plan}");
    }
    verdict
}

/// legacy's verdict: refused when it exits, taken once it has set up (then stopped with
/// SIGTERM, leaving the data plane, as a pod's agent does).
fn legacy(lab: &Lab, case: &Case) -> Verdict {
    let dir = tempdir("verdicts");
    let log = dir.join("legacy.err");
    let mut child = router(lab, "legacy", case)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return verdict(status, &std::fs::read(&log).unwrap());
        }
        let stderr = std::fs::read_to_string(&log).unwrap();
        if stderr.contains("redirect mode set up") || Instant::now() > deadline {
            // SAFETY: a plain kill(2) of our own child, not yet waited for.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = child.wait().unwrap();
            assert!(
                stderr.contains("redirect mode set up"),
                "{}: legacy neither set up nor exited within 30 s ({status}): {stderr}",
                case.0
            );
            return Verdict::Taken;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn unit_test_refuses_what_legacy_refuses_with_the_same_message() {
    assert!(REFUSED.len() >= 5);
    let lab = Lab::new("verdicts").unwrap();
    let network = lab.router.network_state().unwrap();
    let pinned = pins(lab.bpffs.path());
    let mut failures = Vec::new();
    // The refusals first, in the namespace as the pod has it: each must leave it so.
    for case in REFUSED.iter().chain(TAKEN) {
        let (what, _, _, refusal) = case;
        let by_legacy = legacy(&lab, case);
        let by_unit_test = unit_test(&lab, case);
        let expected = match (refusal, &by_legacy) {
            (None, Verdict::Taken) => true,
            (Some(text), Verdict::Refused(message)) => message.starts_with(text),
            _ => false,
        };
        if !expected || by_unit_test != by_legacy {
            failures.push(format!(
                "{what}: legacy {by_legacy:?}, unit-test {by_unit_test:?}, expected {refusal:?}"
            ));
        }
        if refusal.is_some() {
            assert_eq!(lab.router.network_state().unwrap(), network, "{what}");
            assert_eq!(pins(lab.bpffs.path()), pinned, "{what}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
