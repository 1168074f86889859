//! Project tasks. `cargo xtask setup|build|image|test|vm-test|demo|bench|fuzz|soak`; every task but `setup`
//! runs `setup` first, which costs a few seconds when everything is present.
//! `build`, `test`, `demo`, `bench`, `fuzz` and `soak` live in this file.
//!
//! | module | concern |
//! |---|---|
//! | `setup` | the toolchain bootstrap: what building and testing need, installed where missing |
//! | `image` | `cargo xtask image` |
//! | `tally` | the test totals of a run and the rules a run must pass (`MIN_TESTS`) |
//! | `hostcheck` | the check that the suite left the host as it was |
//! | `layout` | the tree's shape: no import cycle, long files listed with their reason |
//! | `doctables` | every module in its parent's table |
//! | `doclinks` | every link of the docs resolves |
//! | `license` | one license statement: the LICENSE files, Cargo, the BPF objects, README.md |
//! | `vm` | `cargo xtask vm-test`: the lab on an older kernel under QEMU |

#[cfg(test)]
mod doclinks;
#[cfg(test)]
mod doctables;
mod hostcheck;
mod image;
#[cfg(test)]
mod layout;
#[cfg(test)]
mod license;
mod setup;
mod tally;
mod vm;

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use tally::{Tally, run_tallied};

#[derive(Parser)]
#[command(about = "egress-router project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what a fresh machine lacks: nightly rust-src, bpf-linker built against the
    /// nightly's LLVM, and the Debian packages of the tests, demo and benchmarks.
    Setup,
    /// Build the self-contained `egress-router` binary (release) with its BPF object.
    Build,
    /// Build the OCI image `egress-router:<version>` from scratch: one layer, one static
    /// binary as the entrypoint (buildah; no base image is pulled). Prints its size.
    Image,
    /// Run everything CI runs: fmt, clippy (host crates and the eBPF crates), unit tests,
    /// BPF_PROG_TEST_RUN tests, netns end-to-end tests and the image in podman, the tests
    /// that attach once more with tc (`EGRESS_ROUTER_ATTACH=tc`), and the VM test on Linux
    /// 6.1 (`vm-test`). Needs root.
    Test {
        /// Only run tests whose name contains this string (fmt and clippy still run).
        filter: Option<String>,
    },
    /// Boot Debian's Linux 6.1 (no TCX) under QEMU with a small initramfs and run the lab
    /// there: every program through the verifier, `features`, init (attached with tc), the
    /// agent, traffic, a restart that keeps an open connection, teardown, node mode serving
    /// one instance and its teardown; on a kernel where pod mode cannot run, its refusal.
    /// Prints the kernel's version and each step's verdict. `EGRESS_VM_KERNEL=ubuntu:jammy`
    /// (5.15), `debian:bullseye` (5.10) or a package boots another kernel;
    /// `EGRESS_VM_KERNELS` several, comma-separated.
    VmTest,
    /// Run the demo in a netns lab and show what happened. Needs root.
    Demo,
    /// Benchmark egress-router against the classic iptables egress router and a stateless
    /// BPF forwarder in netns labs; writes BENCHMARKS.md, bench/results.json and
    /// bench/chart.svg. Needs root; about 30 minutes with the defaults.
    Bench {
        /// Arguments for the bench binary (`--rounds`, `--measure`, ...; see `-- --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fuzz the data plane longer than CI does (tests/src/fuzz/): generated and mutated
    /// frames through pod mode's three IPv4 programs with BPF_PROG_TEST_RUN. Needs root.
    Fuzz {
        /// Seed (default: a new one, printed; pass it again to replay a failure).
        #[arg(long)]
        seed: Option<u64>,
        /// Frames to run (CI runs 30,000 with a fixed seed).
        #[arg(long, default_value_t = 3_000_000)]
        frames: u64,
    },
    /// Soak an instance in a netns lab (tests/tests/ops/soak.rs) with mixed churn, agent
    /// restarts, reloads and a table under pressure, then check that no established flow was
    /// lost, the table holds only whole live flows, memory stayed flat and the host is as it
    /// was. Needs root.
    Soak {
        /// Minutes of churn (CI runs 45 seconds).
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root).context("entering the workspace root")?;
    let target = target_dir()?;
    match cli.task {
        Task::Setup => {
            setup::ensure()?;
            setup::ensure_vm(&target)
        }
        Task::Build => {
            setup::ensure()?;
            cargo(&["build", "--release", "--package", "egress-user", "--bins"])?;
            println!("built {}", target.join("release/egress-router").display());
            Ok(())
        }
        Task::Image => {
            setup::ensure()?;
            setup::ensure_image()?;
            image::build(&target).map(drop)
        }
        Task::Test { filter } => {
            setup::ensure()?;
            setup::ensure_image()?;
            if filter.is_none() {
                setup::ensure_vm(&target)?;
            }
            test(&root, &target, filter.as_deref())
        }
        Task::VmTest => {
            setup::ensure()?;
            setup::ensure_image()?;
            setup::ensure_vm(&target)?;
            vm::test(&root, &target)
        }
        Task::Bench { args } => {
            setup::ensure()?;
            setup::ensure_bench()?;
            bench(&root, &target, &args)
        }
        Task::Fuzz { seed, frames } => {
            setup::ensure()?;
            require_root("the fuzzer loads BPF programs")?;
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
            println!(
                "fuzz: seed {seed}, {frames} frames (replay: cargo xtask fuzz --seed {seed} --frames {frames})"
            );
            step("fuzz", || {
                run(Command::new("cargo")
                    .args([
                        "test",
                        "--release",
                        "--package",
                        "egress-tests",
                        "--test",
                        "bpf",
                    ])
                    .args(["--", "fuzz::", "--nocapture"])
                    .env("EGRESS_FUZZ_SEED", seed.to_string())
                    .env("EGRESS_FUZZ_FRAMES", frames.to_string()))
            })
        }
        Task::Soak { minutes } => {
            setup::ensure()?;
            require_root("the soak builds network namespaces and loads BPF programs")?;
            cargo(&["build", "--package", "egress-user", "--bins"])?;
            hostcheck::remove_stale_labs();
            let before = hostcheck::Snapshot::take()?;
            let seconds = (minutes * 60.0).round().max(10.0) as u64;
            let result = step("soak", || {
                run(Command::new("cargo")
                    .args(["test", "--package", "egress-tests", "--test", "ops"])
                    .args(["--", "soak::", "--nocapture"])
                    .env("EGRESS_SOAK_SECONDS", seconds.to_string())
                    .env("EGRESS_ROUTER_BIN", target.join("debug/egress-router")))
            });
            let leaks = step("host left as it was", || before.settled());
            result?;
            leaks
        }
        Task::Demo => {
            setup::ensure()?;
            cargo(&["build", "--package", "egress-user", "--bins"])?;
            let bin = target.join("debug/egress-router");
            step("demo", || {
                run(Command::new("cargo")
                    .args([
                        "run",
                        "--quiet",
                        "--package",
                        "egress-tests",
                        "--bin",
                        "demo",
                    ])
                    .env("EGRESS_ROUTER_BIN", &bin))
            })
        }
    }
}

fn test(root: &Path, target: &Path, filter: Option<&str>) -> Result<()> {
    require_root("the tests load BPF programs and build network namespaces")?;
    let started = Instant::now();
    step("cargo fmt --check", || cargo(&["fmt", "--all", "--check"]))?;
    step("clippy (host crates)", || {
        cargo(&[
            "clippy",
            "--workspace",
            "--exclude",
            "egress-ebpf",
            "--exclude",
            "egress-lab-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    step("clippy (eBPF crates)", || {
        run(Command::new("rustup")
            .args(["run", setup::NIGHTLY, "cargo", "clippy", "--release"])
            .args(["--package", "egress-ebpf", "--package", "egress-lab-ebpf"])
            .args(["--target", "bpfel-unknown-none"])
            .args(["-Z", "build-std=core", "--target-dir"])
            .arg(target.join("ebpf-clippy"))
            .args(["--", "-D", "warnings"])
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                "--cfg=bpf_target_arch=\"x86_64\"",
            )
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER"))
    })?;
    step("build egress-router", || {
        cargo(&["build", "--package", "egress-user", "--bins"])
    })?;
    // The container runtime test runs the image as a kubelet would.
    let image = image::build(target)?;
    hostcheck::remove_stale_labs();
    let before = hostcheck::Snapshot::take()?;
    let bin = target.join("debug/egress-router");
    let mut tally = Tally::default();
    let tests = step("cargo test", || {
        let mut cmd = Command::new("cargo");
        // Every test binary runs, so the totals count them all.
        cmd.args([
            "test",
            "--no-fail-fast",
            "--workspace",
            "--exclude",
            "egress-ebpf",
            "--exclude",
            "egress-lab-ebpf",
        ])
        .env("EGRESS_ROUTER_BIN", &bin)
        .env("EGRESS_ROUTER_IMAGE", &image);
        if let Some(filter) = filter {
            cmd.args(["--", filter]);
        }
        run_tallied(&mut cmd, &mut tally)
    });
    // The tests that attach, once more through the attachment kernels before 6.6 get: a
    // clsact qdisc with cls_bpf filters in place of TCX.
    let tc = match filter {
        Some(_) => Ok(()),
        None => step(
            "cargo test, attaching with tc (EGRESS_ROUTER_ATTACH=tc)",
            || {
                let mut cmd = Command::new("cargo");
                cmd.args(["test", "--no-fail-fast", "--package", "egress-tests"])
                    .args(["--test", "pod", "--test", "ops", "--test", "node", "--"])
                    .args(ATTACH_TC_TESTS)
                    .env("EGRESS_ROUTER_BIN", &bin)
                    .env("EGRESS_ROUTER_ATTACH", "tc");
                run_tallied(&mut cmd, &mut tally)
            },
        ),
    };
    // The router on a kernel before TCX, for real: Debian's Linux 6.1 under QEMU.
    let vm = match filter {
        Some(_) => Ok(()),
        None => step("vm-test (Linux 6.1 under QEMU)", || vm::test(root, target)),
    };
    let leaks = step("host left as it was", || before.settled());
    eprintln!(
        "xtask test: finished in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // One closing line for the whole suite (cargo's last line is a doc-test binary's).
    println!(
        "tests: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    tests?;
    tc?;
    vm?;
    leaks?;
    tally.judge(filter.is_some())
}

/// The modules of the lab suites that `cargo xtask test` runs a second time with
/// `EGRESS_ROUTER_ATTACH=tc`: redirect mode, restarts and adoption without loss, reloads,
/// upgrades, teardown, and node mode serving, failing over and tearing down.
const ATTACH_TC_TESTS: &[&str] = &[
    "redirect::",
    "first_light::",
    "operate::",
    "reload::",
    "upgrade::",
    "teardown::",
    "serve::",
    "instances::",
];

/// Release builds of the router and the bench tools, then the bench binary, with a check
/// that the host is left as it was.
fn bench(root: &Path, target: &Path, args: &[String]) -> Result<()> {
    require_root("the benchmarks load BPF programs and build network namespaces")?;
    step("build (release)", || {
        cargo(&["build", "--release", "--package", "egress-user", "--bins"])?;
        cargo(&["build", "--release", "--package", "egress-tests", "--bins"])
    })?;
    hostcheck::remove_stale_labs();
    let before = hostcheck::Snapshot::take()?;
    let mut command = String::from("cargo xtask bench");
    for arg in args {
        command.push(' ');
        command.push_str(arg);
    }
    let result = step("bench", || {
        run(Command::new(target.join("release/bench"))
            .arg("--out")
            .arg(root)
            .args(["--command", &command])
            .args(args)
            .env("EGRESS_ROUTER_BIN", target.join("release/egress-router")))
    });
    let leaks = step("host left as it was", || before.settled());
    result?;
    leaks
}

/// Cargo's target directory for the workspace (`CARGO_TARGET_DIR`, a config's
/// `build.target-dir`, or `target/`), as `cargo metadata` reports it: the binaries the
/// tests, demo and bench run are found there.
fn target_dir() -> Result<PathBuf> {
    let out = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("reading cargo metadata")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata names no target directory")
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Runs and times one named step.
fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("==> {name}");
    let started = Instant::now();
    let result = f().with_context(|| format!("step `{name}` failed"));
    eprintln!(
        "<== {name}: {} in {:.1} s",
        if result.is_ok() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    result
}

fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new("cargo").args(args))
}

/// Runs a command with inherited stdio and fails if it fails.
fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {}", display(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", display(cmd));
    }
    Ok(())
}

/// Runs a command and returns its stdout, or None if it could not run or failed.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

fn require_root(why: &str) -> Result<()> {
    let uid = output("id", &["-u"]).unwrap_or_default();
    if uid.trim() != "0" {
        bail!("run as root: {why}");
    }
    Ok(())
}
