//! Builds the product's eBPF object (egress-ebpf) into OUT_DIR, so that the `egress-router`
//! binary can embed it and stay one self-contained file. The recipe is
//! `egress-ebpf-build`'s, shared with the tests crate's lab object.

fn main() {
    egress_ebpf_build::build(egress_ebpf_build::BpfCrate {
        package: "egress-ebpf",
        object: "egress",
        sources: &["egress-ebpf", "egress-common"],
    });
}
