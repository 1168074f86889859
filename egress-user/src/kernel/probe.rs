//! Probes that ask the kernel directly: program and map types and helpers (aya's probes,
//! which load a minimal program and read the verifier's answer, as libbpf and bpftool do),
//! and a few of our own made of a handful of instructions. Nothing here outlives the probe.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};

/// How a feature's presence is found out.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Probe {
    Program(ProgramType),
    Map(MapType),
    /// A helper, called from a program of this type.
    Helper(ProgramType, BpfHelper),
    /// A loop the verifier must prove bounded (Linux 5.3).
    BoundedLoop,
    /// A global variable in a `.bss`-like array map (Linux 5.2).
    GlobalData,
    /// BTF loaded into the kernel, for the maps' field names.
    Btf,
    /// `BPF_MAP_LOOKUP_BATCH` on a hash map.
    MapBatch,
    /// `BPF_MAP_LOOKUP_AND_DELETE_ELEM` on an LRU hash map (Linux 5.14; before, queues and
    /// stacks only).
    LookupAndDelete,
    /// `BPF_PROG_TEST_RUN` of a TC program.
    TestRun,
    /// The bpf filesystem type.
    Bpffs,
    /// Probes that need an interface: in a network namespace of their own.
    Scratch(Scratch),
}

/// The probes [`super::scratch`] answers, in a network namespace of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scratch {
    Tcx,
    ClsBpf,
    XdpLink,
    Macvlan,
    ManagedNeighbour,
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "kebab-case")]
pub enum Status {
    Present,
    /// Missing, with what the kernel said.
    Missing(String),
    /// The probe could not tell (no privileges, say): treated as present, so the real use
    /// reports what fails.
    Unknown(String),
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// The kernel's ENOTSUPP (not in libc: it never reaches user space but from bpf(2)).
const ENOTSUPP: i32 = 524;

/// What the probe behind `probe` finds. Scratch probes are answered by
/// [`super::scratch`].
pub(crate) fn status(probe: Probe) -> Status {
    let yes_no = |present: bool, why: &str| {
        if present {
            Status::Present
        } else {
            Status::Missing(why.to_owned())
        }
    };
    match probe {
        Probe::Program(kind) => match is_program_supported(kind) {
            Ok(present) => yes_no(present, "the kernel refuses the program type"),
            Err(err) => Status::Unknown(err.to_string()),
        },
        Probe::Map(kind) => match is_map_supported(kind) {
            Ok(present) => yes_no(present, "the kernel refuses the map type"),
            Err(err) => Status::Unknown(err.to_string()),
        },
        Probe::Helper(kind, helper) => match is_helper_supported(kind, helper) {
            Ok(present) => yes_no(present, "the verifier does not know the helper"),
            Err(err) => Status::Unknown(err.to_string()),
        },
        Probe::GlobalData => yes_no(
            aya::features().bpf_global_data(),
            "the kernel refuses a program reading a global",
        ),
        Probe::Btf => yes_no(aya::features().btf().is_some(), "the kernel refuses BTF"),
        Probe::BoundedLoop => match load(&BOUNDED_LOOP) {
            Ok(_) => Status::Present,
            Err(Refused::Verifier(log)) => Status::Missing(log),
            Err(Refused::Io(err)) => Status::Unknown(err.to_string()),
        },
        Probe::TestRun => test_run(),
        Probe::MapBatch => map_batch(),
        Probe::LookupAndDelete => lookup_and_delete(),
        Probe::Bpffs => match std::fs::read_to_string("/proc/filesystems") {
            Ok(list) => yes_no(
                list.lines()
                    .any(|l| l.split_whitespace().last() == Some("bpf")),
                "no bpf in /proc/filesystems",
            ),
            Err(err) => Status::Unknown(format!("reading /proc/filesystems: {err}")),
        },
        Probe::Scratch(_) => Status::Unknown("needs a scratch namespace".into()),
    }
}

/// One BPF instruction.
const fn insn(code: u8, dst: u8, off: i16, imm: i32) -> u64 {
    (code as u64) | ((dst as u64) << 8) | ((off as u16 as u64) << 16) | ((imm as u32 as u64) << 32)
}

const MOV64_IMM: u8 = 0xb7;
const ADD64_IMM: u8 = 0x07;
const JLT_IMM: u8 = 0xa5;
const EXIT: u8 = 0x95;

/// `r0 = 0; do r0 += 1 while r0 < 4; return r0`: refused before Linux 5.3 ("back-edge").
const BOUNDED_LOOP: [u64; 4] = [
    insn(MOV64_IMM, 0, 0, 0),
    insn(ADD64_IMM, 0, 0, 1),
    insn(JLT_IMM, 0, -2, 4),
    insn(EXIT, 0, 0, 0),
];

/// `return TC_ACT_UNSPEC`: a TC program that hands every packet on. Also what the scratch
/// probes attach.
pub(crate) const HAND_ON: [u64; 2] = [insn(MOV64_IMM, 0, 0, -1), insn(EXIT, 0, 0, 0)];

/// Why a load failed.
pub(crate) enum Refused {
    /// The verifier's log (its last line).
    Verifier(String),
    /// The syscall itself failed (no privileges, say).
    Io(io::Error),
}

/// `union bpf_attr` for BPF_PROG_LOAD, as far as the probes need it.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

pub(crate) fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, correctly laid out bpf_attr prefix of the given size; the
    // kernel zero-extends the rest.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads `insns` as a TC program.
pub(crate) fn load(insns: &[u64]) -> Result<OwnedFd, Refused> {
    load_as(BPF_PROG_TYPE_SCHED_CLS, insns)
}

/// Loads `insns` as a program of type `prog_type`.
pub(crate) fn load_as(prog_type: u32, insns: &[u64]) -> Result<OwnedFd, Refused> {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the syscall returned a new file descriptor that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(err)
            if err.raw_os_error() == Some(libc::EINVAL)
                || err.raw_os_error() == Some(libc::EACCES) =>
        {
            let text = String::from_utf8_lossy(&log);
            let last = text
                .trim_end_matches('\0')
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("refused")
                .to_owned();
            Err(Refused::Verifier(last))
        }
        Err(err) => Err(Refused::Io(err)),
    }
}

/// `union bpf_attr` for BPF_PROG_TEST_RUN.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

fn test_run() -> Status {
    let prog = match load(&HAND_ON) {
        Ok(fd) => fd,
        Err(Refused::Verifier(log)) => return Status::Unknown(log),
        Err(Refused::Io(err)) => return Status::Unknown(err.to_string()),
    };
    let frame = [0u8; 64];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    match sys_bpf(BPF_PROG_TEST_RUN, &mut attr) {
        Ok(_) => Status::Present,
        Err(err) if matches!(err.raw_os_error(), Some(libc::EINVAL | ENOTSUPP)) => {
            Status::Missing(err.to_string())
        }
        Err(err) => Status::Unknown(err.to_string()),
    }
}

/// `union bpf_attr` for BPF_MAP_CREATE.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `union bpf_attr` for the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// A map of `map_type` with four entries of `u32` keys and values.
fn small_map(map_type: u32) -> io::Result<OwnedFd> {
    let mut create = MapCreateAttr {
        map_type,
        key_size: 4,
        value_size: 4,
        max_entries: 4,
        ..MapCreateAttr::default()
    };
    let fd = sys_bpf(BPF_MAP_CREATE, &mut create)?;
    // SAFETY: a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn map_batch() -> Status {
    let map = match small_map(BPF_MAP_TYPE_HASH) {
        Ok(map) => map,
        Err(err) => return Status::Unknown(err.to_string()),
    };
    let (mut keys, mut values, mut out) = ([0u32; 4], [0u32; 4], 0u32);
    let mut attr = BatchAttr {
        out_batch: std::ptr::from_mut(&mut out) as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: 4,
        map_fd: map.as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    match sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
        // An empty map answers ENOENT: the command is there.
        Ok(_) => Status::Present,
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Status::Present,
        Err(err) if matches!(err.raw_os_error(), Some(libc::EINVAL | ENOTSUPP)) => {
            Status::Missing(err.to_string())
        }
        Err(err) => Status::Unknown(err.to_string()),
    }
}

/// `union bpf_attr` for the element commands.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The GC takes a conntrack entry out atomically (`MapSet::take_flow`). An absent key
/// answers ENOENT where the command takes hash maps; before Linux 5.14, ENOTSUPP (it took
/// queues and stacks only).
fn lookup_and_delete() -> Status {
    let map = match small_map(BPF_MAP_TYPE_LRU_HASH) {
        Ok(map) => map,
        Err(err) => return Status::Unknown(err.to_string()),
    };
    let (key, mut value) = (0u32, 0u32);
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: std::ptr::from_ref(&key) as u64,
        value: std::ptr::from_mut(&mut value) as u64,
        ..ElemAttr::default()
    };
    match sys_bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) {
        Ok(_) => Status::Present,
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Status::Present,
        Err(err) if err.raw_os_error() == Some(ENOTSUPP) => {
            Status::Missing("ENOTSUPP: the kernel takes it on queues and stacks only".into())
        }
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => Status::Missing(format!(
            "the kernel takes it on queues and stacks only ({err})"
        )),
        Err(err) => Status::Unknown(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_are_encoded_as_the_kernel_reads_them() {
        // r0 = -1: opcode 0xb7, dst r0, off 0, imm 0xffffffff.
        assert_eq!(HAND_ON[0], 0xffff_ffff_0000_00b7);
        // if r0 < 4 goto -2: off 0xfffe.
        assert_eq!(BOUNDED_LOOP[2], 0x0000_0004_fffe_00a5);
    }
}
