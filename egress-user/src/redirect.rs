//! Redirect mode set-up: validated configuration -> network, data plane, maps, attachments,
//! pins, announcement, in an order that changes nothing until every check that can fail
//! without side effects has passed (interfaces resolved, BPF object verified).

use std::{
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use egress_common::{DEFAULT_NAT_PORTS, RouterConfig, RuleKey, RuleTarget, config_flags, proto};

use crate::{
    config::{Config, Proto},
    dataplane::{self, Dataplane, LoadOptions},
    network::{self, InterfaceFacts, MacvlanMode, NetworkPlan},
};

/// Errors of the set-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pod interface: {0}")]
    PodInterface(network::Error),
    #[error("egress interface: {0}")]
    EgressInterface(network::Error),
    #[error("network set-up: {0}")]
    Network(network::Error),
    #[error("data plane: {0}")]
    Dataplane(#[from] dataplane::Error),
}

/// Everything about the set-up that is not in the OpenShift variables.
#[derive(Clone, Debug)]
pub struct Options {
    pub pod_interface: String,
    pub egress_interface: String,
    /// Create the egress interface as a macvlan on this parent when it does not exist.
    pub macvlan_parent: Option<String>,
    pub macvlan_mode: MacvlanMode,
    /// Root of the per-instance pin directories.
    pub bpffs_root: PathBuf,
    pub instance: String,
    pub conntrack_flows: u32,
    /// Per-packet events through aya-log.
    pub debug: bool,
    /// Delay of the gratuitous ARP request after the unsolicited reply.
    pub arp_request_after: Duration,
}

/// What the set-up did.
pub struct Report {
    pub dataplane: Dataplane,
    pub config: RouterConfig,
    /// Where the maps are pinned, if a bpffs was available.
    pub pin_dir: Option<PathBuf>,
    /// Why the maps are not pinned, if they are not.
    pub pin_warning: Option<String>,
    pub created_macvlan: bool,
}

/// The rules map of a configuration: rule ids follow the order of EGRESS_DESTINATION,
/// starting at 1 (0 is the fallback).
#[must_use]
pub fn rules(config: &Config) -> Vec<(RuleKey, RuleTarget)> {
    config
        .destinations
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let key = RuleKey {
                port: rule.local_port,
                proto: match rule.proto {
                    Proto::Tcp => proto::TCP,
                    Proto::Udp => proto::UDP,
                },
                _pad: 0,
            };
            let target = RuleTarget {
                remote_ip: rule.remote_ip.octets(),
                remote_port: rule.remote_port,
                rule_id: u16::try_from(i + 1).expect("at most MAX_RULES rules"),
            };
            (key, target)
        })
        .collect()
}

/// The data plane's view of the instance.
#[must_use]
pub fn router_config(
    config: &Config,
    pod_ip: Ipv4Addr,
    pod: &InterfaceFacts,
    egress: &InterfaceFacts,
    debug: bool,
) -> RouterConfig {
    let mut flags = 0;
    if config.destinations.fallback.is_some() {
        flags |= config_flags::HAS_FALLBACK;
    }
    if debug {
        flags |= config_flags::DEBUG;
    }
    let mtu = pod.mtu.min(egress.mtu);
    RouterConfig {
        pod_ip: pod_ip.octets(),
        egress_source: config.source.ip.octets(),
        fallback_ip: config
            .destinations
            .fallback
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
            .octets(),
        pod_ifindex: pod.index,
        egress_ifindex: egress.index,
        flags,
        nat_port_min: DEFAULT_NAT_PORTS.0,
        nat_port_max: DEFAULT_NAT_PORTS.1,
        mss_clamp: u16::try_from(mtu.saturating_sub(40)).unwrap_or(u16::MAX),
        _pad: 0,
    }
}

/// Sets up redirect mode in the current network namespace.
pub async fn setup(config: &Config, opts: &Options) -> Result<Report, Error> {
    // Checks without side effects first.
    let pod = network::interface_facts(&opts.pod_interface)
        .await
        .map_err(Error::PodInterface)?;
    let pod_ip = *pod
        .ipv4
        .first()
        .ok_or_else(|| Error::PodInterface(network::Error::NoIpv4(opts.pod_interface.clone())))?;
    let mut dataplane = Dataplane::load(&LoadOptions {
        conntrack_flows: opts.conntrack_flows,
    })?;

    // Now change the system: network, maps, attachments, pins.
    let plan = NetworkPlan {
        egress_interface: opts.egress_interface.clone(),
        macvlan_parent: opts.macvlan_parent.clone(),
        macvlan_mode: opts.macvlan_mode,
        source: config.source,
        gateway: config.gateway,
    };
    let applied = plan.apply().await.map_err(Error::Network)?;
    let egress = network::interface_facts(&opts.egress_interface)
        .await
        .map_err(Error::EgressInterface)?;
    let router = router_config(config, pod_ip, &pod, &egress, opts.debug);
    dataplane.configure(&router, &rules(config))?;
    dataplane.attach(&opts.pod_interface, &opts.egress_interface)?;

    let (pin_dir, pin_warning) = match prepare_bpffs(&opts.bpffs_root) {
        Ok(()) => {
            let dir = opts.bpffs_root.join(&opts.instance);
            match dataplane.pin(&dir) {
                Ok(()) => (Some(dir), None),
                Err(err) => (None, Some(err.to_string())),
            }
        }
        Err(err) => (None, Some(err)),
    };

    network::announce(
        &opts.egress_interface,
        applied.egress_ifindex,
        applied.egress_mac,
        config.source.ip,
        opts.arp_request_after,
    )
    .await
    .map_err(Error::Network)?;

    Ok(Report {
        dataplane,
        config: router,
        pin_dir,
        pin_warning,
        created_macvlan: applied.created_macvlan,
    })
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Makes `root` a directory on a bpffs: it is one already, it is below one (e.g. the host's
/// /sys/fs/bpf), or a bpffs is mounted there. The error says why pins are not possible.
fn prepare_bpffs(root: &Path) -> Result<(), String> {
    if is_bpffs(root) {
        return Ok(());
    }
    if let Err(err) = std::fs::create_dir_all(root)
        && err.kind() != io::ErrorKind::AlreadyExists
    {
        return Err(format!("cannot create {}: {err}", root.display()));
    }
    if is_bpffs(root) {
        return Ok(());
    }
    let c_path = std::ffi::CString::new(root.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} contains a NUL byte", root.display()))?;
    // SAFETY: valid NUL-terminated strings; mounting is what we mean to do.
    let rc = unsafe {
        libc::mount(
            c"bpffs".as_ptr(),
            c_path.as_ptr(),
            c"bpf".as_ptr(),
            0,
            c"mode=0700".as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "{} is not a bpffs and mounting one there failed: {}",
            root.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}
