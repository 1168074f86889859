//! The three set-ups that are measured side by side, each on a fresh lab of the same
//! topology (tests/src/lab.rs): the same veths, macvlan, gateway and server.

use std::{io::Write as _, net::IpAddr, process::Stdio};

use anyhow::{Context as _, Result, bail};
use aya::programs::tc::TcAttachType;
use egress_common::RouterConfig;
use egress_tests::{
    bed::Bed,
    lab::{CLIENT_IP, EGRESS_SOURCE, GATEWAY_IP, Lab, ROUTER_POD_IP, SERVER_IP},
    lab6::{CLIENT_IP6, EGRESS_SOURCE6, GATEWAY_IP6, ROUTER_POD_IP6, SERVER_IP6},
    labbpf::{LabBpf, programs},
    nodelab::{self, NodeLab},
};

/// UDP port of the small-packet load; dropped at the gateway's ingress.
pub(crate) const UDP_PORT: u16 = 5001;
/// TCP port of iperf3.
pub(crate) const IPERF_PORT: u16 = 5201;
/// TCP port of the short-connection load.
pub(crate) const CONN_PORT: u16 = 8080;

/// What forwards the client's packets in the router namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Variant {
    /// egress-router redirect mode, as a user runs it (`EGRESS_ROUTER_MODE=init`).
    A,
    /// The classic egress router: OpenShift's iptables DNAT on the pod interface, SNAT to
    /// EGRESS_SOURCE, kernel forwarding and conntrack.
    B,
    /// The ceiling: `lab_forward`, a TC program that only sends IPv4 from the pod interface
    /// out of the egress interface (no NAT, no conntrack).
    C,
    /// A over IPv6: egress-router with an IPv6 EGRESS_SOURCE alone (NAT66), IPv6 loads.
    A6,
    /// B over IPv6: the classic set-up with ip6tables DNAT and SNAT (NAT66), kernel IPv6
    /// forwarding and conntrack.
    B6,
    /// A in node mode: the node agent in the node's namespace, the client and router pods
    /// routed through the node as a routed CNI wires them (tests/src/nodelab.rs). Its lab
    /// has the node's routing hop, which A's lab (client wired to the router pod) has not.
    N,
    /// A in N's lab: the router pod in pod mode (its own macvlan on the node's uplink),
    /// reached through the same routing hop. What node mode is compared with.
    P,
    /// A attached with tc (`--attach tc`: a clsact qdisc and cls_bpf filters, what kernels
    /// before 6.6 get) where A has TCX; measured against A in rounds of its own
    /// (`crate::attachkind`).
    T,
}

impl Variant {
    /// The IPv4 variants (the per-core mode measures these).
    pub(crate) const ALL: [Variant; 3] = [Variant::A, Variant::B, Variant::C];
    /// The IPv6 variants, measured in the lab rounds after the IPv4 ones.
    pub(crate) const IPV6: [Variant; 2] = [Variant::A6, Variant::B6];
    /// Node mode and pod mode in the node lab.
    pub(crate) const NODE: [Variant; 2] = [Variant::N, Variant::P];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Variant::A => "A egress-router",
            Variant::B => "B iptables (classic)",
            Variant::C => "C stateless BPF forwarder",
            Variant::A6 => "A6 egress-router, IPv6",
            Variant::B6 => "B6 ip6tables (classic)",
            Variant::N => "N egress-router, node mode",
            Variant::P => "P egress-router, pod, node lab",
            Variant::T => "T egress-router, tc attach",
        }
    }

    /// Whether the loads are IPv6.
    pub(crate) fn ipv6(self) -> bool {
        matches!(self, Variant::A6 | Variant::B6)
    }

    /// The client's address of the loads' family.
    pub(crate) fn client(self) -> IpAddr {
        match self {
            Variant::N | Variant::P => nodelab::client_ip(0).into(),
            _ if self.ipv6() => CLIENT_IP6.into(),
            _ => CLIENT_IP.into(),
        }
    }

    /// The server's address of the loads' family.
    pub(crate) fn server(self) -> IpAddr {
        if self.ipv6() {
            SERVER_IP6.into()
        } else {
            SERVER_IP.into()
        }
    }

    /// Whether TCP through the router reaches the server (C does not translate, so replies
    /// have no way back).
    pub(crate) fn translates(self) -> bool {
        self != Variant::C
    }

    /// Where the loads are addressed: the router pod's rule ports, or for the forwarder
    /// (which does not translate) the remote itself.
    pub(crate) fn target(self) -> IpAddr {
        match self {
            Variant::C => SERVER_IP.into(),
            Variant::A6 | Variant::B6 => ROUTER_POD_IP6.into(),
            Variant::A | Variant::B | Variant::T => ROUTER_POD_IP.into(),
            Variant::N | Variant::P => nodelab::router_ip(0).into(),
        }
    }
}

/// The rules of A and B (A6 and B6 with `server`, the IPv6 one): one per load, all to the
/// lab's server.
pub(crate) fn destination_to(server: IpAddr) -> String {
    format!("{UDP_PORT} udp {server}\n{IPERF_PORT} tcp {server}\n{CONN_PORT} tcp {server}")
}

/// The rules of A and B.
pub(crate) fn destination() -> String {
    destination_to(SERVER_IP.into())
}

/// A lab with one variant set up. Field order is drop order: the forwarder's program (held
/// by this process) goes before the namespaces.
pub(crate) struct Setup {
    /// C's forwarder (the per-core mode attaches its way back too).
    pub forwarder: Option<LabBpf>,
    pub lab: Lab,
    /// A's or T's programs as found attached (`attachcheck`); empty for the others.
    pub attached: Vec<String>,
}

impl Setup {
    pub(crate) fn new(variant: Variant, round: usize) -> Result<Self> {
        let tag = format!("bench{round}{}", format!("{variant:?}").to_lowercase());
        let lab = Lab::new(&tag)?;
        let mut attached = Vec::new();
        let forwarder = match variant {
            Variant::A | Variant::T => {
                // A as a user runs it (`auto`: TCX here), T with tc; each checked.
                let attach: &[&str] = if variant == Variant::T {
                    &["--attach", "tc"]
                } else {
                    &[]
                };
                lab.init_router("bench", &destination(), attach)?;
                let kind = if variant == Variant::T { "tc" } else { "tcx" };
                attached = crate::attachcheck::ensure_attached(&lab, kind)?;
                None
            }
            Variant::B => {
                classic(&lab)?;
                None
            }
            Variant::C => Some(forwarder(&lab)?),
            Variant::A6 => {
                lab.enable_ipv6()?;
                let source = format!("{EGRESS_SOURCE6}/64");
                let gateway = GATEWAY_IP6.to_string();
                lab.init_router_as(
                    "bench",
                    [&source, &gateway],
                    &destination_to(SERVER_IP6.into()),
                    &[],
                )?;
                None
            }
            Variant::B6 => {
                lab.enable_ipv6()?;
                classic6(&lab)?;
                None
            }
            Variant::N | Variant::P => bail!("{variant:?} has a lab of its own: node_setup"),
        };
        Ok(Self {
            forwarder,
            lab,
            attached,
        })
    }
}

/// The node lab of N or P, with A's rules: N's router pod registered with the node agent,
/// P's in pod mode; the uplink receives with GRO, as a NIC does. Neither has the gateway's XDP program (see
/// [`NodeLab::without_gateway_xdp`]), so both uplinks keep GSO.
pub(crate) fn node_setup(variant: Variant, round: usize) -> Result<NodeLab> {
    let tag = format!("bench{round}{}", format!("{variant:?}").to_lowercase());
    let mut lab = NodeLab::new(&tag, 1)?;
    lab.uplink_gro()?;
    if variant == Variant::P {
        // The macvlan answers the gateway's ARP itself.
        lab.without_gateway_xdp(0)?;
        lab.pod_mode_router("bench", &destination())?;
        return Ok(lab);
    }
    lab.without_gateway_xdp(1)?;
    let agent = lab.start_agent(&[])?;
    lab.register(0, &destination())?;
    lab.wait_for_log(
        agent,
        "serving a new instance",
        std::time::Duration::from_secs(10),
    )?;
    Ok(lab)
}

/// The source address the gateway sees on the small-packet load: EGRESS_SOURCE (of the
/// loads' family) where the router translates, the client's own where it only forwards.
pub(crate) fn expected_source(variant: Variant) -> IpAddr {
    match variant {
        Variant::A6 | Variant::B6 => EGRESS_SOURCE6.into(),
        Variant::A | Variant::B | Variant::T => EGRESS_SOURCE.into(),
        Variant::N | Variant::P => nodelab::egress_source(0).into(),
        Variant::C => variant.client(),
    }
}

/// nftables counters-and-drops for the UDP load on the gateway's ingress (netdev hook,
/// before the gateway's own IP stack): `crossed` for frames with the expected source
/// address, `untranslated` for any other; ARP and the TCP loads pass.
pub(crate) fn drop_at_gateway(lab: &impl Bed, variant: Variant) -> Result<()> {
    let source = expected_source(variant);
    let ip = if variant.ipv6() { "ip6" } else { "ip" };
    let rules = format!(
        "table netdev bench {{\n\
           counter crossed {{ }}\n\
           counter untranslated {{ }}\n\
           chain ingress {{\n\
             type filter hook ingress device \"lan0\" priority 0; policy accept;\n\
             {ip} saddr {source} udp dport {UDP_PORT} counter name \"crossed\" drop\n\
             udp dport {UDP_PORT} counter name \"untranslated\" drop\n\
           }}\n\
         }}\n"
    );
    pipe(lab.gateway(), "nft", &["-f", "-"], &rules)
}

/// Packets counted so far by the gateway's counter `name`.
pub(crate) fn crossed(lab: &impl Bed, name: &str) -> Result<u64> {
    let out = lab
        .gateway()
        .command("nft")
        .args(["-j", "list", "counter", "netdev", "bench", name])
        .output()?;
    if !out.status.success() {
        bail!("nft list counter: {}", String::from_utf8_lossy(&out.stderr));
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|item| item["counter"]["packets"].as_u64())
        .context("no counter in `nft -j list counter`")
}

/// The network set-up of OpenShift's egress-router.sh (address and routes on macvlan0,
/// forwarding on) without its NAT.
pub(crate) fn egress_network(lab: &Lab) -> Result<()> {
    let r = &lab.router;
    r.ip(&[
        "addr",
        "add",
        &format!("{EGRESS_SOURCE}/32"),
        "dev",
        "macvlan0",
    ])?;
    r.ip(&["link", "set", "macvlan0", "up"])?;
    r.ip(&[
        "route",
        "add",
        &format!("{GATEWAY_IP}/32"),
        "dev",
        "macvlan0",
    ])?;
    r.ip(&[
        "route",
        "replace",
        "default",
        "via",
        &GATEWAY_IP.to_string(),
        "dev",
        "macvlan0",
    ])
}

/// B: what OpenShift's egress router pod runs: egress-router.sh's network set-up and its
/// `iptables-restore` of one DNAT per EGRESS_DESTINATION line and one SNAT.
fn classic(lab: &Lab) -> Result<()> {
    classic_rules(
        lab,
        &[(UDP_PORT, "udp"), (IPERF_PORT, "tcp"), (CONN_PORT, "tcp")],
    )
}

/// B's set-up with one DNAT rule per (port, protocol), all to the lab's server.
pub(crate) fn classic_rules(lab: &Lab, ports: &[(u16, &str)]) -> Result<()> {
    egress_network(lab)?;
    lab.router.sysctl("net.ipv4.ip_forward", "1")?;
    let mut rules = String::from("*nat\n");
    for &(port, proto) in ports {
        rules.push_str(&format!(
            "-A PREROUTING -i eth0 -p {proto} --dport {port} -j DNAT --to-destination {SERVER_IP}\n"
        ));
    }
    rules.push_str(&format!(
        "-A POSTROUTING -j SNAT --to-source {EGRESS_SOURCE}\nCOMMIT\n"
    ));
    pipe(&lab.router, "iptables-restore", &["--noflush"], &rules)
}

/// B6: the classic set-up over IPv6: EGRESS_SOURCE's IPv6 address and routes on the
/// macvlan, IPv6 forwarding on, and ip6tables DNAT per port and SNAT (NAT66).
fn classic6(lab: &Lab) -> Result<()> {
    let r = &lab.router;
    r.sysctl("net.ipv6.conf.macvlan0.disable_ipv6", "0")?;
    r.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{EGRESS_SOURCE6}/128"),
        "dev",
        "macvlan0",
        "nodad",
    ])?;
    r.ip(&["link", "set", "macvlan0", "up"])?;
    r.ip(&[
        "-6",
        "route",
        "add",
        &format!("{GATEWAY_IP6}/128"),
        "dev",
        "macvlan0",
    ])?;
    r.ip(&[
        "-6",
        "route",
        "replace",
        "default",
        "via",
        &GATEWAY_IP6.to_string(),
        "dev",
        "macvlan0",
    ])?;
    r.sysctl("net.ipv6.conf.all.forwarding", "1")?;
    let mut rules = String::from("*nat\n");
    for (port, proto) in [(UDP_PORT, "udp"), (IPERF_PORT, "tcp"), (CONN_PORT, "tcp")] {
        rules.push_str(&format!(
            "-A PREROUTING -i eth0 -p {proto} --dport {port} -j DNAT --to-destination {SERVER_IP6}\n"
        ));
    }
    rules.push_str(&format!(
        "-A POSTROUTING -o macvlan0 -j SNAT --to-source {EGRESS_SOURCE6}\nCOMMIT\n"
    ));
    pipe(r, "ip6tables-restore", &["--noflush"], &rules)
}

/// C: the same network set-up, and `lab_forward` on the pod interface's TC ingress,
/// configured with the macvlan's ifindex. The program stays attached while the returned
/// lab object lives.
fn forwarder(lab: &Lab) -> Result<LabBpf> {
    egress_network(lab)?;
    lab.router.enter(|| -> Result<LabBpf> {
        let ifindex = |name: &str| {
            egress_user::network::interface::ifindex(name)
                .with_context(|| format!("no interface {name}"))
        };
        let mut forwarder = LabBpf::load()?;
        let cfg = RouterConfig {
            pod_ip: ROUTER_POD_IP.octets(),
            egress_source: EGRESS_SOURCE.octets(),
            fallback_ip: [0; 4],
            pod_ifindex: ifindex("eth0")?,
            egress_ifindex: ifindex("macvlan0")?,
            flags: 0,
            nat_port_min: 1024,
            nat_port_max: 65535,
            mss_clamp: 0,
            instance: 0,
            _pad: 0,
            nat_secret: 0x5eed_0001,
        };
        forwarder.configure(&cfg)?;
        let prog = forwarder.program(programs::LAB_FORWARD)?;
        // Without clsact aya attaches through TCX on this kernel; the link lives with
        // `forwarder`.
        prog.attach("eth0", TcAttachType::Ingress)?;
        Ok(forwarder)
    })?
}

/// Runs `program args` in `ns` with `input` on stdin; fails with its stderr.
pub(crate) fn pipe(
    ns: &egress_tests::netns::Netns,
    program: &str,
    args: &[&str],
    input: &str,
) -> Result<()> {
    let mut child = ns
        .command(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {program}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = egress_tests::netns::wait_bounded(child, std::time::Duration::from_secs(10))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} in {}: {}\ninput:\n{input}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The drops by reason, NAT port retries and ignored RST/FIN of the router's data plane
/// that are not zero.
pub(crate) fn router_events(lab: &Lab) -> std::collections::BTreeMap<String, u64> {
    const EVENTS: [&str; 4] = [
        "nat_retries",
        "tcp_rst_ignored",
        "tcp_fin_ignored",
        "flows_reopened",
    ];
    egress_tests::util::router_cli(lab, "bench", &["stats"])
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            let packets: u64 = words.next()?.parse().ok()?;
            (packets > 0 && (name.starts_with("drop:") || EVENTS.contains(&name)))
                .then(|| (name.to_owned(), packets))
        })
        .collect()
}
