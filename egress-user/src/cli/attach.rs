//! `egress-router attach`: low level, the pod interface's program alone, maps pinned.

use anyhow::{Context as _, Result};
use egress_user::dataplane::{
    bpffs::prepare_bpffs,
    load::{Dataplane, LoadOptions},
};

use crate::cli::Cli;

pub(crate) fn execute(cli: &Cli, interface: &str) -> Result<()> {
    let pin_dir = cli.pin_dir();
    prepare_bpffs(&cli.bpffs).map_err(anyhow::Error::msg)?;
    let mut dp = Dataplane::load(&LoadOptions {
        pin_dir: Some(pin_dir.clone()),
        ..LoadOptions::default()
    })
    .context("loading the data plane")?;
    dp.attach_pod_ingress(interface)
        .with_context(|| format!("attaching to {interface}"))?;
    println!(
        "attached to {interface}; maps pinned in {}",
        pin_dir.display()
    );
    Ok(())
}
