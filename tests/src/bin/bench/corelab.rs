//! The per-core lab's pieces: C's way back for connections, the generator's template
//! frame, and the router's veth queue counters the pacing reads.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result, ensure};
use aya::programs::tc::TcAttachType;
use egress_common::programs;
use egress_tests::{
    lab::{CLIENT_IP, EGRESS_SOURCE, Lab, POD_PREFIX, ROUTER_POD_IP, SERVER_IP, SERVER_PREFIX},
    netns::Netns,
    pktgen,
};
use egress_user::dataplane::load::Dataplane;

use crate::{
    traffic,
    variant::{UDP_PORT, Variant},
};

/// C's way back for the connections: the client routes the server's network via the
/// router pod, the gateway routes the pod network via EGRESS_SOURCE, and `lab_return` on
/// macvlan0's ingress sends the replies out of the pod interface, as `lab_forward` sends
/// the requests out of macvlan0.
pub(crate) fn route_back(lab: &Lab, forwarder: &mut Dataplane) -> Result<()> {
    let server_net = format!(
        "{}/{SERVER_PREFIX}",
        Ipv4Addr::from(u32::from(SERVER_IP) & !0xff)
    );
    let pod_net = format!(
        "{}/{POD_PREFIX}",
        Ipv4Addr::from(u32::from(CLIENT_IP) & !0xff)
    );
    lab.client.ip(&[
        "route",
        "add",
        &server_net,
        "via",
        &ROUTER_POD_IP.to_string(),
    ])?;
    lab.gateway
        .ip(&["route", "add", &pod_net, "via", &EGRESS_SOURCE.to_string()])?;
    let prog = forwarder.program(programs::LAB_RETURN)?;
    prog.load()?;
    lab.router
        .enter(|| prog.attach("macvlan0", TcAttachType::Ingress))?
        .context("attaching lab_return to macvlan0")?;
    Ok(())
}

/// The generator's template: the bench's small UDP frame (60 bytes) from the client to the
/// variant's target, with the real MAC addresses and no UDP checksum (the generator
/// changes the source port).
pub(crate) fn generator_frame(lab: &Lab, variant: Variant) -> Result<Vec<u8>> {
    let std::net::IpAddr::V4(target) = variant.target() else {
        anyhow::bail!("the per-core mode is IPv4 only");
    };
    let mut frame = pktgen::udp_frame(
        (CLIENT_IP.octets(), 10_000),
        (target.octets(), UDP_PORT),
        &[0; 18],
        64,
    );
    let mac = |ns: &Netns| -> Result<Vec<u8>> {
        traffic::mac(ns, "eth0")?
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).context("MAC address"))
            .collect()
    };
    frame[0..6].copy_from_slice(&mac(&lab.router)?);
    frame[6..12].copy_from_slice(&mac(&lab.client)?);
    frame[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    ensure!(
        frame.len() == 60,
        "the generator's frame is {} bytes",
        frame.len()
    );
    Ok(frame)
}

/// Frames the router's `eth0` took from its veth queue, and frames dropped there because
/// the queue was full.
pub(crate) fn queue_counts(lab: &Lab) -> Result<(u64, u64)> {
    let out = lab
        .router
        .command("ip")
        .args(["-j", "-s", "link", "show", "eth0"])
        .output()?;
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("ip -j -s link show eth0")?;
    let rx = &json[0]["stats64"]["rx"];
    Ok((
        rx["packets"].as_u64().context("no rx packets")?,
        rx["dropped"].as_u64().context("no rx dropped")?,
    ))
}
