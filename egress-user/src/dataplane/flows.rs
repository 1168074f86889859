//! The conntrack tables row by row: reading them, writing and removing entries, and taking
//! an entry out atomically (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`), which the GC judges by what
//! it actually removed. Answered flows are in [`maps::CONNTRACK`], flows waiting for their
//! first answer in [`maps::CT_UNREPLIED`]; both entries of a flow are in the same one.
//! Each address family has its own two tables ([`CtFamily`]); the operations are generic
//! over it, and default to IPv4.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::{HashMap, Map, MapData, MapError};
use egress_common::{FlowEntry, FlowKey};

pub use crate::dataplane::family::CtFamily;
use crate::dataplane::maps::{Error, Flow, MapSet, is_not_found};

/// The update flag that writes only a key that is not there (linux/bpf.h).
const BPF_NOEXIST: u64 = 1;
/// The bpf(2) command that looks an element up and deletes it in one step (linux/bpf.h).
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// One of the two conntrack tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtTable {
    /// Answered flows and the pod's own connections.
    Replied,
    /// Flows waiting for their first answer.
    Unreplied,
}

impl CtTable {
    /// Both tables.
    pub const ALL: [Self; 2] = [Self::Replied, Self::Unreplied];

    /// The IPv4 map's name.
    #[must_use]
    pub const fn map(self) -> &'static str {
        self.map_of::<[u8; 4]>()
    }

    /// The map's name in family `A`.
    #[must_use]
    pub const fn map_of<A: CtFamily>(self) -> &'static str {
        match self {
            Self::Replied => A::REPLIED,
            Self::Unreplied => A::UNREPLIED,
        }
    }
}

/// A map error of table `t` of family `A`, named.
fn err<A: CtFamily>(t: CtTable) -> impl Fn(MapError) -> Error {
    move |source| Error::Map {
        name: t.map_of::<A>(),
        source,
    }
}

impl MapSet {
    /// Table `t` for reading.
    fn table<A: CtFamily>(
        &self,
        t: CtTable,
    ) -> Result<HashMap<&MapData, FlowKey<A>, FlowEntry<A>>, Error> {
        HashMap::try_from(self.map(t.map_of::<A>())?).map_err(err::<A>(t))
    }

    /// Table `t` for writing.
    fn table_mut<A: CtFamily>(
        &mut self,
        t: CtTable,
    ) -> Result<HashMap<&mut MapData, FlowKey<A>, FlowEntry<A>>, Error> {
        HashMap::try_from(self.map_mut(t.map_of::<A>())?).map_err(err::<A>(t))
    }

    /// Both IPv4 conntrack tables: both directions of every flow.
    pub fn conntrack(&self) -> Result<Vec<Flow>, Error> {
        let mut flows = self.conntrack_table(CtTable::Replied)?;
        flows.extend(self.conntrack_table(CtTable::Unreplied)?);
        Ok(flows)
    }

    /// One IPv4 conntrack table.
    pub fn conntrack_table(&self, t: CtTable) -> Result<Vec<Flow>, Error> {
        self.conntrack_table_of(t)
    }

    /// One conntrack table of family `A` (none where the maps have no such table): read in
    /// batches where the kernel can, else entry by entry.
    pub fn conntrack_table_of<A: CtFamily>(&self, t: CtTable) -> Result<Vec<Flow<A>>, Error> {
        let name = t.map_of::<A>();
        if !self.has(name) {
            return Ok(Vec::new());
        }
        if let Map::LruHashMap(data) | Map::HashMap(data) = self.map(name)? {
            match crate::dataplane::batch::read_all::<FlowKey<A>, FlowEntry<A>>(data.fd().as_fd()) {
                Ok(Some(flows)) => return Ok(flows),
                Ok(None) => {}
                Err(io_error) => {
                    return Err(Error::Map {
                        name,
                        source: MapError::SyscallError(aya::sys::SyscallError {
                            call: "bpf_map_lookup_batch",
                            io_error,
                        }),
                    });
                }
            }
        }
        let err = err::<A>(t);
        let table = self.table::<A>(t)?;
        let mut flows = Vec::new();
        for item in table.iter() {
            match item {
                Ok(flow) => flows.push(flow),
                // Deleted by the data plane or GC between the key and its lookup.
                Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(err(source)),
            }
        }
        Ok(flows)
    }

    /// One conntrack entry, if it is there.
    pub fn flow<A: CtFamily>(
        &self,
        t: CtTable,
        key: &FlowKey<A>,
    ) -> Result<Option<FlowEntry<A>>, Error> {
        let err = err::<A>(t);
        let table = self.table::<A>(t)?;
        match table.get(key, 0) {
            Ok(entry) => Ok(Some(entry)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(source) => Err(err(source)),
        }
    }

    /// Writes one conntrack entry (tests age flows with it).
    pub fn put_flow<A: CtFamily>(
        &mut self,
        t: CtTable,
        key: &FlowKey<A>,
        entry: &FlowEntry<A>,
    ) -> Result<(), Error> {
        let err = err::<A>(t);
        let mut table = self.table_mut::<A>(t)?;
        table.insert(key, entry, 0).map_err(err)
    }

    /// Writes one conntrack entry unless its key is there already (an entry the data plane
    /// wrote wins); `false` when it was.
    pub fn put_flow_if_absent<A: CtFamily>(
        &mut self,
        t: CtTable,
        key: &FlowKey<A>,
        entry: &FlowEntry<A>,
    ) -> Result<bool, Error> {
        let err = err::<A>(t);
        let mut table = self.table_mut::<A>(t)?;
        match table.insert(key, entry, BPF_NOEXIST) {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(source) => Err(err(source)),
        }
    }

    /// The IPv4 answered-flows table's capacity in entries (two per flow).
    pub fn conntrack_capacity(&self) -> Result<u32, Error> {
        self.capacity_of::<[u8; 4]>(CtTable::Replied)
    }

    /// The IPv4 unreplied table's capacity in entries (two per flow).
    pub fn unreplied_capacity(&self) -> Result<u32, Error> {
        self.capacity_of::<[u8; 4]>(CtTable::Unreplied)
    }

    /// Table `t` of family `A`'s capacity in entries (0 where the maps have no such table).
    pub fn capacity_of<A: CtFamily>(&self, t: CtTable) -> Result<u32, Error> {
        let name = t.map_of::<A>();
        if !self.has(name) {
            return Ok(0);
        }
        Ok(self.info(name)?.max_entries())
    }

    /// Removes one conntrack entry; `false` when there was none.
    pub fn remove_flow<A: CtFamily>(
        &mut self,
        t: CtTable,
        key: &FlowKey<A>,
    ) -> Result<bool, Error> {
        let err = err::<A>(t);
        let mut table = self.table_mut::<A>(t)?;
        match table.remove(key) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(source) => Err(err(source)),
        }
    }

    /// Removes one conntrack entry and returns it as it was when it was removed (`None`
    /// when there was none): no packet can refresh it between the read and the delete.
    pub fn take_flow<A: CtFamily>(
        &mut self,
        t: CtTable,
        key: &FlowKey<A>,
    ) -> Result<Option<FlowEntry<A>>, Error> {
        let name = t.map_of::<A>();
        let data = match self.map(name)? {
            Map::LruHashMap(data) | Map::HashMap(data) => data,
            _ => return Err(Error::Missing(name)),
        };
        let mut value = FlowEntry::<A>::default();
        // The bpf_attr of the element commands: map fd, key, value, flags.
        #[repr(C)]
        struct ElemAttr {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let attr = ElemAttr {
            map_fd: data.fd().as_fd().as_raw_fd() as u32,
            _pad: 0,
            key: std::ptr::from_ref(key) as u64,
            value: std::ptr::from_mut(&mut value) as u64,
            flags: 0,
        };
        // SAFETY: the attribute points at a key and a value of the map's sizes, alive for
        // the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_AND_DELETE_ELEM,
                std::ptr::from_ref(&attr),
                size_of::<ElemAttr>(),
            )
        };
        if rc == 0 {
            return Ok(Some(value));
        }
        let io_error = std::io::Error::last_os_error();
        if io_error.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        Err(Error::Map {
            name,
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_lookup_and_delete_elem",
                io_error,
            }),
        })
    }

    /// The clients of family `A` whose new flows the data plane refuses, with the flows
    /// each held at the census that limited it.
    pub fn limited_sources<A: CtFamily>(&self) -> Result<Vec<(A, u32)>, Error> {
        let name = A::LIMITED;
        if !self.has(name) {
            return Ok(Vec::new());
        }
        let err = |source| Error::Map { name, source };
        let table = HashMap::<_, A, u32>::try_from(self.map(name)?).map_err(err)?;
        let mut all = Vec::new();
        for item in table.iter() {
            match item {
                Ok(row) => all.push(row),
                Err(MapError::KeyNotFound) => {}
                Err(source) => return Err(err(source)),
            }
        }
        all.sort_unstable();
        Ok(all)
    }

    /// Refuses new flows from `source`, which holds `flows`.
    pub fn limit_source<A: CtFamily>(&mut self, source: A, flows: u32) -> Result<(), Error> {
        let name = A::LIMITED;
        let err = |source| Error::Map { name, source };
        let mut table = HashMap::<_, A, u32>::try_from(self.map_mut(name)?).map_err(err)?;
        table.insert(source, flows, 0).map_err(err)
    }

    /// Lets `source` open flows again.
    pub fn unlimit_source<A: CtFamily>(&mut self, source: A) -> Result<(), Error> {
        let name = A::LIMITED;
        let err = |source| Error::Map { name, source };
        let mut table = HashMap::<_, A, u32>::try_from(self.map_mut(name)?).map_err(err)?;
        match table.remove(&source) {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(err(source)),
        }
    }
}
