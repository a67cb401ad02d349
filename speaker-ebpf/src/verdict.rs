use aya_ebpf::bindings::xdp_action;
use speaker_common::Reason;

/// What the program returns for a frame, and the counted reason why.
#[derive(Clone, Copy)]
pub struct Verdict {
    pub action: u32,
    pub reason: Reason,
}

impl Verdict {
    #[inline(always)]
    pub const fn pass(reason: Reason) -> Self {
        Verdict {
            action: xdp_action::XDP_PASS,
            reason,
        }
    }

    #[inline(always)]
    pub const fn transmit(reason: Reason) -> Self {
        Verdict {
            action: xdp_action::XDP_TX,
            reason,
        }
    }
}
