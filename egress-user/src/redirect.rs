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
    running::{self, Source},
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

impl From<crate::maps::Error> for Error {
    fn from(err: crate::maps::Error) -> Self {
        Self::Dataplane(err.into())
    }
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
    /// TCP ports on the pod IP served by the agent itself (metrics, health): delivered to
    /// the pod even when a fallback takes everything else.
    pub local_tcp_ports: Vec<u16>,
    /// Set up the network (egress interface, EGRESS_SOURCE, routes, announcement). Off when
    /// an init container did it and this process may not know EGRESS_GATEWAY (DNS proxy).
    pub network: bool,
}

/// What the set-up did.
pub struct Report {
    pub dataplane: Dataplane,
    pub config: RouterConfig,
    /// The rules as written, with their ids.
    pub rules: Vec<(RuleKey, RuleTarget)>,
    /// Where the maps are pinned, if a bpffs was available.
    pub pin_dir: Option<PathBuf>,
    /// Why the maps are not pinned, if they are not.
    pub pin_warning: Option<String>,
    /// The running data plane whose maps (conntrack included) were taken over, if any.
    pub adopted: Option<Source>,
    /// Why a running data plane could not be taken over, if one was found.
    pub adopt_warning: Option<String>,
    pub created_macvlan: bool,
}

/// The rules map of a configuration, with `local_tcp_ports` delivered to the pod. Rule
/// ids are placeholders: [`crate::maps::MapSet::configure`] assigns them.
#[must_use]
pub fn rules_with_local(config: &Config, local_tcp_ports: &[u16]) -> Vec<(RuleKey, RuleTarget)> {
    with_local(rules(config), local_tcp_ports)
}

/// `rules` with `local_tcp_ports` delivered to the pod, where no rule takes the port.
#[must_use]
pub fn with_local(
    mut rules: Vec<(RuleKey, RuleTarget)>,
    local_tcp_ports: &[u16],
) -> Vec<(RuleKey, RuleTarget)> {
    for &port in local_tcp_ports {
        let key = RuleKey {
            port,
            proto: proto::TCP,
            _pad: 0,
        };
        if !rules.iter().any(|(k, _)| *k == key) {
            rules.push((key, RuleTarget::LOCAL));
        }
    }
    rules
}

/// The rules map of a configuration: rule ids follow the order of EGRESS_DESTINATION,
/// starting at 1 (0 is the fallback), as a fresh table numbers them.
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
                flags: 0,
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

/// Sets up redirect mode in the current network namespace, taking over the maps of a data
/// plane already running there (attached to the pod interface, or pinned for the instance)
/// so that a restart or an upgrade keeps every flow.
pub async fn setup(config: &Config, opts: &Options) -> Result<Report, Error> {
    setup_with_rules(
        config,
        opts,
        rules_with_local(config, &opts.local_tcp_ports),
    )
    .await
}

/// [`setup`] with the rules map given (DNS proxy mode builds its own).
pub async fn setup_with_rules(
    config: &Config,
    opts: &Options,
    wanted: Vec<(RuleKey, RuleTarget)>,
) -> Result<Report, Error> {
    // Checks without side effects first.
    let pod = network::interface_facts(&opts.pod_interface)
        .await
        .map_err(Error::PodInterface)?;
    let pod_ip = *pod
        .ipv4
        .first()
        .ok_or_else(|| Error::PodInterface(network::Error::NoIpv4(opts.pod_interface.clone())))?;

    // Where state lives: the instance's pin directory, on a bpffs mounted if need be (an
    // `ip netns exec` or a container has a fresh /sys without one).
    let (pin_dir, pin_warning, scratch) = match prepare_bpffs(&opts.bpffs_root) {
        Ok(()) => (Some(opts.bpffs_root.join(&opts.instance)), None, None),
        // No bpffs to keep pins in (e.g. /sys/fs/bpf missing in a container): a private one,
        // gone when set-up ends, still hands the running maps over to the new programs.
        Err(err) => match ScratchBpffs::mount() {
            Ok(scratch) => (
                Some(scratch.path.join(&opts.instance)),
                Some(err),
                Some(scratch),
            ),
            Err(scratch_err) => (None, Some(format!("{err}; {scratch_err}")), None),
        },
    };
    // The program attached to the pod interface is the live data plane: pin its maps in
    // the instance directory so that the load below takes them over.
    // Maps whose layout this build changed, or that are new in it, start afresh; the
    // others (conntrack above all) are taken over.
    let (mut adopted, mut adopt_warning) = (None, None);
    let running = running::map_ids_of_attached(&opts.pod_interface)
        .await
        .map_err(|err| err.to_string())
        .and_then(|found| match found {
            Some((ids, program_id)) => crate::maps::MapSet::compatible_from_ids(&ids)
                .map(|(maps, left)| Some((maps, left, program_id)))
                .map_err(|err| err.to_string()),
            None => Ok(None),
        });
    match running {
        Ok(Some((maps, left, program_id))) => match &pin_dir {
            Some(dir) => match maps.pin(dir) {
                Ok(()) => {
                    if maps.has(egress_common::maps::CONNTRACK) {
                        adopted = Some(Source::Attached { program_id });
                    }
                    if !left.is_empty() {
                        let why: Vec<String> =
                            left.iter().map(|(_, err)| err.to_string()).collect();
                        adopt_warning = Some(format!(
                            "started afresh (new or changed in this build): {}",
                            why.join("; ")
                        ));
                    }
                }
                Err(err) => adopt_warning = Some(err.to_string()),
            },
            None => {
                adopt_warning = Some(
                    "no bpffs to hand its maps over through; its flows are dropped".to_owned(),
                );
            }
        },
        Ok(None) => {}
        Err(err) => adopt_warning = Some(err),
    }
    let mut dataplane = Dataplane::load(&LoadOptions {
        conntrack_flows: opts.conntrack_flows,
        pin_dir: pin_dir.clone(),
    })?;
    if adopted.is_none()
        && dataplane
            .reuse()
            .reused
            .contains(&egress_common::maps::CONNTRACK)
    {
        adopted = pin_dir.clone().map(Source::Pins);
    }
    if let Some(dir) = &pin_dir
        && let Some((name, why)) = dataplane.reuse().replaced.first()
    {
        adopt_warning = Some(format!(
            "pinned map {name} in {} replaced: {why}",
            dir.display()
        ));
    }

    // Now change the system: network, maps, attachments.
    let applied = if opts.network {
        Some(
            network_plan(config, opts)
                .apply()
                .await
                .map_err(Error::Network)?,
        )
    } else {
        None
    };
    let egress = network::interface_facts(&opts.egress_interface)
        .await
        .map_err(Error::EgressInterface)?;
    let router = router_config(config, pod_ip, &pod, &egress, opts.debug);
    let rules = dataplane.configure(&router, &wanted)?;
    dataplane.attach(&opts.pod_interface, &opts.egress_interface)?;

    // Pins on a scratch bpffs vanish with it; the maps live on in the programs.
    let pin_dir = if scratch.is_some() { None } else { pin_dir };
    drop(scratch);

    if let Some(applied) = &applied {
        announce(config, opts, applied).await?;
    }

    Ok(Report {
        dataplane,
        config: router,
        rules,
        pin_dir,
        pin_warning,
        adopted,
        adopt_warning,
        created_macvlan: applied.is_some_and(|a| a.created_macvlan),
    })
}

/// The proxy modes' set-up (`EGRESS_ROUTER_MODE=http-proxy` or `dns-proxy`, the init
/// container): the network as in redirect mode (egress interface, EGRESS_SOURCE, routes via
/// EGRESS_GATEWAY, announcement) and no translation. Returns whether the macvlan was
/// created.
pub async fn setup_network(config: &Config, opts: &Options) -> Result<bool, Error> {
    let applied = network_plan(config, opts)
        .apply()
        .await
        .map_err(Error::Network)?;
    announce(config, opts, &applied).await?;
    Ok(applied.created_macvlan)
}

fn network_plan(config: &Config, opts: &Options) -> NetworkPlan {
    NetworkPlan {
        egress_interface: opts.egress_interface.clone(),
        macvlan_parent: opts.macvlan_parent.clone(),
        macvlan_mode: opts.macvlan_mode,
        source: config.source,
        gateway: config.gateway,
        owner: owner_alias(&opts.instance),
    }
}

/// Announces EGRESS_SOURCE on the egress interface the plan was applied to.
async fn announce(
    config: &Config,
    opts: &Options,
    applied: &network::Applied,
) -> Result<(), Error> {
    network::announce(
        &opts.egress_interface,
        applied.egress_ifindex,
        applied.egress_mac,
        config.source.ip,
        opts.arp_request_after,
    )
    .await
    .map_err(Error::Network)
}

/// Applies a new configuration to a running data plane: the same interfaces, new rules and
/// fallback, reconciled by difference. Returns the rules as written.
pub fn reconfigure(
    maps: &mut crate::maps::MapSet,
    base: &RouterConfig,
    config: &Config,
    local_tcp_ports: &[u16],
) -> Result<(RouterConfig, Vec<(RuleKey, RuleTarget)>), Error> {
    let mut router = *base;
    router.fallback_ip = config
        .destinations
        .fallback
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
        .octets();
    if config.destinations.fallback.is_some() {
        router.flags |= config_flags::HAS_FALLBACK;
    } else {
        router.flags &= !config_flags::HAS_FALLBACK;
    }
    let rules = maps.configure(&router, &rules_with_local(config, local_tcp_ports))?;
    Ok((router, rules))
}

/// The alias egress-router gives an interface it creates, so that teardown removes only
/// what this instance added.
#[must_use]
pub fn owner_alias(instance: &str) -> String {
    format!("egress-router:{instance}")
}

/// A bpffs mounted on a fresh temporary directory for the duration of a set-up, then
/// detached and removed.
struct ScratchBpffs {
    path: PathBuf,
}

impl ScratchBpffs {
    fn mount() -> Result<Self, String> {
        let path = std::env::temp_dir().join(format!("egress-router-bpffs-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|err| format!("creating {}: {err}", path.display()))?;
        let scratch = Self { path };
        mount_bpffs(&scratch.path)?;
        Ok(scratch)
    }
}

impl Drop for ScratchBpffs {
    fn drop(&mut self) {
        if let Ok(c_path) = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid NUL-terminated path; a lazy unmount of our own mount.
            unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

pub fn is_bpffs(path: &Path) -> bool {
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
pub fn prepare_bpffs(root: &Path) -> Result<(), String> {
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
    mount_bpffs(root)
}

fn mount_bpffs(root: &Path) -> Result<(), String> {
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
