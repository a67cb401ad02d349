//! The Internet checksum (RFC 1071) over 32-bit words. Words are summed in
//! memory order: the one's complement sum does not depend on byte order
//! (RFC 1071 §2(B)), so the folded result can be stored as is.

#[derive(Clone, Copy)]
pub struct Sum(u64);

impl Sum {
    #[inline(always)]
    pub const fn new() -> Self {
        Sum(0)
    }

    /// The running sum as a plain word, to hand to an out-of-line function.
    #[inline(always)]
    pub const fn raw(self) -> u64 {
        self.0
    }

    #[inline(always)]
    pub const fn from_raw(sum: u64) -> Self {
        Sum(sum)
    }

    #[inline(always)]
    pub fn add(&mut self, word: u32) {
        self.0 += word as u64;
    }

    #[inline(always)]
    pub fn add_all<const N: usize>(&mut self, words: [u32; N]) {
        let mut i = 0;
        while i < N {
            self.add(words[i]);
            i += 1;
        }
    }

    /// Adds a value that the packet holds as a big-endian 32-bit field.
    #[inline(always)]
    pub fn add_be32(&mut self, value: u32) {
        self.add(u32::from_ne_bytes(value.to_be_bytes()));
    }

    /// The 16-bit one's complement sum, in memory order.
    #[inline(always)]
    pub fn fold(self) -> u16 {
        let mut s = self.0;
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s as u16
    }
}
