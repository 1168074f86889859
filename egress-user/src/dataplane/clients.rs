//! The client networks (`CLIENT_NETS`, `CLIENT_NETS6`): the prefixes whose addresses may
//! open flows, and more specific ones where no client can be.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::lpm_trie::{Key, LpmTrie};
use egress_common::maps;

use crate::dataplane::maps::{Error, MapSet};

/// One prefix of the client networks: clients may come from it (`allow`) or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientNet {
    pub addr: IpAddr,
    pub prefix: u8,
    pub allow: bool,
}

impl MapSet {
    /// Makes the client networks `nets`: every prefix written (a changed verdict
    /// overwritten) before those no longer wanted are removed, so no client is refused in
    /// between.
    pub fn set_client_nets(&mut self, nets: &[ClientNet]) -> Result<(), Error> {
        let v4: Vec<(Key<[u8; 4]>, u8)> = nets
            .iter()
            .filter_map(|n| match n.addr {
                IpAddr::V4(ip) => Some((
                    Key::new(u32::from(n.prefix), masked4(ip, n.prefix).octets()),
                    u8::from(n.allow),
                )),
                IpAddr::V6(_) => None,
            })
            .collect();
        let v6: Vec<(Key<[u8; 16]>, u8)> = nets
            .iter()
            .filter_map(|n| match n.addr {
                IpAddr::V6(ip) => Some((
                    Key::new(u32::from(n.prefix), masked6(ip, n.prefix).octets()),
                    u8::from(n.allow),
                )),
                IpAddr::V4(_) => None,
            })
            .collect();
        self.reconcile(maps::CLIENT_NETS, &v4)?;
        self.reconcile(maps::CLIENT_NETS6, &v6)
    }

    fn reconcile<K: aya::Pod + PartialEq>(
        &mut self,
        name: &'static str,
        wanted: &[(Key<K>, u8)],
    ) -> Result<(), Error> {
        let err = |source| Error::Map { name, source };
        let mut trie = LpmTrie::<_, K, u8>::try_from(self.map_mut(name)?).map_err(err)?;
        for (key, allow) in wanted {
            trie.insert(key, allow, 0).map_err(err)?;
        }
        let stale: Vec<Key<K>> = trie
            .keys()
            .filter_map(Result::ok)
            .filter(|key| {
                !wanted
                    .iter()
                    .any(|(w, _)| w.prefix_len() == key.prefix_len() && w.data() == key.data())
            })
            .collect();
        for key in &stale {
            trie.remove(key).map_err(err)?;
        }
        Ok(())
    }
}

fn masked4(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(u32::from(ip) & mask)
}

fn masked6(ip: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0);
    Ipv6Addr::from(u128::from(ip) & mask)
}
