//! Attaching a program of the table ([`crate::dataplane::programs`]) to its interface,
//! finding it there, and detaching it: every attach, detach and query of the data plane
//! goes through here, whatever the hook, mode or family.
//!
//! A TC program is attached in one of two [`Kind`]s, both owned by the interface, so it
//! keeps forwarding after this process (e.g. an init container, whose bpffs dies with it)
//! is gone: TCX without a link (`tcx`, Linux 6.6), or a cls_bpf filter of a clsact qdisc
//! ([`tc`], for older kernels). `--attach` ([`Choice`]) picks one; `auto` takes TCX where
//! the kernel has it. A program of an earlier run at the same hook, found by its name in
//! either kind, is replaced in place (TCX's BPF_F_REPLACE, or the filter written again at
//! its preference), so no packet goes through the hook without one; switching kinds
//! attaches the new one before detaching the old, and TCX runs before clsact, so there is
//! no gap either. (A TCX link, aya's default, is detached with its last fd or pin.)
//! `node_xdp` is held by an XDP link pinned with the node's maps (`xdp`): it goes with its
//! pin.
//!
//! | module | concern |
//! |---|---|
//! | `tcx` | the raw TCX attach, detach and query syscalls |
//! | [`tc`] | the clsact qdisc and cls_bpf filters over netlink, where the kernel has no TCX |
//! | `xdp` | the uplink's XDP link, pinned with the node's maps |

pub mod tc;
mod tcx;
mod xdp;

use std::{
    io,
    os::fd::AsFd as _,
    path::Path,
    str::FromStr,
    sync::{
        OnceLock,
        atomic::{AtomicU8, Ordering},
    },
};

use aya::programs::{ProgramInfo, SchedClassifier, TcAttachType, Xdp, loaded_programs};

use crate::{
    dataplane::{
        error::{DiscoverError, Error},
        programs::{self, Family, Hook, Interfaces, Mode, Program},
    },
    network::{error::Error as NetworkError, interface::ifindex},
};

/// How an interface holds a program at a TC hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// TCX without a link (Linux 6.6+).
    Tcx,
    /// A cls_bpf filter in direct-action mode, on a clsact qdisc.
    Tc,
}

impl Kind {
    /// Its name in `status`: `tcx` or `tc`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Tc => "tc",
        }
    }
}

/// `--attach` (`EGRESS_ROUTER_ATTACH`): how the TC programs are attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Choice {
    /// TCX where the kernel has it, else tc.
    #[default]
    Auto,
    /// TCX, or refuse to start.
    Tcx,
    /// A clsact qdisc with cls_bpf filters, even where TCX is there.
    Tc,
}

impl FromStr for Choice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "auto" => Ok(Self::Auto),
            "tcx" => Ok(Self::Tcx),
            "tc" => Ok(Self::Tc),
            other => Err(format!("{other:?} is not auto, tcx or tc")),
        }
    }
}

/// The process's choice, set once at start by the command line ([`choose`]).
static CHOICE: AtomicU8 = AtomicU8::new(0);

/// Sets how this process attaches its TC programs.
pub fn choose(choice: Choice) {
    CHOICE.store(choice as u8, Ordering::Relaxed);
}

/// Whether the kernel has TCX, asked once.
#[must_use]
pub fn tcx_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(tcx::supported)
}

/// The kind this process attaches TC programs with: the [`choose`]n one, `auto` resolved
/// by the kernel; an error for `tcx` on a kernel without it.
pub fn kind() -> Result<Kind, Error> {
    let choice = match CHOICE.load(Ordering::Relaxed) {
        1 => Choice::Tcx,
        2 => Choice::Tc,
        _ => Choice::Auto,
    };
    match choice {
        Choice::Auto if tcx_supported() => Ok(Kind::Tcx),
        Choice::Auto | Choice::Tc => Ok(Kind::Tc),
        Choice::Tcx if tcx_supported() => Ok(Kind::Tcx),
        Choice::Tcx => Err(Error::NoTcx),
    }
}

/// A program of the table found at its hook.
#[derive(Debug)]
pub struct Attachment {
    pub kind: Kind,
    pub info: ProgramInfo,
}

fn tc_type(hook: Hook) -> Option<TcAttachType> {
    match hook {
        Hook::TcIngress => Some(TcAttachType::Ingress),
        Hook::TcEgress => Some(TcAttachType::Egress),
        Hook::Xdp => None,
    }
}

fn tc_direction(hook: Hook) -> Option<tc::Direction> {
    match hook {
        Hook::TcIngress => Some(tc::Direction::Ingress),
        Hook::TcEgress => Some(tc::Direction::Egress),
        Hook::Xdp => None,
    }
}

/// The preference of `program`'s filter: the IPv6 twin's comes right after the IPv4
/// program's, which hands it IPv6.
#[must_use]
pub fn tc_priority(program: &Program) -> u16 {
    match program.family {
        Family::Ipv6 => tc::PRIORITY + 1,
        Family::Ipv4 | Family::Both => tc::PRIORITY,
    }
}

/// The IDs of the programs interface `ifindex` holds at TC hook `hook` (of any owner, in
/// either kind: TCX's first, as they run first), in run order; none at the XDP hook, whose
/// program is held by a link.
pub fn program_ids(ifindex: u32, hook: Hook) -> io::Result<Vec<u32>> {
    let (Some(attach_type), Some(direction)) = (tc_type(hook), tc_direction(hook)) else {
        return Ok(Vec::new());
    };
    let mut ids = tcx::query(ifindex, attach_type)?;
    let filters = tc::filters(ifindex, direction).map_err(|e| io::Error::other(e.to_string()))?;
    ids.extend(filters.iter().filter_map(|f| f.prog_id));
    Ok(ids)
}

/// The program at `program`'s hook of interface `ifindex` under its name or its former
/// name, in either kind, if any (TCX's first). An interface that is gone has none.
pub fn attached(ifindex: u32, program: &Program) -> Result<Option<Attachment>, DiscoverError> {
    Ok(attached_all(ifindex, program)?.into_iter().next())
}

/// Every attachment of `program` at its hook of interface `ifindex`: one, or during a
/// switch of kinds, two.
fn attached_all(ifindex: u32, program: &Program) -> Result<Vec<Attachment>, DiscoverError> {
    let (Some(attach_type), Some(direction)) = (tc_type(program.hook), tc_direction(program.hook))
    else {
        return Ok(Vec::new());
    };
    let tcx_ids = match tcx::query(ifindex, attach_type) {
        Ok(ids) => ids,
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => return Ok(Vec::new()),
        Err(err) => return Err(DiscoverError::Tcx(err)),
    };
    let priority = tc_priority(program);
    let tc_ids = tc::filters(ifindex, direction)
        .map_err(|source| DiscoverError::Tc {
            what: "listing the tc filters",
            ifindex,
            source,
        })?
        .into_iter()
        .filter(|f| f.priority == priority && f.handle == tc::HANDLE)
        .filter_map(|f| f.prog_id);
    let candidates = tcx_ids
        .into_iter()
        .map(|id| (Kind::Tcx, id))
        .chain(tc_ids.map(|id| (Kind::Tc, id)));
    let mut found = Vec::new();
    for (kind, id) in candidates {
        match program_info(id) {
            Ok(info) if info.name_as_str().is_some_and(|n| program.is_named(n)) => {
                found.push(Attachment { kind, info });
            }
            Ok(_) | Err(DiscoverError::ProgramGone(_)) => {}
            Err(err) => return Err(err),
        }
    }
    // One program per kind at its hook.
    found.dedup_by_key(|a| a.kind);
    Ok(found)
}

/// The loaded program `id`.
pub(crate) fn program_info(id: u32) -> Result<ProgramInfo, DiscoverError> {
    for info in loaded_programs() {
        let info = match info {
            Ok(info) => info,
            // Another program unloaded between its id and its fd (another data plane's
            // teardown on this machine): not the one wanted, or gone itself.
            Err(aya::programs::ProgramError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                continue;
            }
            Err(source) => return Err(DiscoverError::Program { id, source }),
        };
        if info.id() == id {
            return Ok(info);
        }
    }
    Err(DiscoverError::ProgramGone(id))
}

/// What attaching a program did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attached {
    /// The clsact qdisc of the interface was made now, for this program's filter.
    pub created_clsact: bool,
}

/// Attaches `prog`, loaded, as `program` to interface `iface` in the current network
/// namespace in this process's [`kind`], in place of the program at its hook of an earlier
/// run (atomically, no gap); one an earlier run attached in the other kind is detached
/// once this one is in place. The XDP link is pinned in `pin_dir` (see `xdp::attach`).
pub fn attach(
    prog: &mut aya::programs::Program,
    program: &Program,
    iface: &str,
    pin_dir: Option<&Path>,
) -> Result<Attached, Error> {
    let name = program.name;
    let index = ifindex(iface).ok_or_else(|| NetworkError::NoInterface(iface.to_owned()))?;
    let (Some(attach_type), Some(direction)) = (tc_type(program.hook), tc_direction(program.hook))
    else {
        let prog: &mut Xdp = prog
            .try_into()
            .map_err(|source| Error::Program { name, source })?;
        xdp::attach(prog, name, iface, index, pin_dir)?;
        return Ok(Attached::default());
    };
    let kind = kind()?;
    let prog: &mut SchedClassifier = prog
        .try_into()
        .map_err(|source| Error::Program { name, source })?;
    let attach_error = |source| Error::Attach {
        name,
        iface: iface.to_owned(),
        source,
    };
    let earlier = attached_all(index, program).map_err(|e| Error::Attached {
        iface: iface.to_owned(),
        source: Box::new(e),
    })?;
    let fd = prog
        .fd()
        .map_err(|source| Error::Program { name, source })?
        .as_fd();
    let mut done = Attached::default();
    match kind {
        Kind::Tcx => {
            let previous = earlier
                .iter()
                .find(|a| a.kind == Kind::Tcx)
                .map(|found| tcx::prog_fd(found.info.id()))
                .transpose()
                .map_err(attach_error)?;
            tcx::attach(index, attach_type, fd, previous.as_ref().map(|f| f.as_fd()))
                .map_err(attach_error)?;
        }
        Kind::Tc => {
            let tc_error = |source| Error::AttachTc {
                name,
                iface: iface.to_owned(),
                source,
            };
            done.created_clsact = tc::add_clsact(index).map_err(tc_error)?;
            tc::attach(index, direction, tc_priority(program), fd, name).map_err(tc_error)?;
        }
    }
    // An earlier run's program in the other kind: this one is in place, so it goes.
    for other in earlier.iter().filter(|a| a.kind != kind) {
        detach_found(index, iface, program, other).map_err(|e| Error::Attached {
            iface: iface.to_owned(),
            source: Box::new(e),
        })?;
    }
    Ok(done)
}

/// Detaches one attachment of `program` found at interface `index`.
fn detach_found(
    index: u32,
    iface: &str,
    program: &Program,
    found: &Attachment,
) -> Result<bool, DiscoverError> {
    let (Some(attach_type), Some(direction)) = (tc_type(program.hook), tc_direction(program.hook))
    else {
        return Ok(false);
    };
    let detach_error = |source| DiscoverError::Detach {
        name: program.name,
        iface: iface.to_owned(),
        source,
    };
    match found.kind {
        Kind::Tcx => {
            let fd = tcx::prog_fd(found.info.id()).map_err(detach_error)?;
            match tcx::detach(index, attach_type, fd.as_fd()) {
                Ok(()) => Ok(true),
                // Gone with its interface in between.
                Err(err) if matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)) => {
                    Ok(false)
                }
                Err(source) => Err(detach_error(source)),
            }
        }
        Kind::Tc => tc::detach(index, direction, tc_priority(program))
            .map(|()| true)
            .map_err(|source| DiscoverError::Tc {
                what: "removing a tc filter",
                ifindex: index,
                source,
            }),
    }
}

/// Detaches `program` from interface `iface` wherever it is attached there (either kind);
/// returns whether it was. The XDP program is not detached here: it goes with its pin.
pub fn detach(iface: &str, program: &Program) -> Result<bool, DiscoverError> {
    let Some(index) = ifindex(iface) else {
        return Ok(false);
    };
    let mut detached = false;
    for found in attached_all(index, program)? {
        detached |= detach_found(index, iface, program, &found)?;
    }
    Ok(detached)
}

/// Detaches the programs of `mode` from the interfaces of `interfaces`, the last attached
/// first; returns how many there were.
pub fn detach_all(mode: Mode, interfaces: &Interfaces<'_>) -> Result<usize, DiscoverError> {
    let mut detached = 0;
    for program in programs::of(mode).rev() {
        if let Some(iface) = program.interface(interfaces)
            && detach(iface, program)?
        {
            detached += 1;
        }
    }
    Ok(detached)
}

/// The [`egress_common::config_flags`] bits of the clsact qdiscs egress-router owns on
/// `interfaces` once its programs are attached: the ones an earlier run recorded
/// (`running`), and the ones attaching in tc makes now (where an interface has none).
pub fn clsact_flags(interfaces: &Interfaces<'_>, running: u32) -> Result<u32, Error> {
    use egress_common::config_flags::{CLSACT_EGRESS_SIDE, CLSACT_POD_SIDE};
    use programs::Role;
    let mut flags = running & (CLSACT_POD_SIDE | CLSACT_EGRESS_SIDE);
    if kind()? != Kind::Tc {
        return Ok(flags);
    }
    for (role, bit) in [
        (Role::PodInterface, CLSACT_POD_SIDE),
        (Role::HostInterface, CLSACT_POD_SIDE),
        (Role::EgressInterface, CLSACT_EGRESS_SIDE),
        (Role::Uplink, CLSACT_EGRESS_SIDE),
    ] {
        let Some(iface) = interfaces.of(role) else {
            continue;
        };
        let index = ifindex(iface).ok_or_else(|| NetworkError::NoInterface(iface.to_owned()))?;
        let has = tc::has_clsact(index).map_err(|source| Error::Qdiscs {
            iface: iface.to_owned(),
            source,
        })?;
        if !has {
            flags |= bit;
        }
    }
    Ok(flags)
}

/// Removes interface `iface`'s clsact qdisc if egress-router made it (`made`, as the
/// instance recorded it) and no filter of any owner is left on it; returns whether it did.
/// A clsact that holds another owner's filter stays, whoever made it.
pub fn release_clsact(iface: &str, made: bool) -> Result<bool, DiscoverError> {
    let Some(index) = ifindex(iface) else {
        return Ok(false);
    };
    let tc_error = |what| {
        move |source| DiscoverError::Tc {
            what,
            ifindex: index,
            source,
        }
    };
    if !made || !tc::has_clsact(index).map_err(tc_error("listing the qdiscs"))? {
        return Ok(false);
    }
    for direction in [tc::Direction::Ingress, tc::Direction::Egress] {
        let filters = tc::filters(index, direction).map_err(tc_error("listing the tc filters"))?;
        if !filters.is_empty() {
            return Ok(false);
        }
    }
    tc::del_clsact(index).map_err(tc_error("removing the clsact qdisc"))?;
    Ok(true)
}
