//! Probes that need interfaces to try things on: run on a thread of their own in a new,
//! empty network namespace, which goes away with the thread. So they attach, create and
//! resolve for real, and nothing of it is ever visible to the node or the pod.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsFd as _, AsRawFd as _},
};

use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle, LinkMacVlan, LinkUnspec, LinkVeth,
    packet_route::{
        link::MacVlanMode,
        neighbour::{NeighbourAttribute, NeighbourExtFlags, NeighbourState},
    },
};

use super::probe::{HAND_ON, Refused, Scratch, Status, load, load_as, sys_bpf};
use crate::dataplane::attach::tc;

/// What the scratch probes found, or why they could not run.
pub(crate) struct Results {
    found: Result<Vec<(Scratch, Status)>, String>,
}

impl Results {
    pub(crate) fn status(&self, probe: Scratch) -> Status {
        match &self.found {
            Ok(found) => found
                .iter()
                .find(|(p, _)| *p == probe)
                .map_or_else(|| Status::Unknown("not probed".into()), |(_, s)| s.clone()),
            Err(why) => Status::Unknown(why.clone()),
        }
    }
}

/// Runs every scratch probe in a network namespace of its own.
pub(crate) fn probe_all() -> Results {
    let found = std::thread::spawn(|| {
        // SAFETY: unshare only changes this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "no network namespace to probe in: {}",
                std::io::Error::last_os_error()
            ));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
            let connection = tokio::spawn(connection);
            let found = probe_in(&handle).await;
            connection.abort();
            Ok(found)
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the probe thread panicked".into()));
    Results { found }
}

/// The loopback interface of a new namespace.
const LO: u32 = 1;

async fn probe_in(handle: &Handle) -> Vec<(Scratch, Status)> {
    let veth = veth_pair(handle).await;
    vec![
        (Scratch::Tcx, tcx()),
        (Scratch::ClsBpf, cls_bpf()),
        (Scratch::XdpLink, xdp_link()),
        (Scratch::Macvlan, macvlan(handle, &veth).await),
        (
            Scratch::ManagedNeighbour,
            managed_neighbour(handle, &veth).await,
        ),
    ]
}

fn refused(err: Refused) -> Status {
    match err {
        Refused::Verifier(log) => Status::Unknown(format!("a probe program was refused: {log}")),
        Refused::Io(err) => Status::Unknown(format!("loading a probe program: {err}")),
    }
}

const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_XDP: u32 = 37;
const BPF_PROG_TYPE_XDP: u32 = 6;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_ifindex: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// TCX: a program attached to the loopback's TCX ingress (older kernels do not know the
/// attach type).
fn tcx() -> Status {
    let prog = match load(&HAND_ON) {
        Ok(fd) => fd,
        Err(err) => return refused(err),
    };
    let mut attr = AttachAttr {
        target_ifindex: LO,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_TCX_INGRESS,
        ..AttachAttr::default()
    };
    match sys_bpf(BPF_PROG_ATTACH, &mut attr) {
        Ok(_) => Status::Present,
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
            Status::Missing("the kernel does not know BPF_TCX_INGRESS".into())
        }
        Err(err) => Status::Unknown(err.to_string()),
    }
}

/// clsact and cls_bpf: a direct-action filter on the loopback's ingress.
fn cls_bpf() -> Status {
    let prog = match load(&HAND_ON) {
        Ok(fd) => fd,
        Err(err) => return refused(err),
    };
    if let Err(err) = tc::add_clsact(LO) {
        return Status::Missing(crate::error_chain(&err).to_string());
    }
    let direction = tc::Direction::Ingress;
    if let Err(err) = tc::attach(LO, direction, tc::PRIORITY, prog.as_fd(), "probe") {
        return Status::Missing(crate::error_chain(&err).to_string());
    }
    match tc::filters(LO, direction) {
        Ok(filters)
            if filters
                .iter()
                .any(|f| f.direct_action && f.prog_id.is_some()) =>
        {
            Status::Present
        }
        Ok(_) => Status::Missing("the filter was not kept in direct-action mode".into()),
        Err(err) => Status::Unknown(crate::error_chain(&err).to_string()),
    }
}

/// `union bpf_attr` for BPF_LINK_CREATE.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// XDP through a BPF link, on the loopback in generic mode.
fn xdp_link() -> Status {
    const XDP_PASS: i32 = 2;
    let pass = [
        HAND_ON[0] & 0xffff_ffff | ((XDP_PASS as u32 as u64) << 32),
        HAND_ON[1],
    ];
    let prog = match load_as(BPF_PROG_TYPE_XDP, &pass) {
        Ok(fd) => fd,
        Err(err) => return refused(err),
    };
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: LO,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_SKB_MODE,
    };
    match sys_bpf(BPF_LINK_CREATE, &mut attr) {
        // The link's fd closes here, which detaches it.
        Ok(fd) => {
            // SAFETY: a new file descriptor that nothing else owns.
            drop(unsafe {
                <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32)
            });
            Status::Present
        }
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
            Status::Missing("the kernel cannot link XDP programs".into())
        }
        Err(err) => Status::Unknown(err.to_string()),
    }
}

/// A veth pair in the scratch namespace, up, for the probes that need a real link.
async fn veth_pair(handle: &Handle) -> Result<u32, String> {
    let add = handle
        .link()
        .add(LinkVeth::new("probe0", "probe1").build())
        .execute()
        .await;
    add.map_err(|e| format!("no veth pair to probe on: {e}"))?;
    let mut links = handle.link().get().match_name("probe0").execute();
    let link = links
        .try_next()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the veth pair vanished")?;
    let index = link.header.index;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| e.to_string())?;
    Ok(index)
}

/// A macvlan on the veth.
async fn macvlan(handle: &Handle, veth: &Result<u32, String>) -> Status {
    let parent = match veth {
        Ok(index) => *index,
        Err(why) => return Status::Unknown(why.clone()),
    };
    let msg = LinkMacVlan::new("probe2", parent, MacVlanMode::Private).build();
    match handle.link().add(msg).execute().await {
        Ok(()) => Status::Present,
        Err(err) => Status::Missing(err.to_string()),
    }
}

/// A managed neighbour entry on the veth: the kernel keeps NTF_EXT_MANAGED where it knows
/// it (older kernels ignore the attribute and make a plain entry).
async fn managed_neighbour(handle: &Handle, veth: &Result<u32, String>) -> Status {
    let index = match veth {
        Ok(index) => *index,
        Err(why) => return Status::Unknown(why.clone()),
    };
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let mut request = handle
        .neighbours()
        .add(index, ip)
        .state(NeighbourState::None);
    request
        .message_mut()
        .attributes
        .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
    if let Err(err) = request.execute().await {
        return Status::Missing(err.to_string());
    }
    let mut entries = handle.neighbours().get().execute();
    while let Ok(Some(entry)) = entries.try_next().await {
        let managed = entry.attributes.iter().any(|a| {
            matches!(a, NeighbourAttribute::ExtFlags(flags) if flags.contains(NeighbourExtFlags::Managed))
        });
        if managed {
            return Status::Present;
        }
    }
    Status::Missing("the kernel made a plain entry (no NTF_EXT_MANAGED)".into())
}
