//! The proxy modes' variables through the real binary, as a main container gets them:
//! malformed values are refused with OpenShift's message and exit 1 before anything
//! changes (the DNS proxy would load the data plane, so only validation keeps the system
//! as it was).

use std::time::Duration;

use egress_tests::{egress_router_bin, lab::Lab, netns::run_bounded, util::pins};

/// (the variable, its value, the exact message): the proxy modes' variables, read by the
/// main container of OpenShift's proxy Deployments.
const PROXY_CASES: &[(&str, &str, &str)] = &[
    (
        "EGRESS_HTTP_PROXY_DESTINATION",
        "",
        "No EGRESS_HTTP_PROXY_DESTINATION specified",
    ),
    (
        "EGRESS_HTTP_PROXY_DESTINATION",
        "# only a comment\n\n",
        "No EGRESS_HTTP_PROXY_DESTINATION specified",
    ),
    (
        "EGRESS_HTTP_PROXY_DESTINATION",
        "*\nwww.example.com",
        "Wildcard must be last rule, if present",
    ),
    (
        "EGRESS_HTTP_PROXY_DESTINATION",
        "www.example.com:80",
        "Bad destination 'www.example.com:80'",
    ),
    (
        "EGRESS_HTTP_PROXY_DESTINATION",
        "www.example.com\n 203.0.113.0/33 ",
        "Bad destination '203.0.113.0/33'",
    ),
    // OpenShift's script strips the `!` before it words the error.
    ("EGRESS_HTTP_PROXY_DESTINATION", "!", "Bad destination ''"),
    ("EGRESS_HTTP_PROXY_DESTINATION", "!*", "Bad destination '*'"),
    (
        "EGRESS_DNS_PROXY_DESTINATION",
        "70000 localhost",
        "Bad destination '70000 localhost'",
    ),
    (
        "EGRESS_HTTP_PROXY_DESTINATION",
        "http://www.example.com/",
        "Bad destination 'http://www.example.com/'",
    ),
    (
        "EGRESS_DNS_PROXY_DESTINATION",
        "",
        "Must specify EGRESS_DNS_PROXY_DESTINATION",
    ),
    (
        "EGRESS_DNS_PROXY_DESTINATION",
        "80 example",
        "Bad destination '80 example'",
    ),
    (
        "EGRESS_DNS_PROXY_DESTINATION",
        "80 tcp 203.0.113.10",
        "Bad destination '80 tcp 203.0.113.10'",
    ),
    (
        "EGRESS_DNS_PROXY_DESTINATION",
        "0 www.example.com",
        "Invalid port: 0, must be in the range 1 to 65535",
    ),
    (
        "EGRESS_DNS_PROXY_DESTINATION",
        "80 www.example.com 70000",
        "Invalid port: 70000, must be in the range 1 to 65535",
    ),
    (
        "EGRESS_DNS_PROXY_DESTINATION",
        "80 www.example.com\n80 203.0.113.10",
        "Proxy port 80 already used, must be unique for each destination",
    ),
];

#[test]
fn malformed_proxy_variables_exit_1_with_their_message_and_change_nothing() {
    let lab = Lab::new("proxyconfig").unwrap();
    let before = lab.router.network_state().unwrap();
    let pins_before = pins(lab.bpffs.path());
    let mut failures = Vec::new();
    for &(var, value, expected) in PROXY_CASES {
        // As the main container: only the variable, as privileged as can be (the DNS proxy
        // would load the data plane), so only validation keeps the system unchanged.
        let mut cmd = lab.router.command(egress_router_bin());
        cmd.env_clear()
            .env(var, value)
            .env("EGRESS_ROUTER_BPFFS", lab.bpffs.path());
        let out = run_bounded(&mut cmd, Duration::from_secs(10)).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) || stderr.trim_end() != expected {
            failures.push(format!(
                "{var}={value:?}: exit {:?}, stderr {stderr:?}, expected {expected:?}",
                out.status.code()
            ));
        }
    }
    // Both proxy variables and no mode: which container is this? Refused, not guessed.
    let mut both = lab.router.command(egress_router_bin());
    both.env_clear()
        .env("EGRESS_HTTP_PROXY_DESTINATION", "*")
        .env("EGRESS_DNS_PROXY_DESTINATION", "80 203.0.113.10")
        .env("EGRESS_ROUTER_BPFFS", lab.bpffs.path());
    let out = run_bounded(&mut both, Duration::from_secs(10)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(1)
        || !stderr
            .contains("EGRESS_HTTP_PROXY_DESTINATION and EGRESS_DNS_PROXY_DESTINATION are both set")
    {
        failures.push(format!("both proxy variables: {out:?}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(lab.router.network_state().unwrap(), before);
    assert_eq!(pins(lab.bpffs.path()), pins_before);
    let listening = String::from_utf8_lossy(
        &run_bounded(
            lab.router.command("ss").args(["-Htln"]),
            Duration::from_secs(5),
        )
        .unwrap()
        .stdout,
    )
    .into_owned();
    assert_eq!(listening.trim(), "", "nothing listens");
    let status = run_bounded(
        lab.router
            .command(egress_router_bin())
            .arg("status")
            .env("EGRESS_ROUTER_BPFFS", lab.bpffs.path()),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        !status.status.success()
            && String::from_utf8_lossy(&status.stderr).contains("no egress-router data plane"),
        "no program attached: {status:?}"
    );
}
