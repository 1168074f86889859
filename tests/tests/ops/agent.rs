//! One agent per instance: a second agent for an instance whose agent runs is refused
//! before it changes anything (programs, maps, ports), unless it is told to take over.

use std::time::Duration;

use egress_tests::{
    lab::{EGRESS_SOURCE, Lab, SERVER_IP},
    netns::run_bounded,
    util::{ask, peer_server, router_cli, wait_listening},
};

/// The IDs of the programs attached for `instance`, from `status --json`.
fn program_ids(lab: &Lab, instance: &str) -> Vec<u64> {
    let status: serde_json::Value =
        serde_json::from_str(&router_cli(lab, instance, &["status", "--json"])).unwrap();
    status["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_second_agent_is_refused_unless_it_takes_over() {
    let mut lab = Lab::new("agent-one").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let destination = format!("80 tcp {SERVER_IP}");
    let first = lab.start_agent("one", &destination, &[]).unwrap();
    let before = program_ids(&lab, "one");
    assert_eq!(before.len(), 3);

    let out = run_bounded(
        &mut lab.agent_command("one", &destination, &[]),
        Duration::from_secs(20),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another egress-router agent (pid ")
            && stderr.contains("runs for instance one")
            && stderr.contains("--take-over"),
        "{stderr}"
    );
    assert_eq!(
        program_ids(&lab, "one"),
        before,
        "the running data plane was changed"
    );
    lab.wait_healthy(first, Duration::from_secs(5)).unwrap();
    assert!(ask(&lab, 80).starts_with(&format!("{EGRESS_SOURCE} ")));

    let second = lab
        .start_agent("one", &destination, &["--take-over"])
        .unwrap();
    // The second agent stops the first itself (before then, /healthz may still be the
    // first's, which is what start_agent waited for): only then is the first's output read.
    lab.wait_for_log(
        second,
        "took over from the running agent",
        Duration::from_secs(20),
    )
    .unwrap();
    let first_log = String::from_utf8_lossy(&lab.stop_daemon(first).unwrap().stderr).into_owned();
    assert!(
        first_log.contains("terminating; the data plane stays attached"),
        "the first agent exited as on SIGTERM: {first_log}"
    );
    // /healthz may have been answered by the first agent before it stepped down: wait for
    // the second one's programs.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        let after = program_ids(&lab, "one");
        if after.len() == 3 && after.iter().all(|id| !before.contains(id)) {
            break after;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second agent never replaced the programs: {before:?} -> {after:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(after.len(), 3);
    assert!(ask(&lab, 80).starts_with(&format!("{EGRESS_SOURCE} ")));
    let second_log = String::from_utf8_lossy(&lab.stop_daemon(second).unwrap().stderr).into_owned();
    assert!(
        second_log.contains("took over from the running agent"),
        "{second_log}"
    );
}
