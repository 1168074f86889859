//! The Method section of BENCHMARKS.md: how the figures of one run were taken.

use crate::report::Results;

/// The Method section's text for the figures of `r`, written when they are measured and
/// stored with them (`Results::method`), so that a report rendered again later describes
/// how those figures were taken, not how the renderer's version would take them.
pub(crate) fn method(r: &Results) -> String {
    format!(
        "Each round builds a fresh netns lab per variant (client, router pod, node, gateway, \
         server; veth pairs and a private-mode macvlan, as in the tests) and runs the loads in \
         the same order:\n\n\
         - **A**: `egress-router` (release build) in `EGRESS_ROUTER_MODE=init` with \
           `EGRESS_DESTINATION` = `{udp} udp 203.0.113.10`, `{iperf} tcp 203.0.113.10`, \
           `{conn} tcp 203.0.113.10`.\n\
         - **B**: OpenShift's egress-router.sh network set-up (EGRESS_SOURCE/32 and a default \
           route via EGRESS_GATEWAY on macvlan0, `ip_forward=1`) and its `iptables-restore` \
           of one DNAT per line on `eth0` and `-A POSTROUTING -j SNAT --to-source \
           EGRESS_SOURCE` (iptables-nft, kernel conntrack).\n\
         - **C**: the same network set-up and `lab_forward` on `eth0` (TC ingress): \
           `bpf_redirect_neigh` to macvlan0 for IPv4, the helper A uses, no NAT, no \
           conntrack, no counters. The frames are addressed to the remote directly, since \
           nothing translates them.\n\
         - **A6**, **B6**: A and B over IPv6 in the lab's IPv6 addresses (2001:db8::/32): \
           A6 with `EGRESS_SOURCE=2001:db8:e::100/64` alone and the same rules to \
           2001:db8:f::10; B6 with EGRESS_SOURCE/128 on macvlan0, IPv6 forwarding on, and \
           `ip6tables-restore` of the same DNATs and `-A POSTROUTING -o macvlan0 -j SNAT` \
           (NAT66). The same loads over IPv6; the small frames are 80 bytes (the IPv6 header \
           is 20 bytes longer).\n\n\
         Before each set-up and each load the bench waits (at most 5 s) until the machine is \
         below 5 % busy, so the kernel's teardown of the previous lab's namespaces does not \
         land in the next measurement.\n\n\
         Loads, in the client namespace:\n\n\
         - small packets: `trafgen --no-sock-mem` (one process per CPU, the default) sends \
           60-byte frames (64 with the FCS a wire adds) of {flows} UDP flows (source ports \
           10000-{last}); an nftables netdev-ingress rule on the gateway's `lan0` counts and \
           drops them (ARP passes). {warm:.0} s warm-up, then packets counted over {meas:.0} s.\n\
         - TCP: `iperf3 -P 1` and `-P 4`, {meas:.0} s plus 1 s omitted.\n\
         - connections: `connrate` (tests/src/bin/connrate.rs), 4 client threads: connect, \
           22-byte request, 43-byte reply, close, for {meas:.0} s; the server closes first; \
           the client has Linux's default ephemeral ports, 32768-60999.\n\n\
         BPF_PROG_TEST_RUN, after the lab rounds (in rounds of its own): one data plane per \
         table size, both with a CONNTRACK map sized \
         for {cap} flows, filled by its own `pod_ingress` with TCP SYNs (fallback IP, 256 \
         destination ports so the NAT port spaces stay sparse). Established and reply frames \
         are TCP ACKs cycling over up to {samples} flows spread over the whole table (each refreshed by one untimed packet per direction at the start of the round); new flows are \
         SYNs of flows never seen, removed again after each round. Each run is one program \
         execution (repeat 1); `lab_noop`, run the same way, is the harness's own cost.\n",
        udp = crate::variant::UDP_PORT,
        iperf = crate::variant::IPERF_PORT,
        conn = crate::variant::CONN_PORT,
        flows = r.udp_flows,
        last = 10_000 + u32::from(r.udp_flows) - 1,
        warm = r.warmup_s,
        meas = r.measure_s,
        cap = r.memory.capacity_flows,
        samples = crate::progcost::SAMPLES,
    )
}
