//! `egress-router attach`: low level, the pod interface's program alone, maps pinned.

use anyhow::{Context as _, Result};
use clap::Args;
use egress_user::{
    dataplane::{
        bpffs::prepare_bpffs,
        load::{Dataplane, LoadOptions},
    },
    kernel::Plane,
};

use crate::cli::args::{AttachKind, Pins};

/// `attach`'s options.
#[derive(Args)]
pub(crate) struct AttachArgs {
    /// The interface to attach to.
    #[arg(long, default_value = "eth0")]
    pub(crate) interface: String,
    #[command(flatten)]
    pub(crate) pins: Pins,
    #[command(flatten)]
    pub(crate) kernel: AttachKind,
}

pub(crate) fn execute(args: &AttachArgs) -> Result<()> {
    let interface = &args.interface;
    let pin_dir = args.pins.dir();
    args.kernel.ready(Plane::Pod)?;
    prepare_bpffs(&args.pins.root.bpffs).map_err(anyhow::Error::msg)?;
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
