//! Debug records for the rare verdicts, through `aya-log` (a ring buffer the
//! speaker reads and forwards to `tracing` at DEBUG).
//!
//! Only paths that are already off the fast path log: a refused request for
//! an owned VIP and another host's claim of one. The answered path and
//! everything passed untouched never reach here, so the benchmark's two
//! ratios do not see the logging. Each call first reads `AYA_LOG_LEVEL`, a
//! read-only global the speaker sets at load time: below debug the verifier
//! knows the branch is dead and drops it. A full ring buffer (nobody reading)
//! makes the reservation fail and the record is dropped; the frame's verdict
//! never waits on it.

use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::debug;
use speaker_common::Reason;

use crate::frame::{Ipv4, Ipv6, Mac};

#[inline(always)]
fn v4_bytes(addr: Ipv4) -> [u8; 4] {
    // SAFETY: [u16; 2] and [u8; 4] have the same size and any bit pattern.
    unsafe { core::mem::transmute(addr) }
}

#[inline(always)]
fn v6_bytes(addr: Ipv6) -> [u8; 16] {
    // SAFETY: [u32; 4] and [u8; 16] have the same size and any bit pattern.
    unsafe { core::mem::transmute(addr) }
}

#[inline(always)]
fn mac_bytes(mac: Mac) -> [u8; 6] {
    // SAFETY: [u16; 3] and [u8; 6] have the same size and any bit pattern.
    unsafe { core::mem::transmute(mac) }
}

/// A valid ARP request for an owned VIP that is not answered.
#[inline(always)]
pub fn arp_refused(ctx: &XdpContext, vip: Ipv4, reason: Reason) {
    let vip = v4_bytes(vip);
    match reason {
        Reason::WrongEthDestination => debug!(
            ctx,
            "xdp: ARP request for {:i} not answered: sent to another unicast MAC", vip
        ),
        Reason::HeartbeatStale => debug!(
            ctx,
            "xdp: ARP request for {:i} not answered: control-plane heartbeat stale", vip
        ),
        _ => debug!(
            ctx,
            "xdp: ARP request for {:i} not answered: reason {}", vip, reason as u32
        ),
    }
}

/// An ARP whose sender claims an owned VIP (`Conflict`), or our own one
/// come back (`Looped`).
#[inline(always)]
pub fn arp_claimed(ctx: &XdpContext, vip: Ipv4, sender: Mac, reason: Reason) {
    let vip = v4_bytes(vip);
    let sender = mac_bytes(sender);
    if reason == Reason::Looped {
        debug!(
            ctx,
            "xdp: our own ARP for {:i} came back from {:mac}", vip, sender
        );
    } else {
        debug!(
            ctx,
            "xdp: conflict: ARP claims {:i} for {:mac}", vip, sender
        );
    }
}

/// A Neighbor Advertisement that claims an owned VIP (`Conflict`), or our
/// own one come back (`Looped`).
#[inline(always)]
pub fn na_claimed(ctx: &XdpContext, vip: Ipv6, claimed: Mac, reason: Reason) {
    let vip = v6_bytes(vip);
    let claimed = mac_bytes(claimed);
    if reason == Reason::Looped {
        debug!(
            ctx,
            "xdp: our own Neighbor Advertisement for {:i} came back ({:mac})", vip, claimed
        );
    } else {
        debug!(
            ctx,
            "xdp: conflict: Neighbor Advertisement claims {:i} for {:mac}", vip, claimed
        );
    }
}

/// A valid Neighbor Solicitation for an owned VIP that is not answered.
#[inline(always)]
pub fn ns_refused(ctx: &XdpContext, vip: Ipv6, reason: Reason) {
    let vip = v6_bytes(vip);
    match reason {
        Reason::WrongEthDestination => debug!(
            ctx,
            "xdp: Neighbor Solicitation for {:i} not answered: sent to another MAC", vip
        ),
        Reason::HeartbeatStale => debug!(
            ctx,
            "xdp: Neighbor Solicitation for {:i} not answered: control-plane heartbeat stale", vip
        ),
        Reason::ResizeFailed => debug!(
            ctx,
            "xdp: Neighbor Solicitation for {:i} not answered: frame could not be resized", vip
        ),
        _ => debug!(
            ctx,
            "xdp: Neighbor Solicitation for {:i} not answered: reason {}", vip, reason as u32
        ),
    }
}
