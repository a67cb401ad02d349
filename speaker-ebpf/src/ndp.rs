//! IPv6 Neighbor Discovery (RFC 4861): validate a Neighbor Solicitation
//! (§7.1.1), look up its target, rewrite the frame in place into the Neighbor
//! Advertisement (§7.2.4), growing or shrinking it to the advertisement's size.

use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use speaker_common::Reason;

use crate::{checksum::Sum, ethernet, frame::Frame, maps, verdict::Verdict};

/// Offsets from the start of the frame: IPv6 after Ethernet, ICMPv6 after IPv6.
mod field {
    use core::ops::Range;
    const L3: usize = crate::ethernet::HEADER_LEN;
    pub const VERSION: usize = L3;
    pub const PAYLOAD_LEN: usize = L3 + 4;
    pub const NEXT_HEADER: usize = L3 + 6;
    pub const HOP_LIMIT: usize = L3 + 7;
    pub const SOURCE: Range<usize> = L3 + 8..L3 + 24;
    pub const DESTINATION: Range<usize> = L3 + 24..L3 + 40;
    pub const L4: usize = DESTINATION.end;
    pub const ICMP_TYPE: usize = L4;
    pub const ICMP_CODE: usize = L4 + 1;
    pub const ICMP_CHECKSUM: usize = L4 + 2;
    /// NA flags (R, S, O) and reserved bits; reserved in an NS.
    pub const ICMP_FLAGS: usize = L4 + 4;
    pub const TARGET: Range<usize> = L4 + 8..L4 + 24;
    pub const OPTIONS: usize = TARGET.end;
    /// Within an option.
    pub const OPTION_TYPE: usize = 0;
    pub const OPTION_LEN: usize = 1;
}

const IPV6_HEADER_END: usize = field::L4;
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

const SOLICITED_NODE_PREFIX: [u8; 13] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff];
const ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];

/// Compares addresses as words: byte-array equality would become a `bcmp`
/// call, which BPF cannot make.
#[inline(always)]
fn words(a: &[u8; 16]) -> [u64; 2] {
    [
        u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    ]
}

#[inline(always)]
fn same_address(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let (a, b) = (words(a), words(b));
    a[0] == b[0] && a[1] == b[1]
}

#[inline(always)]
fn is_unspecified(a: &[u8; 16]) -> bool {
    let w = words(a);
    w[0] | w[1] == 0
}

#[inline(always)]
fn is_multicast(a: &[u8; 16]) -> bool {
    a[0] == 0xff
}

/// ff02::1:ffXX:XXXX for the low 24 bits of `target` (RFC 4291 §2.7.1).
#[inline(always)]
fn is_solicited_node_of(dst: &[u8; 16], target: &[u8; 16]) -> bool {
    let mut expected = [0u8; 16];
    let mut i = 0;
    while i < SOLICITED_NODE_PREFIX.len() {
        expected[i] = SOLICITED_NODE_PREFIX[i];
        i += 1;
    }
    expected[13] = target[13];
    expected[14] = target[14];
    expected[15] = target[15];
    same_address(dst, &expected)
}

/// What the checks and the answer need from a Neighbor Solicitation. The
/// addresses stay in the frame until the answer is written: the BPF stack is
/// only 512 bytes.
struct Solicitation {
    target: [u8; 16],
    icmp_len: usize,
    from_unspecified: bool,
    /// The Ethernet destination the solicitation must have been sent to:
    /// the IPv6 group's MAC, or `None` for unicast (our own MAC).
    group_mac: Option<[u8; 6]>,
}

#[inline(always)]
fn need<T>(value: Option<T>) -> Result<T, Reason> {
    value.ok_or(Reason::Truncated)
}

/// Header checks that need no loop: enough to decide whether the target is
/// worth a map lookup.
#[inline(always)]
fn parse(frame: &Frame) -> Result<Solicitation, Reason> {
    if !frame.has(IPV6_HEADER_END) {
        return Err(Reason::Truncated);
    }
    if need(frame.u8(field::VERSION))? >> 4 != 6 {
        return Err(Reason::Malformed);
    }
    if need(frame.u8(field::NEXT_HEADER))? != NEXT_HEADER_ICMPV6 {
        return Err(Reason::OtherTraffic);
    }
    if need(frame.u8(field::ICMP_TYPE))? != ICMP_NEIGHBOR_SOLICITATION {
        return Err(Reason::OtherTraffic);
    }
    let icmp_len = need(frame.u16_be(field::PAYLOAD_LEN))? as usize;
    if !frame.has(field::L4 + icmp_len) {
        return Err(Reason::Truncated);
    }
    if icmp_len < NS_MIN_LEN || icmp_len > NS_MAX_LEN || icmp_len % 8 != 0 {
        return Err(Reason::Malformed);
    }
    if need(frame.u8(field::HOP_LIMIT))? != HOP_LIMIT_LINK_LOCAL
        || need(frame.u8(field::ICMP_CODE))? != 0
    {
        return Err(Reason::Malformed);
    }
    let target = need(frame.bytes::<16>(field::TARGET.start))?;
    let source = need(frame.bytes::<16>(field::SOURCE.start))?;
    let destination = need(frame.bytes::<16>(field::DESTINATION.start))?;
    let eth_src = need(frame.bytes::<6>(ethernet::field::SOURCE.start))?;
    if is_multicast(&target) || is_multicast(&source) || ethernet::is_group(&eth_src) {
        return Err(Reason::Malformed);
    }
    // Sent to the target's solicited-node group, or unicast to the target
    // (NUD); DAD (unspecified source) only ever to the group.
    let from_unspecified = is_unspecified(&source);
    let to_group = is_solicited_node_of(&destination, &target);
    if !to_group && (from_unspecified || !same_address(&destination, &target)) {
        return Err(Reason::Malformed);
    }
    Ok(Solicitation {
        target,
        icmp_len,
        from_unspecified,
        group_mac: if to_group { Some(ethernet::ipv6_multicast_mac(&destination)) } else { None },
    })
}

/// RFC 4443 §2.3 checksum over the pseudo-header and the whole ICMPv6 message.
#[inline(always)]
fn checksum_valid(frame: &Frame, icmp_len: usize) -> bool {
    let mut sum = Sum::new();
    if !add_addresses(frame, &mut sum) {
        return false;
    }
    sum.add_be32(icmp_len as u32);
    sum.add_be32(NEXT_HEADER_ICMPV6 as u32);
    let mut i = 0;
    while i < NS_MAX_LEN / 4 {
        if 4 * i >= icmp_len {
            break;
        }
        let Some(word) = frame.u32_ne(field::L4 + 4 * i) else {
            return false;
        };
        sum.add_word(word);
        i += 1;
    }
    sum.fold() == 0xffff
}

/// Source and destination of the pseudo-header, read from the IPv6 header.
#[inline(always)]
fn add_addresses(frame: &Frame, sum: &mut Sum) -> bool {
    let mut i = 0;
    while i < 8 {
        let Some(word) = frame.u32_ne(field::SOURCE.start + 4 * i) else {
            return false;
        };
        sum.add_word(word);
        i += 1;
    }
    true
}

/// RFC 4861 §7.1.1: every option has a non-zero length and the options end
/// exactly where the message does; a solicitation from the unspecified
/// address carries no Source Link-Layer Address option.
#[inline(always)]
fn options_valid(frame: &Frame, icmp_len: usize, from_unspecified: bool) -> bool {
    let mut offset = NS_MIN_LEN;
    let mut units = 0;
    while units < MAX_OPTION_UNITS {
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
        units += 1;
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
    if !options_valid(frame, ns.icmp_len, ns.from_unspecified) {
        return Verdict::pass(Reason::Malformed);
    }
    let Some(eth_dst) = frame.bytes::<6>(ethernet::field::DESTINATION.start) else {
        return Verdict::pass(Reason::Truncated);
    };
    if !ethernet::same_mac(&eth_dst, &ns.group_mac.unwrap_or(vip.mac)) {
        return Verdict::pass(Reason::WrongEthDestination);
    }
    if !maps::control_plane_alive() {
        return Verdict::pass(Reason::HeartbeatStale);
    }

    let (Some(ns_source), Some(ns_eth_src)) = (
        frame.bytes::<16>(field::SOURCE.start),
        frame.bytes::<6>(ethernet::field::SOURCE.start),
    ) else {
        return Verdict::pass(Reason::Truncated);
    };
    let delta = NA_FRAME_LEN as i32 - frame.len() as i32;
    // SAFETY: the context pointer is the one the kernel gave us.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Verdict::pass(Reason::ResizeFailed);
    }
    // Resizing invalidates every packet pointer: start over from the context.
    let frame = Frame::new(ctx);
    // RFC 4861 §7.2.4: to the solicitation's source with S=1; a DAD probe
    // (from ::) to all-nodes with S=0. O=1: we are the authority for the VIP.
    let (ip_dst, eth_dst, flags) = if ns.from_unspecified {
        (ALL_NODES, ethernet::ipv6_multicast_mac(&ALL_NODES), NA_FLAG_OVERRIDE)
    } else {
        (ns_source, ns_eth_src, NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE)
    };
    let m = vip.mac;
    let written = frame.write(ethernet::field::DESTINATION.start, eth_dst)
        && frame.write(ethernet::field::SOURCE.start, m)
        // Version 6, traffic class and flow label cleared.
        && frame.write(field::VERSION, [0x60, 0, 0, 0])
        && frame.write(field::PAYLOAD_LEN, (NA_LEN as u16).to_be_bytes())
        && frame.write(field::NEXT_HEADER, [NEXT_HEADER_ICMPV6, HOP_LIMIT_LINK_LOCAL])
        && frame.write(field::SOURCE.start, ns.target)
        && frame.write(field::DESTINATION.start, ip_dst)
        && frame.write(field::ICMP_TYPE, [ICMP_NEIGHBOR_ADVERTISEMENT, 0, 0, 0])
        && frame.write(field::ICMP_FLAGS, [flags, 0, 0, 0])
        && frame.write(
            field::OPTIONS,
            [OPTION_TARGET_LLADDR, 1, m[0], m[1], m[2], m[3], m[4], m[5]],
        );
    if !written {
        return Verdict::pass(Reason::ResizeFailed);
    }
    let Some(checksum) = advertisement_checksum(&frame) else {
        return Verdict::pass(Reason::ResizeFailed);
    };
    if !frame.write(field::ICMP_CHECKSUM, checksum) {
        return Verdict::pass(Reason::ResizeFailed);
    }
    maps::count_answer(&vip);
    Verdict::transmit(Reason::NsAnswered)
}

/// Checksum of the advertisement just written (its checksum field is zero).
#[inline(always)]
fn advertisement_checksum(frame: &Frame) -> Option<[u8; 2]> {
    let mut sum = Sum::new();
    if !add_addresses(frame, &mut sum) {
        return None;
    }
    sum.add_be32(NA_LEN as u32);
    sum.add_be32(NEXT_HEADER_ICMPV6 as u32);
    let mut i = 0;
    while i < NA_LEN / 4 {
        sum.add_word(frame.u32_ne(field::L4 + 4 * i)?);
        i += 1;
    }
    Some((!sum.fold()).to_ne_bytes())
}
