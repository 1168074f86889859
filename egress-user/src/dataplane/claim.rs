//! The `CLAIM` map: this router's claim of EGRESS_SOURCE, which the data plane puts in its
//! answers to probes, and the last rival it saw ([`egress_common::claim`]).

use aya::maps::Array;
use egress_common::{CLAIM_OURS, CLAIM_RIVAL, Claim, ClaimId, maps};

use crate::dataplane::maps::{Error, MapSet};

impl MapSet {
    /// This router's claim, if the set-up wrote one (a data plane of an earlier release
    /// has no `CLAIM` map: `None`).
    pub fn claim(&self) -> Result<Option<Claim>, Error> {
        self.claim_at(CLAIM_OURS)
    }

    /// The last other host the data plane saw claim or probe for EGRESS_SOURCE.
    pub fn rival(&self) -> Result<Option<Claim>, Error> {
        self.claim_at(CLAIM_RIVAL)
            .map(|rival| rival.filter(|r| r.at_ns != 0))
    }

    fn claim_at(&self, index: u32) -> Result<Option<Claim>, Error> {
        let name = maps::CLAIM;
        if !self.has(name) {
            return Ok(None);
        }
        let err = |source| Error::Map { name, source };
        let array = Array::<_, Claim>::try_from(self.map(name)?).map_err(err)?;
        let claim = array.get(&index, 0).map_err(err)?;
        Ok((claim.claimed_at_ms != 0 || claim.at_ns != 0).then_some(claim))
    }

    /// Writes this router's claim (`id`, answered from `mac`), from which the data plane
    /// answers probes for EGRESS_SOURCE.
    pub fn set_claim(&mut self, id: ClaimId, mac: [u8; 6]) -> Result<(), Error> {
        let name = maps::CLAIM;
        let err = |source| Error::Map { name, source };
        let mut array = Array::<_, Claim>::try_from(self.map_mut(name)?).map_err(err)?;
        let claim = Claim {
            claimed_at_ms: id.claimed_at_ms,
            nonce: id.nonce,
            mac,
            ..Claim::default()
        };
        array.set(CLAIM_OURS, claim, 0).map_err(err)
    }
}
