//! The instance configuration: one [`RouterConfig`] the loader writes before attaching.

use aya_ebpf::{btf_maps::Array, macros::btf_map};
use egress_common::{RouterConfig, RouterConfig6};

/// The instance's addresses and interfaces, written by the loader before attaching; in
/// node mode, every instance's at its number (the loader sizes the map).
#[btf_map]
static CONFIG: Array<RouterConfig, 1> = Array::new();

/// The IPv6 half of the configuration, written by the loader when EGRESS_SOURCE has an
/// IPv6 address; in node mode, every instance's at its number (the loader sizes the map).
#[btf_map]
static CONFIG6: Array<RouterConfig6, 1> = Array::new();

/// The IPv6 configuration, once written (`None` for an IPv4-only instance).
#[inline(always)]
pub(crate) fn get6() -> Option<&'static RouterConfig6> {
    CONFIG6
        .get(0)
        .filter(|cfg| cfg.egress_source != [0; 16] && cfg.pod_ip != [0; 16])
}

/// The configuration, once the loader has written it (before that, `None`). Its IPv4
/// addresses are unspecified in an instance with IPv6 alone.
#[inline(always)]
pub(crate) fn get() -> Option<&'static RouterConfig> {
    CONFIG.get(0).filter(|cfg| cfg.pod_ifindex != 0)
}

/// Node mode: instance `instance`'s IPv6 configuration, if it has one.
#[inline(always)]
pub(crate) fn get6_at(instance: u32) -> Option<&'static RouterConfig6> {
    CONFIG6
        .get(instance)
        .filter(|cfg| cfg.egress_source != [0; 16] && cfg.pod_ip != [0; 16])
}

/// Node mode: instance `instance`'s configuration, once written.
#[inline(always)]
pub(crate) fn get_at(instance: u32) -> Option<&'static RouterConfig> {
    CONFIG.get(instance).filter(|cfg| cfg.pod_ifindex != 0)
}
