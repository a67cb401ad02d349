//! ARP over Ethernet for IPv4 (RFC 826): validate a request, look up the target,
//! rewrite the frame in place into the reply.

use aya_ebpf::programs::XdpContext;
use speaker_common::Reason;

use crate::{
    ethernet::{self, is_group, mac_words, Link, BROADCAST},
    frame::{same_mac, wire16, Frame, Ipv4, Mac},
    log, maps,
    verdict::Verdict,
};

/// Offsets from the start of the ARP header (after Ethernet and any tags).
mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    /// HLEN and PLEN, one byte each.
    pub const HLEN_PLEN: usize = 4;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
    pub const END: usize = 28;
}

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;
/// hlen = 6 (Ethernet), plen = 4 (IPv4), as they sit in the frame.
const HLEN_PLEN_ETHERNET_IPV4: u16 = wire16(6, 4);
const OPER_REQUEST: u16 = 1;
const OPER_REPLY: u16 = 2;

#[inline(always)]
pub fn respond(ctx: &XdpContext, frame: &Frame, link: Link) -> Verdict {
    let (Some(eth), Some(arp)) = (
        frame.bounded::<{ ethernet::HEADER_LEN }>(),
        frame.bounded_at::<{ field::END }>(link.l3),
    ) else {
        return Verdict::pass(Reason::Truncated);
    };
    if arp.get_be16::<{ field::HTYPE }>() != HTYPE_ETHERNET
        || arp.get_be16::<{ field::PTYPE }>() != PTYPE_IPV4
        || arp.get::<u16, { field::HLEN_PLEN }>() != HLEN_PLEN_ETHERNET_IPV4
    {
        return Verdict::pass(Reason::Malformed);
    }
    let sha = arp.get::<Mac, { field::SHA }>();
    let eth_src = eth.get::<Mac, { ethernet::field::SOURCE }>();
    // A group address cannot have sent a request, and we would reply to it.
    if is_group(sha) || is_group(eth_src) {
        return Verdict::pass(Reason::Malformed);
    }
    let oper = arp.get_be16::<{ field::OPER }>();
    if oper != OPER_REQUEST && oper != OPER_REPLY {
        return Verdict::pass(Reason::ArpNotRequest);
    }
    let ifindex = ctx.ingress_ifindex() as u32;
    let spa = arp.get::<Ipv4, { field::SPA }>();
    // RFC 5227 §2.4: any ARP, request or reply, gratuitous or not, whose
    // sender IP is ours and whose sender hardware address is not, is a
    // conflict. Answering would not settle it (the kernel would not
    // either); it is recorded for the VIP. A probe's sender 0.0.0.0 is
    // never a VIP.
    if let Some(vip) = maps::vip_v4(spa, ifindex, link.vlan) {
        let reason = if same_mac(sha, mac_words(vip.mac)) {
            Reason::Looped
        } else {
            maps::record_conflict(&vip, sha);
            Reason::Conflict
        };
        log::arp_claimed(ctx, spa, sha, reason);
        return Verdict::pass(reason);
    }
    if oper != OPER_REQUEST {
        return Verdict::pass(Reason::ArpNotRequest);
    }
    let tpa = arp.get::<Ipv4, { field::TPA }>();
    let Some(vip) = maps::vip_v4(tpa, ifindex, link.vlan) else {
        return Verdict::pass(Reason::NotOwned);
    };
    let our_mac = mac_words(vip.mac);
    let eth_dst = eth.get::<Mac, { ethernet::field::DESTINATION }>();
    if !same_mac(eth_dst, BROADCAST) && !same_mac(eth_dst, our_mac) {
        log::arp_refused(ctx, tpa, Reason::WrongEthDestination);
        return Verdict::refuse(&vip, Reason::WrongEthDestination);
    }
    if !maps::control_plane_alive() {
        log::arp_refused(ctx, tpa, Reason::HeartbeatStale);
        return Verdict::refuse(&vip, Reason::HeartbeatStale);
    }
    // RFC 826: swap sender and target, fill in our hardware address, turn the
    // operation into a reply. A probe (sender IP 0.0.0.0, RFC 5227) is
    // answered the same way, which defends the address.
    eth.set::<Mac, { ethernet::field::DESTINATION }>(eth_src);
    eth.set::<Mac, { ethernet::field::SOURCE }>(our_mac);
    arp.set::<u16, { field::OPER }>(OPER_REPLY.to_be());
    arp.set::<Mac, { field::SHA }>(our_mac);
    arp.set::<Ipv4, { field::SPA }>(tpa);
    arp.set::<Mac, { field::THA }>(sha);
    arp.set::<Ipv4, { field::TPA }>(spa);
    maps::count_answer(&vip);
    Verdict::transmit(Reason::ArpAnswered)
}
