//! The frames of an unsolicited announcement, built in userspace: a
//! gratuitous ARP request and reply (RFC 5227 §2.3, RFC 5944 §4.6) for IPv4,
//! an unsolicited Neighbor Advertisement (RFC 4861 §7.2.6) for IPv6.
//!
//! [`Announcement`] is the value, [`Announcement::emit`] writes it and
//! [`Announcement::parse`] reads it back, rejecting anything `emit` would not
//! have produced, with a [`Malformed`] reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};

/// Byte ranges, each named once; nothing else in this file uses a bare offset.
mod field {
    pub type Field = core::ops::Range<usize>;

    /// Ethernet II header.
    pub mod ethernet {
        use super::Field;
        pub const DESTINATION: Field = 0..6;
        pub const SOURCE: Field = 6..12;
        pub const ETHERTYPE: Field = 12..14;
        pub const PAYLOAD: usize = 14;
    }

    /// ARP for IPv4 over Ethernet (RFC 826), from the Ethernet payload.
    pub mod arp {
        use super::Field;
        pub const HTYPE: Field = 0..2;
        pub const PTYPE: Field = 2..4;
        pub const HLEN: usize = 4;
        pub const PLEN: usize = 5;
        pub const OPER: Field = 6..8;
        pub const SHA: Field = 8..14;
        pub const SPA: Field = 14..18;
        pub const THA: Field = 18..24;
        pub const TPA: Field = 24..28;
        pub const END: usize = 28;
    }

    /// IPv6 header (RFC 8200 §3), from the Ethernet payload.
    pub mod ipv6 {
        use super::Field;
        pub const VERSION_CLASS_FLOW: Field = 0..4;
        pub const PAYLOAD_LENGTH: Field = 4..6;
        pub const NEXT_HEADER: usize = 6;
        pub const HOP_LIMIT: usize = 7;
        pub const SOURCE: Field = 8..24;
        pub const DESTINATION: Field = 24..40;
        pub const PAYLOAD: usize = 40;
    }

    /// Neighbor Advertisement (RFC 4861 §4.4), from the IPv6 payload.
    pub mod neighbor_advert {
        use super::Field;
        pub const TYPE: usize = 0;
        pub const CODE: usize = 1;
        pub const CHECKSUM: Field = 2..4;
        /// R, S, O in the top bits, then 29 reserved bits.
        pub const FLAGS_RESERVED: Field = 4..8;
        pub const TARGET: Field = 8..24;
        pub const OPTIONS: usize = 24;
    }

    /// Target Link-Layer Address option (RFC 4861 §4.6.1), from its start.
    pub mod link_layer_option {
        use super::Field;
        pub const TYPE: usize = 0;
        /// In units of 8 octets.
        pub const LENGTH: usize = 1;
        pub const ADDRESS: Field = 2..8;
        pub const END: usize = 8;
    }
}

pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// ff02::1 mapped by RFC 2464 §7.
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_PTYPE_IPV4: u16 = 0x0800;
const ETHERNET_ADDRESS_LEN: u8 = 6;
const IPV4_ADDRESS_LEN: u8 = 4;
const IPV6_VERSION_CLASS_FLOW: u32 = 6 << 28;
const NEXT_HEADER_ICMPV6: u8 = 58;
/// RFC 4861 §7.1.2: receivers drop NAs with any other hop limit.
const NDP_HOP_LIMIT: u8 = 255;
const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
/// R=0 S=0 O=1; R is bit 31, S bit 30 (RFC 4861 §4.4).
const NA_FLAG_OVERRIDE: u32 = 1 << 29;
const OPTION_TARGET_LINK_LAYER: u8 = 2;

const ARP_FRAME_LEN: usize = field::ethernet::PAYLOAD + field::arp::END;
const NEIGHBOR_ADVERT_LEN: usize = field::neighbor_advert::OPTIONS + field::link_layer_option::END;
const NEIGHBOR_ADVERT_FRAME_LEN: usize =
    field::ethernet::PAYLOAD + field::ipv6::PAYLOAD + NEIGHBOR_ADVERT_LEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOperation {
    Request = 1,
    Reply = 2,
}

/// One frame of an announcement round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announcement {
    /// Broadcast; sender IP = target IP = `ip`, sender MAC = `mac`. The
    /// request's target MAC is zero (RFC 5227 §2.1.1: ignored, SHOULD be
    /// zero; iputils `arping -U` puts ff:ff:ff:ff:ff:ff there instead). The
    /// reply's target MAC is `mac`, as `arping -A` sends it: Linux only
    /// treats a reply as gratuitous (and overrides a recently confirmed
    /// entry with it) when THA equals SHA (`arp_is_garp`, net/ipv4/arp.c).
    GratuitousArp {
        operation: ArpOperation,
        mac: [u8; 6],
        ip: Ipv4Addr,
    },
    /// To ff02::1 from `ip` itself, R=0 S=0 O=1, target `ip`, Target
    /// Link-Layer Address `mac`. O=1 makes receivers replace a cached MAC
    /// (RFC 4861 §7.2.5); S must be 0 towards a multicast destination.
    NeighborAdvert { mac: [u8; 6], ip: Ipv6Addr },
}

/// Why [`Announcement::parse`] rejected a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("frame has {0} bytes, not the length of an announcement")]
    Length(usize),
    #[error("EtherType {0:#06x} is neither ARP nor IPv6")]
    Ethertype(u16),
    #[error("Ethernet destination is not the broadcast/all-nodes group")]
    Destination,
    #[error("ARP header is not Ethernet/IPv4")]
    ArpHeader,
    #[error("ARP operation {0} is neither request nor reply")]
    ArpOperation(u16),
    #[error("sender and target IP differ")]
    NotGratuitous,
    #[error("a MAC inside the packet differs from the Ethernet source")]
    MacMismatch,
    #[error("ARP target MAC is not what a gratuitous frame carries")]
    ArpTargetMac,
    #[error("IPv6 header is not the one of a Neighbor Advertisement to ff02::1")]
    Ipv6Header,
    #[error("hop limit {0} is not 255")]
    HopLimit(u8),
    #[error("ICMPv6 type {0} code {1} is not a Neighbor Advertisement")]
    IcmpType(u8, u8),
    #[error("ICMPv6 checksum {0:#06x} does not verify")]
    Checksum(u16),
    #[error("flags/reserved {0:#010x} are not R=0 S=0 O=1")]
    Flags(u32),
    #[error("target is not the source address")]
    Target,
    #[error("option is not one Target Link-Layer Address")]
    Option,
}

impl Announcement {
    /// The frames of one round for `ip`, in sending order.
    pub fn round(ip: IpAddr, mac: [u8; 6]) -> Vec<Announcement> {
        match ip {
            IpAddr::V4(ip) => [ArpOperation::Request, ArpOperation::Reply]
                .into_iter()
                .map(|operation| Announcement::GratuitousArp { operation, mac, ip })
                .collect(),
            IpAddr::V6(ip) => vec![Announcement::NeighborAdvert { mac, ip }],
        }
    }

    pub fn ip(&self) -> IpAddr {
        match *self {
            Announcement::GratuitousArp { ip, .. } => ip.into(),
            Announcement::NeighborAdvert { ip, .. } => ip.into(),
        }
    }

    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Announcement::GratuitousArp {
                operation: ArpOperation::Request,
                ..
            } => "gratuitous ARP request",
            Announcement::GratuitousArp {
                operation: ArpOperation::Reply,
                ..
            } => "gratuitous ARP reply",
            Announcement::NeighborAdvert { .. } => "unsolicited Neighbor Advertisement",
        }
    }

    /// The length of the frame [`emit`](Self::emit) writes (no padding to
    /// 60 bytes: NIC drivers pad short frames, veth needs none).
    pub fn frame_len(&self) -> usize {
        match self {
            Announcement::GratuitousArp { .. } => ARP_FRAME_LEN,
            Announcement::NeighborAdvert { .. } => NEIGHBOR_ADVERT_FRAME_LEN,
        }
    }

    /// The frame as bytes, written into one buffer of exactly its length.
    pub fn to_frame(&self) -> Bytes {
        let mut frame = BytesMut::with_capacity(self.frame_len());
        self.emit(&mut frame);
        frame.freeze()
    }

    /// Appends the frame to `frame`, field after field in wire order; the
    /// [`field`] offsets that [`parse`](Self::parse) reads are where these
    /// writes land.
    pub fn emit(&self, frame: &mut BytesMut) {
        let start = frame.len();
        match *self {
            Announcement::GratuitousArp { operation, mac, ip } => {
                emit_ethernet(frame, BROADCAST_MAC, mac, ETHERTYPE_ARP);
                frame.put_u16(ARP_HTYPE_ETHERNET);
                frame.put_u16(ARP_PTYPE_IPV4);
                frame.put_u8(ETHERNET_ADDRESS_LEN);
                frame.put_u8(IPV4_ADDRESS_LEN);
                frame.put_u16(operation as u16);
                frame.put_slice(&mac);
                frame.put_slice(&ip.octets());
                frame.put_slice(&arp_target_mac(operation, mac));
                frame.put_slice(&ip.octets());
            }
            Announcement::NeighborAdvert { mac, ip } => {
                emit_ethernet(frame, ALL_NODES_MAC, mac, ETHERTYPE_IPV6);
                frame.put_u32(IPV6_VERSION_CLASS_FLOW);
                frame.put_u16(NEIGHBOR_ADVERT_LEN as u16);
                frame.put_u8(NEXT_HEADER_ICMPV6);
                frame.put_u8(NDP_HOP_LIMIT);
                frame.put_slice(&ip.octets());
                frame.put_slice(&ALL_NODES.octets());

                let icmp_start = frame.len();
                frame.put_u8(ICMPV6_NEIGHBOR_ADVERT);
                frame.put_u8(0);
                // Summed as zero, then filled in below (RFC 4443 §2.3).
                frame.put_u16(0);
                frame.put_u32(NA_FLAG_OVERRIDE);
                frame.put_slice(&ip.octets());
                frame.put_u8(OPTION_TARGET_LINK_LAYER);
                frame.put_u8((field::link_layer_option::END / 8) as u8);
                frame.put_slice(&mac);

                let icmp = &mut frame[icmp_start..];
                let checksum = icmpv6_checksum(&ip, &ALL_NODES, icmp);
                icmp[field::neighbor_advert::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
            }
        }
        debug_assert_eq!(frame.len() - start, self.frame_len());
    }

    /// Reads a frame that [`emit`](Self::emit) could have written, checking
    /// every field (and the ICMPv6 checksum).
    pub fn parse(frame: &[u8]) -> Result<Announcement, Malformed> {
        match ethertype_of(frame) {
            Some(ETHERTYPE_ARP) => parse_arp(frame),
            Some(ETHERTYPE_IPV6) => parse_neighbor_advert(frame),
            Some(other) => Err(Malformed::Ethertype(other)),
            None => Err(Malformed::Length(frame.len())),
        }
    }
}

impl Announcement {
    /// [`Announcement::parse`] of a frame off the wire: an ARP frame may
    /// carry padding up to Ethernet's 60-byte minimum (IEEE 802.3 §3.2.8),
    /// which is cut off first. Neighbor Advertisements are longer than the
    /// minimum and never padded.
    pub fn parse_received(frame: &[u8]) -> Result<Announcement, Malformed> {
        match ethertype_of(frame) {
            Some(ETHERTYPE_ARP) if frame.len() > ARP_FRAME_LEN => {
                Self::parse(&frame[..ARP_FRAME_LEN])
            }
            _ => Self::parse(frame),
        }
    }
}

/// The EtherType of an untagged Ethernet frame.
pub fn ethertype_of(frame: &[u8]) -> Option<u16> {
    frame
        .get(field::ethernet::ETHERTYPE)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// The Ethernet destination of a frame.
pub fn destination_of(frame: &[u8]) -> Option<[u8; 6]> {
    frame.get(field::ethernet::DESTINATION).map(mac_at)
}

fn arp_target_mac(operation: ArpOperation, mac: [u8; 6]) -> [u8; 6] {
    match operation {
        ArpOperation::Request => [0; 6],
        ArpOperation::Reply => mac,
    }
}

fn emit_ethernet(frame: &mut BytesMut, destination: [u8; 6], source: [u8; 6], ethertype: u16) {
    frame.put_slice(&destination);
    frame.put_slice(&source);
    frame.put_u16(ethertype);
}

fn parse_arp(frame: &[u8]) -> Result<Announcement, Malformed> {
    if frame.len() != ARP_FRAME_LEN {
        return Err(Malformed::Length(frame.len()));
    }
    if mac_at(&frame[field::ethernet::DESTINATION]) != BROADCAST_MAC {
        return Err(Malformed::Destination);
    }
    let mac = mac_at(&frame[field::ethernet::SOURCE]);
    let arp = &frame[field::ethernet::PAYLOAD..];
    if get_u16(arp, field::arp::HTYPE) != ARP_HTYPE_ETHERNET
        || get_u16(arp, field::arp::PTYPE) != ARP_PTYPE_IPV4
        || arp[field::arp::HLEN] != ETHERNET_ADDRESS_LEN
        || arp[field::arp::PLEN] != IPV4_ADDRESS_LEN
    {
        return Err(Malformed::ArpHeader);
    }
    let operation = match get_u16(arp, field::arp::OPER) {
        1 => ArpOperation::Request,
        2 => ArpOperation::Reply,
        other => return Err(Malformed::ArpOperation(other)),
    };
    if mac_at(&arp[field::arp::SHA]) != mac {
        return Err(Malformed::MacMismatch);
    }
    let ip = ipv4_at(&arp[field::arp::SPA]);
    if ipv4_at(&arp[field::arp::TPA]) != ip {
        return Err(Malformed::NotGratuitous);
    }
    if mac_at(&arp[field::arp::THA]) != arp_target_mac(operation, mac) {
        return Err(Malformed::ArpTargetMac);
    }
    Ok(Announcement::GratuitousArp { operation, mac, ip })
}

fn parse_neighbor_advert(frame: &[u8]) -> Result<Announcement, Malformed> {
    if frame.len() != NEIGHBOR_ADVERT_FRAME_LEN {
        return Err(Malformed::Length(frame.len()));
    }
    if mac_at(&frame[field::ethernet::DESTINATION]) != ALL_NODES_MAC {
        return Err(Malformed::Destination);
    }
    let mac = mac_at(&frame[field::ethernet::SOURCE]);
    let packet = &frame[field::ethernet::PAYLOAD..];
    if get_u32(packet, field::ipv6::VERSION_CLASS_FLOW) != IPV6_VERSION_CLASS_FLOW
        || usize::from(get_u16(packet, field::ipv6::PAYLOAD_LENGTH)) != NEIGHBOR_ADVERT_LEN
        || packet[field::ipv6::NEXT_HEADER] != NEXT_HEADER_ICMPV6
        || ipv6_at(&packet[field::ipv6::DESTINATION]) != ALL_NODES
    {
        return Err(Malformed::Ipv6Header);
    }
    if packet[field::ipv6::HOP_LIMIT] != NDP_HOP_LIMIT {
        return Err(Malformed::HopLimit(packet[field::ipv6::HOP_LIMIT]));
    }
    let ip = ipv6_at(&packet[field::ipv6::SOURCE]);
    let icmp = &packet[field::ipv6::PAYLOAD..];
    let (kind, code) = (
        icmp[field::neighbor_advert::TYPE],
        icmp[field::neighbor_advert::CODE],
    );
    if (kind, code) != (ICMPV6_NEIGHBOR_ADVERT, 0) {
        return Err(Malformed::IcmpType(kind, code));
    }
    // The sum over a message that carries its own checksum is 0 (RFC 1071).
    if icmpv6_checksum(&ip, &ALL_NODES, icmp) != 0 {
        return Err(Malformed::Checksum(get_u16(
            icmp,
            field::neighbor_advert::CHECKSUM,
        )));
    }
    let flags = get_u32(icmp, field::neighbor_advert::FLAGS_RESERVED);
    if flags != NA_FLAG_OVERRIDE {
        return Err(Malformed::Flags(flags));
    }
    if ipv6_at(&icmp[field::neighbor_advert::TARGET]) != ip {
        return Err(Malformed::Target);
    }
    let option = &icmp[field::neighbor_advert::OPTIONS..];
    if option[field::link_layer_option::TYPE] != OPTION_TARGET_LINK_LAYER
        || usize::from(option[field::link_layer_option::LENGTH]) * 8
            != field::link_layer_option::END
    {
        return Err(Malformed::Option);
    }
    if mac_at(&option[field::link_layer_option::ADDRESS]) != mac {
        return Err(Malformed::MacMismatch);
    }
    Ok(Announcement::NeighborAdvert { mac, ip })
}

/// The Internet checksum (RFC 1071) of `message` under the IPv6
/// pseudo-header (RFC 8200 §8.1). A message whose checksum field is zero
/// gets the value to store there; a complete one gets 0 when it verifies.
pub fn icmpv6_checksum(source: &Ipv6Addr, destination: &Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum = 0u32;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let high = u32::from(pair[0]) << 8;
            let low = pair.get(1).copied().map_or(0, u32::from);
            sum += high | low;
        }
    };
    add(&source.octets());
    add(&destination.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, NEXT_HEADER_ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn get_u16(buf: &[u8], at: field::Field) -> u16 {
    (&buf[at]).get_u16()
}

fn get_u32(buf: &[u8], at: field::Field) -> u32 {
    (&buf[at]).get_u32()
}

fn mac_at(b: &[u8]) -> [u8; 6] {
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

fn ipv4_at(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn ipv6_at(b: &[u8]) -> Ipv6Addr {
    let mut octets = [0; 16];
    octets.copy_from_slice(&b[..16]);
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_u16(buf: &mut [u8], at: field::Field, value: u16) {
        (&mut buf[at]).put_u16(value);
    }

    fn put_u32(buf: &mut [u8], at: field::Field, value: u32) {
        (&mut buf[at]).put_u32(value);
    }

    const MAC: [u8; 6] = [0x02, 0x5e, 0x00, 0x00, 0x00, 0x01];
    const NA_FLAG_ROUTER: u32 = 1 << 31;
    const NA_FLAG_SOLICITED: u32 = 1 << 30;
    const VIP_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

    // Fixtures written by an independent script and decoded by
    // `tcpdump -vv` ("Request who-has 192.0.2.100 tell 192.0.2.100",
    // "Reply 192.0.2.100 is-at 02:5e:00:00:00:01", "[icmp6 sum ok] neighbor
    // advertisement, tgt is 2001:db8::100, Flags [override], destination
    // link-address option 02:5e:00:00:00:01").
    #[rustfmt::skip]
    const ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // Ethernet destination: broadcast
        0x02, 0x5e, 0x00, 0x00, 0x00, 0x01, // Ethernet source
        0x08, 0x06,                         // ARP
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet/IPv4, 6/4
        0x00, 0x01,                         // request
        0x02, 0x5e, 0x00, 0x00, 0x00, 0x01, // SHA
        0xc0, 0x00, 0x02, 0x64,             // SPA 192.0.2.100
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // THA zero
        0xc0, 0x00, 0x02, 0x64,             // TPA 192.0.2.100
    ];
    #[rustfmt::skip]
    const ARP_REPLY: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x02, 0x5e, 0x00, 0x00, 0x00, 0x01,
        0x08, 0x06,
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04,
        0x00, 0x02,                         // reply
        0x02, 0x5e, 0x00, 0x00, 0x00, 0x01,
        0xc0, 0x00, 0x02, 0x64,
        0x02, 0x5e, 0x00, 0x00, 0x00, 0x01, // THA = SHA
        0xc0, 0x00, 0x02, 0x64,
    ];
    #[rustfmt::skip]
    const NEIGHBOR_ADVERT: [u8; 86] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01, // Ethernet destination: ff02::1's group
        0x02, 0x5e, 0x00, 0x00, 0x00, 0x01,
        0x86, 0xdd,                         // IPv6
        0x60, 0x00, 0x00, 0x00,             // version 6, class 0, flow 0
        0x00, 0x20, 0x3a, 0xff,             // payload 32, ICMPv6, hop limit 255
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, // source 2001:db8::100
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
        0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // destination ff02::1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x88, 0x00, 0xf6, 0xce,             // type 136, code 0, checksum
        0x20, 0x00, 0x00, 0x00,             // R=0 S=0 O=1
        0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, // target 2001:db8::100
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
        0x02, 0x01,                         // Target Link-Layer Address, 8 bytes
        0x02, 0x5e, 0x00, 0x00, 0x00, 0x01,
    ];

    fn request() -> Announcement {
        Announcement::GratuitousArp {
            operation: ArpOperation::Request,
            mac: MAC,
            ip: VIP_V4,
        }
    }

    fn reply() -> Announcement {
        Announcement::GratuitousArp {
            operation: ArpOperation::Reply,
            mac: MAC,
            ip: VIP_V4,
        }
    }

    fn advert() -> Announcement {
        Announcement::NeighborAdvert {
            mac: MAC,
            ip: VIP_V6,
        }
    }

    /// A second checksum, written differently on purpose: the pseudo-header
    /// is materialised, words are summed in a u64 and folded once at the end.
    fn reference_checksum(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
        let mut data = Vec::new();
        data.extend_from_slice(&source.octets());
        data.extend_from_slice(&destination.octets());
        data.extend_from_slice(&(message.len() as u32).to_be_bytes());
        data.extend_from_slice(&[0, 0, 0, 58]);
        data.extend_from_slice(message);
        if data.len() % 2 == 1 {
            data.push(0);
        }
        let sum: u64 = data
            .chunks_exact(2)
            .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        // End-around carry folding is addition modulo 0xffff, except that a
        // non-zero multiple of 0xffff folds to 0xffff, not 0.
        let folded = match sum % 0xffff {
            0 if sum != 0 => 0xffff,
            rest => rest as u16,
        };
        !folded
    }

    #[test]
    fn emits_the_fixtures() {
        assert_eq!(request().to_frame(), &ARP_REQUEST[..]);
        assert_eq!(reply().to_frame(), &ARP_REPLY[..]);
        assert_eq!(advert().to_frame(), &NEIGHBOR_ADVERT[..]);
    }

    #[test]
    fn parses_the_fixtures() {
        assert_eq!(Announcement::parse(&ARP_REQUEST), Ok(request()));
        assert_eq!(Announcement::parse(&ARP_REPLY), Ok(reply()));
        assert_eq!(Announcement::parse(&NEIGHBOR_ADVERT), Ok(advert()));
    }

    #[test]
    fn round_trips_other_addresses() {
        let mac = [0x6a, 0x0b, 0x1c, 0x2d, 0x3e, 0x4f];
        for ip in [
            "0.0.0.1",
            "255.255.255.254",
            "203.0.113.7",
            "::1",
            "fe80::1:2:3:4",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            for announcement in Announcement::round(ip.parse().unwrap(), mac) {
                let frame = announcement.to_frame();
                assert_eq!(frame.len(), announcement.frame_len());
                assert_eq!(Announcement::parse(&frame), Ok(announcement), "{ip}");
                assert_eq!(announcement.ip(), ip.parse::<IpAddr>().unwrap());
            }
        }
    }

    #[test]
    fn a_round_is_request_and_reply_or_one_advert() {
        assert_eq!(
            Announcement::round(VIP_V4.into(), MAC),
            [request(), reply()]
        );
        assert_eq!(Announcement::round(VIP_V6.into(), MAC), [advert()]);
    }

    #[test]
    fn checksum_agrees_with_the_reference() {
        let icmp = &NEIGHBOR_ADVERT[field::ethernet::PAYLOAD + field::ipv6::PAYLOAD..];
        let mut zeroed = icmp.to_vec();
        zeroed[field::neighbor_advert::CHECKSUM].fill(0);
        assert_eq!(reference_checksum(VIP_V6, ALL_NODES, &zeroed), 0xf6ce);
        assert_eq!(icmpv6_checksum(&VIP_V6, &ALL_NODES, &zeroed), 0xf6ce);
        assert_eq!(icmpv6_checksum(&VIP_V6, &ALL_NODES, icmp), 0);

        // Other addresses and MACs: emit's checksum is the reference one.
        for (ip, mac) in [
            ("2001:db8::1", [0u8; 6]),
            ("2001:db8::ffff", [0xff; 6]),
            ("fd00::abcd:1234", [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]),
        ] {
            let ip: Ipv6Addr = ip.parse().unwrap();
            let frame = Announcement::NeighborAdvert { mac, ip }.to_frame();
            let mut icmp = frame[field::ethernet::PAYLOAD + field::ipv6::PAYLOAD..].to_vec();
            let stored = get_u16(&icmp, field::neighbor_advert::CHECKSUM);
            icmp[field::neighbor_advert::CHECKSUM].fill(0);
            assert_eq!(stored, reference_checksum(ip, ALL_NODES, &icmp), "{ip}");
        }
    }

    #[test]
    fn checksum_of_an_odd_length_pads_with_zero() {
        let (a, b) = (VIP_V6, ALL_NODES);
        assert_eq!(
            icmpv6_checksum(&a, &b, &[1, 2, 3]),
            reference_checksum(a, b, &[1, 2, 3])
        );
    }

    #[test]
    fn rejects_what_emit_would_not_write() {
        let changed = |frame: &[u8], at: usize, value: u8| {
            let mut f = frame.to_vec();
            f[at] = value;
            Announcement::parse(&f)
        };
        let arp = field::ethernet::PAYLOAD;
        let ip6 = field::ethernet::PAYLOAD;
        let icmp = ip6 + field::ipv6::PAYLOAD;
        let cases = [
            (
                changed(&ARP_REQUEST, field::ethernet::DESTINATION.start, 0x01),
                Malformed::Destination,
            ),
            (
                changed(&ARP_REQUEST, arp + field::arp::OPER.end - 1, 3),
                Malformed::ArpOperation(3),
            ),
            (
                changed(&ARP_REQUEST, arp + field::arp::HLEN, 8),
                Malformed::ArpHeader,
            ),
            (
                changed(&ARP_REQUEST, arp + field::arp::TPA.end - 1, 0x65),
                Malformed::NotGratuitous,
            ),
            (
                changed(&ARP_REQUEST, arp + field::arp::SHA.start, 0x04),
                Malformed::MacMismatch,
            ),
            (
                changed(&ARP_REQUEST, arp + field::arp::THA.start, 0xff),
                Malformed::ArpTargetMac,
            ),
            (
                changed(&ARP_REPLY, arp + field::arp::THA.start, 0x00),
                Malformed::ArpTargetMac,
            ),
            (
                changed(&NEIGHBOR_ADVERT, ip6 + field::ipv6::HOP_LIMIT, 64),
                Malformed::HopLimit(64),
            ),
            (
                changed(&NEIGHBOR_ADVERT, ip6 + field::ipv6::DESTINATION.end - 1, 2),
                Malformed::Ipv6Header,
            ),
            (
                changed(
                    &NEIGHBOR_ADVERT,
                    icmp + field::neighbor_advert::CHECKSUM.start,
                    0,
                ),
                Malformed::Checksum(0x00ce),
            ),
            (
                changed(&NEIGHBOR_ADVERT, icmp + field::neighbor_advert::TYPE, 135),
                Malformed::IcmpType(135, 0),
            ),
            (
                changed(&NEIGHBOR_ADVERT, field::ethernet::ETHERTYPE.start, 0x08),
                Malformed::Ethertype(0x08dd),
            ),
            (
                Announcement::parse(&ARP_REQUEST[..41]),
                Malformed::Length(41),
            ),
            (
                Announcement::parse(&ARP_REQUEST[..10]),
                Malformed::Length(10),
            ),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, Err(want), "case {i}");
        }
    }

    #[test]
    fn rejects_wrong_flags_target_and_option_with_a_fixed_checksum() {
        let icmp_at = field::ethernet::PAYLOAD + field::ipv6::PAYLOAD;
        let with = |edit: &dyn Fn(&mut [u8])| {
            let mut frame = NEIGHBOR_ADVERT.to_vec();
            let icmp = &mut frame[icmp_at..];
            edit(icmp);
            put_u16(icmp, field::neighbor_advert::CHECKSUM, 0);
            let sum = reference_checksum(VIP_V6, ALL_NODES, icmp);
            put_u16(icmp, field::neighbor_advert::CHECKSUM, sum);
            Announcement::parse(&frame)
        };
        let flags = field::neighbor_advert::FLAGS_RESERVED;
        let solicited = NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE;
        assert_eq!(
            with(&|icmp| put_u32(icmp, flags.clone(), solicited)),
            Err(Malformed::Flags(solicited))
        );
        let router = NA_FLAG_ROUTER | NA_FLAG_OVERRIDE;
        assert_eq!(
            with(&|icmp| put_u32(icmp, flags.clone(), router)),
            Err(Malformed::Flags(router))
        );
        assert_eq!(
            with(&|icmp| icmp[field::neighbor_advert::TARGET.end - 1] = 1),
            Err(Malformed::Target)
        );
        let option = field::neighbor_advert::OPTIONS;
        assert_eq!(
            with(&|icmp| icmp[option + field::link_layer_option::TYPE] = 1),
            Err(Malformed::Option)
        );
        assert_eq!(
            with(&|icmp| icmp[option + field::link_layer_option::ADDRESS.start] = 0),
            Err(Malformed::MacMismatch)
        );
    }

    #[test]
    fn reads_ethertype_and_destination() {
        assert_eq!(ethertype_of(&ARP_REPLY), Some(ETHERTYPE_ARP));
        assert_eq!(ethertype_of(&NEIGHBOR_ADVERT), Some(ETHERTYPE_IPV6));
        assert_eq!(ethertype_of(&[0; 13]), None);
        assert_eq!(destination_of(&NEIGHBOR_ADVERT), Some(ALL_NODES_MAC));
    }

    #[test]
    fn padded_arp_frames_off_the_wire_parse() {
        let mac = [0x02, 0, 0, 0, 0, 0x0b];
        for announcement in Announcement::round("192.0.2.100".parse().unwrap(), mac) {
            let mut frame = announcement.to_frame().to_vec();
            frame.resize(60, 0);
            assert_eq!(Announcement::parse_received(&frame), Ok(announcement));
            assert!(Announcement::parse(&frame).is_err());
        }
        let advert = Announcement::round("2001:db8::100".parse().unwrap(), mac)[0];
        assert_eq!(Announcement::parse_received(&advert.to_frame()), Ok(advert));
    }
}
