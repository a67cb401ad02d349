//! The xdp-speaker data plane: answers ARP requests and IPv6 Neighbor
//! Solicitations for the VIPs in the pinned maps, in place, with XDP_TX.
//! Everything it does not answer it passes to the kernel untouched.
#![no_std]
#![no_main]

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

#[xdp]
pub fn xdp_speaker(ctx: XdpContext) -> u32 {
    let verdict = respond(&ctx);
    maps::count_reason(verdict.reason);
    verdict.action
}

/// The benchmark baseline, and the program a veth peer needs so that the
/// kernel delivers our XDP_TX frames to it (veth drops them otherwise).
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
        Some(ethernet::ETHERTYPE_VLAN) | Some(ethernet::ETHERTYPE_QINQ) => {
            Verdict::pass(Reason::VlanTagged)
        }
        Some(_) => Verdict::pass(Reason::OtherTraffic),
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
