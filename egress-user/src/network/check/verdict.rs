//! What `egress-router check` reports: each check's finding, the verdict (its exit status
//! tells scripts which), and the fixes per platform when the gateway is out of reach.

use serde::Serialize;

use std::net::IpAddr;

use crate::network::mac::mac_text;

/// How one check went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One check's result.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
}

/// The overall verdict; its exit status tells scripts which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Ok,
    /// Something the check needs is missing (the interface, its parent).
    Setup,
    /// The egress interface's parent link is down.
    LinkDown,
    /// Another host answers for EGRESS_SOURCE.
    SourceInUse,
    /// The gateway answers the node's MAC but not the egress interface's.
    MacFiltered,
    /// The gateway answers no ARP request at all (or the node's MAC could not be tried).
    GatewayUnreachable,
}

impl Verdict {
    /// The exit status: 0 ok, then one per verdict.
    #[must_use]
    pub const fn exit_code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Setup => 1,
            Self::LinkDown => 2,
            Self::SourceInUse => 3,
            Self::MacFiltered => 4,
            Self::GatewayUnreachable => 5,
        }
    }
}

/// What `check` found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    /// What to do about the verdict, for each platform it may concern.
    pub fixes: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for finding in &self.findings {
            let status = match finding.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            writeln!(f, "{status}  {:<18} {}", finding.check, finding.detail)?;
        }
        let verdict = serde_json::to_value(self.verdict).map_err(|_| std::fmt::Error)?;
        writeln!(f, "verdict: {}", verdict.as_str().unwrap_or("?"))?;
        for fix in &self.fixes {
            writeln!(f, "  {fix}")?;
        }
        Ok(())
    }
}

/// What to do about a gateway that the egress interface's MAC does not reach, per
/// platform, with the real addresses.
pub(crate) fn fixes(ip: IpAddr, mac: [u8; 6]) -> Vec<String> {
    let mac = mac_text(mac);
    vec![
        format!(
            "Red Hat OpenStack (port security): allow the egress address and MAC on the \
             Neutron port of the node's NIC on the egress network: \
             openstack port set --allowed-address ip_address={ip},mac_address={mac} <port> \
             (the port: openstack port list --server <node>)"
        ),
        "Red Hat Virtualization: give the node's egress vNIC a profile with \"No Network \
         Filter\" (the vdsm-no-mac-spoofing filter drops other MACs)"
            .to_owned(),
        "VMware vSphere: on the port group of the node's egress NIC, set Promiscuous mode, \
         MAC address changes and Forged transmits to Accept"
            .to_owned(),
        "AWS, Azure, GCP: no layer 2 for extra MACs; a macvlan's frames never pass there"
            .to_owned(),
        format!(
            "The stable MAC {mac} is the same for every router pod with EGRESS_SOURCE {ip}, so \
             an allowed-address pair set once stays right across restarts and failovers"
        ),
    ]
}
