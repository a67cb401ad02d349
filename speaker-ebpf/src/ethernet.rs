//! Ethernet II header.

use speaker_common::Reason;

use crate::{
    frame::{first_byte_u16, wire16, Frame, Ipv6, Mac},
    verdict::Verdict,
};

pub mod field {
    pub const DESTINATION: usize = 0;
    pub const SOURCE: usize = 6;
    pub const ETHERTYPE: usize = 12;
}

pub const HEADER_LEN: usize = 14;

pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

pub const BROADCAST: Mac = [0xffff; 3];

/// The EtherType, or `None` when the frame is shorter than a header.
#[inline(always)]
pub fn ether_type(frame: &Frame) -> Option<u16> {
    Some(
        frame
            .bounded::<HEADER_LEN>()?
            .get_be16::<{ field::ETHERTYPE }>(),
    )
}

/// An 802.1Q or 802.1ad tag: TPID and TCI.
const TAG_LEN: usize = 4;
const IPV6_NEXT_HEADER: usize = 6;
const NEXT_HEADER_HOP_BY_HOP: u8 = 0;
const NEXT_HEADER_ICMPV6: u8 = 58;

/// A tagged frame (VLANs are not answered yet). Counted as `vlan_tagged`
/// only when what it carries could be a request (ARP, ICMPv6 or an IPv6
/// Hop-by-Hop header) behind one or two tags: on a trunk every frame is
/// tagged, and the rest is the hot path like untagged traffic.
#[inline(always)]
pub fn tagged(frame: &Frame) -> Verdict {
    let Some(tags) = frame.bounded::<{ HEADER_LEN + 2 * TAG_LEN + 2 }>() else {
        return Verdict::pass(Reason::VlanTagged);
    };
    let mut inner_at = HEADER_LEN + TAG_LEN - 2;
    let mut inner = tags.get_be16::<{ HEADER_LEN + TAG_LEN - 2 }>();
    if inner == ETHERTYPE_VLAN {
        inner_at += TAG_LEN;
        inner = tags.get_be16::<{ HEADER_LEN + 2 * TAG_LEN - 2 }>();
    }
    let could_be_request = match inner {
        ETHERTYPE_ARP => true,
        ETHERTYPE_IPV6 => matches!(
            frame.pair(inner_at + 2 + IPV6_NEXT_HEADER),
            Some([NEXT_HEADER_ICMPV6 | NEXT_HEADER_HOP_BY_HOP, _]) | None
        ),
        _ => false,
    };
    if could_be_request {
        Verdict::pass(Reason::VlanTagged)
    } else {
        Verdict::pass_uncounted()
    }
}

/// Group bit (I/G) of a MAC address: set for multicast and broadcast.
#[inline(always)]
pub fn is_group(mac: Mac) -> bool {
    first_byte_u16(mac[0]) & 0x01 != 0
}

/// The Ethernet multicast address an IPv6 multicast address maps to (RFC 2464
/// §7): 33:33 and the address's last four bytes.
#[inline(always)]
pub fn ipv6_multicast_mac(addr: Ipv6) -> Mac {
    let [a, b, c, d] = addr[3].to_ne_bytes();
    [wire16(0x33, 0x33), wire16(a, b), wire16(c, d)]
}

/// The MAC as the maps store it (bytes), as words.
#[inline(always)]
pub fn mac_words(mac: [u8; 6]) -> Mac {
    [
        wire16(mac[0], mac[1]),
        wire16(mac[2], mac[3]),
        wire16(mac[4], mac[5]),
    ]
}
