use aya_ebpf::bindings::xdp_action;
use speaker_common::{Reason, VipEntry};

use crate::maps;

/// What the program returns for a frame, and the counted reason why.
#[derive(Clone, Copy)]
pub struct Verdict {
    pub action: u32,
    /// `None`: traffic that is neither ARP nor ICMPv6, passed uncounted
    /// (the hot path; the interface's counters carry its volume).
    pub reason: Option<Reason>,
}

impl Verdict {
    #[inline(always)]
    pub const fn pass(reason: Reason) -> Self {
        Verdict {
            action: xdp_action::XDP_PASS,
            reason: Some(reason),
        }
    }

    /// Neither ARP nor ICMPv6: not ours to count.
    #[inline(always)]
    pub const fn pass_uncounted() -> Self {
        Verdict {
            action: xdp_action::XDP_PASS,
            reason: None,
        }
    }

    /// A valid request for `vip` that is not answered, counted for the VIP.
    #[inline(always)]
    pub fn refuse(vip: &VipEntry, reason: Reason) -> Self {
        maps::count_refused(vip);
        Verdict::pass(reason)
    }

    #[inline(always)]
    pub const fn transmit(reason: Reason) -> Self {
        Verdict {
            action: xdp_action::XDP_TX,
            reason: Some(reason),
        }
    }
}
