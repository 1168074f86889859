//! One owner of an EGRESS_SOURCE in node mode: the agent probes for an address before it
//! serves it (as a router pod does), so a registration for an address another host holds
//! is refused with the holder named, and served once the holder lets it go.

use std::time::Duration;

use egress_tests::{
    nodelab::{NodeLab, egress_source, router_ip},
    util::curl,
};

use super::serve::http_server;

#[test]
fn a_registration_for_an_address_another_host_holds_is_refused_until_it_is_free() {
    let mut lab = NodeLab::new("node-held", 1).unwrap();
    http_server(&mut lab);
    let held = format!("{}/32", egress_source(0));
    lab.gateway
        .ip(&["addr", "add", &held, "dev", "lan0"])
        .unwrap();
    let agent = lab.start_agent(&["--rescan-ms", "200"]).unwrap();
    lab.register(0, "80 tcp 203.0.113.10 80").unwrap();
    let log = lab
        .wait_for_log(agent, "registration refused", Duration::from_secs(10))
        .unwrap();
    assert!(
        log.contains(&format!("EGRESS_SOURCE {} is in use", egress_source(0))),
        "{log}"
    );
    // Not served: the client's connection reaches the router pod itself, where nothing
    // listens.
    let url = format!("http://{}/", router_ip(0));
    assert!(curl(&lab.clients[0], &url).is_err());
    // Refused once per reason in the log, and probed again only every 10 s meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lab.daemon_stderr(agent).matches("is in use").count(), 1);

    lab.gateway
        .ip(&["addr", "del", &held, "dev", "lan0"])
        .unwrap();
    lab.wait_for_log(agent, "serving a new instance", Duration::from_secs(20))
        .unwrap();
    let body = curl(&lab.clients[0], &url).unwrap();
    assert!(
        body.starts_with(&format!("{} ", egress_source(0))),
        "{body}"
    );
}
