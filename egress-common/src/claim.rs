//! Who holds EGRESS_SOURCE: a claim's identity, as routers tell each other on the egress
//! network.
//!
//! Two routers with one EGRESS_SOURCE use one MAC (the stable MAC derived from the
//! address), so the MAC cannot tell them apart. Every ARP frame a router sends for its
//! address (its probes, its announcements, the data plane's answers to probes) carries a
//! [`ClaimId`] in the Ethernet padding after the ARP payload, a [`TRAILER_LEN`]-byte
//! trailer: hosts ignore it, routers read it. The older claim (the lower [`ClaimId`]) is the
//! owner; both sides compare the same two numbers, so they agree whatever their clocks say.

use bytemuck::{Pod, Zeroable};

/// The trailer's first bytes.
pub const TRAILER_MAGIC: [u8; 4] = *b"ERc1";
/// The trailer's length: the magic, the claim time, the nonce.
pub const TRAILER_LEN: usize = 16;
/// Where the trailer starts in an Ethernet frame: after the header (14 bytes) and the ARP
/// payload for IPv4 over Ethernet (28 bytes).
pub const ARP_TRAILER_OFFSET: usize = 42;

/// A claim of EGRESS_SOURCE: when it was first made (milliseconds since the Unix epoch, by
/// the claimant's clock) and a random nonce, for two claims made in the same millisecond.
/// Ordered by time, then nonce: the lower is the older, and the owner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClaimId {
    pub claimed_at_ms: u64,
    pub nonce: u32,
}

impl ClaimId {
    /// The trailer that carries this claim.
    #[must_use]
    pub fn trailer(self) -> [u8; TRAILER_LEN] {
        let mut t = [0; TRAILER_LEN];
        t[..4].copy_from_slice(&TRAILER_MAGIC);
        t[4..12].copy_from_slice(&self.claimed_at_ms.to_be_bytes());
        t[12..].copy_from_slice(&self.nonce.to_be_bytes());
        t
    }

    /// The claim a trailer carries, if `bytes` starts with one.
    #[must_use]
    pub fn from_trailer(bytes: &[u8]) -> Option<Self> {
        let t: &[u8; TRAILER_LEN] = bytes.get(..TRAILER_LEN)?.try_into().ok()?;
        if t[..4] != TRAILER_MAGIC {
            return None;
        }
        let mut at = [0; 8];
        at.copy_from_slice(&t[4..12]);
        let mut nonce = [0; 4];
        nonce.copy_from_slice(&t[12..]);
        Some(Self {
            claimed_at_ms: u64::from_be_bytes(at),
            nonce: u32::from_be_bytes(nonce),
        })
    }
}

/// Index of this router's own claim in [`crate::maps::CLAIM`], written by the set-up.
pub const CLAIM_OURS: u32 = 0;
/// Index of the last rival the data plane saw claim the address, written by the data plane.
pub const CLAIM_RIVAL: u32 = 1;

/// [`Claim::flags`].
pub mod claim_flags {
    /// The rival's frame carried a claim trailer (another egress-router).
    pub const TRAILER: u32 = 1;
    /// The rival's frame was a probe (it asked, it does not hold the address yet).
    pub const PROBE: u32 = 2;
}

/// One entry of [`crate::maps::CLAIM`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Claim {
    /// [`ClaimId::claimed_at_ms`]; 0: no claim (yet).
    pub claimed_at_ms: u64,
    pub nonce: u32,
    /// [`claim_flags`], for a rival.
    pub flags: u32,
    /// Ours: the egress interface's MAC, the answers' source. A rival's: the frame's.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Ours: when the data plane last answered a probe (`bpf_ktime_get_ns`). A rival's:
    /// when it was seen.
    pub at_ns: u64,
    /// Ours: when the data plane last defended the address against a rival's claim.
    pub defended_ns: u64,
}

impl Claim {
    #[must_use]
    pub const fn id(&self) -> ClaimId {
        ClaimId {
            claimed_at_ms: self.claimed_at_ms,
            nonce: self.nonce,
        }
    }
}

/// The data plane answers probes for EGRESS_SOURCE at most this often (each answer is a
/// broadcast): a flood of probes from the egress network gets at most 50 answers a second.
pub const ANSWER_GAP_NS: u64 = 20_000_000;
/// The data plane defends the address against a rival's claim at most this often, so two
/// routers that both hold it exchange one broadcast a second, not a storm, until the
/// younger steps down.
pub const DEFEND_GAP_NS: u64 = 1_000_000_000;

const _: () = assert!(core::mem::size_of::<Claim>() == 40);
const _: () = assert!(ARP_TRAILER_OFFSET + TRAILER_LEN <= 60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailer_carries_its_claim_and_the_older_claim_is_lower() {
        let old = ClaimId {
            claimed_at_ms: 1_700_000_000_000,
            nonce: 9,
        };
        let new = ClaimId {
            claimed_at_ms: 1_700_000_000_001,
            nonce: 1,
        };
        assert_eq!(ClaimId::from_trailer(&old.trailer()), Some(old));
        assert!(old < new);
        let twin = ClaimId { nonce: 10, ..old };
        assert!(old < twin, "same millisecond: the nonce decides");
        assert_eq!(ClaimId::from_trailer(&[0; 16]), None);
        assert_eq!(ClaimId::from_trailer(&old.trailer()[..15]), None);
    }
}
