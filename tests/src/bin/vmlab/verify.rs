//! `vmlab verify`: every program of the product's BPF object loaded on the running kernel,
//! one at a time, as the product loads them (aya, the object's BTF and line info), so a
//! verifier failure of one program does not hide the others'. Each failure is reported
//! with the kernel's errno, the last lines of the verifier's log and the last source line
//! the log names (from the object's BTF line info).

use std::time::Instant;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader, VerifierLogLevel,
    programs::{Program, ProgramError, ProgramInfo},
};
use egress_common::{maps, programs};

use crate::stats;

/// Every program the product loads: pod mode (IPv4, IPv6), node mode, the GC sweep.
pub(crate) const PRODUCT: [&str; 12] = [
    programs::POD_INGRESS,
    programs::EGRESS_INGRESS,
    programs::EGRESS_EGRESS,
    programs::POD_INGRESS6,
    programs::EGRESS_INGRESS6,
    programs::EGRESS_EGRESS6,
    programs::NODE_FORWARD,
    programs::NODE_FORWARD6,
    programs::NODE_REPLY,
    programs::NODE_REPLY6,
    programs::NODE_XDP,
    programs::CT_SWEEP,
];

/// Lines of the verifier's log shown for a failure (its end holds the reason).
const LOG_TAIL: usize = 8;

/// Loads each program of `object` (all of [`PRODUCT`] when `names` is empty); Ok(false) if
/// any failed. `trace`: lines of the instruction-level log shown for each failure.
pub(crate) fn run(object: &[u8], names: &[String], with_stats: bool, trace: usize) -> Result<bool> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("verify: kernel {}", release.trim());
    // The statistics and the error only: a log of every instruction walked can outgrow
    // the largest buffer aya offers, and 6.1 keeps a log's beginning, not its end.
    let mut ebpf =
        load_object(object, VerifierLogLevel::STATS).context("creating the object's maps")?;
    let selected: Vec<&str> = if names.is_empty() {
        PRODUCT.to_vec()
    } else {
        names.iter().map(String::as_str).collect()
    };
    let mut failed = Vec::new();
    for &name in &selected {
        let started = Instant::now();
        match load(&mut ebpf, name) {
            Ok(info) => println!(
                "verify: {name}: loaded in {:.2} s: {} instructions, {} processed by the verifier",
                started.elapsed().as_secs_f64(),
                info.size_translated().unwrap_or(0) / 8,
                info.verified_instruction_count().unwrap_or(0),
            ),
            Err(err) => {
                println!(
                    "verify: {name}: FAILED after {:.2} s",
                    started.elapsed().as_secs_f64()
                );
                report(&err);
                walk(object, name, trace);
                failed.push(name);
            }
        }
    }
    if with_stats {
        stats::run(object, &ebpf, &selected)?;
    }
    if failed.is_empty() {
        println!("verify: all {} programs loaded", selected.len());
    } else {
        println!(
            "verify: {} of {} programs failed: {}",
            failed.len(),
            selected.len(),
            failed.join(" ")
        );
    }
    Ok(failed.is_empty())
}

/// The object with its maps created, programs not loaded yet; small tables (the VM has
/// 1 GiB, and the verifier does not look at capacities).
fn load_object(object: &[u8], level: VerifierLogLevel) -> Result<Ebpf, aya::EbpfError> {
    let mut loader = EbpfLoader::new();
    loader.verifier_log_level(level);
    for map in [
        maps::CONNTRACK,
        maps::CT_UNREPLIED,
        maps::CONNTRACK6,
        maps::CT_UNREPLIED6,
    ] {
        loader.map_max_entries(map, 1024);
    }
    loader.load(object)
}

/// For a failed program, the verifier's walk: loaded again in a fresh object with the
/// instruction-level log, whose end (if the log fits) shows the last source line walked
/// and the `trace` lines before the rejection.
fn walk(object: &[u8], name: &str, trace: usize) {
    let Ok(mut ebpf) = load_object(object, VerifierLogLevel::DEBUG | VerifierLogLevel::STATS)
    else {
        return;
    };
    let Err(ProgramError::LoadError {
        io_error,
        verifier_log,
    }) = load(&mut ebpf, name)
    else {
        return;
    };
    if io_error.raw_os_error() == Some(libc::ENOSPC) {
        println!("verify:   (the instruction-level log did not fit: no walk to show)");
        return;
    }
    let log = verifier_log.to_string();
    let lines: Vec<&str> = log.lines().collect();
    if let Some(source) = lines.iter().rev().find_map(|l| source_line(l)) {
        println!("verify:   last source line walked: {source}");
    }
    // The statistics close the log; the walk ends before them.
    let end = lines
        .iter()
        .rposition(|l| l.starts_with("verification time"))
        .unwrap_or(lines.len());
    for line in &lines[end.saturating_sub(trace)..end] {
        println!("verify:   walk| {line}");
    }
}

/// Loads one program and returns what the kernel says of it.
fn load(ebpf: &mut Ebpf, name: &str) -> Result<ProgramInfo, ProgramError> {
    let missing = || ProgramError::UnexpectedProgramType;
    match ebpf.program_mut(name).ok_or_else(missing)? {
        Program::SchedClassifier(prog) => {
            prog.load()?;
            prog.info()
        }
        Program::Xdp(prog) => {
            prog.load()?;
            prog.info()
        }
        _ => Err(missing()),
    }
}

/// The kernel's message for a failed load: errno, the end of the log, and the last source
/// line the log names.
fn report(err: &ProgramError) {
    let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = err
    else {
        println!("verify:   {err}");
        return;
    };
    println!("verify:   BPF_PROG_LOAD: {io_error}");
    let log = verifier_log.to_string();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    if let Some(source) = lines.iter().rev().find_map(|l| source_line(l)) {
        println!("verify:   source line in the message: {source}");
    }
    for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
        println!("verify:   | {line}");
    }
}

/// The source text of a verifier log line that carries one (`; text`, or `N: ; text`).
fn source_line(line: &str) -> Option<&str> {
    let rest = line.trim_start();
    let rest = rest
        .split_once(": ;")
        .filter(|(insn, _)| insn.chars().all(|c| c.is_ascii_digit()))
        .map_or(rest.strip_prefix(';'), |(_, text)| Some(text))?;
    Some(rest.trim()).filter(|text| !text.is_empty())
}
