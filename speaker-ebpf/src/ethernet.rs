//! Ethernet II header.

use speaker_common::VlanPath;

use crate::frame::{first_byte_u16, wire16, Frame, Ipv6, Mac};

pub mod field {
    pub const DESTINATION: usize = 0;
    pub const SOURCE: usize = 6;
    pub const ETHERTYPE: usize = 12;
}

pub const HEADER_LEN: usize = 14;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
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

/// The EtherType in network byte order, as loaded: comparing it with
/// swapped constants spares the sieve a byte swap.
#[inline(always)]
pub fn ether_type_as_loaded(frame: &Frame) -> Option<u16> {
    Some(
        frame
            .bounded::<HEADER_LEN>()?
            .get::<u16, { field::ETHERTYPE }>(),
    )
}

/// Where a request's network header starts, and the VLAN tags it came
/// with (the VIP key's `vlan`). The answer keeps the tags where they are.
#[derive(Clone, Copy)]
pub struct Link {
    /// Offset of the ARP or IPv6 header: after the Ethernet header and tags.
    pub l3: usize,
    pub vlan: VlanPath,
}

impl Link {
    pub const UNTAGGED: Link = Link {
        l3: HEADER_LEN,
        vlan: VlanPath::UNTAGGED,
    };
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
