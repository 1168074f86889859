//! `cargo xtask vm-test`: the data plane on kernels older than TCX, for real. Each kernel
//! named ([`KERNELS_ENV`], [`KERNEL_ENV`]; default Debian's Linux 6.1, [`family`]) boots
//! under QEMU (TCG: these machines have no KVM) with an
//! initramfs ([`initramfs`]) that holds the static `egress-router`, the `vmlab` helper,
//! busybox and the lab's modules; its `/init` (`tests/vm/init`) runs the lab's steps
//! (`tests/vm/lab.sh`) and powers the VM off. Each step prints `vm-step: <name>: ok`,
//! `FAILED` or `SKIPPED`; this side relays the console, stops the VM if it overruns
//! [`TIMEOUT`], and fails unless every step of every kernel passed. Nothing is left on the
//! host: the initramfs is built in a temporary directory removed at the end.
//!
//! | module | concern |
//! |---|---|
//! | [`family`] | the kernels a spec names: Debian 12's 6.1, Debian 11's 5.10, Ubuntu 22.04's 5.15 |
//! | [`kernel`] | a kernel's packages: downloaded once, cached, its modules listed |
//! | [`archive`] | another distribution's archive, through apt with a private configuration |
//! | [`initramfs`] | the VM's initramfs: binaries, modules, the lab's scripts |

pub(crate) mod archive;
pub(crate) mod family;
pub(crate) mod initramfs;
pub(crate) mod kernel;

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{image::MUSL, run, step};

/// The backstop: a VM still running after this is stopped (the lab's own commands are
/// bounded far below it).
const TIMEOUT: Duration = Duration::from_secs(600);

/// The kernel cache, under the target directory.
pub(crate) fn cache(target: &Path) -> PathBuf {
    target.join("vm-kernel")
}

/// Names the kernel to boot: a spec of [`family`] (`debian:bookworm`, `debian:bullseye`,
/// `ubuntu:jammy`, `<that>:<package>`, or a package name of the host's apt).
pub(crate) const KERNEL_ENV: &str = "EGRESS_VM_KERNEL";

/// Names several kernels, comma-separated, booted one after another with the same
/// binaries; over [`KERNEL_ENV`].
pub(crate) const KERNELS_ENV: &str = "EGRESS_VM_KERNELS";

/// The kernels to boot: [`KERNELS_ENV`], else [`KERNEL_ENV`], else [`family::DEFAULT`].
pub(crate) fn specs() -> Result<Vec<family::Spec>> {
    let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let text = var(KERNELS_ENV)
        .or_else(|| var(KERNEL_ENV))
        .unwrap_or_else(|| family::DEFAULT.to_owned());
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(family::Spec::parse)
        .collect()
}

/// What a step of the lab reported.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    step: String,
    verdict: String,
}

pub(crate) fn test(root: &Path, target: &Path) -> Result<()> {
    let specs = specs()?;
    let kernels = step("the VMs' kernels", || {
        specs
            .iter()
            .map(|spec| kernel::ensure(&cache(target), spec))
            .collect::<Result<Vec<_>>>()
    })?;
    step("build egress-router and vmlab (release, static)", || {
        run(Command::new("cargo")
            .args(["build", "--release", "--target", MUSL])
            .args(["--package", "egress-user", "--bin", "egress-router"])
            .args(["--package", "egress-tests", "--bin", "vmlab"])
            // As `cargo xtask image` builds it: the same artifacts serve both.
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols"))
    })?;
    let release = target.join(MUSL).join("release");
    let mut summary = Vec::new();
    let mut failures = 0;
    for kernel in &kernels {
        let started = Instant::now();
        let outcomes = boot_lab(root, kernel, &release);
        let seconds = started.elapsed().as_secs_f64();
        let line = match &outcomes {
            Ok(outcomes) => {
                let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed()).collect();
                let mut line = format!(
                    "vm-test: Linux {} ({}): {} steps, {} passed, {} failed or skipped, in {seconds:.0} s",
                    kernel.release,
                    kernel.package,
                    outcomes.len(),
                    outcomes.len() - failed.len(),
                    failed.len(),
                );
                for outcome in &failed {
                    line.push_str(&format!(
                        "\nvm-test:   {}: {}",
                        outcome.step, outcome.verdict
                    ));
                }
                if outcomes.is_empty() {
                    line.push_str(
                        "\nvm-test:   the VM reported no step (did it boot? its console is above)",
                    );
                }
                if outcomes.is_empty() || !failed.is_empty() {
                    failures += 1;
                }
                line
            }
            Err(err) => {
                failures += 1;
                format!(
                    "vm-test: Linux {} ({}): FAILED in {seconds:.0} s: {err:#}",
                    kernel.release, kernel.package
                )
            }
        };
        println!("{line}");
        summary.push(line);
    }
    if kernels.len() > 1 {
        println!("vm-test: {} kernels:", kernels.len());
        for line in &summary {
            println!("{line}");
        }
    }
    if failures > 0 {
        bail!(
            "{failures} of {} kernels did not pass every step",
            kernels.len()
        );
    }
    Ok(())
}

/// The initramfs for `kernel`, then the VM booted with it: what its steps reported.
fn boot_lab(root: &Path, kernel: &kernel::Kernel, release: &Path) -> Result<Vec<Outcome>> {
    let work = TempDir::new()?;
    let archive = step(&format!("initramfs for {}", kernel.release), || {
        initramfs::build(
            &initramfs::Contents {
                kernel,
                binaries: &[release.join("egress-router"), release.join("vmlab")],
                scripts: &root.join("tests/vm"),
            },
            work.path(),
        )
    })?;
    step(&format!("boot {} under QEMU (TCG)", kernel.release), || {
        boot(&kernel.vmlinuz(), &archive)
    })
}

/// Boots the VM, relays its console, and returns what the steps reported.
fn boot(vmlinuz: &Path, initramfs: &Path) -> Result<Vec<Outcome>> {
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "1024", "-smp", "2"])
        .args(["-nodefaults", "-display", "none", "-serial", "stdio"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=4"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (cargo xtask setup installs it)")?;
    let stdout = qemu.stdout.take().context("qemu's console")?;
    let (lines, console) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + TIMEOUT;
    let mut outcomes = Vec::new();
    let mut finished = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match console.recv_timeout(left) {
            Ok(line) => {
                // The serial console ends lines with CR LF.
                let line = line.trim_end_matches('\r');
                println!("vm| {line}");
                if let Some(outcome) = outcome(line) {
                    outcomes.push(outcome);
                }
                finished |= line.starts_with("vm-done:");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = qemu.kill();
                let _ = qemu.wait();
                bail!("the VM ran over {} s and was stopped", TIMEOUT.as_secs());
            }
        }
    }
    let status = qemu.wait()?;
    if !finished {
        bail!("the VM ended ({status}) before its lab did");
    }
    Ok(outcomes)
}

impl Outcome {
    /// `ok`, with the step's time after it.
    fn passed(&self) -> bool {
        self.verdict == "ok" || self.verdict.starts_with("ok ")
    }
}

/// `vm-step: <name>: <verdict>` (not the `start` line).
fn outcome(line: &str) -> Option<Outcome> {
    let (step, verdict) = line.strip_prefix("vm-step: ")?.split_once(": ")?;
    (verdict != "start").then(|| Outcome {
        step: step.to_owned(),
        verdict: verdict.to_owned(),
    })
}

/// A temporary directory removed on Drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("egress-vm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_lines_give_outcomes() {
        assert_eq!(
            outcome("vm-step: init: FAILED"),
            Some(Outcome {
                step: "init".to_owned(),
                verdict: "FAILED".to_owned()
            })
        );
        assert_eq!(outcome("vm-step: init: start"), None);
        assert!(outcome("vm-step: lab: ok (5.3 s)").unwrap().passed());
        assert!(
            !outcome("vm-step: agent: SKIPPED (needs init)")
                .unwrap()
                .passed()
        );
        assert_eq!(outcome("[    1.2] random kernel line"), None);
    }
}
