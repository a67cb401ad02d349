//! Bounds-checked access to the frame. Every read and write goes through here,
//! with the length check right beside the access so the verifier sees it.

use core::ptr;

use aya_ebpf::programs::XdpContext;

pub struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Frame { start: ctx.data(), end: ctx.data_end() }
    }

    /// Length of the frame in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True when the frame holds at least `len` bytes from the start.
    #[inline(always)]
    pub fn has(&self, len: usize) -> bool {
        self.start + len <= self.end
    }

    /// Pointer to `N` bytes at `offset`, if the frame is long enough.
    #[inline(always)]
    fn at<const N: usize>(&self, offset: usize) -> Option<*mut [u8; N]> {
        if self.start + offset + N > self.end {
            return None;
        }
        Some((self.start + offset) as *mut [u8; N])
    }

    #[inline(always)]
    pub fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // SAFETY: `at` checked the range; [u8; N] has alignment 1.
        self.at::<N>(offset).map(|p| unsafe { ptr::read(p) })
    }

    #[inline(always)]
    pub fn u8(&self, offset: usize) -> Option<u8> {
        self.bytes::<1>(offset).map(|b| b[0])
    }

    #[inline(always)]
    pub fn u16_be(&self, offset: usize) -> Option<u16> {
        self.bytes::<2>(offset).map(u16::from_be_bytes)
    }

    /// A 32-bit word in memory order, for checksumming.
    #[inline(always)]
    pub fn u32_ne(&self, offset: usize) -> Option<u32> {
        self.bytes::<4>(offset).map(u32::from_ne_bytes)
    }

    /// Writes `value` at `offset`; false (and nothing written) when it does not fit.
    #[inline(always)]
    pub fn write<const N: usize>(&self, offset: usize, value: [u8; N]) -> bool {
        match self.at::<N>(offset) {
            // SAFETY: `at` checked the range.
            Some(p) => {
                unsafe { ptr::write(p, value) };
                true
            }
            None => false,
        }
    }
}
