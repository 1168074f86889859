//! The maps of one data plane, however they were found: from a fresh load, from pins, or by
//! ID from the programs attached to the interfaces. Everything that reads or reconciles
//! state (the agent, `status`, `conntrack`, `stats`, metrics) goes through [`MapSet`], so it
//! works the same with or without a running agent.

use std::{collections::BTreeMap, io, net::IpAddr, path::Path};

use aya::maps::{Array, HashMap, Map, MapData, MapError, MapInfo, MapType, PerCpuArray};
use egress_common::{
    DropReason, FlowEntry, FlowKey, MAX_RULE_ADDRS, PacketCount, RULE_STATS_LEN, RouterConfig,
    RuleAddrs, RuleKey, RuleTarget, Stat, drop_stat_index, maps,
};

use crate::dataplane::{
    family::CtFamily,
    layout::{LayoutError, check_layout},
    stats::Stats,
};

/// Errors of map access. [`Error::Map`] is the one "map NAME" error: aya's error, its
/// source, names the call that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("map {name}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("opening pin {path}")]
    OpenPin {
        path: std::path::PathBuf,
        source: MapError,
    },
    #[error("map {0} is missing")]
    Missing(&'static str),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("counting the possible CPUs")]
    Cpus(#[source] io::Error),
    #[error("pinning {path}")]
    Pin {
        path: std::path::PathBuf,
        source: io::Error,
    },
    /// A write failed (`error`, the source) and undoing it failed too (`restore`, named in
    /// the message: a second failure, not the cause of the first).
    #[error(
        "the rules were not written, and writing the previous ones back failed too ({})",
        crate::error_chain(&**.restore)
    )]
    Restore {
        #[source]
        error: Box<Error>,
        restore: Box<Error>,
    },
}

/// A map of a running data plane that this build does not take over, and why.
pub type LeftMap = (&'static str, Error);

/// One row of the conntrack table: a key and its entry.
pub type Flow<A = [u8; 4]> = (FlowKey<A>, FlowEntry<A>);

/// The maps of one data plane, by name.
pub struct MapSet {
    maps: BTreeMap<&'static str, Map>,
}

impl MapSet {
    /// Wraps maps taken from a loaded object or opened from pins or IDs.
    pub fn new(maps: BTreeMap<&'static str, Map>) -> Self {
        Self { maps }
    }

    /// Opens the pins of every map in `dir`, checking each layout: those of [`maps::ALL`]
    /// must be there, those of [`maps::ALL6`] are opened where an instance pinned them.
    pub fn from_pins(dir: &Path) -> Result<Self, Error> {
        let mut set = BTreeMap::new();
        for name in maps::ALL.into_iter().chain(maps::ALL6) {
            let path = dir.join(name);
            if (maps::ALL6.contains(&name) || maps::ADDED_LATER.contains(&name)) && !path.exists() {
                continue;
            }
            let data =
                MapData::from_pin(&path).map_err(|source| Error::OpenPin { path, source })?;
            set.insert(name, checked(name, data)?);
        }
        Ok(Self::new(set))
    }

    /// [`MapSet::from_pins`] of a node agent's directory, with node mode's own maps
    /// ([`maps::NODE`]).
    pub fn from_node_pins(dir: &Path) -> Result<Self, Error> {
        let mut set = Self::from_pins(dir)?;
        for name in maps::NODE {
            let path = dir.join(name);
            let data =
                MapData::from_pin(&path).map_err(|source| Error::OpenPin { path, source })?;
            set.maps.insert(name, checked(name, data)?);
        }
        Ok(set)
    }

    /// Opens maps by ID (those the programs use), keeping those of [`maps::ALL`],
    /// [`maps::ALL6`] and [`maps::NODE`]; every one of [`maps::ALL`] must be there with this
    /// build's layout.
    pub fn from_ids(ids: &[u32]) -> Result<Self, Error> {
        let (set, mut left) = Self::open_ids(ids)?;
        match left.pop() {
            Some((_, err)) => Err(err),
            None => Ok(set),
        }
    }

    /// The maps among `ids` (a running program's, possibly of an earlier build) that this
    /// build can take over: known names with this build's layout. The others are returned
    /// with the reason, for a hand-over that keeps conntrack while a map whose layout
    /// changed (or that is new) starts afresh.
    pub fn compatible_from_ids(ids: &[u32]) -> Result<(Self, Vec<LeftMap>), Error> {
        Self::open_ids(ids)
    }

    fn open_ids(ids: &[u32]) -> Result<(Self, Vec<LeftMap>), Error> {
        let mut set = BTreeMap::new();
        let mut left = Vec::new();
        for &id in ids {
            let info = MapInfo::from_id(id).map_err(|source| Error::Map {
                name: "(by id)",
                source,
            })?;
            let Some(name) = info.name_as_str().and_then(|n| {
                let known = maps::ALL.iter().chain(&maps::ALL6).chain(&maps::NODE);
                known.into_iter().find(|m| **m == n)
            }) else {
                continue;
            };
            let data = MapData::from_id(id).map_err(|source| Error::Map { name, source })?;
            match checked(name, data) {
                Ok(map) => {
                    set.insert(*name, map);
                }
                Err(err @ Error::Layout(LayoutError::Mismatch { .. })) => left.push((*name, err)),
                Err(err) => return Err(err),
            }
        }
        // The IPv6 maps are the IPv6 programs': a data plane without them lacks them.
        for name in maps::ALL {
            if maps::ADDED_LATER.contains(&name) {
                continue;
            }
            if !set.contains_key(name) && !left.iter().any(|(n, _)| *n == name) {
                left.push((name, Error::Missing(name)));
            }
        }
        Ok((Self::new(set), left))
    }

    /// Whether the set holds map `name`.
    #[must_use]
    pub fn has(&self, name: &str) -> bool {
        self.maps.contains_key(name)
    }

    /// A second set of handles on the same maps (e.g. for the metrics server).
    pub fn reopen(&self) -> Result<Self, Error> {
        let ids = self
            .maps
            .keys()
            .map(|name| Ok(self.info(name)?.id()))
            .collect::<Result<Vec<_>, Error>>()?;
        Self::from_ids(&ids)
    }

    pub(super) fn map(&self, name: &'static str) -> Result<&Map, Error> {
        self.maps.get(name).ok_or(Error::Missing(name))
    }

    pub(super) fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, Error> {
        self.maps.get_mut(name).ok_or(Error::Missing(name))
    }

    /// Kernel facts of a map (ID, capacity).
    pub fn info(&self, name: &'static str) -> Result<MapInfo, Error> {
        let data = match self.map(name)? {
            Map::Array(d)
            | Map::PerCpuArray(d)
            | Map::HashMap(d)
            | Map::LruHashMap(d)
            | Map::LpmTrie(d) => d,
            _ => return Err(Error::Missing(name)),
        };
        data.info().map_err(|source| Error::Map { name, source })
    }

    /// Pins every map in `dir`, replacing pins that point elsewhere.
    pub fn pin(&self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Pin {
            path: dir.to_owned(),
            source,
        })?;
        for (name, map) in &self.maps {
            let path = dir.join(name);
            let id = self.info(name)?.id();
            match MapInfo::from_pin(&path) {
                Ok(info) if info.id() == id => continue,
                Ok(_) => std::fs::remove_file(&path).map_err(|source| Error::Pin {
                    path: path.clone(),
                    source,
                })?,
                Err(_) => {}
            }
            map.pin(&path).map_err(|err| Error::Pin {
                path: path.clone(),
                source: io::Error::other(err),
            })?;
        }
        Ok(())
    }

    /// The instance configuration, if the maps have been configured.
    pub fn config(&self) -> Result<Option<RouterConfig>, Error> {
        let name = maps::CONFIG;
        let err = |source| Error::Map { name, source };
        let array = Array::<_, RouterConfig>::try_from(self.map(name)?).map_err(err)?;
        let config = array.get(&0, 0).map_err(err)?;
        Ok((config.pod_ifindex != 0).then_some(config))
    }

    /// The rules, sorted by rule id.
    pub fn rules(&self) -> Result<Vec<(RuleKey, RuleTarget)>, Error> {
        self.rules_of(maps::RULES)
    }

    /// The current addresses of the rules that send to a name, of family `A`.
    pub fn rule_addrs<A: CtFamily>(&self) -> Result<Vec<(RuleKey, Vec<IpAddr>)>, Error> {
        let name = A::RULE_ADDRS;
        let err = |source| Error::Map { name, source };
        let table = HashMap::<_, RuleKey, RuleAddrs<A>>::try_from(self.map(name)?).map_err(err)?;
        let mut all = Vec::new();
        for entry in table.iter() {
            let (key, value) = entry.map_err(err)?;
            let len = (value.len as usize).min(value.addrs.len());
            all.push((key, value.addrs[..len].iter().map(|&a| a.ip()).collect()));
        }
        all.sort_by_key(|(key, _)| (key.port, key.proto));
        Ok(all)
    }

    /// Replaces the addresses of family `A` of the name rule `key` (one atomic update: new
    /// connections see the old list or the new one, never a mix). At most
    /// [`MAX_RULE_ADDRS`] are kept.
    pub fn set_rule_addrs<A: CtFamily>(&mut self, key: &RuleKey, addrs: &[A]) -> Result<(), Error> {
        let name = A::RULE_ADDRS;
        let err = |source| Error::Map { name, source };
        let mut value = RuleAddrs::<A>::default();
        for (slot, addr) in value.addrs.iter_mut().zip(addrs) {
            *slot = *addr;
        }
        value.len = addrs.len().min(MAX_RULE_ADDRS) as u32;
        let mut table =
            HashMap::<_, RuleKey, RuleAddrs<A>>::try_from(self.map_mut(name)?).map_err(err)?;
        table.insert(key, value, 0).map_err(err)
    }

    /// Path and drop counters, summed over CPUs.
    pub fn stats(&self) -> Result<Stats, Error> {
        let name = maps::STATS;
        let err = |source| Error::Map { name, source };
        let array = PerCpuArray::<_, PacketCount>::try_from(self.map(name)?).map_err(err)?;
        let sum = |index: u32| -> Result<PacketCount, Error> {
            let values = array.get(&index, 0).map_err(err)?;
            Ok(values
                .iter()
                .fold(PacketCount::default(), |acc, v| acc.add(*v)))
        };
        Ok(Stats {
            paths: Stat::ALL
                .iter()
                .map(|&stat| Ok((stat, sum(stat as u32)?)))
                .collect::<Result<_, Error>>()?,
            drops: DropReason::ALL
                .iter()
                .map(|&reason| Ok((reason, sum(drop_stat_index(reason))?)))
                .collect::<Result<_, Error>>()?,
        })
    }

    /// Per-rule counters summed over CPUs, indexed by rule id (0 = fallback).
    pub fn rule_stats(&self) -> Result<Vec<PacketCount>, Error> {
        let name = maps::RULE_STATS;
        let err = |source| Error::Map { name, source };
        let array = PerCpuArray::<_, PacketCount>::try_from(self.map(name)?).map_err(err)?;
        (0..array.len().min(RULE_STATS_LEN))
            .map(|i| {
                let values = array.get(&i, 0).map_err(err)?;
                Ok(values
                    .iter()
                    .fold(PacketCount::default(), |acc, v| acc.add(*v)))
            })
            .collect()
    }
}

/// A lookup or delete of a key that is not (or no longer) in the map. aya reports a lookup
/// miss as `KeyNotFound` but a delete miss as the syscall's ENOENT.
pub fn is_not_found(err: &MapError) -> bool {
    match err {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn checked(name: &'static str, data: MapData) -> Result<Map, Error> {
    let info = data.info().map_err(|source| Error::Map { name, source })?;
    check_layout(name, &info)?;
    let map = match info
        .map_type()
        .map_err(|source| Error::Map { name, source })?
    {
        MapType::Array => Map::Array(data),
        MapType::PerCpuArray => Map::PerCpuArray(data),
        MapType::Hash => Map::HashMap(data),
        MapType::LruHash => Map::LruHashMap(data),
        MapType::LpmTrie => Map::LpmTrie(data),
        _ => return Err(Error::Missing(name)),
    };
    Ok(map)
}
