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

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    macros::xdp,
    programs::XdpContext,
};
use speaker_common::Reason;

use crate::{ethernet::Link, frame::Frame, verdict::Verdict};

/// `frags`: the program may be attached in native mode to an interface
/// whose MTU exceeds a page (jumbo frames, multi-buffer XDP). It only reads
/// the linear part, which holds every request it answers; a multi-buffer
/// request is not answered (`unsupported`).
#[xdp(frags)]
// The macro wraps this function in the program's entry point; inlined
// there, the sieve is all that frames of other traffic run.
#[inline(always)]
pub fn xdp_speaker(ctx: XdpContext) -> u32 {
    if uncounted(&Frame::new(&ctx)) {
        return xdp_action::XDP_PASS;
    }
    respond_counted(ctx.ctx)
}

/// The sieve: true for a frame the responder would pass uncounted, neither
/// ARP nor an ICMPv6 message (nor a frame it counts as malformed, truncated
/// or unsupported). Such frames are nearly every frame a NIC receives, and
/// they stop here, in the program's entry, which uses few registers and no
/// stack. The rest is a BPF-to-BPF call away: the big function saves and
/// restores the callee-saved registers it uses, which cost every frame
/// about 1.5 ns while it was inlined here (BENCHMARKS.md); the call costs
/// an ARP or NDP frame about 11 ns where `ret` is costly (AMD SRSO
/// "Safe RET"), a good trade by volume.
#[inline(always)]
fn uncounted(frame: &Frame) -> bool {
    // Most common first, compared as loaded (no byte swap): IPv4 leaves
    // at the first comparison, IPv6 at its next header.
    let Some(wire) = ethernet::ether_type_as_loaded(frame) else {
        return false;
    };
    if wire == ethernet::ETHERTYPE_IPV4.to_be() {
        return true;
    }
    if wire == ethernet::ETHERTYPE_IPV6.to_be() {
        return !ndp::may_be_counted(frame, ethernet::HEADER_LEN);
    }
    let ether_type = u16::from_be(wire);
    if ether_type == ethernet::ETHERTYPE_ARP {
        return false;
    }
    if ether_type != ethernet::ETHERTYPE_VLAN && ether_type != ethernet::ETHERTYPE_QINQ {
        return true;
    }
    match vlan::untag(frame, ether_type) {
        // The tag counts apart, each with its payload at a constant
        // offset: merged, LLVM keeps which one it was in a callee-saved
        // register, whose saving every frame would pay.
        Ok((payload, link)) if link.l3 == vlan::PAYLOAD_SINGLE => {
            payload_uncounted::<{ vlan::PAYLOAD_SINGLE }>(frame, payload)
        }
        Ok((payload, _)) => payload_uncounted::<{ vlan::PAYLOAD_STACKED }>(frame, payload),
        // Counted (truncated, unsupported): the responder says why.
        Err(_) => false,
    }
}

/// The sieve behind the tags, the payload at `L3`.
#[inline(always)]
fn payload_uncounted<const L3: usize>(frame: &Frame, payload: u16) -> bool {
    match payload {
        ethernet::ETHERTYPE_ARP => false,
        ethernet::ETHERTYPE_IPV6 => !ndp::may_be_counted(frame, L3),
        _ => true,
    }
}

/// Everything but the sieve; out of line on purpose (see [`uncounted`]).
#[inline(never)]
fn respond_counted(raw: *mut xdp_md) -> u32 {
    let ctx = XdpContext::new(raw);
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
