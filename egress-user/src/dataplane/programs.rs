//! The data plane's programs and where they attach: the one table every walk over the
//! attachments (attach, discover, status, health, teardown) goes through.

use aya::programs::TcAttachType;
use egress_common::programs;

/// Which interface a program belongs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The pod interface (`eth0`), where clients' packets arrive.
    Pod,
    /// The egress interface (`macvlan0`), which holds EGRESS_SOURCE.
    Egress,
}

/// One program of the object and its hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    pub name: &'static str,
    /// The name an earlier release gave it, recognised on upgrade and teardown.
    pub former_name: Option<&'static str>,
    pub side: Side,
    pub attach_type: TcAttachType,
}

impl Program {
    /// The interface this program attaches to, of the two given.
    #[must_use]
    pub fn interface<'a>(&self, pod_interface: &'a str, egress_interface: &'a str) -> &'a str {
        match self.side {
            Side::Pod => pod_interface,
            Side::Egress => egress_interface,
        }
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
        if self.attach_type == TcAttachType::Ingress {
            "ingress"
        } else {
            "egress"
        }
    }
}

/// The product's programs, in attach order.
pub const PROGRAMS: [Program; 3] = [
    Program {
        name: programs::POD_INGRESS,
        former_name: None,
        side: Side::Pod,
        attach_type: TcAttachType::Ingress,
    },
    Program {
        name: programs::EGRESS_INGRESS,
        // Named after the "uplink" before the interfaces had one vocabulary.
        former_name: Some("uplink_ingress"),
        side: Side::Egress,
        attach_type: TcAttachType::Ingress,
    },
    Program {
        name: programs::EGRESS_EGRESS,
        former_name: Some("uplink_egress"),
        side: Side::Egress,
        attach_type: TcAttachType::Egress,
    },
];

/// The IPv6 programs and their hooks, attached after the IPv4 program of the same hook.
pub const PROGRAMS6: [Program; 3] = [
    Program {
        name: programs::POD_INGRESS6,
        former_name: None,
        side: Side::Pod,
        attach_type: TcAttachType::Ingress,
    },
    Program {
        name: programs::EGRESS_INGRESS6,
        former_name: None,
        side: Side::Egress,
        attach_type: TcAttachType::Ingress,
    },
    Program {
        name: programs::EGRESS_EGRESS6,
        former_name: None,
        side: Side::Egress,
        attach_type: TcAttachType::Egress,
    },
];

/// Every program, IPv4 then IPv6: the walks over what is attached (discovery, status,
/// teardown), which must see the IPv6 programs of a data plane that has them.
pub fn all() -> impl Iterator<Item = Program> {
    PROGRAMS.into_iter().chain(PROGRAMS6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_programs_know_their_former_names() {
        let names: Vec<_> = PROGRAMS.iter().map(|p| (p.name, p.former_name)).collect();
        assert_eq!(
            names,
            [
                ("pod_ingress", None),
                ("egress_ingress", Some("uplink_ingress")),
                ("egress_egress", Some("uplink_egress")),
            ]
        );
        assert!(PROGRAMS[1].is_named("uplink_ingress") && !PROGRAMS[1].is_named("pod_ingress"));
        assert_eq!(PROGRAMS[1].interface("eth0", "macvlan0"), "macvlan0");
        assert_eq!(PROGRAMS[2].direction(), "egress");
    }
}
