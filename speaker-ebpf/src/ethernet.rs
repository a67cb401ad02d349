//! Ethernet II header.

use speaker_common::Reason;

use crate::{frame::Frame, verdict::Verdict};

pub mod field {
    use core::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
}

pub const HEADER_LEN: usize = field::ETHERTYPE.end;

pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

pub const BROADCAST: [u8; 6] = [0xff; 6];

/// The EtherType, or a pass verdict when the frame is shorter than a header.
#[inline(always)]
pub fn ether_type(frame: &Frame) -> Result<u16, Verdict> {
    frame
        .u16_be(field::ETHERTYPE.start)
        .ok_or(Verdict::pass(Reason::Truncated))
}

/// Group bit (I/G) of a MAC address: set for multicast and broadcast.
#[inline(always)]
pub fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 0x01 != 0
}

/// The Ethernet multicast address an IPv6 multicast address maps to (RFC 2464 §7).
#[inline(always)]
pub fn ipv6_multicast_mac(addr: &[u8; 16]) -> [u8; 6] {
    [0x33, 0x33, addr[12], addr[13], addr[14], addr[15]]
}

/// Compares as words: byte-array equality would become a `bcmp` call, which
/// BPF cannot make.
#[inline(always)]
pub fn same_mac(a: &[u8; 6], b: &[u8; 6]) -> bool {
    u32::from_ne_bytes([a[0], a[1], a[2], a[3]]) == u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
        && u16::from_ne_bytes([a[4], a[5]]) == u16::from_ne_bytes([b[4], b[5]])
}
