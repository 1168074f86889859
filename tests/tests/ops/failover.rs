//! Failover across nodes (tests/src/failover.rs): the router pod on node A, node A dies
//! with no clean shutdown, the replacement starts on node B. The replacement takes the
//! same stable MAC, so the gateway's ARP entry and the switch's port security stay right.
//! The time it takes is a benchmark figure (`cargo xtask bench`, BENCHMARKS.md); here the
//! behaviour.

use std::time::Duration;

use egress_tests::{
    failover::{FailoverLab, FailoverOptions, POD_A, stable_mac_text},
    lab::EGRESS_SOURCE,
};

#[test]
fn a_replacement_on_another_node_takes_over_with_the_same_mac() {
    let opts = FailoverOptions::default();
    let mut lab = FailoverLab::new("fo-stable", opts).unwrap();
    lab.start_server().unwrap();
    let run = lab.fail_over(opts, Duration::from_secs(10)).unwrap();
    eprintln!("{run:?}");
    let stable = stable_mac_text();
    assert_eq!(
        (run.mac_a.as_str(), run.mac_b.as_str()),
        (stable.as_str(), stable.as_str())
    );
    assert!(run.gateway_before.starts_with(&stable), "{run:?}");
    assert!(run.gateway_after.starts_with(&stable), "{run:?}");
    assert!(
        run.to_first_connection.is_some(),
        "no connection through B: {run:?}"
    );
}

/// Behind port security that allows EGRESS_SOURCE's stable MAC (the allowed-address pair an
/// admin sets once for the egress IP), the router works on either node; an interface with
/// its own MAC (which changes with every pod) gets nothing through.
#[test]
fn behind_port_security_only_the_stable_mac_gets_through() {
    let opts = FailoverOptions {
        port_security: true,
        ..FailoverOptions::default()
    };
    let mut lab = FailoverLab::new("fo-portsec", opts).unwrap();
    lab.start_server().unwrap();
    let run = lab.fail_over(opts, Duration::from_secs(10)).unwrap();
    assert!(run.to_first_connection.is_some(), "{run:?}");

    let keep = FailoverOptions {
        keep_mac: true,
        port_security: true,
    };
    let mut lab = FailoverLab::new("fo-portsec-own", keep).unwrap();
    lab.start_server().unwrap();
    let err = lab.fail_over(keep, Duration::from_secs(10)).unwrap_err();
    assert!(
        format!("{err:#}").contains("timed out")
            || format!("{err:#}").contains("no answer")
            || format!("{err:#}").contains("Connection"),
        "through node A with its own MAC: {err:#}"
    );
    assert!(lab.ask(POD_A, Duration::from_secs(1)).is_err());
}

/// Behind port security that allows only the stable MAC, the probe for another holder of
/// EGRESS_SOURCE still hears it: it is sent from the stable MAC (a probe from the
/// interface's own MAC would be dropped, and a second router would start: split brain).
#[test]
fn behind_port_security_a_live_holder_is_still_found() {
    let opts = FailoverOptions {
        port_security: true,
        ..FailoverOptions::default()
    };
    let lab = FailoverLab::new("fo-held", opts).unwrap();
    lab.gateway
        .ip(&["addr", "add", &format!("{EGRESS_SOURCE}/32"), "dev", "lan0"])
        .unwrap();
    let before = lab.router_b.network_state().unwrap();
    let out = egress_tests::netns::run_bounded(
        &mut FailoverLab::init_command(&lab.router_b, lab.bpffs_b(), false),
        Duration::from_secs(30),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("EGRESS_SOURCE {EGRESS_SOURCE} is in use")),
        "{stderr}"
    );
    assert_eq!(
        lab.router_b.network_state().unwrap(),
        before,
        "nothing changed"
    );
}
