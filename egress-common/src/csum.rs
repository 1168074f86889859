//! Incremental Internet checksum (RFC 1624) for the headers the programs write directly.
//!
//! Values are summed as loaded from the packet (network order in memory, whatever the CPU
//! order): one's-complement sums commute with byte swapping, so no conversion is needed as
//! long as every value of one update is taken the same way.
//!
//! L4 checksums of TCP and UDP are not updated with [`Delta::apply`] but with
//! `bpf_l4_csum_replace` fed [`Delta::wsum`], because only the kernel knows whether the field
//! holds a full checksum or (CHECKSUM_PARTIAL) just the pseudo-header sum.
//!
//! A sum computed from scratch (`bpf_csum_diff` over a header built in place) becomes the
//! field's value with [`fold`], the one fold of the programs.
//!
//! Pure code shared with the BPF programs, so it is tested on the host.

/// A 64-bit one's-complement sum folded to 32 bits: the `__wsum` that `bpf_csum_diff`
/// returns and `bpf_l4_csum_replace` takes.
#[inline(always)]
pub fn wsum(sum: u64) -> u32 {
    let s = (sum & 0xffff_ffff) + (sum >> 32);
    ((s & 0xffff_ffff) + (s >> 32)) as u32
}

/// The checksum field's value (memory order) for a 32-bit one's-complement sum of the data
/// it covers: folded to 16 bits and complemented (the kernel's `csum_fold`).
#[inline(always)]
pub fn fold(sum: u32) -> u16 {
    // In 64 bits: BPF has no 32-bit arithmetic without ALU32, where each 32-bit result
    // costs two more instructions to clear its upper half.
    let s = u64::from(sum);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

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
        wsum(self.0)
    }

    /// Applies the difference to a 16-bit checksum field (as loaded from the packet).
    #[inline(always)]
    pub fn apply(&self, check: u16) -> u16 {
        // `fold(wsum(..))` written out with one 32-bit step fewer: as two calls, the NAT
        // rewrite of every packet compiles to more BPF instructions.
        let mut s = u64::from(!check) + self.0;
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        !(s as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::{Delta, fold, wsum};

    /// The Internet checksum of 16-bit words as loaded from memory (RFC 1071), computed
    /// from scratch: the reference the incremental updates must agree with.
    fn checksum(words: &[u16]) -> u16 {
        let mut sum: u32 = words.iter().map(|&w| u32::from(w)).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// An IPv4 header (192.0.2.2 -> 192.0.2.1, TTL 64, UDP) as ten native-order words,
    /// checksum word (index 5) filled in.
    fn header(saddr: [u8; 4], daddr: [u8; 4], ttl: u8) -> [u16; 10] {
        let bytes = [
            0x45, 0, 0, 28, 0x12, 0x34, 0, 0, ttl, 17, 0, 0, saddr[0], saddr[1], saddr[2],
            saddr[3], daddr[0], daddr[1], daddr[2], daddr[3],
        ];
        let mut words = [0u16; 10];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u16::from_ne_bytes([bytes[2 * i], bytes[2 * i + 1]]);
        }
        words[5] = checksum(&words);
        words
    }

    fn addr(words: &[u16; 10], at: usize) -> u32 {
        let [a, b] = words[at].to_ne_bytes();
        let [c, d] = words[at + 1].to_ne_bytes();
        u32::from_ne_bytes([a, b, c, d])
    }

    #[test]
    fn incremental_update_matches_a_full_recomputation() {
        // DNAT + SNAT + TTL decrement, as pod_ingress rewrites a client's packet.
        let before = header([192, 0, 2, 2], [192, 0, 2, 1], 64);
        let after = header([198, 51, 100, 100], [203, 0, 113, 10], 63);
        let mut d = Delta::default();
        d.u32(addr(&before, 6), addr(&after, 6));
        d.u32(addr(&before, 8), addr(&after, 8));
        d.u16(before[4], after[4]);
        assert_eq!(d.apply(before[5]), after[5]);
        assert!(!d.is_zero());
    }

    #[test]
    fn deltas_add_up_and_an_unchanged_value_costs_nothing() {
        let before = header([192, 0, 2, 2], [192, 0, 2, 1], 64);
        let after = header([192, 0, 2, 2], [203, 0, 113, 10], 64);
        let mut source = Delta::default();
        source.u32(addr(&before, 6), addr(&after, 6));
        let mut dest = Delta::default();
        dest.u32(addr(&before, 8), addr(&after, 8));
        let mut both = source;
        both.add(dest);
        assert_eq!(both.apply(before[5]), after[5]);
        assert_eq!(
            source.apply(before[5]),
            before[5],
            "same value, same checksum"
        );
    }

    #[test]
    fn fold_of_a_sum_from_scratch_is_the_checksum_field() {
        // As a program sums a header it built (bpf_csum_diff over 32-bit words, the
        // checksum field zero), then folds the sum into the field.
        let mut words = header([192, 0, 2, 2], [198, 51, 100, 100], 64);
        let expected = words[5];
        words[5] = 0;
        let sum: u64 = words
            .chunks(2)
            .map(|w| {
                let [a, b] = w[0].to_ne_bytes();
                let [c, d] = w[1].to_ne_bytes();
                u64::from(u32::from_ne_bytes([a, b, c, d]))
            })
            .sum();
        assert_eq!(fold(wsum(sum)), expected);
        assert_eq!(fold(0xffff_ffff), 0, "carries fold all the way");
        assert_eq!(fold(0), 0xffff);
    }

    #[test]
    fn wsum_folds_carries_into_32_bits() {
        let mut d = Delta::default();
        for _ in 0..4 {
            d.u32(0, u32::MAX);
        }
        // 4 * (0xffffffff + 0xffffffff) = 0x7_ffff_fff8, folded: 0xffff_fff8 + 7.
        assert_eq!(d.wsum(), 0xffff_ffff);
        let mut small = Delta::default();
        small.u16(0x1234, 0x1234);
        assert_eq!(small.wsum(), 0xffff, "~x + x is negative zero");
    }
}
