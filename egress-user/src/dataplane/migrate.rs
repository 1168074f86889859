//! Conntrack across a change of its entry layout. A release that appends fields to
//! [`FlowEntry`] would otherwise drop every flow on upgrade (a map's value size is fixed at
//! creation): the earlier table is kept open, the new object gets a table of its own, and
//! the earlier entries are copied in with the new fields zeroed (for TCP: sequence numbers
//! not known yet, learnt from the next packets). The copy runs once before the new
//! programs replace the earlier ones and once after, for the flows created in between;
//! an entry the new programs wrote meanwhile is never overwritten.

use std::path::Path;

use aya::maps::{HashMap, Map, MapData, MapError, MapInfo, MapType};
use bytemuck::Zeroable as _;
use egress_common::{FLOW_ENTRY_PREFIX_SIZES, FlowEntry, FlowKey, maps};

use crate::dataplane::{
    flows::CtTable,
    maps::{Error, MapSet},
};

/// The value size of the earlier layout this build reads (the only one so far).
const EARLIER: usize = FLOW_ENTRY_PREFIX_SIZES[0];

/// Whether a conntrack map with this layout can be migrated into this build's.
#[must_use]
pub fn migratable(info: &MapInfo) -> bool {
    info.map_type().is_ok_and(|t| t == MapType::LruHash)
        && info.key_size() as usize == size_of::<FlowKey>()
        && info.value_size() as usize == EARLIER
}

/// An earlier release's conntrack table, being copied into this build's.
pub struct Migration {
    earlier: Map,
    capacity: u32,
}

impl Migration {
    /// The conntrack table pinned at `path`, if its layout is an earlier one this build
    /// migrates from.
    pub fn from_pin(path: &Path) -> Option<Self> {
        let earlier = MapData::from_pin(path).ok()?;
        let info = earlier.info().ok()?;
        migratable(&info).then(|| Self {
            earlier: Map::LruHashMap(earlier),
            capacity: info.max_entries(),
        })
    }

    /// The earlier table's capacity in entries, which the new one keeps.
    #[must_use]
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Copies the earlier entries that `into` does not hold yet; returns how many.
    pub fn copy(&self, into: &mut MapSet) -> Result<u64, Error> {
        let name = maps::CONNTRACK;
        let err = |source| Error::Map { name, source };
        let table = HashMap::<_, FlowKey, [u8; EARLIER]>::try_from(&self.earlier).map_err(err)?;
        let mut copied = 0;
        for item in table.iter() {
            let (key, old) = match item {
                Ok(row) => row,
                // Deleted between the key and its lookup.
                Err(MapError::KeyNotFound) => continue,
                Err(source) => return Err(err(source)),
            };
            let mut entry = FlowEntry::zeroed();
            bytemuck::bytes_of_mut(&mut entry)[..EARLIER].copy_from_slice(&old);
            if into.put_flow_if_absent(CtTable::Replied, &key, &entry)? {
                copied += 1;
            }
        }
        Ok(copied)
    }
}

/// Pins the conntrack table among a running data plane's maps `ids` at `dir`, if its
/// layout is an earlier one this build migrates from, so that the load finds it there like
/// the pins of an earlier run. `true` when it did.
pub fn pin_earlier(ids: &[u32], dir: &Path) -> Result<bool, Error> {
    let name = maps::CONNTRACK;
    for &id in ids {
        let Ok(info) = MapInfo::from_id(id) else {
            continue;
        };
        if info.name_as_str() != Some(name) || !migratable(&info) {
            continue;
        }
        let data = MapData::from_id(id).map_err(|source| Error::Map { name, source })?;
        let path = dir.join(name);
        data.pin(&path).map_err(|source| Error::Pin {
            path,
            source: std::io::Error::other(source),
        })?;
        return Ok(true);
    }
    Ok(false)
}
