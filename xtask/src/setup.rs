//! `cargo xtask setup`: install, only where missing, what building and testing need.
//! The recipe (nightly rust-src, a bpf-linker built against the nightly's own LLVM, the
//! Debian packages) was verified on this kind of machine; CONTRIBUTING.md#setting-up lists it.

use std::{env, path::PathBuf, process::Command, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::{output, run};

/// The toolchain that builds the eBPF crates (`-Z build-std` needs nightly).
pub(crate) const NIGHTLY: &str = "nightly";
/// bpf-linker release known to build against the nightly's LLVM here.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages used by the tests, the demo and the benchmarks.
const PACKAGES: &[&str] = &[
    "iproute2",       // ip, tc: the netns lab
    "iputils-ping",   // ping through the data plane
    "bpftool",        // inspecting programs and pinned maps
    "curl",           // HTTP client in the lab
    "netcat-openbsd", // TCP/UDP client and server in the lab
    "iperf3",         // throughput tests and benchmarks
    "tcpdump",        // debugging the lab
    "ethtool",        // GRO on the node lab's uplink, as a NIC has it
    "nftables",       // the classic egress router (benchmark baseline), isolation tests
    "iptables",       // the classic egress router (benchmark baseline)
    "conntrack",      // inspecting the baseline's kernel conntrack
    "netsniff-ng",    // trafgen: small-packet generator for benchmarks
    "dnsmasq-base",   // the lab's nameserver (proxy modes); the binary only, no service
    "openssl",        // the lab's TLS certificate (HTTP proxy CONNECT tests)
    "buildah",        // the image, from scratch (cargo xtask image)
    "podman",         // the container runtime test runs the image as a kubelet would
    "runc",           // podman's runtime here (crun fails on this kernel's cgroup setup)
];

/// Only `cargo xtask bench` needs these: the anchors of the proxy modes' HTTP load.
const BENCH_PACKAGES: &[&str] = &[
    "wrk",         // HTTP load generator
    "nginx-light", // the web server behind the router
    "squid",       // OpenShift's HTTP proxy image runs squid
    "haproxy",     // OpenShift's DNS proxy image runs HAProxy in TCP mode
];

/// The benchmark's extra packages, installed without starting their services: a squid or
/// nginx listening in the root namespace is the last thing a benchmark host wants.
pub(crate) fn ensure_bench() -> Result<()> {
    let missing = missing(BENCH_PACKAGES);
    if missing.is_empty() {
        return Ok(());
    }
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours && output("id", &["-u"]).unwrap_or_default().trim() == "0" {
        // invoke-rc.d asks this script; 101 means "do not start".
        std::fs::write(policy, "#!/bin/sh\nexit 101\n")?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let result = install(&missing);
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    result
}

/// What the image needs beyond [`ensure`]: the static (musl) target of the stable
/// toolchain.
pub(crate) fn ensure_image() -> Result<()> {
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if !installed.lines().any(|t| t.trim() == crate::image::MUSL) {
        eprintln!("xtask setup: adding the {} target", crate::image::MUSL);
        run(Command::new("rustup").args(["target", "add", crate::image::MUSL]))?;
    }
    Ok(())
}

/// Only `cargo xtask vm-test` needs these: the emulator, and what the VM's initramfs is
/// made of and with.
const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86", // the VM (TCG: no KVM on these machines)
    "busybox-static",  // the VM's shell and tools, and depmod for the kernel's modules
    "cpio",            // the initramfs archive
];

/// What `cargo xtask vm-test` needs beyond [`ensure`]: [`VM_PACKAGES`] and the VMs' kernels
/// ([`crate::vm::specs`]), downloaded once into a cache under `target`
/// ([`crate::vm::kernel`]).
pub(crate) fn ensure_vm(target: &std::path::Path) -> Result<()> {
    let missing = missing(VM_PACKAGES);
    if !missing.is_empty() {
        install(&missing)?;
    }
    for spec in crate::vm::specs()? {
        crate::vm::kernel::ensure(&crate::vm::cache(target), &spec)?;
    }
    Ok(())
}

/// The manifests' validator (tests/tests/deploy/manifests.rs): kubernetes-validate from
/// PyPI, which carries the Kubernetes schemas, so the tests download nothing.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

fn python_packages() -> Result<()> {
    let present = Command::new("python3")
        .args(["-c", "import kubernetes_validate, yaml"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !present {
        eprintln!("xtask setup: installing {KUBERNETES_VALIDATE} (PyPI)");
        run(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            KUBERNETES_VALIDATE,
        ]))?;
    }
    Ok(())
}

pub(crate) fn ensure() -> Result<()> {
    let started = Instant::now();
    prepend_cargo_bin_to_path();
    packages()?;
    python_packages()?;
    nightly()?;
    bpf_linker()?;
    eprintln!(
        "xtask setup: all present ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo install` puts bpf-linker in $CARGO_HOME/bin; make sure builds started from here
/// find it even when the caller's PATH lacks that directory.
fn prepend_cargo_bin_to_path() {
    let bin = cargo_home().join("bin");
    let path = env::var_os("PATH").unwrap_or_default();
    if !env::split_paths(&path).any(|dir| dir == bin) {
        let joined = env::join_paths(std::iter::once(bin).chain(env::split_paths(&path)))
            .expect("PATH entries contain no separator");
        // SAFETY: xtask is single-threaded at this point.
        unsafe { env::set_var("PATH", joined) };
    }
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

fn missing(packages: &[&'static str]) -> Vec<&'static str> {
    packages
        .iter()
        .copied()
        .filter(|pkg| {
            output("dpkg-query", &["-W", "-f=${Status}", pkg])
                .is_none_or(|status| !status.contains("install ok installed"))
        })
        .collect()
}

fn packages() -> Result<()> {
    let missing = missing(PACKAGES);
    if missing.is_empty() {
        return Ok(());
    }
    install(&missing)
}

fn install(missing: &[&str]) -> Result<()> {
    eprintln!(
        "xtask setup: installing Debian packages: {}",
        missing.join(" ")
    );
    if output("id", &["-u"]).unwrap_or_default().trim() != "0" {
        bail!(
            "missing Debian packages ({}); run as root or install them",
            missing.join(" ")
        );
    }
    let apt = |args: &[&str]| {
        run(Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(missing);
    apt(&args)
}

fn nightly_sysroot() -> Option<PathBuf> {
    output("rustup", &["run", NIGHTLY, "rustc", "--print", "sysroot"])
        .map(|s| PathBuf::from(s.trim()))
}

fn nightly() -> Result<()> {
    if nightly_sysroot().is_none() {
        eprintln!("xtask setup: installing the {NIGHTLY} toolchain");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
        ]))?;
    }
    let sysroot = nightly_sysroot().context("the nightly toolchain does not run")?;
    let mut components = Vec::new();
    if !sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
    {
        components.push("rust-src");
    }
    // clippy and rustfmt on nightly lint and format the eBPF crates.
    if output("rustup", &["run", NIGHTLY, "cargo", "clippy", "--version"]).is_none() {
        components.push("clippy");
    }
    if !components.is_empty() {
        eprintln!("xtask setup: adding {} to {NIGHTLY}", components.join(", "));
        run(Command::new("rustup")
            .args(["component", "add", "--toolchain", NIGHTLY])
            .args(&components))?;
    }
    Ok(())
}

/// bpf-linker must use the LLVM of the rustc that emits the bitcode. It links the nightly's
/// own libLLVM (there is no matching system LLVM), so a nightly update that removes that
/// library makes it fail to start: then it is rebuilt.
fn bpf_linker() -> Result<()> {
    if output("bpf-linker", &["--version"]).is_some() {
        return Ok(());
    }
    eprintln!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against the {NIGHTLY} LLVM (about a minute)"
    );
    let sysroot = nightly_sysroot().context("the nightly toolchain does not run")?;
    let version = output("rustup", &["run", NIGHTLY, "rustc", "-vV"]).unwrap_or_default();
    let llvm_major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("the nightly rustc reports no LLVM version")?
        .to_owned();
    let lib_dir = sysroot.join("lib");
    let llvm_lib = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .find_map(|name| {
            name.strip_prefix("lib")
                .and_then(|n| n.strip_suffix(".so"))
                .filter(|n| n.starts_with("LLVM-"))
                .map(str::to_owned)
        })
        .with_context(|| format!("no libLLVM-*.so in {}", lib_dir.display()))?;
    let lib_dir = lib_dir.display();
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{llvm_major},no-llvm-linking"))
        .env(
            "RUSTFLAGS",
            format!("-L {lib_dir} -C link-arg=-Wl,-rpath,{lib_dir} -C link-arg=-l{llvm_lib}"),
        ))?;
    if output("bpf-linker", &["--version"]).is_none() {
        bail!("bpf-linker was installed but does not run");
    }
    Ok(())
}
