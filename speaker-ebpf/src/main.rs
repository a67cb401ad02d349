//! The xdp-speaker data plane: answers ARP requests and IPv6 Neighbor
//! Solicitations for the VIPs in the pinned maps, in place, with XDP_TX.
//! Everything it does not answer it passes to the kernel untouched.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod arp;
mod checksum;
mod ethernet;
mod frame;
mod log;
mod long_message;
mod maps;
mod ndp;
mod verdict;
mod vlan;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use speaker_common::Reason;

use crate::{ethernet::Link, frame::Frame, verdict::Verdict};

/// `frags`: the program may be attached in native mode to an interface
/// whose MTU exceeds a page (jumbo frames, multi-buffer XDP). It only reads
/// the linear part, which holds every request it answers; a multi-buffer
/// request is not answered (`unsupported`).
#[xdp(frags)]
// The macro wraps this function in the program's entry point; inlined
// there, no frame pays for a BPF-to-BPF call (LLVM left a program this
// size out of line).
#[inline(always)]
pub fn xdp_speaker(ctx: XdpContext) -> u32 {
    let verdict = respond(&ctx);
    if let Some(reason) = verdict.reason {
        maps::count_reason(reason);
    }
    verdict.action
}

/// The benchmark baseline, and the program a veth peer needs so that the
/// kernel delivers our XDP_TX frames to it (veth drops them otherwise).
/// Deliberately without `frags`: the jumbo lab shows that such a program is
/// refused in native mode at MTU 9000.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn respond(ctx: &XdpContext) -> Verdict {
    let frame = Frame::new(ctx);
    match ethernet::ether_type(&frame) {
        None => Verdict::pass(Reason::Truncated),
        Some(ethernet::ETHERTYPE_ARP) => arp::respond(ctx, &frame, Link::UNTAGGED),
        Some(ethernet::ETHERTYPE_IPV6) => ndp::respond(ctx, &frame, Link::UNTAGGED),
        Some(tpid @ (ethernet::ETHERTYPE_VLAN | ethernet::ETHERTYPE_QINQ)) => {
            tagged(ctx, &frame, tpid)
        }
        Some(_) => Verdict::pass_uncounted(),
    }
}

/// A tagged frame: answered like an untagged one, for the VIPs of its VLAN.
/// Tagged traffic that is neither ARP nor IPv6 is the hot path on a trunk,
/// uncounted like untagged.
///
/// Out of the untagged path's way: the untagged protocol handlers above
/// are inlined with the network header at a constant offset, these with
/// the offset one or two tags further.
#[inline(always)]
fn tagged(ctx: &XdpContext, frame: &Frame, tpid: u16) -> Verdict {
    let (payload, link) = match vlan::untag(frame, tpid) {
        Ok(found) => found,
        Err(verdict) => return verdict,
    };
    match payload {
        ethernet::ETHERTYPE_ARP => arp::respond(ctx, frame, link),
        ethernet::ETHERTYPE_IPV6 => ndp::respond(ctx, frame, link),
        _ => Verdict::pass_uncounted(),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
