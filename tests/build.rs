//! Builds the lab's BPF object (egress-lab-ebpf: the benchmarks' reference programs and the
//! per-core harness) into OUT_DIR for `egress_tests::labbpf`, with the recipe the product's
//! object is built with (`egress-ebpf-build`).

fn main() {
    egress_ebpf_build::build(egress_ebpf_build::BpfCrate {
        package: "egress-lab-ebpf",
        object: "lab",
        sources: &["egress-lab-ebpf", "egress-common"],
    });
}
