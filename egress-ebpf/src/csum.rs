//! Incremental Internet checksum (RFC 1624) for the headers the programs write directly.
//!
//! Values are summed as loaded from the packet (network order in memory, whatever the CPU
//! order): one's-complement sums commute with byte swapping, so no conversion is needed as
//! long as every value of one update is taken the same way.
//!
//! L4 checksums of TCP and UDP are not updated here but with `bpf_l4_csum_replace`, because
//! only the kernel knows whether the field holds a full checksum or (CHECKSUM_PARTIAL) just
//! the pseudo-header sum; see [`crate::nat`].

/// An accumulated checksum difference: the sum of `~old + new` over every changed word.
#[derive(Clone, Copy, Default)]
pub struct Delta(u64);

impl Delta {
    #[inline(always)]
    pub fn u32(&mut self, old: u32, new: u32) {
        self.0 += u64::from(!old) + u64::from(new);
    }

    #[inline(always)]
    pub fn u16(&mut self, old: u16, new: u16) {
        self.0 += u64::from(!old) + u64::from(new);
    }

    #[inline(always)]
    pub fn add(&mut self, other: Delta) {
        self.0 += other.0;
    }

    #[inline(always)]
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// The difference folded to 32 bits, the `__wsum` that `bpf_l4_csum_replace` takes when
    /// its size flag is 0.
    #[inline(always)]
    pub fn wsum(&self) -> u32 {
        let s = (self.0 & 0xffff_ffff) + (self.0 >> 32);
        ((s & 0xffff_ffff) + (s >> 32)) as u32
    }

    /// Applies the difference to a 16-bit checksum field (as loaded from the packet).
    #[inline(always)]
    pub fn apply(&self, check: u16) -> u16 {
        let mut s = u64::from(!check) + self.0;
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        !(s as u16)
    }
}
