//! The lab's BPF object (`egress-lab-ebpf`, built by this crate's build script): the
//! benchmarks' reference programs (`lab_forward`, `lab_return`, `lab_noop`) and the per-core
//! mode's generator, NAPI switch and sink. The product's object holds none of them
//! (`tests/tests/bpf/object.rs` checks it). Their configuration is a `RouterConfig` of their
//! own, written with [`LabBpf::configure`] as the loader writes the data plane's.

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, Map},
    programs::{SchedClassifier, Xdp},
};
use egress_common::RouterConfig;

/// The lab's object: an ELF with BTF, like the product's.
pub static LAB_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lab"));

/// Program names in the lab's object.
pub mod programs {
    /// The lab's ceiling: a stateless forwarder from the pod interface to the egress
    /// interface (no NAT, no conntrack).
    pub const LAB_FORWARD: &str = "lab_forward";
    /// A program that returns at once: the cost of the test harness.
    pub const LAB_NOOP: &str = "lab_noop";
    /// The ceiling's way back, from the egress interface to the pod interface (TC ingress of
    /// the egress interface).
    pub const LAB_RETURN: &str = "lab_return";
    /// The per-core mode's traffic generator (XDP, run with BPF_PROG_TEST_RUN in
    /// live-frames mode).
    pub const LAB_XDP_GEN: &str = "lab_xdp_gen";
    /// An XDP program that passes everything, which puts a veth's receive path in NAPI.
    pub const LAB_XDP_PASS: &str = "lab_xdp_pass";
    /// The per-core mode's counter and drop of the router's output (TC egress of the node's
    /// uplink).
    pub const LAB_SINK: &str = "lab_sink";
    /// Every program of the lab's object.
    pub const ALL: [&str; 6] = [
        LAB_FORWARD,
        LAB_NOOP,
        LAB_RETURN,
        LAB_XDP_GEN,
        LAB_XDP_PASS,
        LAB_SINK,
    ];
}

/// Map names in the lab's object.
pub mod maps {
    /// The lab's configuration, one `RouterConfig` at index 0: the forwarder's interfaces,
    /// the generator's target (`egress_ifindex`), the sink's translated source.
    pub const LAB_CONFIG: &str = "LAB_CONFIG";
    /// The per-core generator's template frame, `[u8; LAB_FRAME_LEN]` at index 0.
    pub const LAB_FRAME: &str = "LAB_FRAME";
    /// The per-core sink's per-CPU counts, `u64` at index 0 (frames of the UDP load with the
    /// expected source) and 1 (any other source).
    pub const LAB_SINK: &str = "LAB_SINK";
    /// The generator's pacing, a `u32` at index 0: iterations of an empty `bpf_loop` before
    /// each frame.
    pub const LAB_PACE: &str = "LAB_PACE";
    /// Size of [`LAB_FRAME`]'s value: at least the generator's headers (42 bytes).
    pub const LAB_FRAME_LEN: usize = 64;
}

/// The lab's object, loaded (its programs are loaded on first use).
pub struct LabBpf {
    ebpf: Ebpf,
}

impl LabBpf {
    /// Loads the object: its maps are created, no program is verified yet.
    pub fn load() -> Result<Self> {
        let ebpf = EbpfLoader::new()
            .load(LAB_OBJECT)
            .context("loading the lab's BPF object")?;
        Ok(Self { ebpf })
    }

    /// Writes the programs' configuration.
    pub fn configure(&mut self, cfg: &RouterConfig) -> Result<()> {
        let mut config = Array::<_, RouterConfig>::try_from(self.map(maps::LAB_CONFIG)?)?;
        config.set(0, *cfg, 0)?;
        Ok(())
    }

    /// A TC program by name, loaded.
    pub fn program(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name} in the lab's object"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()
                .with_context(|| format!("loading the lab's {name}"))?;
        }
        Ok(prog)
    }

    /// An XDP program by name, loaded.
    pub fn xdp_program(&mut self, name: &str) -> Result<&mut Xdp> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name} in the lab's object"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()
                .with_context(|| format!("loading the lab's {name}"))?;
        }
        Ok(prog)
    }

    /// A map by name.
    pub fn map(&mut self, name: &str) -> Result<&mut Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("no map {name} in the lab's object"))
    }
}
