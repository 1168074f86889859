//! The data plane's programs and where they run: the one table every walk over them
//! (load, attach, discover, status, health, teardown) goes through, in pod mode and in
//! node mode. Each entry says which mode loads it, which address family it handles, its
//! hook, and the interface it attaches to, by the role that interface plays.

use egress_common::programs;

/// Which data plane a program belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A router pod's own data plane, on its pod interface and its egress interface.
    Pod,
    /// A node agent's, serving every instance of the node ([`crate::node`]).
    Node,
}

/// The address family a program handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    /// Loaded (in pod mode) only for an instance with IPv6, attached after the IPv4
    /// program of the same hook, which hands it the IPv6 packets.
    Ipv6,
    /// Both: `node_xdp` answers ARP and neighbour solicitations alike.
    Both,
}

/// Where on its interface a program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    TcIngress,
    TcEgress,
    /// XDP, in the driver where it supports it: held by a link pinned with the node's
    /// maps rather than by the interface.
    Xdp,
}

impl Hook {
    /// `ingress` or `egress` (XDP runs on receive: `ingress`).
    #[must_use]
    pub fn direction(self) -> &'static str {
        match self {
            Self::TcIngress | Self::Xdp => "ingress",
            Self::TcEgress => "egress",
        }
    }

    /// Whether it is a TC hook (TCX today: [`crate::dataplane::attach`]).
    #[must_use]
    pub fn is_tc(self) -> bool {
        matches!(self, Self::TcIngress | Self::TcEgress)
    }
}

/// The interface a program attaches to, by the role it plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Pod mode: the pod interface (`eth0` in the router pod), where clients' packets
    /// arrive and the pod IP lives.
    PodInterface,
    /// Pod mode: the egress interface (`macvlan0`), which holds EGRESS_SOURCE.
    EgressInterface,
    /// Node mode: a router pod's host-side interface (its veth's peer in the node), where
    /// clients' packets to the pod leave the node's stack; one per instance.
    HostInterface,
    /// Node mode: the node's uplink toward the egress network.
    Uplink,
}

/// The interfaces of a walk over the table, by role: a program whose role has none here
/// is left out of the walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interfaces<'a> {
    pub pod: Option<&'a str>,
    pub egress: Option<&'a str>,
    pub host: Option<&'a str>,
    pub uplink: Option<&'a str>,
}

impl<'a> Interfaces<'a> {
    /// A router pod's two interfaces.
    #[must_use]
    pub fn pod(pod_interface: &'a str, egress_interface: &'a str) -> Self {
        Self {
            pod: Some(pod_interface),
            egress: Some(egress_interface),
            ..Self::default()
        }
    }

    /// A router pod's host-side interface in node mode.
    #[must_use]
    pub fn host(host_interface: &'a str) -> Self {
        Self {
            host: Some(host_interface),
            ..Self::default()
        }
    }

    /// The node's uplink.
    #[must_use]
    pub fn uplink(uplink: &'a str) -> Self {
        Self {
            uplink: Some(uplink),
            ..Self::default()
        }
    }

    /// The interface playing `role`, if given.
    #[must_use]
    pub fn of(&self, role: Role) -> Option<&'a str> {
        match role {
            Role::PodInterface => self.pod,
            Role::EgressInterface => self.egress,
            Role::HostInterface => self.host,
            Role::Uplink => self.uplink,
        }
    }
}

/// One program of the object and where it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    pub name: &'static str,
    /// The name an earlier release gave it, recognised on upgrade and teardown.
    pub former_name: Option<&'static str>,
    pub mode: Mode,
    pub family: Family,
    pub hook: Hook,
    pub role: Role,
}

impl Program {
    /// The interface of `interfaces` this program attaches to, if the walk has one for it.
    #[must_use]
    pub fn interface<'a>(&self, interfaces: &Interfaces<'a>) -> Option<&'a str> {
        interfaces.of(self.role)
    }

    /// Whether a program attached at this hook and named `name` is this one (of this or
    /// an earlier release).
    #[must_use]
    pub fn is_named(&self, name: &str) -> bool {
        self.name == name || self.former_name == Some(name)
    }

    /// `ingress` or `egress`.
    #[must_use]
    pub fn direction(&self) -> &'static str {
        self.hook.direction()
    }

    /// Whether a data plane of its mode, for an instance with IPv6 (`ipv6`) or without,
    /// loads and attaches it. A router pod without IPv6 neither loads nor verifies the
    /// IPv6 programs (and detaches an earlier run's). A node agent always has them:
    /// `node_forward` hands `node_forward6` every IPv6 packet, which it counts, whether the
    /// node serves IPv6 (`--ipv6`) or not.
    #[must_use]
    pub fn wanted(&self, ipv6: bool) -> bool {
        self.family != Family::Ipv6 || ipv6 || self.mode == Mode::Node
    }
}

const fn program(
    name: &'static str,
    mode: Mode,
    family: Family,
    hook: Hook,
    role: Role,
) -> Program {
    Program {
        name,
        former_name: None,
        mode,
        family,
        hook,
        role,
    }
}

/// Every program the product attaches, in attach order: at each hook, the IPv4 program
/// before the IPv6 one it hands IPv6 on to. Walks that detach go the other way.
pub const PROGRAMS: [Program; 11] = {
    use Family::{Both, Ipv4, Ipv6};
    use Hook::{TcEgress, TcIngress, Xdp};
    use Mode::{Node, Pod};
    use Role::{EgressInterface, HostInterface, PodInterface, Uplink};
    [
        program(programs::POD_INGRESS, Pod, Ipv4, TcIngress, PodInterface),
        Program {
            // Named after the "uplink" before the interfaces had one vocabulary.
            former_name: Some("uplink_ingress"),
            ..program(
                programs::EGRESS_INGRESS,
                Pod,
                Ipv4,
                TcIngress,
                EgressInterface,
            )
        },
        Program {
            former_name: Some("uplink_egress"),
            ..program(
                programs::EGRESS_EGRESS,
                Pod,
                Ipv4,
                TcEgress,
                EgressInterface,
            )
        },
        program(programs::POD_INGRESS6, Pod, Ipv6, TcIngress, PodInterface),
        program(
            programs::EGRESS_INGRESS6,
            Pod,
            Ipv6,
            TcIngress,
            EgressInterface,
        ),
        program(
            programs::EGRESS_EGRESS6,
            Pod,
            Ipv6,
            TcEgress,
            EgressInterface,
        ),
        program(programs::NODE_FORWARD, Node, Ipv4, TcEgress, HostInterface),
        program(programs::NODE_FORWARD6, Node, Ipv6, TcEgress, HostInterface),
        program(programs::NODE_REPLY, Node, Ipv4, TcIngress, Uplink),
        program(programs::NODE_REPLY6, Node, Ipv6, TcIngress, Uplink),
        program(programs::NODE_XDP, Node, Both, Xdp, Uplink),
    ]
};

/// The programs of `mode`, in attach order.
pub fn of(mode: Mode) -> impl DoubleEndedIterator<Item = &'static Program> {
    PROGRAMS.iter().filter(move |p| p.mode == mode)
}

/// The programs of `mode` that a data plane with IPv6 (`ipv6`) or without loads, in attach
/// order.
pub fn wanted(mode: Mode, ipv6: bool) -> impl DoubleEndedIterator<Item = &'static Program> {
    of(mode).filter(move |p| p.wanted(ipv6))
}

/// The program named `name` (its name in this build).
#[must_use]
pub fn named(name: &str) -> Option<&'static Program> {
    PROGRAMS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_programs_know_their_former_names() {
        let names: Vec<_> = of(Mode::Pod).map(|p| (p.name, p.former_name)).collect();
        assert_eq!(
            names[..3],
            [
                ("pod_ingress", None),
                ("egress_ingress", Some("uplink_ingress")),
                ("egress_egress", Some("uplink_egress")),
            ]
        );
        let egress_ingress = named("egress_ingress").unwrap();
        assert!(
            egress_ingress.is_named("uplink_ingress") && !egress_ingress.is_named("pod_ingress")
        );
        let pod = Interfaces::pod("eth0", "macvlan0");
        assert_eq!(egress_ingress.interface(&pod), Some("macvlan0"));
        assert_eq!(named("egress_egress").unwrap().direction(), "egress");
        assert_eq!(named("node_reply").unwrap().interface(&pod), None);
    }

    #[test]
    fn each_mode_loads_what_it_did() {
        let names = |mode, ipv6| wanted(mode, ipv6).map(|p| p.name).collect::<Vec<_>>();
        assert_eq!(
            names(Mode::Pod, false),
            ["pod_ingress", "egress_ingress", "egress_egress"]
        );
        assert_eq!(names(Mode::Pod, true).len(), 6);
        let node = [
            "node_forward",
            "node_forward6",
            "node_reply",
            "node_reply6",
            "node_xdp",
        ];
        assert_eq!(names(Mode::Node, false), node);
        assert_eq!(names(Mode::Node, true), node);
        // Every program but the XDP one is on a TC hook; each role belongs to one mode.
        for p in PROGRAMS {
            assert_eq!(p.hook.is_tc(), p.name != programs::NODE_XDP, "{}", p.name);
            let pod_role = matches!(p.role, Role::PodInterface | Role::EgressInterface);
            assert_eq!(pod_role, p.mode == Mode::Pod, "{}", p.name);
        }
    }

    #[test]
    fn at_each_hook_the_ipv4_program_comes_first() {
        for p in PROGRAMS.iter().filter(|p| p.family == Family::Ipv6) {
            let at = |q: &Program| PROGRAMS.iter().position(|r| r == q).unwrap();
            let v4 = PROGRAMS
                .iter()
                .find(|q| {
                    (q.mode, q.hook, q.role, q.family) == (p.mode, p.hook, p.role, Family::Ipv4)
                })
                .unwrap();
            assert!(at(v4) < at(p), "{}", p.name);
            assert_eq!(format!("{}6", v4.name), p.name);
        }
    }
}
