//! The image run as a kubelet runs a pod's containers: podman (runc, explicit ulimits, as
//! this kernel needs) with every container in the lab's router namespace
//! (`--network ns:`), the init container privileged and run to completion first, then the
//! main container. Never podman's default network: that would add a bridge, firewall rules
//! and forwarding in the root namespace.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};

use crate::{lab::Lab, netns::run_bounded};

/// The image under test: `$EGRESS_ROUTER_IMAGE`, which `cargo xtask test` sets after
/// building it (`cargo xtask image` builds it alone).
pub fn image() -> String {
    std::env::var("EGRESS_ROUTER_IMAGE").unwrap_or_else(|_| {
        panic!("EGRESS_ROUTER_IMAGE is not set: run `cargo xtask test` (or `cargo xtask image` and set it)")
    })
}

/// `podman run` in the lab's router namespace with the settings this machine needs, the
/// variables `env` and nothing else of the caller's environment.
fn podman_run(lab: &Lab, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--runtime", "runc", "run"])
        .arg(format!("--network=ns:/var/run/netns/{}", lab.router.name()))
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
    for (key, value) in env {
        cmd.arg("--env").arg(format!("{key}={value}"));
    }
    cmd
}

/// Runs the init container (privileged, as OpenShift's Deployment has it) to completion;
/// returns its log, or fails with it.
pub fn run_init(lab: &Lab, env: &[(&str, &str)]) -> Result<String> {
    let out = run_bounded(
        podman_run(lab, env)
            .args(["--rm", "--privileged"])
            .arg(image()),
        Duration::from_secs(60),
    )?;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("init container failed ({}): {log}", out.status);
    }
    Ok(log)
}

/// A main container, removed (killed) on Drop.
pub struct Container {
    name: String,
}

impl Container {
    /// Starts the main container `name` with `env`; `privileged` as an agent's, else as
    /// OpenShift runs the proxies' main containers: an arbitrary non-root user, no
    /// capabilities.
    pub fn start(lab: &Lab, name: &str, env: &[(&str, &str)], privileged: bool) -> Result<Self> {
        let name = format!("{}-{name}", lab.router.name());
        let mut cmd = podman_run(lab, env);
        cmd.args(["--detach", "--name", &name]);
        if privileged {
            cmd.arg("--privileged");
        } else {
            cmd.args(["--user", "1000680000:0", "--cap-drop", "all"]);
        }
        let out = run_bounded(cmd.arg(image()), Duration::from_secs(60))?;
        if !out.status.success() {
            bail!(
                "starting {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Self { name })
    }

    /// The container's log so far (stdout and stderr).
    pub fn logs(&self) -> String {
        run_bounded(
            Command::new("podman").args(["logs", &self.name]),
            Duration::from_secs(10),
        )
        .map(|out| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn running(&self) -> Result<bool> {
        let out = run_bounded(
            Command::new("podman").args(["inspect", "--format", "{{.State.Running}}", &self.name]),
            Duration::from_secs(10),
        )
        .context("podman inspect")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "true")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run_bounded(
            Command::new("podman").args(["rm", "--force", "--time", "0", &self.name]),
            Duration::from_secs(30),
        );
    }
}
