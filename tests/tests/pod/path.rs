//! The router as a hop, in the netns lab with real `ping`: a probe whose TTL runs out at
//! the router gets Time Exceeded from the pod IP, and a DF packet too big for the egress
//! link gets Fragmentation Needed with that link's MTU, which the client's kernel learns.

use egress_tests::{
    lab::{Lab, LabOptions, ROUTER_POD_IP, SERVER_IP},
    netns::run_bounded,
};
use std::time::Duration;

/// `ping` from the client to the pod IP (the fallback sends it on to the server).
fn ping(lab: &Lab, args: &[&str]) -> String {
    let mut cmd = lab.client.command("ping");
    cmd.args(["-n", "-c", "1", "-W", "2"])
        .args(args)
        .arg(ROUTER_POD_IP.to_string());
    let out = run_bounded(&mut cmd, Duration::from_secs(10)).unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_router_answers_ttl_and_mtu_as_a_hop() {
    let opts = LabOptions {
        node_mtu: 1400,
        ..LabOptions::default()
    };
    let lab = Lab::with_options("path", &opts).unwrap();
    lab.init_router("path", &SERVER_IP.to_string(), &[])
        .unwrap();

    let through = ping(&lab, &[]);
    assert!(
        through.contains("1 received"),
        "echo through the fallback: {through}"
    );

    let expired = ping(&lab, &["-t", "1"]);
    assert!(
        expired.contains(&format!(
            "From {ROUTER_POD_IP} icmp_seq=1 Time to live exceeded"
        )),
        "{expired}"
    );

    // 1450 bytes of ICMP payload make a 1478-byte packet: too big for the 1400-byte link.
    let too_big = ping(&lab, &["-M", "do", "-s", "1450"]);
    assert!(
        too_big.contains(&format!(
            "From {ROUTER_POD_IP} icmp_seq=1 Frag needed and DF set (mtu = 1400)"
        )),
        "{too_big}"
    );
    // The client's kernel took note: the next try fails locally with the learnt MTU.
    let again = ping(&lab, &["-M", "do", "-s", "1450"]);
    assert!(
        again.contains("mtu=1400") || again.contains("mtu = 1400"),
        "{again}"
    );
}
