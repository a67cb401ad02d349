//! ARP over Ethernet for IPv4 (RFC 826): validate a request, look up the target,
//! rewrite the frame in place into the reply.

use aya_ebpf::programs::XdpContext;
use speaker_common::Reason;

use crate::{ethernet, frame::Frame, maps, verdict::Verdict};

/// Offsets from the start of the frame (the ARP header follows Ethernet).
mod field {
    use core::ops::Range;
    const L3: usize = crate::ethernet::HEADER_LEN;
    pub const HTYPE: usize = L3;
    pub const PTYPE: usize = L3 + 2;
    pub const HLEN: usize = L3 + 4;
    pub const PLEN: usize = L3 + 5;
    pub const OPER: usize = L3 + 6;
    pub const SHA: Range<usize> = L3 + 8..L3 + 14;
    pub const SPA: Range<usize> = L3 + 14..L3 + 18;
    pub const THA: Range<usize> = L3 + 18..L3 + 24;
    pub const TPA: Range<usize> = L3 + 24..L3 + 28;
}

const FRAME_LEN: usize = field::TPA.end;
const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;
const HLEN_ETHERNET: u8 = 6;
const PLEN_IPV4: u8 = 4;
const OPER_REQUEST: u16 = 1;
const OPER_REPLY: u16 = 2;

/// The fields of an ARP packet that we act on.
struct Request {
    oper: u16,
    sha: [u8; 6],
    spa: [u8; 4],
    tpa: [u8; 4],
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
}

/// Reads the fixed-size ARP packet, or says why it is not one we could answer.
#[inline(always)]
fn parse(frame: &Frame) -> Result<Request, Reason> {
    if !frame.has(FRAME_LEN) {
        return Err(Reason::Truncated);
    }
    let (Some(htype), Some(ptype), Some(hlen), Some(plen), Some(oper)) = (
        frame.u16_be(field::HTYPE),
        frame.u16_be(field::PTYPE),
        frame.u8(field::HLEN),
        frame.u8(field::PLEN),
        frame.u16_be(field::OPER),
    ) else {
        return Err(Reason::Truncated);
    };
    if htype != HTYPE_ETHERNET || ptype != PTYPE_IPV4 || hlen != HLEN_ETHERNET || plen != PLEN_IPV4
    {
        return Err(Reason::Malformed);
    }
    let (Some(sha), Some(spa), Some(tpa), Some(eth_dst), Some(eth_src)) = (
        frame.bytes::<6>(field::SHA.start),
        frame.bytes::<4>(field::SPA.start),
        frame.bytes::<4>(field::TPA.start),
        frame.bytes::<6>(ethernet::field::DESTINATION.start),
        frame.bytes::<6>(ethernet::field::SOURCE.start),
    ) else {
        return Err(Reason::Truncated);
    };
    // A group address cannot have sent a request, and we would reply to it.
    if ethernet::is_group(&sha) || ethernet::is_group(&eth_src) {
        return Err(Reason::Malformed);
    }
    Ok(Request { oper, sha, spa, tpa, eth_dst, eth_src })
}

#[inline(always)]
pub fn respond(ctx: &XdpContext, frame: &Frame) -> Verdict {
    let request = match parse(frame) {
        Ok(request) => request,
        Err(reason) => return Verdict::pass(reason),
    };
    // Gratuitous ARP (sender = target) is an announcement, request or reply.
    let gratuitous = u32::from_ne_bytes(request.spa) == u32::from_ne_bytes(request.tpa);
    if request.oper != OPER_REQUEST && !(request.oper == OPER_REPLY && gratuitous) {
        return Verdict::pass(Reason::ArpNotRequest);
    }
    let Some(vip) = maps::vip_v4(request.tpa, ctx.ingress_ifindex() as u32) else {
        return Verdict::pass(Reason::NotOwned);
    };
    if gratuitous {
        // Someone announces one of our VIPs: answering would not settle it (the
        // kernel would not either, RFC 5227 §2.4); count it so it can be seen.
        return Verdict::pass(if ethernet::same_mac(&request.sha, &vip.mac) {
            Reason::Looped
        } else {
            Reason::Conflict
        });
    }
    if !ethernet::same_mac(&request.eth_dst, &ethernet::BROADCAST)
        && !ethernet::same_mac(&request.eth_dst, &vip.mac)
    {
        return Verdict::pass(Reason::WrongEthDestination);
    }
    if !maps::control_plane_alive() {
        return Verdict::pass(Reason::HeartbeatStale);
    }
    // RFC 826: swap sender and target, fill in our hardware address, turn the
    // operation into a reply. A probe (sender IP 0.0.0.0, RFC 5227) is
    // answered the same way, which defends the address.
    let written = frame.write(ethernet::field::DESTINATION.start, request.eth_src)
        && frame.write(ethernet::field::SOURCE.start, vip.mac)
        && frame.write(field::OPER, OPER_REPLY.to_be_bytes())
        && frame.write(field::SHA.start, vip.mac)
        && frame.write(field::SPA.start, request.tpa)
        && frame.write(field::THA.start, request.sha)
        && frame.write(field::TPA.start, request.spa);
    if !written {
        return Verdict::pass(Reason::Truncated);
    }
    maps::count_answer(&vip);
    Verdict::transmit(Reason::ArpAnswered)
}
