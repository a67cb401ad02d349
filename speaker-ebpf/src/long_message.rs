//! NS and NA messages longer than the inline walks take (more than
//! `MAX_OPTION_UNITS` option units): checksummed and walked to their real
//! end with `bpf_loop`, which the verifier checks once per callback rather
//! than once per iteration. Each step copies 8 bytes out with
//! `bpf_xdp_load_bytes`, so no packet pointer crosses into the callbacks.
//! Such messages are rare (SEND's CGA and RSA options, RFC 3971, or
//! padding); the common ones never come here.

use aya_ebpf::{
    bindings::xdp_md,
    cty::c_void,
    helpers::{bpf_loop, bpf_xdp_load_bytes},
};

use crate::{
    checksum::Sum,
    ndp::{walked, OPTION_SOURCE_LLADDR, OPTION_TARGET_LLADDR},
};

/// `bpf_loop` callback verdicts.
const CONTINUE: i64 = 0;
const STOP: i64 = 1;

/// The state both walks carry through their callbacks (on our stack).
#[repr(C)]
struct Walk {
    xdp: *mut xdp_md,
    /// Offset of the next 8 bytes, from the frame's start.
    at: u32,
    /// Where the message ends.
    end: u32,
    /// The running checksum, or the findings packed as `ndp::walked`.
    acc: u64,
    /// Set when a load failed or an option has length 0.
    failed: u32,
}

/// `count` in a register whose upper half is zero. The helper's argument is
/// a `u32`, so LLVM may pass it in a register with garbage above bit 31;
/// the verifier's inlined `bpf_loop` compares the whole register with its
/// limit and fails with -E2BIG. A 32-bit load from the stack zero-extends.
#[inline(always)]
fn loops(count: usize) -> u32 {
    let count = count as u32;
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&count) }
}

/// The eight bytes at `at`, or `None` past the frame's end.
#[inline(always)]
fn load8(xdp: *mut xdp_md, at: u32) -> Option<[u8; 8]> {
    let mut bytes = [0u8; 8];
    // SAFETY: the helper writes at most 8 bytes into `bytes`.
    let copied = unsafe { bpf_xdp_load_bytes(xdp, at, bytes.as_mut_ptr() as *mut c_void, 8) };
    (copied == 0).then_some(bytes)
}

type Step = unsafe extern "C" fn(u64, *mut c_void) -> i64;

impl Walk {
    /// Runs `step` under `bpf_loop`, at most once per 8-byte unit from `at`
    /// to `end`; true when no step failed and the walk ended exactly at
    /// `end`.
    #[inline(always)]
    fn run(&mut self, step: Step) -> bool {
        let units = ((self.end - self.at) / 8) as usize;
        // SAFETY: a callback of the signature `bpf_loop` expects, and our
        // state, alive for the call.
        unsafe {
            bpf_loop(
                loops(units),
                step as *mut c_void,
                self as *mut Walk as *mut c_void,
                0,
            )
        };
        self.failed == 0 && self.at == self.end
    }

    /// The 8 bytes at `at`; `None` at the end, or when they cannot be
    /// read (then `failed` is set).
    #[inline(always)]
    fn next_unit(&mut self) -> Option<[u8; 8]> {
        if self.at >= self.end {
            return None;
        }
        let bytes = load8(self.xdp, self.at);
        if bytes.is_none() {
            self.failed = 1;
        }
        bytes
    }

    /// The `Walk` behind a callback's state pointer.
    ///
    /// # Safety
    /// `state` must be the pointer [`Walk::run`] gave `bpf_loop`.
    #[inline(always)]
    unsafe fn of<'a>(state: *mut c_void) -> &'a mut Walk {
        // SAFETY: by the caller's contract, a live `Walk`.
        unsafe { &mut *(state as *mut Walk) }
    }
}

#[inline(never)]
unsafe extern "C" fn add_unit(_index: u64, state: *mut c_void) -> i64 {
    // SAFETY: `bpf_loop` hands back the pointer `run` gave it.
    let walk = unsafe { Walk::of(state) };
    let Some(bytes) = walk.next_unit() else {
        return STOP;
    };
    let mut sum = Sum::from_raw(walk.acc);
    sum.add(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
    sum.add(u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]));
    walk.acc = sum.raw();
    walk.at += 8;
    CONTINUE
}

/// The message (`len` bytes at `l4`, a multiple of 8) added to `seed`;
/// true when the result verifies.
#[inline(always)]
pub fn sum_valid(xdp: *mut xdp_md, l4: usize, len: usize, seed: u64) -> bool {
    let mut walk = Walk {
        xdp,
        at: l4 as u32,
        end: (l4 + len) as u32,
        acc: seed,
        failed: 0,
    };
    walk.run(add_unit) && Sum::from_raw(walk.acc).fold() == 0xffff
}

#[inline(never)]
unsafe extern "C" fn next_option(_index: u64, state: *mut c_void) -> i64 {
    // SAFETY: as in `add_unit`.
    let walk = unsafe { Walk::of(state) };
    let Some(option) = walk.next_unit() else {
        return STOP;
    };
    let [kind, len] = [option[0], option[1]];
    // RFC 4861 §4.6: a zero length is invalid and would loop forever.
    if len == 0 {
        walk.failed = 1;
        return STOP;
    }
    if kind == OPTION_SOURCE_LLADDR {
        walk.acc |= walked::SOURCE_LLADDR;
    } else if kind == OPTION_TARGET_LLADDR && len == 1 {
        let word = u64::from_ne_bytes([
            option[2], option[3], option[4], option[5], option[6], option[7], 0, 0,
        ]);
        walk.acc = walk.acc & (walked::VALID | walked::SOURCE_LLADDR)
            | walked::TARGET_LLADDR
            | word << walked::TARGET_LLADDR_SHIFT;
    }
    walk.at += 8 * len as u32;
    CONTINUE
}

/// The options from `l4 + first` to `l4 + len`, findings packed as
/// `ndp::walked` (0 when malformed).
#[inline(always)]
pub fn walk_options(xdp: *mut xdp_md, l4: usize, first: usize, len: usize) -> u64 {
    let mut walk = Walk {
        xdp,
        at: (l4 + first) as u32,
        end: (l4 + len) as u32,
        acc: 0,
        failed: 0,
    };
    if !walk.run(next_option) {
        return 0;
    }
    walk.acc | walked::VALID
}
