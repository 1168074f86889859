//! Configuration through the real binary: malformed values are refused with OpenShift's
//! message and exit 1 before anything on the system changes; `unit-test` mode prints the
//! plan without privileges; `verdicts` shows it refuses what `legacy` refuses.

use std::{process::Command, time::Duration};

use egress_tests::{egress_router_bin, lab::Lab, netns::run_bounded, util::pins};

const SOURCE: &str = "198.51.100.100/24";
const GATEWAY: &str = "198.51.100.1";
const DEST: &str = "80 tcp 203.0.113.10";

/// (what is wrong, EGRESS_SOURCE, EGRESS_GATEWAY, EGRESS_DESTINATION, EGRESS_ROUTER_MODE,
/// the exact message). `None` leaves the variable unset.
type Case = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    &'static str,
);

const CASES: &[Case] = &[
    (
        "no source",
        None,
        Some(GATEWAY),
        Some(DEST),
        "init",
        "EGRESS_SOURCE unspecified or invalid",
    ),
    (
        "empty source",
        Some(""),
        Some(GATEWAY),
        Some(DEST),
        "init",
        "EGRESS_SOURCE unspecified or invalid",
    ),
    (
        "octet > 255",
        Some("198.51.100.256"),
        Some(GATEWAY),
        Some(DEST),
        "init",
        "EGRESS_SOURCE unspecified or invalid",
    ),
    (
        "prefix > 32",
        Some("198.51.100.100/33"),
        Some(GATEWAY),
        Some(DEST),
        "init",
        "EGRESS_SOURCE unspecified or invalid",
    ),
    (
        "empty prefix",
        Some("198.51.100.100/"),
        Some(GATEWAY),
        Some(DEST),
        "init",
        "EGRESS_SOURCE unspecified or invalid",
    ),
    (
        "three octets",
        Some("198.51.100"),
        Some(GATEWAY),
        Some(DEST),
        "legacy",
        "EGRESS_SOURCE unspecified or invalid",
    ),
    (
        "hostname source",
        Some("egress.example.com"),
        Some(GATEWAY),
        Some(DEST),
        "init",
        "EGRESS_SOURCE unspecified or invalid",
    ),
    (
        "no gateway",
        Some(SOURCE),
        None,
        Some(DEST),
        "init",
        "EGRESS_GATEWAY unspecified or invalid",
    ),
    (
        "gateway octet > 255",
        Some(SOURCE),
        Some("198.51.100.300"),
        Some(DEST),
        "init",
        "EGRESS_GATEWAY unspecified or invalid",
    ),
    (
        "gateway with prefix",
        Some(SOURCE),
        Some("198.51.100.1/24"),
        Some(DEST),
        "init",
        "EGRESS_GATEWAY unspecified or invalid",
    ),
    (
        "no destination",
        Some(SOURCE),
        Some(GATEWAY),
        None,
        "init",
        "EGRESS_DESTINATION unspecified",
    ),
    (
        "only comments",
        Some(SOURCE),
        Some(GATEWAY),
        Some("# nothing\n\n   \n"),
        "",
        "EGRESS_DESTINATION unspecified",
    ),
    (
        "missing IP",
        Some(SOURCE),
        Some(GATEWAY),
        Some("80 tcp"),
        "init",
        "EGRESS_DESTINATION value '80 tcp' is invalid",
    ),
    (
        "unknown protocol",
        Some(SOURCE),
        Some(GATEWAY),
        Some("80 sctp 203.0.113.10"),
        "init",
        "EGRESS_DESTINATION value '80 sctp 203.0.113.10' is invalid",
    ),
    (
        "protocol upper case",
        Some(SOURCE),
        Some(GATEWAY),
        Some("80 TCP 203.0.113.10"),
        "init",
        "EGRESS_DESTINATION value '80 TCP 203.0.113.10' is invalid",
    ),
    (
        "remote octet > 255",
        Some(SOURCE),
        Some(GATEWAY),
        Some("  80 tcp 203.0.113.300  "),
        "init",
        "EGRESS_DESTINATION value '80 tcp 203.0.113.300' is invalid",
    ),
    (
        "port name",
        Some(SOURCE),
        Some(GATEWAY),
        Some("http tcp 203.0.113.10"),
        "init",
        "EGRESS_DESTINATION value 'http tcp 203.0.113.10' is invalid",
    ),
    (
        "negative port",
        Some(SOURCE),
        Some(GATEWAY),
        Some("-1 tcp 203.0.113.10"),
        "init",
        "EGRESS_DESTINATION value '-1 tcp 203.0.113.10' is invalid",
    ),
    (
        "extra field",
        Some(SOURCE),
        Some(GATEWAY),
        Some("80 tcp 203.0.113.10 80 x"),
        "init",
        "EGRESS_DESTINATION value '80 tcp 203.0.113.10 80 x' is invalid",
    ),
    (
        "port 0",
        Some(SOURCE),
        Some(GATEWAY),
        Some("0 tcp 203.0.113.10"),
        "init",
        "Invalid port: 0, must be in the range 1 to 65535",
    ),
    (
        "port 65536",
        Some(SOURCE),
        Some(GATEWAY),
        Some("65536 udp 203.0.113.10"),
        "init",
        "Invalid port: 65536, must be in the range 1 to 65535",
    ),
    (
        "remote port 70000",
        Some(SOURCE),
        Some(GATEWAY),
        Some("8080 tcp 203.0.113.10 70000"),
        "init",
        "Invalid port: 70000, must be in the range 1 to 65535",
    ),
    (
        "local port twice, other protocol",
        Some(SOURCE),
        Some(GATEWAY),
        Some("80 tcp 203.0.113.10\n# udp too\n80 udp 203.0.113.11"),
        "init",
        "EGRESS_DESTINATION localport 80 is already used, must be unique for each destination",
    ),
    (
        "fallback not last",
        Some(SOURCE),
        Some(GATEWAY),
        Some("203.0.113.20\n80 tcp 203.0.113.10"),
        "init",
        "EGRESS_DESTINATION fallback IP must be the last line",
    ),
    (
        "two fallbacks",
        Some(SOURCE),
        Some(GATEWAY),
        Some("203.0.113.20\n203.0.113.21"),
        "init",
        "EGRESS_DESTINATION fallback IP must be the last line",
    ),
    (
        "IPv6 remote without an IPv6 source",
        Some(SOURCE),
        Some(GATEWAY),
        Some("80 tcp 203.0.113.10\n443 tcp 2001:db8:f::10"),
        "unit-test",
        "EGRESS_DESTINATION value '443 tcp 2001:db8:f::10' is invalid: EGRESS_SOURCE has no \
         IPv6 address (traffic leaves in the family it arrived in)",
    ),
    (
        "two IPv4 sources",
        Some("198.51.100.100/24,198.51.100.101/24"),
        Some(GATEWAY),
        Some(DEST),
        "legacy",
        "EGRESS_SOURCE: more than one IPv4 address; give at most one IPv4 and one IPv6",
    ),
    (
        "IPv6 source without an IPv6 gateway",
        Some("198.51.100.100/24,2001:db8:e::99/64"),
        Some(GATEWAY),
        Some(DEST),
        "unit-test",
        "EGRESS_GATEWAY has no IPv6 gateway for EGRESS_SOURCE's IPv6 address",
    ),
    (
        "unknown mode",
        Some(SOURCE),
        Some(GATEWAY),
        Some(DEST),
        "redirect",
        "Unrecognized EGRESS_ROUTER_MODE 'redirect'",
    ),
];

#[test]
fn malformed_configs_exit_1_with_their_message_and_change_nothing() {
    assert!(CASES.len() >= 20);
    let lab = Lab::new("config").unwrap();
    let before = lab.router.network_state().unwrap();
    let pins_before = pins(lab.bpffs.path());
    let mut failures = Vec::new();
    for &(what, source, gateway, dest, mode, expected) in CASES {
        let mut cmd = lab.router.command(egress_router_bin());
        cmd.env_clear()
            .env("EGRESS_ROUTER_MODE", mode)
            .env("EGRESS_ROUTER_BPFFS", lab.bpffs.path())
            .args(["--instance", "config"]);
        for (var, value) in [
            ("EGRESS_SOURCE", source),
            ("EGRESS_GATEWAY", gateway),
            ("EGRESS_DESTINATION", dest),
        ] {
            if let Some(value) = value {
                cmd.env(var, value);
            }
        }
        let out = run_bounded(&mut cmd, Duration::from_secs(10)).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) || stderr.trim_end() != expected {
            failures.push(format!(
                "{what}: exit {:?}, stderr {stderr:?}, expected {expected:?}",
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
}

/// The plan `cmd` (the binary, or a wrapper running it) prints in `unit-test` mode for
/// these variables and nothing else of the caller's environment; asserts it exits 0.
fn unit_test_plan(cmd: &mut Command, source: &str, gateway: &str, destination: &str) -> String {
    let out = run_bounded(
        cmd.env_clear()
            .env("EGRESS_ROUTER_MODE", "unit-test")
            .env("EGRESS_SOURCE", source)
            .env("EGRESS_GATEWAY", gateway)
            .env("EGRESS_DESTINATION", destination),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn unit_test_mode_prints_the_plan_without_privileges() {
    // setpriv drops to nobody with no capabilities: the mode must need none.
    let mut unprivileged = Command::new("setpriv");
    unprivileged
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(egress_router_bin());
    let plan = unit_test_plan(
        &mut unprivileged,
        "198.51.100.100",
        GATEWAY,
        "# web\n80 tcp 203.0.113.10\n8080 tcp 203.0.113.10 80\n53 udp 203.0.113.11\n203.0.113.20\n",
    );
    assert_eq!(
        plan,
        "egress-router plan v1\n\
         mode unit-test\n\
         egress macvlan0 address 198.51.100.100/32 source 198.51.100.100 gateway 198.51.100.1\n\
         ingress eth0\n\
         rule tcp 80 -> 203.0.113.10:80 snat 198.51.100.100\n\
         rule tcp 8080 -> 203.0.113.10:80 snat 198.51.100.100\n\
         rule udp 53 -> 203.0.113.11:53 snat 198.51.100.100\n\
         fallback any -> 203.0.113.20 snat 198.51.100.100\n"
    );
}

#[test]
fn unit_test_mode_plans_both_families() {
    let plan = unit_test_plan(
        &mut Command::new(egress_router_bin()),
        "2001:db8:e::99/64, 198.51.100.100/24",
        "198.51.100.1,fe80::1",
        "80 tcp 203.0.113.10\n80 tcp 2001:db8:f::10\n5353 udp 2001:db8:f::53 53\n2001:db8:f::20\n",
    );
    assert_eq!(
        plan,
        "egress-router plan v1\n\
         mode unit-test\n\
         egress macvlan0 address 198.51.100.100/24 source 198.51.100.100 gateway 198.51.100.1\n\
         egress macvlan0 address 2001:db8:e::99/64 source 2001:db8:e::99 gateway fe80::1\n\
         ingress eth0\n\
         rule tcp 80 -> 203.0.113.10:80 snat 198.51.100.100\n\
         rule tcp 80 -> [2001:db8:f::10]:80 snat 2001:db8:e::99\n\
         rule udp 5353 -> [2001:db8:f::53]:53 snat 2001:db8:e::99\n\
         fallback any -> 2001:db8:f::20 snat 2001:db8:e::99\n\
         otherwise pass\n"
    );
}
