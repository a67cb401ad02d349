//! IPv6 Neighbor Discovery (RFC 4861): validate a Neighbor Solicitation
//! (§7.1.1), look up its target, rewrite the frame in place into the Neighbor
//! Advertisement (§7.2.4), resizing it only when the advertisement's size
//! differs; and record Neighbor Advertisements that claim one of our VIPs
//! for another MAC (the IPv6 counterpart of RFC 5227 §2.4).

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_tail, bpf_xdp_get_buff_len},
    programs::XdpContext,
};
use speaker_common::Reason;

use crate::{
    checksum::Sum,
    ethernet::{self, ipv6_multicast_mac, is_group, mac_words, Link},
    frame::{first_byte_u32, same_ipv6, same_mac, wire16, Bounded, Frame, Ipv6, Mac},
    log, long_message, maps,
    verdict::Verdict,
};

/// Offsets from the start of the IPv6 header (after Ethernet and any tags).
mod field {
    /// Version, traffic class, flow label.
    pub const VERSION: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    /// Next header and hop limit, one byte each.
    pub const NEXT_HEADER_HOP_LIMIT: usize = 6;
    pub const SOURCE: usize = 8;
    pub const DESTINATION: usize = 24;
    /// Where the first extension header, or ICMPv6, starts.
    pub const L4: usize = 40;
}

/// Offsets from the start of the ICMPv6 message (NS and NA share them).
mod icmp {
    /// Type and code, one byte each.
    pub const TYPE_CODE: usize = 0;
    pub const CHECKSUM: usize = 2;
    /// NA flags (R, S, O) and reserved bits; reserved in an NS.
    pub const FLAGS: usize = 4;
    pub const TARGET: usize = 8;
    pub const OPTIONS: usize = 24;
    /// Within an option: type and length (a pair), then the data.
    pub const OPTION_TYPE: usize = 0;
    pub const OPTION_LLADDR: usize = 2;
}

/// Within a Hop-by-Hop or Destination Options header (RFC 8200 §4.3, §4.6).
/// Next header and length (in 8 octets, less the first 8) come as a pair.
mod extension {
    pub const NEXT_HEADER: usize = 0;
}

const NEXT_HEADER_HOP_BY_HOP: u8 = 0;
const NEXT_HEADER_TCP: u8 = 6;
const NEXT_HEADER_UDP: u8 = 17;
const NEXT_HEADER_ROUTING: u8 = 43;
const NEXT_HEADER_FRAGMENT: u8 = 44;
const NEXT_HEADER_ESP: u8 = 50;
const NEXT_HEADER_AH: u8 = 51;
const NEXT_HEADER_ICMPV6: u8 = 58;
const NEXT_HEADER_DESTINATION_OPTIONS: u8 = 60;
const NEXT_HEADER_MOBILITY: u8 = 135;
const NEXT_HEADER_HIP: u8 = 139;
const NEXT_HEADER_SHIM6: u8 = 140;
/// Hop-by-Hop and Destination Options headers skipped before giving up:
/// RFC 8200 §4.1 allows one of each before the upper layer, plus one
/// Destination Options header before a routing header.
const MAX_EXTENSION_HEADERS: usize = 3;

/// RFC 4861 §7.1.1: a hop limit below 255 means the packet crossed a router.
const HOP_LIMIT_LINK_LOCAL: u8 = 255;
const ICMP_NEIGHBOR_SOLICITATION: u8 = 135;
const ICMP_NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// An NS or NA without options.
const ND_MIN_LEN: usize = icmp::OPTIONS;
/// An NS or NA with one link-layer address option: the common case.
const ND_ONE_OPTION_LEN: usize = ND_MIN_LEN + 8;
/// Options are walked inline up to this many 8-octet units (88-byte
/// messages). The verifier walks every iteration of an inline loop, and
/// each option's type and length fork its states: inline walks to 152
/// bytes already exceed its million-instruction budget. Longer messages
/// go to [`long_message`], whose `bpf_loop` walks reach the message's real
/// end.
const MAX_OPTION_UNITS: usize = 8;
const ND_MAX_LEN: usize = ND_MIN_LEN + 8 * MAX_OPTION_UNITS;
pub(crate) const OPTION_SOURCE_LLADDR: u8 = 1;
pub(crate) const OPTION_TARGET_LLADDR: u8 = 2;
/// Our advertisement: the 24-byte NA and one Target Link-Layer Address
/// option, or, answering a unicast solicitation in a frame too short for
/// the option, the NA alone (RFC 4861 §7.2.4: the option "can be omitted"
/// for a unicast solicitation, the sender already has our address).
const NA_LEN: usize = ND_MIN_LEN + 8;
/// The advertisement from the IPv6 header on, with and without the option.
const NA_PACKET_LEN: usize = field::L4 + NA_LEN;
const NA_SHORT_PACKET_LEN: usize = field::L4 + ND_MIN_LEN;
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

/// False for an IPv6 packet at `l3` that [`respond`] passes uncounted: its
/// header is whole and its next header is neither ICMPv6 nor one that
/// [`icmp_offset`] walks or stops at (TCP, UDP, …). The sieve in `main.rs`.
#[inline(always)]
pub fn may_be_counted(frame: &Frame, l3: usize) -> bool {
    let Some(ip) = frame.bounded_at::<{ field::L4 }>(l3) else {
        return true;
    };
    let next_header = ip.get::<u8, { field::NEXT_HEADER_HOP_LIMIT }>();
    // TCP and UDP, nearly all of it, named first: two comparisons.
    next_header == NEXT_HEADER_ICMPV6
        || (next_header != NEXT_HEADER_TCP
            && next_header != NEXT_HEADER_UDP
            && walked_or_stopped_at(next_header))
}

/// The next headers [`icmp_offset`] walks (Hop-by-Hop, Destination
/// Options) or stops at with `unsupported`: every other one is neither
/// ICMPv6 nor hides it.
#[inline(always)]
fn walked_or_stopped_at(next_header: u8) -> bool {
    const BELOW_64: u64 = 1 << NEXT_HEADER_HOP_BY_HOP
        | 1 << NEXT_HEADER_DESTINATION_OPTIONS
        | 1 << NEXT_HEADER_ROUTING
        | 1 << NEXT_HEADER_FRAGMENT
        | 1 << NEXT_HEADER_ESP
        | 1 << NEXT_HEADER_AH;
    if next_header < 64 {
        BELOW_64 & 1 << next_header != 0
    } else {
        matches!(
            next_header,
            NEXT_HEADER_MOBILITY | NEXT_HEADER_HIP | NEXT_HEADER_SHIM6
        )
    }
}

/// Where the ICMPv6 message starts: after the fixed header and any
/// Hop-by-Hop / Destination Options headers. `Err(None)`: not ICMPv6, not
/// ours to count; `Err(Some(reason))`: counted.
#[inline(always)]
fn icmp_offset(frame: &Frame, l3: usize, first: u8) -> Result<usize, Option<Reason>> {
    let mut next = first;
    let mut offset = l3 + field::L4;
    let mut walked = 0;
    loop {
        match next {
            NEXT_HEADER_ICMPV6 => return Ok(offset),
            // RFC 8200 §4.1: Hop-by-Hop may only follow the IPv6 header
            // itself (Linux answers one elsewhere with a Parameter Problem).
            NEXT_HEADER_HOP_BY_HOP if walked > 0 => return Err(Some(Reason::Malformed)),
            NEXT_HEADER_HOP_BY_HOP | NEXT_HEADER_DESTINATION_OPTIONS => {}
            // Deliberately not parsed: NDP must not be fragmented (RFC
            // 6980), and the rest hide or move what follows.
            NEXT_HEADER_ROUTING | NEXT_HEADER_FRAGMENT | NEXT_HEADER_ESP | NEXT_HEADER_AH
            | NEXT_HEADER_MOBILITY | NEXT_HEADER_HIP | NEXT_HEADER_SHIM6 => {
                return Err(Some(Reason::Unsupported))
            }
            _ => return Err(None),
        }
        if walked == MAX_EXTENSION_HEADERS {
            return Err(Some(Reason::Unsupported));
        }
        let Some([header_next, len]) = frame.pair(offset + extension::NEXT_HEADER) else {
            return Err(Some(Reason::Truncated));
        };
        next = header_next;
        offset += 8 * (len as usize + 1);
        walked += 1;
    }
}

/// The IPv6 header fields both messages need, and where ICMPv6 starts.
struct Ipv6Header {
    source: Ipv6,
    destination: Ipv6,
    eth_src: Mac,
    eth_dst: Mac,
    /// Offset of the ICMPv6 message in the frame.
    l4: usize,
    /// Length of the ICMPv6 message (payload length less extension headers).
    icmp_len: usize,
}

/// An NS or NA: its header, type and target.
struct Discovery {
    ip: Ipv6Header,
    kind: u8,
    /// The first byte of the flags word (R, S, O in an NA).
    flags: u8,
    target: Ipv6,
}

/// Header checks that need no loop over options: enough to decide whether
/// the target is worth a map lookup. `l4` is where the ICMPv6 message
/// starts: a constant on the fast path (no extension headers, no tags),
/// so that every read below is at a fixed offset.
#[inline(always)]
fn parse(frame: &Frame, link: Link, l4: usize) -> Result<Discovery, Option<Reason>> {
    let (Some(eth), Some(ip)) = (
        frame.bounded::<{ ethernet::HEADER_LEN }>(),
        frame.bounded_at::<{ field::L4 }>(link.l3),
    ) else {
        return Err(Some(Reason::Truncated));
    };
    let hop_limit = ip.get::<[u8; 2], { field::NEXT_HEADER_HOP_LIMIT }>()[1];
    if ip.get::<u8, { field::VERSION }>() >> 4 != 6 {
        return Err(Some(Reason::Malformed));
    }
    let Some(message) = frame.bounded_at::<ND_MIN_LEN>(l4) else {
        // Not enough for any message we handle; say which it is.
        return Err(Some(match frame.pair(l4 + icmp::TYPE_CODE) {
            Some([ICMP_NEIGHBOR_SOLICITATION | ICMP_NEIGHBOR_ADVERTISEMENT, _]) | None => {
                Reason::Truncated
            }
            Some(_) => Reason::OtherTraffic,
        }));
    };
    let [kind, code] = message.get::<[u8; 2], { icmp::TYPE_CODE }>();
    if kind != ICMP_NEIGHBOR_SOLICITATION && kind != ICMP_NEIGHBOR_ADVERTISEMENT {
        return Err(Some(Reason::OtherTraffic));
    }
    let payload_at = link.l3 + field::L4;
    let extensions = l4 - payload_at;
    let payload_len = ip.get_be16::<{ field::PAYLOAD_LEN }>() as usize;
    if payload_len < extensions || !frame.has(payload_at + payload_len) {
        return Err(Some(Reason::Truncated));
    }
    let icmp_len = payload_len - extensions;
    if icmp_len < ND_MIN_LEN || !icmp_len.is_multiple_of(8) {
        return Err(Some(Reason::Malformed));
    }
    if hop_limit != HOP_LIMIT_LINK_LOCAL || code != 0 {
        return Err(Some(Reason::Malformed));
    }
    let target = message.get::<Ipv6, { icmp::TARGET }>();
    let flags = message.get::<[u8; 2], { icmp::FLAGS }>()[0];
    let source = ip.get::<Ipv6, { field::SOURCE }>();
    let eth_src = eth.get::<Mac, { ethernet::field::SOURCE }>();
    if is_multicast(target) || is_group(eth_src) {
        return Err(Some(Reason::Malformed));
    }
    Ok(Discovery {
        ip: Ipv6Header {
            source,
            destination: ip.get::<Ipv6, { field::DESTINATION }>(),
            eth_src,
            eth_dst: eth.get::<Mac, { ethernet::field::DESTINATION }>(),
            l4,
            icmp_len,
        },
        kind,
        flags,
        target,
    })
}

/// The options walk's findings, packed in one word so that the out-of-line
/// walk returns a single scalar.
pub(crate) mod walked {
    pub const VALID: u64 = 1;
    pub const SOURCE_LLADDR: u64 = 1 << 1;
    pub const TARGET_LLADDR: u64 = 1 << 2;
    /// The last Target Link-Layer Address, memory order, in bits 16..64
    /// (a valid NA carries at most one).
    pub const TARGET_LLADDR_SHIFT: u32 = 16;
}

/// The frame with its end read afresh, so that LLVM keeps the next bounds
/// check as written. Inside a loop: with `end` loop-invariant, LLVM
/// rewrites `at + 8 > end` into `at > end - 8` outside the loop, and the
/// verifier refuses arithmetic on the end pointer. On the fixed-size path:
/// LLVM knows the message ends where the payload length said, already
/// checked, and drops the check; the verifier cannot follow that
/// arithmetic through a variable payload length.
#[inline(always)]
fn opaque_frame(start: usize, end: &usize) -> Frame {
    // SAFETY: a read of a local.
    Frame::from_bounds(start, unsafe { core::ptr::read_volatile(end) })
}

/// What the option walk found.
struct Options {
    source_lladdr: bool,
    /// The last Target Link-Layer Address option's address.
    target_lladdr: Option<Mac>,
}

/// RFC 4443 §2.3 (the checksum over the pseudo-header of RFC 8200 §8.1
/// and the whole message) and RFC 4861 §7.1.1/§7.1.2 (the options end
/// exactly where the message does, none has length 0; unknown options
/// are skipped, §4.6).
///
/// The two messages nearly every host sends, an NS or NA with one
/// link-layer address option (32 bytes) and one without options (24: DAD,
/// most unicast NUD), take a fixed-size path without loops or calls; the
/// rest the out-of-line walks.
#[inline(always)]
fn verify(ctx: &XdpContext, frame: &Frame, ip: &Ipv6Header) -> Result<Options, Reason> {
    let mut sum = Sum::new();
    sum.add_all(ip.source);
    sum.add_all(ip.destination);
    sum.add_be32(ip.icmp_len as u32);
    sum.add_be32(NEXT_HEADER_ICMPV6 as u32);
    let (start, end) = frame.bounds();
    if ip.icmp_len == ND_ONE_OPTION_LEN {
        if let Some(message) = opaque_frame(start, &end).bounded_at::<ND_ONE_OPTION_LEN>(ip.l4) {
            return verify_one_option(&message, sum);
        }
    } else if ip.icmp_len == ND_MIN_LEN {
        if let Some(message) = opaque_frame(start, &end).bounded_at::<ND_MIN_LEN>(ip.l4) {
            sum.add_all(message.get::<[u32; ND_MIN_LEN / 4], 0>());
            return if sum.fold() == 0xffff {
                Ok(Options {
                    source_lladdr: false,
                    target_lladdr: None,
                })
            } else {
                Err(Reason::BadChecksum)
            };
        }
    }
    let found = if ip.icmp_len > ND_MAX_LEN {
        if !long_message::sum_valid(ctx.ctx, ip.l4, ip.icmp_len, sum.raw()) {
            return Err(Reason::BadChecksum);
        }
        long_message::walk_options(ctx.ctx, ip.l4, ND_MIN_LEN, ip.icmp_len)
    } else {
        if message_sum_valid(start, end, ip.l4, ip.icmp_len, sum.raw()) == 0 {
            return Err(Reason::BadChecksum);
        }
        walk_options_raw(start, end, ip.l4, ip.icmp_len)
    };
    if found & walked::VALID == 0 {
        return Err(Reason::Malformed);
    }
    let mac = (found >> walked::TARGET_LLADDR_SHIFT).to_ne_bytes();
    Ok(Options {
        source_lladdr: found & walked::SOURCE_LLADDR != 0,
        target_lladdr: (found & walked::TARGET_LLADDR != 0).then(|| {
            [
                wire16(mac[0], mac[1]),
                wire16(mac[2], mac[3]),
                wire16(mac[4], mac[5]),
            ]
        }),
    })
}

/// A message with one 8-byte option: its length must be 1 to end where the
/// message does.
#[inline(always)]
fn verify_one_option(
    message: &Bounded<ND_ONE_OPTION_LEN>,
    mut sum: Sum,
) -> Result<Options, Reason> {
    sum.add_all(message.get::<[u32; ND_ONE_OPTION_LEN / 4], 0>());
    if sum.fold() != 0xffff {
        return Err(Reason::BadChecksum);
    }
    let [kind, len] = message.get::<[u8; 2], { icmp::OPTIONS + icmp::OPTION_TYPE }>();
    if len != 1 {
        return Err(Reason::Malformed);
    }
    Ok(Options {
        source_lladdr: kind == OPTION_SOURCE_LLADDR,
        target_lladdr: (kind == OPTION_TARGET_LLADDR)
            .then(|| message.get::<Mac, { icmp::OPTIONS + icmp::OPTION_LLADDR }>()),
    })
}

/// The message's words added to `seed`; 1 when the result verifies.
///
/// Out of line (a BPF-to-BPF call) on purpose, like [`walk_options_raw`]:
/// the loop leaves the verifier one state per way out of it, and inlined,
/// every one of those would carry on through the rest of the program (and
/// multiply with the other loop's), past the verifier's budget. A call
/// returns only its scalar, so the caller's states meet again.
#[inline(never)]
fn message_sum_valid(start: usize, end: usize, l4: usize, icmp_len: usize, seed: u64) -> u64 {
    let mut sum = Sum::from_raw(seed);
    let mut offset = 0;
    let mut units = 0;
    while units < MAX_OPTION_UNITS + ND_MIN_LEN / 8 {
        if offset >= icmp_len {
            break;
        }
        let Some(words) = opaque_frame(start, &end).words8(l4 + offset) else {
            return 0;
        };
        sum.add_all(words);
        offset += 8;
        units += 1;
    }
    (sum.fold() == 0xffff) as u64
}

/// The options walk, out of line for the reason given at
/// [`message_sum_valid`]; the findings packed as in [`walked`].
#[inline(never)]
fn walk_options_raw(start: usize, end: usize, l4: usize, icmp_len: usize) -> u64 {
    let mut found = 0u64;
    let mut offset = ND_MIN_LEN;
    let mut seen = 0;
    while seen < MAX_OPTION_UNITS {
        if offset >= icmp_len {
            break;
        }
        let at = l4 + offset;
        let Some(option) = opaque_frame(start, &end).bounded_at::<8>(at) else {
            return 0;
        };
        let [kind, len] = option.get::<[u8; 2], { icmp::OPTION_TYPE }>();
        if len == 0 {
            return 0;
        }
        if kind == OPTION_SOURCE_LLADDR {
            found |= walked::SOURCE_LLADDR;
        } else if kind == OPTION_TARGET_LLADDR && len == 1 {
            let mac = option.get::<[u8; 6], { icmp::OPTION_LLADDR }>();
            let word = u64::from_ne_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0]);
            found = found & (walked::VALID | walked::SOURCE_LLADDR)
                | walked::TARGET_LLADDR
                | word << walked::TARGET_LLADDR_SHIFT;
        }
        offset += 8 * len as usize;
        seen += 1;
    }
    if offset == icmp_len {
        found |= walked::VALID;
    }
    found
}

#[inline(always)]
pub fn respond(ctx: &XdpContext, frame: &Frame, link: Link) -> Verdict {
    let Some(ip) = frame.bounded_at::<{ field::L4 }>(link.l3) else {
        return Verdict::pass(Reason::Truncated);
    };
    // One byte: the pair's hop limit is only read once the message is ours.
    let next_header = ip.get::<u8, { field::NEXT_HEADER_HOP_LIMIT }>();
    // The fast path: ICMPv6 right after the fixed header, as every NS and
    // NA a host sends has it; inlined apart so that its offsets are
    // constants. Extension headers (rare) take the walk.
    if next_header == NEXT_HEADER_ICMPV6 {
        return discovery(ctx, frame, link, link.l3 + field::L4);
    }
    match icmp_offset(frame, link.l3, next_header) {
        Ok(l4) => discovery(ctx, frame, link, l4),
        Err(Some(reason)) => Verdict::pass(reason),
        Err(None) => Verdict::pass_uncounted(),
    }
}

#[inline(always)]
fn discovery(ctx: &XdpContext, frame: &Frame, link: Link, l4: usize) -> Verdict {
    let message = match parse(frame, link, l4) {
        Ok(message) => message,
        Err(Some(reason)) => return Verdict::pass(reason),
        Err(None) => return Verdict::pass_uncounted(),
    };
    if message.kind == ICMP_NEIGHBOR_ADVERTISEMENT {
        return advertised(ctx, frame, link, &message);
    }
    solicited(ctx, frame, link, &message)
}

/// A Neighbor Advertisement: a conflict when it claims one of our VIPs for
/// another link-layer address (its Target Link-Layer Address option, else
/// its Ethernet source); our own come back `looped`. Advertisements for
/// other addresses are other ICMPv6 traffic.
#[inline(always)]
fn advertised(ctx: &XdpContext, frame: &Frame, link: Link, na: &Discovery) -> Verdict {
    let Some(vip) = maps::vip_v6(na.target, ctx.ingress_ifindex() as u32, link.vlan) else {
        return Verdict::pass(Reason::OtherTraffic);
    };
    let options = match verify(ctx, frame, &na.ip) {
        Ok(options) => options,
        Err(reason) => return Verdict::pass(reason),
    };
    // RFC 4861 §7.1.2: an advertisement sent to a multicast address with
    // the Solicited flag set is invalid, and must not count as a claim.
    if is_multicast(na.ip.destination) && na.flags & NA_FLAG_SOLICITED != 0 {
        return Verdict::pass(Reason::Malformed);
    }
    let claimed = options.target_lladdr.unwrap_or(na.ip.eth_src);
    if same_mac(claimed, mac_words(vip.mac)) {
        log::na_claimed(ctx, na.target, claimed, Reason::Looped);
        return Verdict::pass(Reason::Looped);
    }
    maps::record_conflict(&vip, claimed);
    log::na_claimed(ctx, na.target, claimed, Reason::Conflict);
    Verdict::pass(Reason::Conflict)
}

#[inline(always)]
fn solicited(ctx: &XdpContext, frame: &Frame, link: Link, ns: &Discovery) -> Verdict {
    let ip = &ns.ip;
    if is_multicast(ip.source) {
        return Verdict::pass(Reason::Malformed);
    }
    // Sent to the target's solicited-node group, or unicast to the target
    // (NUD); DAD (unspecified source) only ever to the group.
    let to_group = is_solicited_node_of(ip.destination, ns.target);
    let from_unspecified = is_unspecified(ip.source);
    if !to_group && (from_unspecified || !same_ipv6(ip.destination, ns.target)) {
        return Verdict::pass(Reason::Malformed);
    }
    let Some(vip) = maps::vip_v6(ns.target, ctx.ingress_ifindex() as u32, link.vlan) else {
        return Verdict::pass(Reason::NotOwned);
    };
    // The costly checks come after the lookup: solicitations for other
    // hosts' addresses are the common case on a busy segment.
    let options = match verify(ctx, frame, ip) {
        Ok(options) => options,
        Err(reason) => return Verdict::pass(reason),
    };
    if from_unspecified && options.source_lladdr {
        return Verdict::pass(Reason::Malformed);
    }
    let our_mac = mac_words(vip.mac);
    // A group solicitation may arrive at our unicast MAC: multicast-to-
    // unicast conversion by bridges and access points (RFC 6085).
    let to_our_mac = same_mac(ip.eth_dst, our_mac);
    let to_group_mac = to_group && same_mac(ip.eth_dst, ipv6_multicast_mac(ip.destination));
    if !to_our_mac && !to_group_mac {
        log::ns_refused(ctx, ns.target, Reason::WrongEthDestination);
        return Verdict::refuse(&vip, Reason::WrongEthDestination);
    }
    if !maps::control_plane_alive() {
        log::ns_refused(ctx, ns.target, Reason::HeartbeatStale);
        return Verdict::refuse(&vip, Reason::HeartbeatStale);
    }
    // Only a unicast solicitation's frame too short for the option goes
    // without it: no solicitation is grown for a unicast answer. Tags stay
    // in front of the IPv6 header, so the frame keeps `link.l3` of them.
    let with_option = to_group || frame.len() >= link.l3 + NA_PACKET_LEN;
    let na_frame_len = link.l3
        + if with_option {
            NA_PACKET_LEN
        } else {
            NA_SHORT_PACKET_LEN
        };
    let delta = na_frame_len as i32 - frame.len() as i32;
    // The answer is built in the linear part. Answered in place, a request
    // spread over several buffers (never seen: an NS fits any first buffer)
    // keeps the others as a trailer past the IPv6 payload length, which
    // receivers drop, as ARP answers keep padding; asking would be a
    // kernel call on every answer. Resized, it is refused: on a
    // multi-buffer frame `bpf_xdp_adjust_tail` moves the end of the last
    // buffer, not of the answer.
    // SAFETY (both calls): the context pointer is the one the kernel gave us.
    if delta != 0 && unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize != frame.len() {
        return Verdict::refuse(&vip, Reason::Unsupported);
    }
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        log::ns_refused(ctx, ns.target, Reason::ResizeFailed);
        return Verdict::refuse(&vip, Reason::ResizeFailed);
    }
    // Resizing invalidates every packet pointer: start over from the context.
    let resized = Frame::new(ctx);
    let (Some(eth), Some(na)) = (
        resized.bounded::<{ ethernet::HEADER_LEN }>(),
        resized.bounded_at::<NA_SHORT_PACKET_LEN>(link.l3),
    ) else {
        log::ns_refused(ctx, ns.target, Reason::ResizeFailed);
        return Verdict::refuse(&vip, Reason::ResizeFailed);
    };
    // RFC 4861 §7.2.4: to the solicitation's source with S=1; a DAD probe
    // (from ::) to all-nodes with S=0. O=1: we are the authority for the VIP.
    let (ip_dst, eth_dst, flags) = if from_unspecified {
        (ALL_NODES, ipv6_multicast_mac(ALL_NODES), NA_FLAG_OVERRIDE)
    } else {
        (ip.source, ip.eth_src, NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE)
    };
    let icmp_len = na_frame_len - link.l3 - field::L4;
    eth.set::<Mac, { ethernet::field::DESTINATION }>(eth_dst);
    eth.set::<Mac, { ethernet::field::SOURCE }>(our_mac);
    // Version 6; traffic class and flow label cleared.
    na.set::<u32, { field::VERSION }>(u32::from_ne_bytes([0x60, 0, 0, 0]));
    na.set::<u16, { field::PAYLOAD_LEN }>((icmp_len as u16).to_be());
    na.set::<u16, { field::NEXT_HEADER_HOP_LIMIT }>(wire16(
        NEXT_HEADER_ICMPV6,
        HOP_LIMIT_LINK_LOCAL,
    ));
    na.set::<Ipv6, { field::SOURCE }>(ns.target);
    na.set::<Ipv6, { field::DESTINATION }>(ip_dst);
    na.set::<[u16; 2], { field::L4 + icmp::TYPE_CODE }>([
        wire16(ICMP_NEIGHBOR_ADVERTISEMENT, 0),
        0,
    ]);
    na.set::<u32, { field::L4 + icmp::FLAGS }>(u32::from_ne_bytes([flags, 0, 0, 0]));
    // Extension headers moved the target; without them this rewrites it
    // where it is.
    na.set::<Ipv6, { field::L4 + icmp::TARGET }>(ns.target);
    let mut sum = Sum::new();
    sum.add_all(ns.target);
    sum.add_all(ip_dst);
    sum.add_be32(icmp_len as u32);
    sum.add_be32(NEXT_HEADER_ICMPV6 as u32);
    if with_option {
        let Some(na) = resized.bounded_at::<NA_PACKET_LEN>(link.l3) else {
            return Verdict::refuse(&vip, Reason::ResizeFailed);
        };
        na.set::<[u16; 4], { field::L4 + icmp::OPTIONS }>([
            wire16(OPTION_TARGET_LLADDR, 1),
            our_mac[0],
            our_mac[1],
            our_mac[2],
        ]);
        sum.add_all(na.get::<[u32; NA_LEN / 4], { field::L4 }>());
        na.set::<u16, { field::L4 + icmp::CHECKSUM }>(!sum.fold());
    } else {
        sum.add_all(na.get::<[u32; ND_MIN_LEN / 4], { field::L4 }>());
        na.set::<u16, { field::L4 + icmp::CHECKSUM }>(!sum.fold());
    }
    maps::count_answer(&vip);
    Verdict::transmit(Reason::NsAnswered)
}
