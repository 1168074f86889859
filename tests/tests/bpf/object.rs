//! The embedded BPF object of the released binary holds the product's programs and nothing
//! of the benchmarks: their programs and maps are in the lab's object (`egress-lab-ebpf`),
//! which this crate builds for itself. Parsed, not loaded: no root needed.

use std::collections::BTreeSet;

use egress_common::{maps, programs};
use egress_tests::labbpf;
use egress_user::{EBPF_OBJECT, dataplane::programs::PROGRAMS};

/// The programs and the maps of an object, by name.
fn names(object: &[u8]) -> (BTreeSet<String>, BTreeSet<String>) {
    let object = aya_obj::Object::parse(object).expect("the object parses");
    (
        object.programs.keys().cloned().collect(),
        object.maps.keys().cloned().collect(),
    )
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

#[test]
fn the_product_object_holds_the_product_programs_and_nothing_of_the_lab() {
    let (found, maps_found) = names(EBPF_OBJECT);
    // The programs the table attaches, and the GC's sweep, which the agent runs unattached.
    let product: Vec<&str> = PROGRAMS
        .iter()
        .map(|p| p.name)
        .chain([programs::CT_SWEEP])
        .collect();
    assert_eq!(found, set(&product), "the product object's programs");
    let lab: Vec<&String> = found
        .iter()
        .chain(&maps_found)
        .filter(|name| name.to_lowercase().starts_with("lab"))
        .collect();
    assert!(lab.is_empty(), "the lab's in the product object: {lab:?}");
    let pinned = set(&maps::ALL)
        .into_iter()
        .chain(set(&maps::ALL6))
        .chain(set(&maps::NODE));
    for map in pinned {
        assert!(maps_found.contains(&map), "{map} missing: {maps_found:?}");
    }
}

#[test]
fn the_lab_object_holds_the_lab_programs_and_maps() {
    let (found, maps_found) = names(labbpf::LAB_OBJECT);
    assert_eq!(
        found,
        set(&labbpf::programs::ALL),
        "the lab object's programs"
    );
    for map in [
        labbpf::maps::LAB_CONFIG,
        labbpf::maps::LAB_FRAME,
        labbpf::maps::LAB_SINK,
        labbpf::maps::LAB_PACE,
    ] {
        assert!(maps_found.contains(map), "{map} missing: {maps_found:?}");
    }
}
