//! Live configuration in the netns lab: what the agent does with `--config-file` edits and
//! SIGHUP, from start-up on.

use std::time::{Duration, Instant};

use egress_tests::{
    lab::{EGRESS_SOURCE, Lab, SERVER_IP},
    util::{ask, metric, metrics, peer_server, router_cli, tempdir, wait_listening, write_config},
};

/// The configuration file is read once per load: an edit that lands while the agent is
/// still setting up (after it read the file, before it runs) is applied once it runs, not
/// taken for what was applied.
#[test]
fn an_edit_during_start_up_is_applied() {
    use std::os::unix::ffi::OsStrExt as _;

    let mut lab = Lab::new("op-startedit").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let dir = tempdir("op-startedit");
    let file = dir.join("destination");
    // A FIFO at first: the agent's read of it is the moment the test knows the file was read.
    let c_path = std::ffi::CString::new(file.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let agent = lab
        .spawn_agent("startedit", "", &["--config-file", file.to_str().unwrap()])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let fd = loop {
        // SAFETY: as above; fails with ENXIO until the agent opens the FIFO to read it.
        let fd = unsafe { libc::open(c_path.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK) };
        if fd >= 0 {
            break fd;
        }
        assert!(Instant::now() < deadline, "the agent never read the file");
        std::thread::sleep(Duration::from_millis(10));
    };
    let first = format!("80 tcp {SERVER_IP}\n");
    // SAFETY: a valid fd and buffer; a pipe takes this much at once.
    let written = unsafe { libc::write(fd, first.as_ptr().cast(), first.len()) };
    // SAFETY: closing our own fd; the agent then reads to the end.
    unsafe { libc::close(fd) };
    assert_eq!(written, first.len() as isize);
    // The agent is setting up now (load, network, a 0.5 s announcement): edit the file, as
    // a ConfigMap update does, by swapping in a new one.
    let next = dir.join("next");
    std::fs::write(
        &next,
        format!("80 tcp {SERVER_IP}\n8080 tcp {SERVER_IP} 80\n"),
    )
    .unwrap();
    std::fs::rename(&next, &file).unwrap();
    lab.wait_healthy(agent, Duration::from_secs(20)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = String::new();
    while Instant::now() < deadline && answer.is_empty() {
        answer = ask(&lab, 8080);
    }
    assert!(
        answer.starts_with(&format!("{EGRESS_SOURCE} ")),
        "the edit made during start-up was applied: {answer:?}"
    );
    let log = String::from_utf8_lossy(&lab.stop_daemon(agent).unwrap().stderr).into_owned();
    assert!(log.contains("configuration reloaded"), "{log}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn invalid_reload_is_rejected_counted_and_rules_stay() {
    let mut lab = Lab::new("op-reload").unwrap();
    peer_server(&mut lab, "tcp", 80);
    wait_listening(&lab, 80);
    let dir = tempdir("op-reload");
    let file = dir.join("destination");
    write_config(&file, &format!("80 tcp {SERVER_IP}\n"));
    let agent = lab
        .start_agent(
            "reload",
            "",
            &[
                "--config-file",
                file.to_str().unwrap(),
                "--log-format",
                "json",
            ],
        )
        .unwrap();
    let rules_before = router_cli(&lab, "reload", &["status", "--json"]);
    write_config(&file, &format!("80 tcp {SERVER_IP}\n8080 tcp nowhere\n"));
    let failures = (0..50)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            let v = metric(
                &metrics(&lab),
                "egress_router_config_reload_failures_total",
                None,
            );
            (v >= 1.0).then_some(v)
        })
        .expect("the rejected reload is counted");
    assert_eq!(failures, 1.0);
    // SIGHUP re-reads the same bad file: rejected again.
    let pid = lab.daemon_pid(agent).unwrap();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let twice = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        metric(
            &metrics(&lab),
            "egress_router_config_reload_failures_total",
            None,
        ) >= 2.0
    });
    assert!(twice, "SIGHUP triggers a reload");
    let status = |text: &str| -> serde_json::Value {
        let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
        v["rules"].as_array_mut().unwrap().iter_mut().for_each(|r| {
            r["packets"] = 0.into();
            r["bytes"] = 0.into();
        });
        v["rules"].clone()
    };
    assert_eq!(
        status(&router_cli(&lab, "reload", &["status", "--json"])),
        status(&rules_before),
        "the running rules stay"
    );
    assert!(ask(&lab, 80).starts_with(&format!("{EGRESS_SOURCE} ")));
    assert_eq!(
        metric(&metrics(&lab), "egress_router_config_reloads_total", None),
        0.0
    );

    let out = lab.stop_daemon(agent).unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let rejected: Vec<serde_json::Value> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .filter(|v| v["level"] == "ERROR")
        .collect();
    assert_eq!(rejected.len(), 2, "{log}");
    assert_eq!(
        rejected[0]["error"],
        "EGRESS_DESTINATION value '8080 tcp nowhere' is invalid"
    );
    assert!(
        rejected[0]["message"]
            .as_str()
            .unwrap()
            .contains("running rules stay"),
        "{log}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
