//! TCX attachment without a link (`BPF_PROG_ATTACH` with `BPF_TCX_INGRESS`/`BPF_TCX_EGRESS`,
//! Linux 6.6+): the interface owns the program, as it owns a `cls_bpf` filter, so the data
//! plane keeps forwarding after the loader exits, with no pin to keep alive. Unlike a TCX
//! link (what aya creates), nothing detaches it when a file descriptor closes. Unlike
//! `cls_bpf`, the kernel runs it without the clsact qdisc and the classifier walk; the
//! benchmarks measured that walk at about 67 ns per packet on one hook (bench/NOTES.md).
//!
//! aya 0.14 offers only the link form, so the three commands are made here with the raw
//! `bpf(2)` syscall: attach (optionally replacing a given program atomically), detach,
//! and query (the program IDs attached to one hook of an interface).

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use aya::programs::TcAttachType;

const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
/// Replace `replace_bpf_fd` in place instead of adding a program.
const BPF_F_REPLACE: u32 = 1 << 2;
/// More programs than any interface carries in practice.
const QUERY_MAX: usize = 64;

/// `union bpf_attr` for BPF_PROG_ATTACH and BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_ifindex: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    relative_fd: u32,
    expected_revision: u64,
}

/// `union bpf_attr` for BPF_PROG_QUERY.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    count: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// `union bpf_attr` for BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, correctly laid out bpf_attr prefix of the given size; the
    // kernel zero-extends the rest.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn tcx_type(attach_type: TcAttachType) -> u32 {
    match attach_type {
        TcAttachType::Ingress => BPF_TCX_INGRESS,
        _ => BPF_TCX_EGRESS,
    }
}

/// Attaches `prog` to the hook, in place of `replace` (atomically) when given.
pub(super) fn attach(
    ifindex: u32,
    attach_type: TcAttachType,
    prog: BorrowedFd<'_>,
    replace: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_ifindex: ifindex,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: tcx_type(attach_type),
        ..AttachAttr::default()
    };
    if let Some(old) = replace {
        attr.attach_flags = BPF_F_REPLACE;
        attr.replace_bpf_fd = old.as_raw_fd() as u32;
    }
    sys_bpf(BPF_PROG_ATTACH, &mut attr).map(drop)
}

/// Detaches `prog` from the hook.
pub(super) fn detach(
    ifindex: u32,
    attach_type: TcAttachType,
    prog: BorrowedFd<'_>,
) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_ifindex: ifindex,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: tcx_type(attach_type),
        ..AttachAttr::default()
    };
    sys_bpf(BPF_PROG_DETACH, &mut attr).map(drop)
}

/// IDs of the programs attached to the hook without a link (programs held by a TCX link
/// belong to the process that holds the link and are left out), in run order.
pub(super) fn query(ifindex: u32, attach_type: TcAttachType) -> io::Result<Vec<u32>> {
    let mut ids = [0u32; QUERY_MAX];
    let mut links = [0u32; QUERY_MAX];
    let mut attr = QueryAttr {
        target_ifindex: ifindex,
        attach_type: tcx_type(attach_type),
        prog_ids: ids.as_mut_ptr() as u64,
        link_ids: links.as_mut_ptr() as u64,
        count: QUERY_MAX as u32,
        ..QueryAttr::default()
    };
    match sys_bpf(BPF_PROG_QUERY, &mut attr) {
        Ok(_) => {}
        // No TCX entry on this hook yet; or a kernel without TCX (it knows neither the
        // attach type, EINVAL, nor the query's newer fields, E2BIG): nothing there either.
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::ENOENT | libc::EINVAL | libc::E2BIG)
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(err) => return Err(err),
    }
    let n = (attr.count as usize).min(QUERY_MAX);
    Ok(ids[..n]
        .iter()
        .zip(&links[..n])
        .filter(|(_, link)| **link == 0)
        .map(|(id, _)| *id)
        .collect())
}

/// Whether the kernel has TCX (Linux 6.6): it answers a query of the loopback's TCX ingress.
pub(super) fn supported() -> bool {
    let mut ids = [0u32; 1];
    let mut links = [0u32; 1];
    let mut attr = QueryAttr {
        target_ifindex: 1,
        attach_type: BPF_TCX_INGRESS,
        prog_ids: ids.as_mut_ptr() as u64,
        link_ids: links.as_mut_ptr() as u64,
        count: 1,
        ..QueryAttr::default()
    };
    match sys_bpf(BPF_PROG_QUERY, &mut attr) {
        Ok(_) => true,
        Err(err) => matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ENOSPC)),
    }
}

/// A file descriptor of the loaded program `id`.
pub(super) fn prog_fd(id: u32) -> io::Result<OwnedFd> {
    let mut attr = IdAttr {
        id,
        ..IdAttr::default()
    };
    let fd = sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
