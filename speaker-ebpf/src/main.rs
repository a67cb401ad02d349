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
mod maps;
mod ndp;
mod verdict;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use speaker_common::Reason;

use crate::{frame::Frame, verdict::Verdict};

/// `frags`: the program may be attached in native mode to an interface
/// whose MTU exceeds a page (jumbo frames, multi-buffer XDP). It only reads
/// the linear part, which holds every request it answers; a multi-buffer
/// request is not answered (`unsupported`).
#[xdp(frags)]
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
        Some(ethernet::ETHERTYPE_ARP) => arp::respond(ctx, &frame),
        Some(ethernet::ETHERTYPE_IPV6) => ndp::respond(ctx, &frame),
        Some(ethernet::ETHERTYPE_VLAN) | Some(ethernet::ETHERTYPE_QINQ) => ethernet::tagged(&frame),
        Some(_) => Verdict::pass_uncounted(),
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
