//! Facts about the machine and its tools, for the report and the pre-flight checks.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::report::Machine;

pub(crate) fn machine() -> Result<Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let mut commit = command_line("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    if Command::new("git")
        .args([
            "diff",
            "--quiet",
            "HEAD",
            "--",
            ".",
            ":!BENCHMARKS.md",
            ":!bench",
        ])
        .status()
        .is_ok_and(|s| !s.success())
    {
        commit.push_str(" (with local changes)");
    }
    Ok(Machine {
        cpu,
        cpus: std::thread::available_parallelism()?.get(),
        memory_gib: kib / (1 << 20) as f64,
        kernel: command_line("uname", &["-r"])?,
        commit,
    })
}

pub(crate) fn command_line(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

/// The date and time now, UTC, as the report prints it.
pub(crate) fn now_utc() -> Result<String> {
    command_line("date", &["-u", "+%Y-%m-%d %H:%M:%S"])
}
