//! First light: the loader attaches the embedded program in the lab, the loader exits, a real
//! client sends traffic through the pod interface, and the counters pinned on the lab's bpffs
//! show it.

use std::time::Duration;

use egress_common::Stat;
use egress_tests::{
    egress_router_bin,
    lab::{Lab, ROUTER_POD_IP},
    netns::{run_bounded, run_checked},
    util::{attach_kind, run_ok_here},
};
use egress_user::dataplane::maps::MapSet;

const PINGS: u64 = 5;

#[test]
fn attached_program_counts_real_traffic_after_the_loader_exits() {
    let lab = Lab::new("first-light").unwrap();
    let instance = "first-light";

    // The loader runs inside the router namespace and exits; the program belongs to eth0.
    run_checked(
        lab.router
            .command(egress_router_bin())
            .arg("--bpffs")
            .arg(lab.bpffs.path())
            .args(["--instance", instance, "attach", "--interface", "eth0"]),
    )
    .unwrap();
    // `status`, as an operator would look (bpftool before 7.3 does not list TCX programs):
    // attached (TCX, or a tc filter under EGRESS_ROUTER_ATTACH=tc) by a process that is
    // gone, so no link holds it.
    let status = run_bounded(
        lab.router
            .command(egress_router_bin())
            .arg("--bpffs")
            .arg(lab.bpffs.path())
            .args(["--instance", instance, "status", "--json"]),
        Duration::from_secs(10),
    )
    .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let programs = status["programs"].as_array().cloned().unwrap_or_default();
    assert!(
        programs.iter().any(|p| p["name"] == "pod_ingress"
            && p["hook"] == attach_kind()
            && p["interface"] == "eth0"
            && p["direction"] == "ingress"),
        "pod_ingress on eth0's ingress after the loader exited: {status}"
    );

    let before = MapSet::from_pins(&lab.pin_dir(instance))
        .unwrap()
        .stats()
        .unwrap();
    assert_eq!(before.path(Stat::PodIngressSeen).packets, 0);

    let ping = run_bounded(
        lab.client.command("ping").args([
            "-c",
            &PINGS.to_string(),
            "-i",
            "0.1",
            "-W",
            "1",
            "-s",
            "100",
            &ROUTER_POD_IP.to_string(),
        ]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        ping.status.success(),
        "ping through the program: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    let after = MapSet::from_pins(&lab.pin_dir(instance))
        .unwrap()
        .stats()
        .unwrap();
    let seen = after.path(Stat::PodIngressSeen);
    // Echo requests (142 bytes on the wire with -s 100) plus ARP.
    assert!(seen.packets >= PINGS, "{after}");
    assert!(seen.bytes >= PINGS * 142, "{after}");
    assert_eq!(after.path(Stat::PodIngressPassed), seen, "{after}");

    // The CLI and bpftool (independent code, BTF field names) read the same pinned
    // counter: bpftool's per-CPU sum lies between two CLI reads around it (ARP may still
    // move it), which here are equal.
    let cli = || -> u64 {
        let out = run_bounded(
            lab.router
                .command(egress_router_bin())
                .arg("--bpffs")
                .arg(lab.bpffs.path())
                .args(["--instance", instance, "stats"]),
            Duration::from_secs(5),
        )
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with(Stat::PodIngressSeen.name()))
            .unwrap_or_else(|| panic!("no {} line in: {text}", Stat::PodIngressSeen.name()));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let first = cli();
    let pin = lab.pin_dir(instance).join("STATS");
    let index = Stat::PodIngressSeen as u32;
    let key: Vec<String> = index.to_le_bytes().iter().map(u8::to_string).collect();
    let mut args = vec![
        "-j",
        "map",
        "lookup",
        "pinned",
        pin.to_str().unwrap(),
        "key",
    ];
    args.extend(key.iter().map(String::as_str));
    let dump: serde_json::Value = serde_json::from_str(&run_ok_here("bpftool", &args)).unwrap();
    let from_bpftool: u64 = dump["formatted"]["values"]
        .as_array()
        .unwrap_or_else(|| panic!("{dump}"))
        .iter()
        .map(|v| v["value"]["packets"].as_u64().unwrap())
        .sum();
    let second = cli();
    assert!(
        first <= from_bpftool && from_bpftool <= second,
        "CLI {first}, bpftool {from_bpftool}, CLI {second}"
    );
    assert!(first >= seen.packets);
}
