//! The per-core lab's pieces: C's way back for connections, the generator's template
//! frame, and the router's veth queue counters the pacing reads.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, Result, ensure};
use aya::programs::tc::TcAttachType;
use egress_tests::{
    bed::Bed,
    lab::{CLIENT_IP, EGRESS_SOURCE, Lab, POD_PREFIX, ROUTER_POD_IP, SERVER_IP, SERVER_PREFIX},
    labbpf::{LabBpf, programs},
    netns::Netns,
    pktgen,
};

use crate::variant::{UDP_PORT, Variant};

/// C's way back for the connections: the client routes the server's network via the
/// router pod, the gateway routes the pod network via EGRESS_SOURCE, and `lab_return` on
/// macvlan0's ingress sends the replies out of the pod interface, as `lab_forward` sends
/// the requests out of macvlan0.
pub(crate) fn route_back(lab: &Lab, forwarder: &mut LabBpf) -> Result<()> {
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
    lab.router
        .enter(|| prog.attach("macvlan0", TcAttachType::Ingress))?
        .context("attaching lab_return to macvlan0")?;
    Ok(())
}

/// The generator's template: the bench's small UDP frame (60 bytes) from the client to the
/// variant's target, with the real MAC addresses and no UDP checksum (the generator
/// changes the source port).
pub(crate) fn generator_frame(lab: &impl Bed, variant: Variant) -> Result<Vec<u8>> {
    let (IpAddr::V4(client), IpAddr::V4(target)) = (variant.client(), variant.target()) else {
        anyhow::bail!("the per-core mode is IPv4 only");
    };
    let (hop, dev) = lab.client_next_hop();
    udp_frame_between((client, (lab.client(), "eth0")), (target, (hop, dev)))
}

/// The flood's template: a small UDP frame from a host on the egress network to `target`
/// (an egress address), sent by the gateway to the MAC of `to` (the interface that holds
/// or answers for the address).
pub(crate) fn flood_frame(lab: &impl Bed, target: Ipv4Addr, to: (&Netns, &str)) -> Result<Vec<u8>> {
    udp_frame_between((FLOOD_SOURCE, (lab.gateway(), "lan0")), (target, to))
}

/// A host on the egress network (the gateway's side) that no flow of the router talks to.
pub(crate) const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 250);

/// The bench's small UDP frame from `from` to `to`, each an address and the interface whose
/// MAC the frame carries.
fn udp_frame_between(
    (src, from): (Ipv4Addr, (&Netns, &str)),
    (dst, to): (Ipv4Addr, (&Netns, &str)),
) -> Result<Vec<u8>> {
    let mut frame = pktgen::udp_frame(
        (src.octets(), 10_000),
        (dst.octets(), UDP_PORT),
        &[0; 18],
        64,
    );
    let mac = |(ns, dev): (&Netns, &str)| -> Result<Vec<u8>> {
        ns.mac(dev)?
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).context("MAC address"))
            .collect()
    };
    frame[0..6].copy_from_slice(&mac(to)?);
    frame[6..12].copy_from_slice(&mac(from)?);
    frame[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    ensure!(
        frame.len() == 60,
        "the generator's frame is {} bytes",
        frame.len()
    );
    Ok(frame)
}

/// Frames `dev` in `ns` (the generator's first hop) took from its veth queue, and frames
/// dropped there because the queue was full.
pub(crate) fn queue_counts((ns, dev): (&Netns, &str)) -> Result<(u64, u64)> {
    let out = ns
        .command("ip")
        .args(["-j", "-s", "link", "show", dev])
        .output()?;
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("ip -j -s link show {dev}"))?;
    let rx = &json[0]["stats64"]["rx"];
    Ok((
        rx["packets"].as_u64().context("no rx packets")?,
        rx["dropped"].as_u64().context("no rx dropped")?,
    ))
}
