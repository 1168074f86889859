//! The node agent's `/metrics` and `/healthz`: the node's data-plane counters (the same
//! families as a pod agent's), and per instance (labels `instance`, `pod`, `source`) its
//! rules' packets and bytes and its translated flows, read from the maps at scrape time.
//! Healthy while the uplink's IPv4 TC program (`node_reply`) is attached to it.

use std::{fmt::Write as _, sync::Arc};

use crate::{
    agent::prometheus::{self, counters, family, single},
    dataplane::{attach, maps::MapSet, programs},
    node::status::instances,
};

/// What the endpoints read: the node's maps and its uplink.
pub struct NodeShared {
    pub maps: MapSet,
    pub uplink: String,
}

/// The exposition.
pub fn render(shared: &NodeShared) -> anyhow::Result<String> {
    let mut out = String::new();
    counters(&mut out, &shared.maps.stats()?);
    let instances = instances(&shared.maps)?;
    single(
        &mut out,
        "egress_router_node_instances",
        "gauge",
        "Instances the node agent serves.",
        instances.len(),
    );
    let label = |i: &crate::node::status::InstanceView| {
        format!(
            "instance=\"{}\",pod=\"{}\",source=\"{}\"",
            i.instance, i.pod_ip, i.egress_source
        )
    };
    for (name, help, bytes) in [
        (
            "egress_router_instance_rule_packets_total",
            "Packets of each instance's rules (rule 0: its fallback).",
            false,
        ),
        (
            "egress_router_instance_rule_bytes_total",
            "Bytes of each instance's rules.",
            true,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for i in &instances {
            for r in &i.rules {
                let value = if bytes { r.bytes } else { r.packets };
                let _ = writeln!(
                    out,
                    "{name}{{{},rule=\"{}\",proto=\"{}\",port=\"{}\",target=\"{}\"}} {value}",
                    label(i),
                    r.id,
                    r.proto,
                    r.port,
                    r.target
                );
            }
        }
    }
    family(
        &mut out,
        "egress_router_instance_packets_total",
        "counter",
        "Packets of each instance by verdict (forwarded, replied, passed into the pod, answered with an ICMP error, dropped).",
    );
    for i in &instances {
        for (verdict, n) in [
            ("forwarded", i.forwarded),
            ("replied", i.replied),
            ("passed", i.passed),
            ("icmp_error", i.icmp_errors),
            ("dropped", i.dropped),
        ] {
            let _ = writeln!(
                out,
                "egress_router_instance_packets_total{{{},verdict=\"{verdict}\"}} {n}",
                label(i)
            );
        }
    }
    family(
        &mut out,
        "egress_router_instance_drops_total",
        "counter",
        "Packets of each instance dropped, by reason (the reasons with none are left out).",
    );
    for i in &instances {
        for (reason, n) in &i.drops {
            let _ = writeln!(
                out,
                "egress_router_instance_drops_total{{{},reason=\"{reason}\"}} {n}",
                label(i)
            );
        }
    }
    family(
        &mut out,
        "egress_router_instance_flows",
        "gauge",
        "Translated flows of each instance in the conntrack tables.",
    );
    for i in &instances {
        let _ = writeln!(
            out,
            "egress_router_instance_flows{{{}}} {}",
            label(i),
            i.flows
        );
    }
    Ok(out)
}

fn health(shared: &NodeShared) -> Result<(), String> {
    let Some(index) = crate::network::interface::ifindex(&shared.uplink) else {
        return Err(format!("no uplink {}", shared.uplink));
    };
    let name = egress_common::programs::NODE_REPLY;
    let program = programs::named(name).ok_or(format!("no program {name}"))?;
    match attach::attached(index, program) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!("{name} is not attached to {}", shared.uplink)),
        Err(err) => Err(crate::error_chain(&err).to_string()),
    }
}

/// Serves the node agent's endpoints on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<NodeShared>) {
    let health_of = shared.clone();
    prometheus::serve_endpoints(
        listener,
        move || render(&shared).map_err(|err| crate::error_chain(&*err).to_string()),
        move || health(&health_of),
    )
    .await;
}
