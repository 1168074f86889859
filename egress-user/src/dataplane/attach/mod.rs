//! Attaching a program of the table ([`crate::dataplane::programs`]) to its interface,
//! finding it there, and detaching it: every attach, detach and query of the data plane
//! goes through here, whatever the hook, mode or family.
//!
//! A TC program is attached in the one [`Kind`] there is today, TCX without a link
//! (`tcx`): the interface owns it, so it keeps forwarding after this process (e.g. an
//! init container, whose bpffs dies with it) is gone, and a program of an earlier run at
//! the same hook, found by its name, is replaced in place. (A TCX link, aya's default, is
//! detached with its last fd or pin.) `node_xdp` is held by an XDP link pinned with the
//! node's maps (`xdp`): it goes with its pin.
//!
//! | module | concern |
//! |---|---|
//! | `tcx` | the raw TCX attach, detach and query syscalls |
//! | [`tc`] | the clsact qdisc and cls_bpf filters over netlink, where the kernel has no TCX |
//! | `xdp` | the uplink's XDP link, pinned with the node's maps |

pub mod tc;
mod tcx;
mod xdp;

use std::{io, os::fd::AsFd as _, path::Path};

use aya::programs::{ProgramInfo, SchedClassifier, TcAttachType, Xdp, loaded_programs};

use crate::{
    dataplane::{
        error::{DiscoverError, Error},
        programs::{self, Hook, Interfaces, Mode, Program},
    },
    network::{error::Error as NetworkError, interface::ifindex},
};

/// How an interface holds a program at a TC hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// TCX without a link (Linux 6.6+).
    Tcx,
}

impl Kind {
    /// Its name in `status`: `tcx`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
        }
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

/// The IDs of the programs interface `ifindex` holds at TC hook `hook` (of any owner), in
/// run order; none at the XDP hook, whose program is held by a link.
pub fn program_ids(ifindex: u32, hook: Hook) -> io::Result<Vec<u32>> {
    match tc_type(hook) {
        Some(attach_type) => tcx::query(ifindex, attach_type),
        None => Ok(Vec::new()),
    }
}

/// The program at `program`'s hook of interface `ifindex` under its name or its former
/// name, if any. An interface that is gone has none.
pub fn attached(ifindex: u32, program: &Program) -> Result<Option<Attachment>, DiscoverError> {
    let ids = match program_ids(ifindex, program.hook) {
        Ok(ids) => ids,
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
        Err(err) => return Err(DiscoverError::Tcx(err)),
    };
    for id in ids {
        match program_info(id) {
            Ok(info) if info.name_as_str().is_some_and(|n| program.is_named(n)) => {
                return Ok(Some(Attachment {
                    kind: Kind::Tcx,
                    info,
                }));
            }
            Ok(_) | Err(DiscoverError::ProgramGone(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(None)
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

/// Attaches `prog`, loaded, as `program` to interface `iface` in the current network
/// namespace, in place of the program at its hook of an earlier run (atomically, no gap).
/// The XDP link is pinned in `pin_dir` (see `xdp::attach`).
pub fn attach(
    prog: &mut aya::programs::Program,
    program: &Program,
    iface: &str,
    pin_dir: Option<&Path>,
) -> Result<(), Error> {
    let name = program.name;
    let index = ifindex(iface).ok_or_else(|| NetworkError::NoInterface(iface.to_owned()))?;
    let Some(attach_type) = tc_type(program.hook) else {
        let prog: &mut Xdp = prog
            .try_into()
            .map_err(|source| Error::Program { name, source })?;
        return xdp::attach(prog, name, iface, index, pin_dir);
    };
    let prog: &mut SchedClassifier = prog
        .try_into()
        .map_err(|source| Error::Program { name, source })?;
    let attach_error = |source| Error::Attach {
        name,
        iface: iface.to_owned(),
        source,
    };
    let previous = attached(index, program).map_err(|e| Error::Attached {
        iface: iface.to_owned(),
        source: Box::new(e),
    })?;
    let previous = previous
        .map(|found| tcx::prog_fd(found.info.id()))
        .transpose()
        .map_err(attach_error)?;
    let fd = prog
        .fd()
        .map_err(|source| Error::Program { name, source })?
        .as_fd();
    tcx::attach(index, attach_type, fd, previous.as_ref().map(|f| f.as_fd())).map_err(attach_error)
}

/// Detaches `program` from interface `iface` if it is attached there; returns whether it
/// was. The XDP program is not detached here: it goes with its pin.
pub fn detach(iface: &str, program: &Program) -> Result<bool, DiscoverError> {
    let (Some(index), Some(attach_type)) = (ifindex(iface), tc_type(program.hook)) else {
        return Ok(false);
    };
    let Some(found) = attached(index, program)? else {
        return Ok(false);
    };
    let detach_error = |source| DiscoverError::Detach {
        name: program.name,
        iface: iface.to_owned(),
        source,
    };
    let fd = tcx::prog_fd(found.info.id()).map_err(detach_error)?;
    match tcx::detach(index, attach_type, fd.as_fd()) {
        Ok(()) => Ok(true),
        // Gone with its interface in between.
        Err(err) if matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)) => Ok(false),
        Err(source) => Err(detach_error(source)),
    }
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
