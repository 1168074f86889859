//! Builds a BPF crate of the workspace (`egress-ebpf`, `egress-lab-ebpf`) from a build
//! script: the nightly toolchain, `bpfel-unknown-none` with `-Z build-std=core`, BTF, into
//! `OUT_DIR`, so that the crate whose build script it is can embed the object. Used by
//! `egress-user` (the product's object) and `egress-tests` (the lab's).
//!
//! The nightly toolchain with rust-src and a bpf-linker built against the nightly's LLVM are
//! installed by `cargo xtask setup`. When they are missing, the build fails with one line
//! that says so instead of the nested cargo's wall of errors. (aya-build does the same nested
//! build but relays every line the nested cargo prints as a warning, on every rebuild.)

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const TOOLCHAIN: &str = "nightly";
const TARGET: &str = "bpfel-unknown-none";

/// A BPF crate of the workspace to build.
#[derive(Clone, Copy, Debug)]
pub struct BpfCrate<'a> {
    /// The package name (`egress-ebpf`).
    pub package: &'a str,
    /// The `[[bin]]` name of the crate: the object's file name in `OUT_DIR`.
    pub object: &'a str,
    /// The workspace directories whose changes rebuild it: its own and those of its path
    /// dependencies.
    pub sources: &'a [&'a str],
}

/// From a build script whose package sits at the workspace's top level: builds `krate` into
/// `OUT_DIR/<object>`, or fails the build with the reason (`cargo::error`).
pub fn build(krate: BpfCrate<'_>) {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("the package lives in the workspace");
    for dir in krate.sources {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=PATH");

    if let Err(missing) = preflight() {
        println!("cargo::error={missing}: run `cargo xtask setup` to install the eBPF toolchain");
        return;
    }
    if let Err(err) = nested_build(krate, workspace, &out_dir) {
        println!("cargo::error={err}");
    }
}

/// Returns what is missing of the eBPF toolchain, if anything.
fn preflight() -> Result<(), String> {
    let sysroot = Command::new("rustup")
        .args(["run", TOOLCHAIN, "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .ok_or_else(|| format!("the {TOOLCHAIN} Rust toolchain is not installed"))?;
    if !sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
    {
        return Err(format!(
            "rust-src is missing from the {TOOLCHAIN} toolchain"
        ));
    }
    let on_path = env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join("bpf-linker").is_file()));
    if !on_path {
        return Err("bpf-linker is not on PATH".to_owned());
    }
    Ok(())
}

/// Builds the object with a nested cargo and copies it to `OUT_DIR/<object>`.
fn nested_build(krate: BpfCrate<'_>, workspace: &Path, out_dir: &Path) -> Result<(), String> {
    let BpfCrate {
        package, object, ..
    } = krate;
    // A target dir of its own: sharing the outer one would deadlock on cargo's lock.
    let target_dir = out_dir.join("ebpf-target");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_owned());
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
    ]
    .join("\x1f");
    let output = Command::new("rustup")
        .args(["run", TOOLCHAIN, "cargo", "build", "--quiet", "--release"])
        .args(["--package", package, "--bins", "--target", TARGET])
        .args(["-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(workspace)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        // The outer cargo's compiler and wrappers (clippy-driver under `cargo clippy`) are for
        // the host crates, not for the nightly BPF build.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .output()
        .map_err(|err| format!("running the nightly cargo for {package}: {err}"))?;
    if !output.status.success() {
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            println!("cargo:warning={line}");
        }
        return Err(format!(
            "building {package} for {TARGET} failed (its output is above)"
        ));
    }
    let built = target_dir.join(TARGET).join("release").join(object);
    std::fs::copy(&built, out_dir.join(object))
        .map(drop)
        .map_err(|err| format!("copying {}: {err}", built.display()))
}
