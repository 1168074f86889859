//! `vmlab verify --stats`: the verifier's statistics of each program (instructions
//! processed, stack depth of each frame), which aya drops when a load succeeds. The object
//! is parsed and relocated again with aya-obj, against the maps aya created, and each
//! program loaded once more by hand with `BPF_LOG_STATS`: the same instructions, BTF, function
//! and line info that aya gives the kernel.

use std::{
    ffi::CString,
    io,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result, bail};
use aya::{Ebpf, maps::Map};
use aya_obj::{
    Object, ProgramSection,
    btf::BtfFeatures,
    generated::{bpf_attr, bpf_cmd, bpf_prog_type},
};

/// The log level that prints only the statistics (and errors).
const BPF_LOG_STATS: u32 = 4;

pub(crate) fn run(object: &[u8], ebpf: &Ebpf, names: &[&str]) -> Result<()> {
    let mut obj = Object::parse(object).context("parsing the object")?;
    // Every kernel this runs on (6.1 and later) has every BTF kind the object uses.
    let features = BtfFeatures::new(true, true, true, true, true, true, true, true);
    let btf = obj
        .fixup_and_sanitize_btf(&features)
        .context("fixing the object's BTF up")?
        .map(|btf| btf.to_bytes())
        .context("the object has no BTF")?;
    let btf_fd = load_btf(&btf).context("BPF_BTF_LOAD")?;
    let text_sections = obj.functions.keys().map(|(section, _)| *section).collect();
    let object_maps = std::mem::take(&mut obj.maps);
    let mut with_fds = Vec::new();
    for (name, map) in &object_maps {
        let fd = ebpf
            .map(name)
            .and_then(map_fd)
            .with_context(|| format!("map {name}"))?;
        with_fds.push((name.as_str(), fd, map));
    }
    obj.relocate_maps(with_fds.into_iter(), &text_sections)
        .context("relocating the maps")?;
    obj.relocate_calls(&text_sections)
        .context("relocating the calls")?;
    for &name in names {
        let Some(program) = obj.programs.get(name) else {
            bail!("no program {name} in the object");
        };
        let prog_type = match program.section {
            ProgramSection::Xdp { .. } => bpf_prog_type::BPF_PROG_TYPE_XDP,
            _ => bpf_prog_type::BPF_PROG_TYPE_SCHED_CLS,
        };
        let function = &obj.functions[&program.function_key()];
        let license = CString::new(obj.license.as_bytes()).unwrap_or_default();
        let func_info = function.func_info.func_info_bytes();
        let line_info = function.line_info.line_info_bytes();
        let mut log = vec![0u8; 1 << 16];
        // SAFETY: all-zero is a valid bpf_attr (the kernel's default for every field).
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: the BPF_PROG_LOAD member of the union, written field by field; every
        // pointer stays valid until the syscall below returns.
        let result = unsafe {
            let u = &mut attr.__bindgen_anon_3;
            u.prog_type = prog_type as u32;
            u.insns = function.instructions.as_ptr() as u64;
            u.insn_cnt = function.instructions.len() as u32;
            u.license = license.as_ptr() as u64;
            u.log_level = BPF_LOG_STATS;
            u.log_buf = log.as_mut_ptr() as u64;
            u.log_size = log.len() as u32;
            u.prog_btf_fd = btf_fd.as_raw_fd() as u32;
            if function.func_info_rec_size > 0 {
                u.func_info = func_info.as_ptr() as u64;
                u.func_info_cnt = function.func_info.len() as u32;
                u.func_info_rec_size = function.func_info_rec_size as u32;
            }
            if function.line_info_rec_size > 0 {
                u.line_info = line_info.as_ptr() as u64;
                u.line_info_cnt = function.line_info.len() as u32;
                u.line_info_rec_size = function.line_info_rec_size as u32;
            }
            sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
        };
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]);
        let figures: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("processed ") || l.starts_with("stack depth"))
            .collect();
        match result {
            Ok(fd) => {
                drop(fd);
                println!(
                    "stats: {name}: {} instructions: {}",
                    function.instructions.len(),
                    figures.join("; ")
                );
            }
            Err(err) => println!(
                "stats: {name}: {} instructions: load failed ({err}): {}",
                function.instructions.len(),
                text.lines().rev().take(3).collect::<Vec<_>>().join(" / ")
            ),
        }
    }
    Ok(())
}

/// The fd of an aya map (every kind holds its MapData).
fn map_fd(map: &Map) -> Option<i32> {
    let data = match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::LpmTrie(d)
        | Map::RingBuf(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::Queue(d)
        | Map::Stack(d)
        | Map::Unsupported(d) => d,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd())
}

fn load_btf(btf: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: the BPF_BTF_LOAD member; `btf` outlives the call.
    unsafe {
        let u = &mut attr.__bindgen_anon_7;
        u.btf = btf.as_ptr() as u64;
        u.btf_size = btf.len() as u32;
        sys_bpf(bpf_cmd::BPF_BTF_LOAD, &mut attr)
    }
}

/// # Safety
/// `attr` must be valid for `cmd`, which must return a new fd on success.
unsafe fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: the caller's promise; the size is the whole union.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as i32,
            std::ptr::from_mut(attr),
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd, owned from here.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}
