//! The layout this build expects of each map: what makes a map of a running (possibly
//! older) data plane reusable by this build.

use aya::{
    EbpfLoader,
    maps::{MapError, MapInfo, MapType},
};
use egress_common::{
    Claim, FRAGMENTS_MAX, FlowEntry, FlowEntry6, FlowKey, FlowKey6, FragKey, FragKey6, FragPorts,
    MAX_RULES, NodeHop, NodeUplink, PacketCount, RULES_CAPACITY, RouterConfig, RouterConfig6,
    RuleAddrs, RuleAddrs6, RuleKey, RuleTarget, RuleTarget6, UNREPLIED_SHARE, maps,
};

/// Why a map cannot be used by this build.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("map {0} is not one of this build's")]
    Unknown(&'static str),
    #[error("reading the type of map {name}")]
    Type {
        name: &'static str,
        source: MapError,
    },
    #[error(
        "map {name} has an incompatible layout ({found}; this build expects {expected}): \
         it was created by an incompatible version"
    )]
    Mismatch {
        name: &'static str,
        found: String,
        expected: String,
    },
    #[error("map {name} holds {found} entries; this build needs {expected}")]
    Capacity {
        name: &'static str,
        found: u32,
        expected: u32,
    },
    #[error("map {name} was sized for an instance {}", if *.ipv6 { "with IPv6" } else { "without IPv6" })]
    Family { name: &'static str, ipv6: bool },
}

/// The layout this build expects of a map: what makes an existing map reusable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Layout {
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}, key {} B, value {} B",
            self.map_type, self.key_size, self.value_size
        )
    }
}

const fn size<T>() -> u32 {
    size_of::<T>() as u32
}

/// The expected layout of each map in [`maps::ALL`] and [`maps::ALL6`].
#[must_use]
pub fn layout(name: &str) -> Option<Layout> {
    let (map_type, key_size, value_size) = match name {
        maps::STATS | maps::RULE_STATS => (MapType::PerCpuArray, 4, size::<PacketCount>()),
        maps::CONFIG => (MapType::Array, 4, size::<RouterConfig>()),
        maps::RULES => (MapType::Hash, size::<RuleKey>(), size::<RuleTarget>()),
        maps::RULE_ADDRS => (MapType::Hash, size::<RuleKey>(), size::<RuleAddrs>()),
        maps::CONNTRACK | maps::CT_UNREPLIED => {
            (MapType::LruHash, size::<FlowKey>(), size::<FlowEntry>())
        }
        maps::CT_LIMITED => (MapType::Hash, 4, 4),
        maps::CLAIM => (MapType::Array, 4, size::<Claim>()),
        // A prefix length and the address.
        maps::CLIENT_NETS => (MapType::LpmTrie, 8, 1),
        maps::CLIENT_NETS6 => (MapType::LpmTrie, 20, 1),
        maps::FRAGMENTS => (MapType::LruHash, size::<FragKey>(), size::<FragPorts>()),
        maps::CONFIG6 => (MapType::Array, 4, size::<RouterConfig6>()),
        maps::RULES6 => (MapType::Hash, size::<RuleKey>(), size::<RuleTarget6>()),
        maps::CONNTRACK6 | maps::CT_UNREPLIED6 => {
            (MapType::LruHash, size::<FlowKey6>(), size::<FlowEntry6>())
        }
        maps::CT_LIMITED6 => (MapType::Hash, 16, 4),
        maps::FRAGMENTS6 => (MapType::LruHash, size::<FragKey6>(), size::<FragPorts>()),
        maps::RULE_ADDRS6 => (MapType::Hash, size::<RuleKey>(), size::<RuleAddrs6>()),
        maps::NODE_PODS => (MapType::Hash, 4, 4),
        maps::NODE_SOURCES => (MapType::Hash, 4, 4),
        maps::NODE_SOURCES6 => (MapType::Hash, 16, 4),
        maps::NODE_HOPS => (MapType::Array, 4, size::<NodeHop>()),
        maps::NODE_UPLINK => (MapType::Array, 4, size::<NodeUplink>()),
        maps::NODE_STATS => (MapType::PerCpuArray, 4, size::<PacketCount>()),
        _ => return None,
    };
    Some(Layout {
        map_type,
        key_size,
        value_size,
    })
}

/// Checks that an existing map can be used by this build.
pub fn check_layout(name: &'static str, info: &MapInfo) -> Result<(), LayoutError> {
    let expected = layout(name).ok_or(LayoutError::Unknown(name))?;
    let found = Layout {
        map_type: info
            .map_type()
            .map_err(|source| LayoutError::Type { name, source })?,
        key_size: info.key_size(),
        value_size: info.value_size(),
    };
    if found == expected {
        Ok(())
    } else {
        Err(LayoutError::Mismatch {
            name,
            found: found.to_string(),
            expected: expected.to_string(),
        })
    }
}

/// Entries of an unreplied table for a conntrack capacity of `conntrack_flows`: a quarter
/// of the flows (at least 64), two entries each.
pub(crate) fn unreplied_entries(conntrack_flows: u32) -> u32 {
    (conntrack_flows / UNREPLIED_SHARE)
        .max(64)
        .saturating_mul(2)
}

/// The IPv6 maps whose size says whether their instance has IPv6.
const SIZED6: [&str; 6] = [
    maps::CONNTRACK6,
    maps::CT_UNREPLIED6,
    maps::RULES6,
    maps::CT_LIMITED6,
    maps::FRAGMENTS6,
    maps::RULE_ADDRS6,
];

/// Checks that an existing IPv6 map was sized for an instance that has IPv6 as this one
/// (`ipv6`) does: one without took one entry each ([`size_ipv6_maps`]). A map of the other
/// kind is replaced: an instance that gains IPv6 needs full tables (the placeholders hold
/// no flows), and one that loses it gives their memory back.
pub fn check_family(name: &'static str, info: &MapInfo, ipv6: bool) -> Result<(), LayoutError> {
    if SIZED6.contains(&name) && (info.max_entries() > 1) != ipv6 {
        return Err(LayoutError::Family {
            name,
            ipv6: info.max_entries() > 1,
        });
    }
    Ok(())
}

/// Sizes the IPv6 maps: as the IPv4 ones for an instance with IPv6, else one entry each
/// (the kernel preallocates hash maps, and an IPv4 router should not pay for IPv6 tables).
pub(crate) fn size_ipv6_maps(loader: &mut EbpfLoader<'_>, conntrack_flows: u32, ipv6: bool) {
    let (flows, unreplied, rules, limited, fragments, names, doomed, census) = if ipv6 {
        (
            conntrack_flows.saturating_mul(2),
            unreplied_entries(conntrack_flows),
            RULES_CAPACITY,
            maps::CT_LIMITED_MAX,
            FRAGMENTS_MAX,
            MAX_RULES,
            maps::CT_DOOMED_MAX,
            maps::CT_CENSUS_MAX,
        )
    } else {
        (1, 1, 1, 1, 1, 1, 1, 1)
    };
    loader.map_max_entries(maps::CONNTRACK6, flows);
    loader.map_max_entries(maps::CT_UNREPLIED6, unreplied);
    loader.map_max_entries(maps::RULES6, rules);
    loader.map_max_entries(maps::CT_LIMITED6, limited);
    loader.map_max_entries(maps::FRAGMENTS6, fragments);
    loader.map_max_entries(maps::RULE_ADDRS6, names);
    // The GC sweep's IPv6 lists (not pinned: each agent has its own).
    loader.map_max_entries(maps::CT_DOOMED6, doomed);
    loader.map_max_entries(maps::CT_CENSUS6, census);
}
