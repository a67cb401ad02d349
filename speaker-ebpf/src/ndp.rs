//! IPv6 Neighbor Discovery (RFC 4861): validate a Neighbor Solicitation
//! (§7.1.1), look up its target, rewrite the frame in place into the Neighbor
//! Advertisement (§7.2.4), growing or shrinking it to the advertisement's size.

use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use speaker_common::Reason;

use crate::{
    checksum::Sum,
    ethernet::{self, ipv6_multicast_mac, is_group, mac_words},
    frame::{first_byte_u32, same_ipv6, same_mac, wire16, Frame, Ipv6, Mac},
    log, maps,
    verdict::Verdict,
};

/// Offsets from the start of the frame: IPv6 after Ethernet, ICMPv6 after IPv6.
mod field {
    const L3: usize = crate::ethernet::HEADER_LEN;
    /// Version, traffic class, flow label.
    pub const VERSION: usize = L3;
    pub const PAYLOAD_LEN: usize = L3 + 4;
    /// Next header and hop limit, one byte each.
    pub const NEXT_HEADER_HOP_LIMIT: usize = L3 + 6;
    pub const SOURCE: usize = L3 + 8;
    pub const DESTINATION: usize = L3 + 24;
    pub const L4: usize = L3 + 40;
    /// ICMPv6 type and code, one byte each.
    pub const ICMP_TYPE_CODE: usize = L4;
    pub const ICMP_CHECKSUM: usize = L4 + 2;
    /// NA flags (R, S, O) and reserved bits; reserved in an NS.
    pub const ICMP_FLAGS: usize = L4 + 4;
    pub const TARGET: usize = L4 + 8;
    pub const OPTIONS: usize = L4 + 24;
    /// Within an option.
    pub const OPTION_TYPE: usize = 0;
    pub const OPTION_LEN: usize = 1;
}

const NEXT_HEADER_ICMPV6: u8 = 58;
/// RFC 4861 §7.1.1: a hop limit below 255 means the packet crossed a router.
const HOP_LIMIT_LINK_LOCAL: u8 = 255;
const ICMP_NEIGHBOR_SOLICITATION: u8 = 135;
const ICMP_NEIGHBOR_ADVERTISEMENT: u8 = 136;
const NS_MIN_LEN: usize = field::OPTIONS - field::L4;
/// Options are parsed up to this many 8-octet units; longer solicitations
/// (never seen in practice) are passed to the kernel as malformed.
const MAX_OPTION_UNITS: usize = 8;
const NS_MAX_LEN: usize = NS_MIN_LEN + 8 * MAX_OPTION_UNITS;
const OPTION_SOURCE_LLADDR: u8 = 1;
const OPTION_TARGET_LLADDR: u8 = 2;
/// Our advertisement: the 24-byte NA and one Target Link-Layer Address option.
const NA_LEN: usize = NS_MIN_LEN + 8;
const NA_FRAME_LEN: usize = field::L4 + NA_LEN;
const NA_FLAG_SOLICITED: u8 = 0x40;
const NA_FLAG_OVERRIDE: u8 = 0x20;

/// ff02::1:ff00:0/104, as memory-order words (RFC 4291 §2.7.1).
const SOLICITED_NODE_PREFIX: [u32; 3] = [
    u32::from_ne_bytes([0xff, 0x02, 0, 0]),
    0,
    u32::from_ne_bytes([0, 0, 0, 0x01]),
];
const ALL_NODES: Ipv6 = [
    u32::from_ne_bytes([0xff, 0x02, 0, 0]),
    0,
    0,
    u32::from_ne_bytes([0, 0, 0, 1]),
];

#[inline(always)]
fn is_multicast(addr: Ipv6) -> bool {
    first_byte_u32(addr[0]) == 0xff
}

#[inline(always)]
fn is_unspecified(addr: Ipv6) -> bool {
    addr[0] | addr[1] | addr[2] | addr[3] == 0
}

/// ff02::1:ffXX:XXXX with the low 24 bits of `target`.
#[inline(always)]
fn is_solicited_node_of(dst: Ipv6, target: Ipv6) -> bool {
    let [_, t1, t2, t3] = target[3].to_ne_bytes();
    let group = [
        SOLICITED_NODE_PREFIX[0],
        SOLICITED_NODE_PREFIX[1],
        SOLICITED_NODE_PREFIX[2],
        u32::from_ne_bytes([0xff, t1, t2, t3]),
    ];
    same_ipv6(dst, group)
}

/// What the checks and the answer need from a Neighbor Solicitation.
struct Solicitation {
    source: Ipv6,
    target: Ipv6,
    eth_src: Mac,
    icmp_len: usize,
    /// The Ethernet destination the solicitation must have been sent to:
    /// the IPv6 group's MAC, or `None` for unicast (our own MAC).
    group_mac: Option<Mac>,
}

/// Header checks that need no loop: enough to decide whether the target is
/// worth a map lookup.
#[inline(always)]
fn parse(frame: &Frame) -> Result<Solicitation, Reason> {
    let Some(ip) = frame.bounded::<{ field::L4 }>() else {
        return Err(Reason::Truncated);
    };
    if ip.get::<u8, { field::VERSION }>() >> 4 != 6 {
        return Err(Reason::Malformed);
    }
    let [next_header, hop_limit] = ip.get::<[u8; 2], { field::NEXT_HEADER_HOP_LIMIT }>();
    if next_header != NEXT_HEADER_ICMPV6 {
        return Err(Reason::OtherTraffic);
    }
    let Some(icmp) = frame.bounded::<{ field::OPTIONS }>() else {
        // Not enough for any ICMPv6 message we answer; say which it is.
        return Err(match frame.u8(field::ICMP_TYPE_CODE) {
            Some(ICMP_NEIGHBOR_SOLICITATION) => Reason::Truncated,
            Some(_) => Reason::OtherTraffic,
            None => Reason::Truncated,
        });
    };
    let [icmp_type, code] = icmp.get::<[u8; 2], { field::ICMP_TYPE_CODE }>();
    if icmp_type != ICMP_NEIGHBOR_SOLICITATION {
        return Err(Reason::OtherTraffic);
    }
    let icmp_len = icmp.get_be16::<{ field::PAYLOAD_LEN }>() as usize;
    if !frame.has(field::L4 + icmp_len) {
        return Err(Reason::Truncated);
    }
    if !(NS_MIN_LEN..=NS_MAX_LEN).contains(&icmp_len) || !icmp_len.is_multiple_of(8) {
        return Err(Reason::Malformed);
    }
    if hop_limit != HOP_LIMIT_LINK_LOCAL || code != 0 {
        return Err(Reason::Malformed);
    }
    let target = icmp.get::<Ipv6, { field::TARGET }>();
    let source = icmp.get::<Ipv6, { field::SOURCE }>();
    let destination = icmp.get::<Ipv6, { field::DESTINATION }>();
    let eth_src = icmp.get::<Mac, { ethernet::field::SOURCE }>();
    if is_multicast(target) || is_multicast(source) || is_group(eth_src) {
        return Err(Reason::Malformed);
    }
    // Sent to the target's solicited-node group, or unicast to the target
    // (NUD); DAD (unspecified source) only ever to the group.
    let to_group = is_solicited_node_of(destination, target);
    if !to_group && (is_unspecified(source) || !same_ipv6(destination, target)) {
        return Err(Reason::Malformed);
    }
    Ok(Solicitation {
        source,
        target,
        eth_src,
        icmp_len,
        group_mac: if to_group {
            Some(ipv6_multicast_mac(destination))
        } else {
            None
        },
    })
}

/// Adds the pseudo-header's addresses (RFC 8200 §8.1), read from the frame.
#[inline(always)]
fn add_addresses(sum: &mut Sum, source: Ipv6, destination: Ipv6) {
    sum.add_all(source);
    sum.add_all(destination);
}

/// RFC 4443 §2.3: the checksum over the pseudo-header and the whole message.
#[inline(always)]
fn checksum_valid(frame: &Frame, icmp_len: usize) -> bool {
    let Some(icmp) = frame.bounded::<{ field::OPTIONS }>() else {
        return false;
    };
    let mut sum = Sum::new();
    add_addresses(
        &mut sum,
        icmp.get::<Ipv6, { field::SOURCE }>(),
        icmp.get::<Ipv6, { field::DESTINATION }>(),
    );
    sum.add_be32(icmp_len as u32);
    sum.add_be32(NEXT_HEADER_ICMPV6 as u32);
    sum.add_all(icmp.get::<[u32; NS_MIN_LEN / 4], { field::L4 }>());
    let mut offset = NS_MIN_LEN;
    while offset < NS_MAX_LEN {
        if offset >= icmp_len {
            break;
        }
        let Some(words) = frame.words8(field::L4 + offset) else {
            return false;
        };
        sum.add_all(words);
        offset += 8;
    }
    sum.fold() == 0xffff
}

/// RFC 4861 §7.1.1: every option has a non-zero length and the options end
/// exactly where the message does; a solicitation from the unspecified
/// address carries no Source Link-Layer Address option.
#[inline(always)]
fn options_valid(frame: &Frame, icmp_len: usize, from_unspecified: bool) -> bool {
    let mut offset = NS_MIN_LEN;
    let mut seen = 0;
    while seen < MAX_OPTION_UNITS {
        if offset >= icmp_len {
            break;
        }
        let (Some(kind), Some(len)) = (
            frame.u8(field::L4 + offset + field::OPTION_TYPE),
            frame.u8(field::L4 + offset + field::OPTION_LEN),
        ) else {
            return false;
        };
        if len == 0 || (kind == OPTION_SOURCE_LLADDR && from_unspecified) {
            return false;
        }
        offset += 8 * len as usize;
        seen += 1;
    }
    offset == icmp_len
}

#[inline(always)]
pub fn respond(ctx: &XdpContext, frame: &Frame) -> Verdict {
    let ns = match parse(frame) {
        Ok(ns) => ns,
        Err(reason) => return Verdict::pass(reason),
    };
    let Some(vip) = maps::vip_v6(ns.target, ctx.ingress_ifindex() as u32) else {
        return Verdict::pass(Reason::NotOwned);
    };
    // The costly checks come after the lookup: solicitations for other
    // hosts' addresses are the common case on a busy segment.
    if !checksum_valid(frame, ns.icmp_len) {
        return Verdict::pass(Reason::BadChecksum);
    }
    let from_unspecified = is_unspecified(ns.source);
    if !options_valid(frame, ns.icmp_len, from_unspecified) {
        return Verdict::pass(Reason::Malformed);
    }
    let our_mac = mac_words(vip.mac);
    let Some(eth) = frame.bounded::<{ ethernet::HEADER_LEN }>() else {
        return Verdict::refuse(&vip, Reason::Truncated);
    };
    let eth_dst = eth.get::<Mac, { ethernet::field::DESTINATION }>();
    if !same_mac(eth_dst, ns.group_mac.unwrap_or(our_mac)) {
        log::ns_refused(ctx, ns.target, Reason::WrongEthDestination);
        return Verdict::refuse(&vip, Reason::WrongEthDestination);
    }
    if !maps::control_plane_alive() {
        log::ns_refused(ctx, ns.target, Reason::HeartbeatStale);
        return Verdict::refuse(&vip, Reason::HeartbeatStale);
    }

    let delta = NA_FRAME_LEN as i32 - frame.len() as i32;
    // SAFETY: the context pointer is the one the kernel gave us.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        log::ns_refused(ctx, ns.target, Reason::ResizeFailed);
        return Verdict::refuse(&vip, Reason::ResizeFailed);
    }
    // Resizing invalidates every packet pointer: start over from the context.
    let Some(na) = Frame::new(ctx).bounded::<NA_FRAME_LEN>() else {
        log::ns_refused(ctx, ns.target, Reason::ResizeFailed);
        return Verdict::refuse(&vip, Reason::ResizeFailed);
    };
    // RFC 4861 §7.2.4: to the solicitation's source with S=1; a DAD probe
    // (from ::) to all-nodes with S=0. O=1: we are the authority for the VIP.
    let (ip_dst, eth_dst, flags) = if from_unspecified {
        (ALL_NODES, ipv6_multicast_mac(ALL_NODES), NA_FLAG_OVERRIDE)
    } else {
        (ns.source, ns.eth_src, NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE)
    };
    na.set::<Mac, { ethernet::field::DESTINATION }>(eth_dst);
    na.set::<Mac, { ethernet::field::SOURCE }>(our_mac);
    // Version 6; traffic class and flow label cleared.
    na.set::<u32, { field::VERSION }>(u32::from_ne_bytes([0x60, 0, 0, 0]));
    na.set::<u16, { field::PAYLOAD_LEN }>((NA_LEN as u16).to_be());
    na.set::<u16, { field::NEXT_HEADER_HOP_LIMIT }>(wire16(
        NEXT_HEADER_ICMPV6,
        HOP_LIMIT_LINK_LOCAL,
    ));
    na.set::<Ipv6, { field::SOURCE }>(ns.target);
    na.set::<Ipv6, { field::DESTINATION }>(ip_dst);
    na.set::<[u16; 2], { field::ICMP_TYPE_CODE }>([wire16(ICMP_NEIGHBOR_ADVERTISEMENT, 0), 0]);
    na.set::<u32, { field::ICMP_FLAGS }>(u32::from_ne_bytes([flags, 0, 0, 0]));
    // The target stays where the solicitation had it.
    na.set::<[u16; 4], { field::OPTIONS }>([
        wire16(OPTION_TARGET_LLADDR, 1),
        our_mac[0],
        our_mac[1],
        our_mac[2],
    ]);
    let mut sum = Sum::new();
    add_addresses(&mut sum, ns.target, ip_dst);
    sum.add_be32(NA_LEN as u32);
    sum.add_be32(NEXT_HEADER_ICMPV6 as u32);
    sum.add_all(na.get::<[u32; NA_LEN / 4], { field::L4 }>());
    na.set::<u16, { field::ICMP_CHECKSUM }>(!sum.fold());
    maps::count_answer(&vip);
    Verdict::transmit(Reason::NsAnswered)
}
