//! Access to the frame. A protocol first proves the frame is long enough for
//! its fixed header with [`Frame::bounded`]; the returned view then reads and
//! writes at compile-time-checked offsets with no further branches. Variable
//! offsets (options, checksums) go through the per-access checked readers.
//!
//! Multi-byte reads are word loads, not byte loads: LLVM's BPF backend splits
//! any load it believes unaligned into single bytes, which costs several times
//! more. Packet data has no alignment requirement where XDP runs JIT-compiled
//! (the verifier allows unaligned packet access on CPUs that do it efficiently,
//! as Cilium's datapath relies on), and every field read here sits at an even
//! offset of a frame that starts at an even address.

use core::{mem::size_of, ptr};

use aya_ebpf::programs::XdpContext;

/// A MAC address as three 16-bit words in memory order.
pub type Mac = [u16; 3];
/// An IPv4 address as two 16-bit words in memory order.
pub type Ipv4 = [u16; 2];
/// An IPv6 address as four 32-bit words in memory order.
pub type Ipv6 = [u32; 4];

/// The furthest the program reads into a frame: the bound of every
/// variable offset (extension headers, options).
pub const MAX_OFFSET: usize = 4096;

pub struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Frame {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// The frame's bounds as plain words, to hand to an out-of-line
    /// function (see `ndp::walk`), and back.
    #[inline(always)]
    pub fn bounds(&self) -> (usize, usize) {
        (self.start, self.end)
    }

    #[inline(always)]
    pub fn from_bounds(start: usize, end: usize) -> Self {
        Frame { start, end }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True when the frame holds at least `len` bytes.
    #[inline(always)]
    pub fn has(&self, len: usize) -> bool {
        self.start + len <= self.end
    }

    /// A view of the first `LEN` bytes, if the frame is that long.
    #[inline(always)]
    pub fn bounded<const LEN: usize>(&self) -> Option<Bounded<LEN>> {
        if self.start + LEN > self.end {
            return None;
        }
        Some(Bounded { start: self.start })
    }

    /// A view of `LEN` bytes from a variable `offset` (after extension
    /// headers), if the frame holds them. One check covers every field read
    /// through the view: the verifier extends the proven range to all
    /// accesses through the same pointer.
    #[inline(always)]
    pub fn bounded_at<const LEN: usize>(&self, offset: usize) -> Option<Bounded<LEN>> {
        // A constant upper bound, so the verifier accepts the pointer
        // arithmetic with a variable offset.
        if offset > MAX_OFFSET {
            return None;
        }
        let start = self.start + offset;
        if start + LEN > self.end {
            return None;
        }
        Some(Bounded { start })
    }

    #[inline(always)]
    fn checked<T: Copy>(&self, offset: usize) -> Option<T> {
        if offset > MAX_OFFSET {
            return None;
        }
        if self.start + offset + size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: in bounds, checked just above; see the module note on alignment.
        Some(unsafe { ptr::read((self.start + offset) as *const T) })
    }

    /// Two bytes (a type and a length, a next header and a length). Never
    /// one: LLVM turns the bounds check of a one-byte read into
    /// `ptr >= end`, from which the verifier derives no readable range.
    #[inline(always)]
    pub fn pair(&self, offset: usize) -> Option<[u8; 2]> {
        self.checked::<[u8; 2]>(offset)
    }

    /// Eight bytes as two 32-bit words in memory order, for checksumming.
    #[inline(always)]
    pub fn words8(&self, offset: usize) -> Option<[u32; 2]> {
        self.checked::<[u32; 2]>(offset)
    }
}

/// The first `LEN` bytes of a frame, known to exist.
pub struct Bounded<const LEN: usize> {
    start: usize,
}

impl<const LEN: usize> Bounded<LEN> {
    #[inline(always)]
    fn at<T, const OFFSET: usize>(&self) -> *mut T {
        const {
            assert!(
                OFFSET + size_of::<T>() <= LEN,
                "access past the bounded length"
            )
        };
        (self.start + OFFSET) as *mut T
    }

    #[inline(always)]
    pub fn get<T: Copy, const OFFSET: usize>(&self) -> T {
        // SAFETY: OFFSET + size_of::<T>() <= LEN (asserted at compile time), and
        // the frame holds LEN bytes (checked in `Frame::bounded`).
        unsafe { ptr::read(self.at::<T, OFFSET>()) }
    }

    #[inline(always)]
    pub fn set<T, const OFFSET: usize>(&self, value: T) {
        // SAFETY: as in `get`.
        unsafe { ptr::write(self.at::<T, OFFSET>(), value) }
    }

    /// A big-endian 16-bit field.
    #[inline(always)]
    pub fn get_be16<const OFFSET: usize>(&self) -> u16 {
        u16::from_be(self.get::<u16, OFFSET>())
    }
}

/// Word-wise equality without a `bcmp` call (BPF cannot make calls to it).
#[inline(always)]
pub fn same_mac(a: Mac, b: Mac) -> bool {
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) == 0
}

#[inline(always)]
pub fn same_ipv6(a: Ipv6, b: Ipv6) -> bool {
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) == 0
}

/// The first byte of a value stored in memory order.
#[inline(always)]
pub fn first_byte_u16(word: u16) -> u8 {
    word.to_ne_bytes()[0]
}

#[inline(always)]
pub fn first_byte_u32(word: u32) -> u8 {
    word.to_ne_bytes()[0]
}

/// A memory-order 16-bit word from two bytes as they appear on the wire.
#[inline(always)]
pub const fn wire16(first: u8, second: u8) -> u16 {
    u16::from_ne_bytes([first, second])
}
