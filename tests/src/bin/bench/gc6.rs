//! The conntrack GC over a full IPv6 table: 1M established IPv6 flows (2M entries of 104
//! bytes, against IPv4's 80), judged by the same in-kernel sweep as IPv4's, whose figure
//! sits beside it. The flows are written by the bench, not created by the IPv6 program:
//! the GC's cost depends on the entries, not on who wrote them, and 1M SYNs through
//! BPF_PROG_TEST_RUN would double the bench's table time for no other figure.

use anyhow::{Context as _, Result, ensure};
use egress_common::{FlowEntry, FlowKey, flow_kind, proto, tcp_seen};
use egress_user::{
    conntrack::{collect_garbage_in_kernel, monotonic_ns, sweep_only},
    dataplane::{
        flows::CtTable,
        load::{Dataplane, LoadOptions},
    },
};

use crate::progcost::thread_cpu_s;

/// An address in 2001:db8:`net`::/64 with `host` in its last four bytes.
fn addr(net: u8, host: u32) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, net]);
    a[12..].copy_from_slice(&host.to_be_bytes());
    a
}

/// A data plane with IPv6 tables of `capacity` flows holding `flows` established ones:
/// 256 clients, each with `flows / 256` connections to one remote port.
fn filled(capacity: u32, flows: u32) -> Result<Dataplane> {
    let mut dp = Dataplane::load(&LoadOptions {
        conntrack_flows: capacity,
        pin_dir: None,
        ipv6: true,
    })?;
    let now = monotonic_ns();
    let established = tcp_seen::SYN | tcp_seen::ACK;
    for i in 0..flows {
        let (client, port) = (i % 256, 1024 + (i / 256) as u16);
        let forward = FlowKey {
            saddr: addr(2, client),
            daddr: addr(2, 1),
            sport: port,
            dport: 443,
            proto: proto::TCP,
            _pad: [0; 3],
        };
        // The translated tuple: the NAT port names the flow, as the data plane's would.
        let translated = FlowKey {
            saddr: addr(0xe, 0x99),
            daddr: addr(0xf, 0x10),
            sport: 1024 + (i % 64_000) as u16,
            dport: 443 + (i / 64_000) as u16,
            ..forward
        };
        let maps = dp.maps_mut();
        let entry = FlowEntry::new(&translated, 1, flow_kind::FORWARD, established, now);
        maps.put_flow(CtTable::Replied, &forward, &entry)?;
        let reply = FlowEntry::new(&forward.reversed(), 1, flow_kind::REPLY, established, now);
        maps.put_flow(CtTable::Replied, &translated.reversed(), &reply)?;
    }
    Ok(dp)
}

/// CPU seconds (this thread's) of `passes` GC passes over 1M live IPv6 flows.
pub(crate) fn passes(capacity: u32, flows: u32, passes: usize) -> Result<Vec<f64>> {
    let t = std::time::Instant::now();
    let mut dp = filled(capacity, flows)?;
    eprintln!(
        "bench: {flows} IPv6 flows written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let now = monotonic_ns();
    // The passes below are the sweep in the kernel, not the agent's own pass it falls
    // back to (untimed check).
    let (entries, doomed) = sweep_only::<[u8; 16]>(&mut dp, CtTable::Replied, now)?
        .context("the IPv6 GC sweep overflowed")?;
    ensure!(
        entries == 2 * u64::from(flows) && doomed == 0,
        "the IPv6 sweep saw {entries} entries, {doomed} collectable"
    );
    let mut cpu = Vec::with_capacity(passes);
    for _ in 0..passes {
        let (wall, before) = (std::time::Instant::now(), thread_cpu_s());
        let pass = collect_garbage_in_kernel(&mut dp, monotonic_ns())?;
        let (cpu_s, wall_s) = (thread_cpu_s() - before, wall.elapsed().as_secs_f64());
        ensure!(
            pass.v6.expired_total() == 0 && pass.v6.entries == 2 * u64::from(flows),
            "the IPv6 GC pass: {} entries, {} removed",
            pass.v6.entries,
            pass.v6.expired_total()
        );
        ensure!(
            pass.v6.flows_by_source.len() == 256,
            "the IPv6 census counted {} clients",
            pass.v6.flows_by_source.len()
        );
        eprintln!(
            "bench: a conntrack GC pass over {flows} IPv6 flows: {cpu_s:.2} s CPU, {wall_s:.2} s wall"
        );
        cpu.push(cpu_s);
    }
    Ok(cpu)
}
