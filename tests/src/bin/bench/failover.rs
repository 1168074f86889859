//! Failover across nodes (tests/src/failover.rs), measured: the router pod on node A, node A
//! dies, the replacement's init container starts on node B; the figure is the time from
//! B's start to the first new connection through B that the server answered.

use std::{fmt::Write as _, time::Duration};

use anyhow::Result;
use egress_tests::failover::{FailoverLab, FailoverOptions};
use serde::{Deserialize, Serialize};

use crate::figures::Spread;

/// One failover.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct FailoverRound {
    pub round: usize,
    /// The routers keep their own MACs (`--keep-mac`) instead of the stable one.
    pub own_mac: bool,
    /// From B's start to the first answered connection through B (None: not within 10 s).
    pub first_connection_ms: Option<f64>,
    /// How long B's init container ran.
    pub init_ms: f64,
    /// The gateway's entry for EGRESS_SOURCE before and after ("MAC STATE").
    pub gateway_before: String,
    pub gateway_after: String,
}

pub(crate) fn round(round: usize, own_mac: bool) -> Result<FailoverRound> {
    let opts = FailoverOptions {
        keep_mac: own_mac,
        port_security: false,
    };
    let mut lab = FailoverLab::new(&format!("bfo{round}{}", u8::from(own_mac)), opts)?;
    lab.start_server()?;
    let run = lab.fail_over(opts, Duration::from_secs(10))?;
    Ok(FailoverRound {
        round,
        own_mac,
        first_connection_ms: run.to_first_connection.map(|d| d.as_secs_f64() * 1e3),
        init_ms: run.init.as_secs_f64() * 1e3,
        gateway_before: run.gateway_before,
        gateway_after: run.gateway_after,
    })
}

/// The report's section.
pub(crate) fn section(w: &mut String, rounds: &[FailoverRound], measured: Option<&str>) {
    if rounds.is_empty() {
        return;
    }
    let _ = writeln!(w, "## Failover\n");
    if let Some(measured) = measured {
        let _ = writeln!(w, "Measured apart from the rest, {measured}.\n");
    }
    let _ = writeln!(
        w,
        "A two-node lab on one egress segment (a bridge between node A, node B and the \
         gateway): the router pod runs on node A (release build, init container with the \
         default `--conntrack-size`); node A dies (its link to the switch goes, then its \
         namespaces, with no clean shutdown); the replacement's init container starts on \
         node B. Measured: from B's start to the first new connection through B that the \
         server answered (a client retries every 5 ms), and how long B's init container \
         ran. {} rounds per variant. Milliseconds.\n",
        rounds.iter().map(|r| r.round).max().map_or(0, |m| m + 1)
    );
    let _ = writeln!(
        w,
        "| variant | to the first connection | init container ran | gateway's ARP entry for EGRESS_SOURCE |\n|---|---|---|---|"
    );
    for own in [false, true] {
        let rows: Vec<&FailoverRound> = rounds.iter().filter(|r| r.own_mac == own).collect();
        if rows.is_empty() {
            continue;
        }
        let failed = rows
            .iter()
            .filter(|r| r.first_connection_ms.is_none())
            .count();
        let first = Spread::of(rows.iter().filter_map(|r| r.first_connection_ms));
        let init = Spread::of(rows.iter().map(|r| r.init_ms));
        let kept = rows
            .iter()
            .filter(|r| mac(&r.gateway_before) == mac(&r.gateway_after))
            .count();
        let _ = writeln!(
            w,
            "| {} | {}{} | {} | {} |",
            if own {
                "own MAC (`--keep-mac`)"
            } else {
                "stable MAC (default)"
            },
            first.show(1.0, 0),
            if failed > 0 {
                format!(" ({failed} rounds: none within 10 s)")
            } else {
                String::new()
            },
            init.show(1.0, 0),
            if kept == rows.len() {
                "kept: the same MAC before and after".to_owned()
            } else {
                format!(
                    "changed in {} of {} rounds (B's ARP request for the gateway taught it)",
                    rows.len() - kept,
                    rows.len()
                )
            }
        );
    }
    let stable = Spread::of(
        rounds
            .iter()
            .filter(|r| !r.own_mac)
            .filter_map(|r| r.first_connection_ms),
    );
    let _ = writeln!(
        w,
        "\n| target | goal | measured | |\n|---|---|---|---|\n\
         | failover, B's start to the first connection (stable MAC) | <= 1000 ms | {} ms | {} |\n",
        stable.show(1.0, 0),
        if stable.median <= 1000.0 {
            "met"
        } else {
            "**not met**"
        }
    );
    let _ = writeln!(
        w,
        "Nothing waits for an ARP entry to expire: with the stable MAC (`02:45:` and \
         EGRESS_SOURCE's octets) the gateway's entry stays right across the failover, and \
         the switch learns B's port from B's announcement. The time is the init container's \
         own: the ARP probe for another holder of EGRESS_SOURCE (250 ms) runs beside the \
         BPF load (the kernel's verifier takes about 330 ms of it, `strace -T -e bpf` at \
         67a6239: 228 ms for `pod_ingress`, 81 ms for `egress_ingress`, 21 ms for \
         `egress_egress`; an instance with IPv6 adds its three programs, about 280 ms), \
         then the network set-up and the attachment; the init container \
         then waits 0.5 s for its second \
         announcement, after traffic flows. With the interface's own MAC a Linux gateway \
         recovers about as fast, because it learns B's MAC from B's ARP request for the \
         gateway; gateways that do not learn from requests, static entries, and port \
         security (OpenStack's allowed-address pairs) do not, and there only the stable MAC \
         passes at all (`tests/tests/ops/failover.rs`).\n"
    );
}

fn mac(entry: &str) -> &str {
    entry.split_whitespace().next().unwrap_or("")
}
