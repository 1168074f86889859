//! `cargo xtask image`: the OCI image `egress-router:<version>`, built from scratch with
//! buildah: one layer holding one static (musl) binary, `/egress-router`, as the entrypoint.
//! No base image is pulled from anywhere.
//!
//! One image serves every container of OpenShift's egress router Deployments, because the
//! binary picks its command from the variables the container has (docs/configuration.md#entrypoint):
//! `EGRESS_ROUTER_MODE` (the init container, or a redirect main container in `legacy`),
//! else `EGRESS_HTTP_PROXY_DESTINATION`, else `EGRESS_DNS_PROXY_DESTINATION`.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{output, run, step};

/// The static target: a binary with no dynamic loader or libc to find in the image.
pub(crate) const MUSL: &str = "x86_64-unknown-linux-musl";

/// The image's name, without the tag.
pub(crate) const NAME: &str = "egress-router";

/// Builds the binary and the image; returns its reference (`egress-router:<version>`).
pub(crate) fn build(target: &Path) -> Result<String> {
    let version = version()?;
    let reference = format!("{NAME}:{version}");
    step("build egress-router (release, static)", || {
        run(Command::new("cargo")
            .args(["build", "--release", "--package", "egress-user", "--bins"])
            .args(["--target", MUSL])
            // Symbols stay in the host build; the image ships the stripped binary.
            .env("CARGO_PROFILE_RELEASE_STRIP", "symbols"))
    })?;
    let binary = target.join(MUSL).join("release/egress-router");
    check_static(&binary)?;
    step("image", || assemble(&binary, &reference, &version))?;
    let size: u64 = output(
        "podman",
        &["image", "inspect", "--format", "{{.Size}}", &reference],
    )
    .and_then(|s| s.trim().parse().ok())
    .context("podman image inspect")?;
    println!(
        "image {reference}: {:.1} MB ({size} bytes), one layer, entrypoint /egress-router",
        size as f64 / 1e6
    );
    Ok(reference)
}

/// The package version of egress-user: the image's tag.
fn version() -> Result<String> {
    let json = output("cargo", &["metadata", "--format-version", "1", "--no-deps"])
        .context("cargo metadata")?;
    let metadata: serde_json::Value = serde_json::from_str(&json)?;
    metadata["packages"]
        .as_array()
        .and_then(|packages| {
            packages
                .iter()
                .find(|p| p["name"] == "egress-user")
                .and_then(|p| p["version"].as_str())
        })
        .map(str::to_owned)
        .context("egress-user's version")
}

/// A binary for an image from scratch must need nothing from it: an ELF with no
/// PT_INTERP program header (no dynamic loader to find).
fn check_static(binary: &Path) -> Result<()> {
    let elf = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if elf.get(..5) != Some(b"\x7fELF\x02".as_slice()) {
        bail!("{} is not a 64-bit ELF", binary.display());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("{}: truncated ELF header", binary.display());
    };
    const PT_INTERP: u32 = 3;
    for i in 0..usize::from(phnum) {
        let at = usize::try_from(phoff)? + i * usize::from(phentsize);
        let kind = elf
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
        if kind == Some(PT_INTERP) {
            bail!(
                "{} needs a dynamic loader; the image has none",
                binary.display()
            );
        }
    }
    Ok(())
}

/// buildah from scratch, one copy, the entrypoint and labels, one commit.
fn assemble(binary: &Path, reference: &str, version: &str) -> Result<()> {
    let container = output("buildah", &["from", "scratch"])
        .map(|s| s.trim().to_owned())
        .context("buildah from scratch")?;
    let result = (|| {
        run(Command::new("buildah")
            .args(["copy", "--quiet", "--chmod", "0755", &container])
            .arg(binary)
            .arg("/egress-router"))?;
        run(Command::new("buildah").args([
            "config",
            "--entrypoint",
            r#"["/egress-router"]"#,
            "--cmd",
            "",
            "--label",
            &format!("org.opencontainers.image.version={version}"),
            "--label",
            "org.opencontainers.image.title=egress-router",
            "--label",
            "org.opencontainers.image.description=Dedicated egress source IP for pods: redirect (eBPF), HTTP proxy and DNS proxy modes",
            &container,
        ]))?;
        run(Command::new("buildah").args(["commit", "--quiet", "--rm", &container, reference]))
    })();
    if result.is_err() {
        let _ = Command::new("buildah").args(["rm", &container]).output();
    }
    result
}
