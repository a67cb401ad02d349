//! Frames for testing the responder, built with smoltcp's `wire` module so
//! that they (and the replies we expect) come from an implementation that
//! shares no code with the XDP program.
//!
//! Requests: [`arp_request`], [`arp_probe`], [`gratuitous_arp`],
//! [`neighbor_solicitation`], [`dad_solicitation`], [`nud_solicitation`],
//! [`ns_with_nonce`], or the [`Arp`] and [`Ns`] builders for anything else.
//! Other traffic: [`ipv4_tcp`], [`ipv6_udp`], [`ipv6_echo_request`],
//! [`ethernet`], [`vlan_tagged`]. Expected answers: [`expected_arp_reply`]
//! and [`expected_neighbor_advertisement`]; parsers that check a reply the
//! way a receiver would: [`parse_arp_reply`], [`parse_neighbor_advertisement`].
//! Byte surgery for malformed frames: [`set_u8`], [`set_u16`], [`set_bytes`],
//! [`truncated`], [`padded`], [`refresh_icmpv6_checksum`].

use std::net::{Ipv4Addr, Ipv6Addr};

use smoltcp::{
    phy::ChecksumCapabilities,
    wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
        EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
        Ipv6ExtHeader, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
        TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
    },
};

pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];
/// The MAC the tests give the speaker's interface.
pub const OUR_MAC: Mac = [0x02, 0x5e, 0x00, 0x00, 0x00, 0x01];
/// A host asking for our VIPs.
pub const PEER_MAC: Mac = [0x02, 0x5e, 0x00, 0x00, 0x00, 0x02];
/// Some third host.
pub const OTHER_MAC: Mac = [0x02, 0x5e, 0x00, 0x00, 0x00, 0x03];
/// The Ethernet group of ff02::1 (RFC 2464 §7).
pub const ALL_NODES_MAC: Mac = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_LLDP: u16 = 0x88cc;

pub const ICMPV6_NEIGHBOR_SOLICITATION: u8 = 135;
pub const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;
pub const NDP_OPTION_SLLA: u8 = 1;
pub const NDP_OPTION_TLLA: u8 = 2;
/// RFC 3971 §5.3.2; sent by Linux in DAD probes (RFC 7527).
pub const NDP_OPTION_NONCE: u8 = 14;

/// Byte offsets in an untagged Ethernet frame.
pub mod offset {
    pub const ETH_DST: usize = 0;
    pub const ETH_SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
    pub const ETH_END: usize = 14;

    pub const ARP_HTYPE: usize = 14;
    pub const ARP_PTYPE: usize = 16;
    pub const ARP_HLEN: usize = 18;
    pub const ARP_PLEN: usize = 19;
    pub const ARP_OPER: usize = 20;
    pub const ARP_SHA: usize = 22;
    pub const ARP_SPA: usize = 28;
    pub const ARP_THA: usize = 32;
    pub const ARP_TPA: usize = 38;
    pub const ARP_END: usize = 42;

    pub const IPV6_VERSION: usize = 14;
    pub const IPV6_PAYLOAD_LEN: usize = 18;
    pub const IPV6_NEXT_HEADER: usize = 20;
    pub const IPV6_HOP_LIMIT: usize = 21;
    pub const IPV6_SRC: usize = 22;
    pub const IPV6_DST: usize = 38;
    pub const IPV6_END: usize = 54;

    pub const ICMPV6: usize = 54;
    pub const ICMPV6_TYPE: usize = 54;
    pub const ICMPV6_CODE: usize = 55;
    pub const ICMPV6_CHECKSUM: usize = 56;
    /// NA flags / NS reserved word.
    pub const NDP_FLAGS: usize = 58;
    pub const NDP_TARGET: usize = 62;
    /// The first option of an NS or NA.
    pub const NDP_OPTIONS: usize = 78;
    /// A Neighbor Advertisement with one link-layer address option.
    pub const NA_FRAME_LEN: usize = 86;
    /// A Neighbor Advertisement without options.
    pub const NA_SHORT_FRAME_LEN: usize = 78;
}

pub const NEXT_HEADER_HOP_BY_HOP: u8 = 0;
pub const NEXT_HEADER_FRAGMENT: u8 = 44;
pub const NEXT_HEADER_ESP: u8 = 50;
pub const NEXT_HEADER_DESTINATION_OPTIONS: u8 = 60;

fn eth(mac: Mac) -> EthernetAddress {
    EthernetAddress(mac)
}

fn caps() -> ChecksumCapabilities {
    ChecksumCapabilities::default()
}

/// An Ethernet II frame around `payload`.
pub fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 14 + payload.len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: eth(src),
        dst_addr: eth(dst),
        ethertype: EthernetProtocol::from(ethertype),
    }
    .emit(&mut frame);
    frame.payload_mut().copy_from_slice(payload);
    buf
}

/// `frame` with an 802.1Q (or, with `tpid` 0x88a8, 802.1ad) tag inserted after
/// the source MAC.
pub fn vlan_tagged(frame: &[u8], tpid: u16, vid: u16) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(&tpid.to_be_bytes());
    out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    out.extend_from_slice(&frame[12..]);
    out
}

// ---------------------------------------------------------------- ARP

/// Every field of an ARP-over-Ethernet frame.
#[derive(Clone, Copy, Debug)]
pub struct Arp {
    pub eth_dst: Mac,
    pub eth_src: Mac,
    pub operation: u16,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tha: Mac,
    pub tpa: Ipv4Addr,
}

impl Arp {
    /// A broadcast request from `sender` asking for `target`.
    pub fn request(sender_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Self {
        Arp {
            eth_dst: BROADCAST,
            eth_src: sender_mac,
            operation: 1,
            sha: sender_mac,
            spa: sender_ip,
            tha: [0; 6],
            tpa: target_ip,
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let repr = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::from(self.operation),
            source_hardware_addr: eth(self.sha),
            source_protocol_addr: self.spa,
            target_hardware_addr: eth(self.tha),
            target_protocol_addr: self.tpa,
        };
        let mut body = vec![0u8; repr.buffer_len()];
        repr.emit(&mut ArpPacket::new_unchecked(&mut body[..]));
        ethernet(self.eth_dst, self.eth_src, ETHERTYPE_ARP, &body)
    }
}

/// Broadcast "who has `target_ip`? tell `sender_ip`".
pub fn arp_request(sender_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    Arp::request(sender_mac, sender_ip, target_ip).build()
}

/// A request sent to `eth_dst` rather than broadcast (ARP cache refresh).
pub fn arp_unicast_request(
    eth_dst: Mac,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    Arp {
        eth_dst,
        ..Arp::request(sender_mac, sender_ip, target_ip)
    }
    .build()
}

/// An RFC 5227 probe: sender IP 0.0.0.0.
pub fn arp_probe(sender_mac: Mac, target_ip: Ipv4Addr) -> Vec<u8> {
    arp_request(sender_mac, Ipv4Addr::UNSPECIFIED, target_ip)
}

/// A gratuitous ARP (announcement) for `ip` from `sender_mac`, as a request
/// (`operation` 1) or a reply (2), broadcast.
pub fn gratuitous_arp(sender_mac: Mac, ip: Ipv4Addr, operation: u16) -> Vec<u8> {
    Arp {
        operation,
        tha: if operation == 2 { BROADCAST } else { [0; 6] },
        ..Arp::request(sender_mac, ip, ip)
    }
    .build()
}

/// An ordinary (non-gratuitous) reply from `sender` to `target`.
pub fn arp_reply(
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    Arp {
        eth_dst: target_mac,
        eth_src: sender_mac,
        operation: 2,
        sha: sender_mac,
        spa: sender_ip,
        tha: target_mac,
        tpa: target_ip,
    }
    .build()
}

/// The reply to `request` from the owner `our_mac` (RFC 826): sender and
/// target swapped, our MAC as sender, operation reply. Ethernet destination:
/// the request's Ethernet source (the speaker's documented choice; it equals
/// the sender hardware address in every real request). Bytes after the ARP
/// packet (Ethernet padding) are kept as they were.
pub fn expected_arp_reply(request: &[u8], our_mac: Mac) -> Vec<u8> {
    let frame = EthernetFrame::new_checked(request).expect("request: Ethernet frame");
    let request_eth = EthernetRepr::parse(&frame).expect("request: Ethernet header");
    let packet = ArpPacket::new_checked(frame.payload()).expect("request: ARP packet");
    let ArpRepr::EthernetIpv4 {
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = ArpRepr::parse(&packet).expect("request: Ethernet/IPv4 ARP")
    else {
        unreachable!("smoltcp only knows Ethernet/IPv4 ARP")
    };
    let reply = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: eth(our_mac),
        source_protocol_addr: target_protocol_addr,
        target_hardware_addr: source_hardware_addr,
        target_protocol_addr: source_protocol_addr,
    };
    let mut out = request.to_vec();
    let mut frame = EthernetFrame::new_unchecked(&mut out[..]);
    EthernetRepr {
        src_addr: eth(our_mac),
        dst_addr: request_eth.src_addr,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut frame);
    reply.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    out
}

/// What a receiver sees in an ARP reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpReply {
    pub eth_dst: Mac,
    pub eth_src: Mac,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tha: Mac,
    pub tpa: Ipv4Addr,
}

/// Parses `frame` with smoltcp as an Ethernet/IPv4 ARP reply.
pub fn parse_arp_reply(frame: &[u8]) -> Result<ArpReply, String> {
    let frame = EthernetFrame::new_checked(frame).map_err(|e| format!("Ethernet: {e}"))?;
    let header = EthernetRepr::parse(&frame).map_err(|e| format!("Ethernet: {e}"))?;
    if header.ethertype != EthernetProtocol::Arp {
        return Err(format!("EtherType {} is not ARP", header.ethertype));
    }
    let packet = ArpPacket::new_checked(frame.payload()).map_err(|e| format!("ARP: {e}"))?;
    match ArpRepr::parse(&packet).map_err(|e| format!("ARP: {e}"))? {
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr,
            source_protocol_addr,
            target_hardware_addr,
            target_protocol_addr,
        } => Ok(ArpReply {
            eth_dst: header.dst_addr.0,
            eth_src: header.src_addr.0,
            sha: source_hardware_addr.0,
            spa: source_protocol_addr,
            tha: target_hardware_addr.0,
            tpa: target_protocol_addr,
        }),
        other => Err(format!("not a reply: {other:?}")),
    }
}

// ---------------------------------------------------------------- NDP

/// ff02::1:ffXX:XXXX, the solicited-node group of `addr` (RFC 4291 §2.7.1).
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet group of an IPv6 multicast address (RFC 2464 §7).
pub fn multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// Every field of a Neighbor Solicitation frame that the tests vary.
#[derive(Clone, Debug)]
pub struct Ns {
    pub eth_dst: Mac,
    pub eth_src: Mac,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub target: Ipv6Addr,
    /// The Source Link-Layer Address option.
    pub slla: Option<Mac>,
    /// Options after the SLLA, raw (type, length in 8-octet units, data).
    pub extra_options: Vec<u8>,
}

impl Ns {
    /// Address resolution: from `src` to the target's solicited-node group,
    /// with a Source Link-Layer Address option.
    pub fn resolution(eth_src: Mac, src: Ipv6Addr, target: Ipv6Addr) -> Self {
        let dst = solicited_node(target);
        Ns {
            eth_dst: multicast_mac(dst),
            eth_src,
            src,
            dst,
            hop_limit: 255,
            target,
            slla: Some(eth_src),
            extra_options: Vec::new(),
        }
    }

    /// Duplicate Address Detection: from ::, to the solicited-node group, no SLLA.
    pub fn dad(eth_src: Mac, target: Ipv6Addr) -> Self {
        Ns {
            src: Ipv6Addr::UNSPECIFIED,
            slla: None,
            ..Ns::resolution(eth_src, Ipv6Addr::UNSPECIFIED, target)
        }
    }

    /// Neighbor Unreachability Detection: unicast to the target at `eth_dst`.
    pub fn unreachability(eth_dst: Mac, eth_src: Mac, src: Ipv6Addr, target: Ipv6Addr) -> Self {
        Ns {
            eth_dst,
            dst: target,
            ..Ns::resolution(eth_src, src, target)
        }
    }

    pub fn with_slla(mut self, slla: Option<Mac>) -> Self {
        self.slla = slla;
        self
    }

    /// Appends a raw option: `data` is padded with zeros to a multiple of 8
    /// bytes, counting the type and length bytes.
    pub fn with_option(mut self, kind: u8, data: &[u8]) -> Self {
        let len = (2 + data.len()).div_ceil(8) * 8;
        let start = self.extra_options.len();
        self.extra_options
            .extend_from_slice(&[kind, (len / 8) as u8]);
        self.extra_options.extend_from_slice(data);
        self.extra_options.resize(start + len, 0);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let ndisc = NdiscRepr::NeighborSolicit {
            target_addr: self.target,
            lladdr: self.slla.map(|m| RawHardwareAddress::from(eth(m))),
        };
        let ndisc_len = ndisc.buffer_len();
        let icmp_len = ndisc_len + self.extra_options.len();
        let mut icmp = vec![0u8; icmp_len];
        {
            let mut packet = Icmpv6Packet::new_unchecked(&mut icmp[..]);
            ndisc.emit(&mut packet);
        }
        icmp[ndisc_len..].copy_from_slice(&self.extra_options);
        Icmpv6Packet::new_unchecked(&mut icmp[..]).fill_checksum(&self.src, &self.dst);
        ipv6(
            self.eth_dst,
            self.eth_src,
            self.src,
            self.dst,
            IpProtocol::Icmpv6,
            self.hop_limit,
            &icmp,
        )
    }
}

fn ipv6(
    eth_dst: Mac,
    eth_src: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: IpProtocol,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let repr = Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header,
        payload_len: payload.len(),
        hop_limit,
    };
    let mut packet = vec![0u8; repr.buffer_len() + payload.len()];
    let mut ip = Ipv6Packet::new_unchecked(&mut packet[..]);
    repr.emit(&mut ip);
    ip.payload_mut().copy_from_slice(payload);
    ethernet(eth_dst, eth_src, ETHERTYPE_IPV6, &packet)
}

/// Address resolution for `target` from `src`, to the solicited-node group,
/// with or without the Source Link-Layer Address option.
pub fn neighbor_solicitation(
    eth_src: Mac,
    src: Ipv6Addr,
    target: Ipv6Addr,
    slla: Option<Mac>,
) -> Vec<u8> {
    Ns::resolution(eth_src, src, target).with_slla(slla).build()
}

/// A DAD probe for `target` (source ::, no SLLA).
pub fn dad_solicitation(eth_src: Mac, target: Ipv6Addr) -> Vec<u8> {
    Ns::dad(eth_src, target).build()
}

/// A unicast NUD probe for `target`, sent to `eth_dst`, with SLLA.
pub fn nud_solicitation(eth_dst: Mac, eth_src: Mac, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    Ns::unreachability(eth_dst, eth_src, src, target).build()
}

/// Address resolution with SLLA and a Nonce option (40-byte ICMPv6 message).
pub fn ns_with_nonce(eth_src: Mac, src: Ipv6Addr, target: Ipv6Addr, nonce: [u8; 6]) -> Vec<u8> {
    Ns::resolution(eth_src, src, target)
        .with_option(NDP_OPTION_NONCE, &nonce)
        .build()
}

/// Inserts IPv6 extension headers between the IPv6 header and its payload:
/// `(next-header value, length in 8-octet units)` each, filled with one PadN
/// option (RFC 8200 §4.2), chained in order, the last pointing at what the
/// packet carried. The payload length grows; an ICMPv6 checksum stays valid
/// (its pseudo-header counts the upper-layer length).
pub fn with_extension_headers(frame: &[u8], headers: &[(u8, usize)]) -> Vec<u8> {
    let ip_start = offset::ETH_END;
    let ip_end = offset::IPV6_END;
    let original_next = frame[offset::IPV6_NEXT_HEADER];
    let mut inserted = Vec::new();
    for (i, &(_, units)) in headers.iter().enumerate() {
        let next = headers.get(i + 1).map_or(original_next, |h| h.0);
        let mut header = vec![0u8; 8 * units];
        // PadN over everything after the two header bytes.
        header[2] = 1;
        header[3] = (8 * units - 4) as u8;
        let mut ext = Ipv6ExtHeader::new_unchecked(&mut header[..]);
        ext.set_next_header(IpProtocol::from(next));
        ext.set_header_len((units - 1) as u8);
        inserted.extend_from_slice(&header);
    }
    let mut out = frame[..ip_end].to_vec();
    out[offset::IPV6_NEXT_HEADER] = headers[0].0;
    let payload_len = u16::from_be_bytes([frame[ip_start + 4], frame[ip_start + 5]]) as usize;
    out[ip_start + 4..ip_start + 6]
        .copy_from_slice(&((payload_len + inserted.len()) as u16).to_be_bytes());
    out.extend_from_slice(&inserted);
    out.extend_from_slice(&frame[ip_end..]);
    out
}

/// The upper-layer payload of an IPv6 packet, after any Hop-by-Hop and
/// Destination Options headers, and its protocol.
fn upper_layer<'a>(ip: &Ipv6Packet<&'a [u8]>) -> (IpProtocol, &'a [u8]) {
    let mut next = ip.next_header();
    let mut payload: &'a [u8] = ip.payload();
    while matches!(next, IpProtocol::HopByHop | IpProtocol::Ipv6Opts) {
        let header = Ipv6ExtHeader::new_checked(payload).expect("extension header");
        let len = 8 * (header.header_len() as usize + 1);
        next = header.next_header();
        payload = &payload[len..];
    }
    (next, payload)
}

/// An advertisement for `target` to all nodes, unsolicited (S=0, O=1), as a
/// host announcing `target` at `tlla` (or only by its Ethernet source) sends.
pub fn neighbor_advertisement(
    eth_src: Mac,
    src: Ipv6Addr,
    target: Ipv6Addr,
    tlla: Option<Mac>,
) -> Vec<u8> {
    let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
        flags: NdiscNeighborFlags::OVERRIDE,
        target_addr: target,
        lladdr: tlla.map(|m| RawHardwareAddress::from(eth(m))),
    });
    let mut icmp = vec![0u8; na.buffer_len()];
    na.emit(
        &src,
        &ALL_NODES,
        &mut Icmpv6Packet::new_unchecked(&mut icmp[..]),
        &caps(),
    );
    ipv6(
        ALL_NODES_MAC,
        eth_src,
        src,
        ALL_NODES,
        IpProtocol::Icmpv6,
        255,
        &icmp,
    )
}

/// The advertisement the owner `our_mac` must send for `request` (RFC 4861
/// §7.2.4): from the target, hop limit 255, O=1; S=1 and unicast to the
/// solicitation's source, or, for DAD (source ::), S=0 to ff02::1. Ethernet
/// destination: the request's Ethernet source, or 33:33:00:00:00:01 for DAD.
/// One Target Link-Layer Address option, except for a unicast solicitation
/// in a frame shorter than an advertisement with the option: the option may
/// be omitted there (§7.2.4) and the answer then fits the frame as it is.
/// Extension headers of the request are not carried over.
pub fn expected_neighbor_advertisement(request: &[u8], our_mac: Mac) -> Vec<u8> {
    let frame = EthernetFrame::new_checked(request).expect("request: Ethernet frame");
    let request_eth = EthernetRepr::parse(&frame).expect("request: Ethernet header");
    let ip = Ipv6Packet::new_checked(frame.payload()).expect("request: IPv6 packet");
    let request_ip = Ipv6Repr::parse(&ip).expect("request: IPv6 header");
    let (_, upper) = upper_layer(&ip);
    let icmp = Icmpv6Packet::new_checked(upper).expect("request: ICMPv6");
    let parsed = Icmpv6Repr::parse(&request_ip.src_addr, &request_ip.dst_addr, &icmp, &caps())
        .expect("request: valid ICMPv6");
    let Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit { target_addr, .. }) = parsed else {
        panic!("request is not a Neighbor Solicitation: {parsed:?}");
    };
    let dad = request_ip.src_addr.is_unspecified();
    let (eth_dst, ip_dst, flags) = if dad {
        (eth(ALL_NODES_MAC), ALL_NODES, NdiscNeighborFlags::OVERRIDE)
    } else {
        (
            request_eth.src_addr,
            request_ip.src_addr,
            NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
        )
    };
    let omit_option = !request_ip.dst_addr.is_multicast() && request.len() < offset::NA_FRAME_LEN;
    let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
        flags,
        target_addr,
        lladdr: (!omit_option).then(|| RawHardwareAddress::from(eth(our_mac))),
    });
    let mut icmp = vec![0u8; na.buffer_len()];
    na.emit(
        &target_addr,
        &ip_dst,
        &mut Icmpv6Packet::new_unchecked(&mut icmp[..]),
        &caps(),
    );
    ipv6(
        eth_dst.0,
        our_mac,
        target_addr,
        ip_dst,
        IpProtocol::Icmpv6,
        255,
        &icmp,
    )
}

/// What a receiver sees in a Neighbor Advertisement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advertisement {
    pub eth_dst: Mac,
    pub eth_src: Mac,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub solicited: bool,
    pub override_: bool,
    pub router: bool,
    pub target: Ipv6Addr,
    pub tlla: Option<Mac>,
}

/// Parses `frame` with smoltcp as a Neighbor Advertisement, verifying the
/// ICMPv6 checksum; errors say what a receiver would reject.
pub fn parse_neighbor_advertisement(frame: &[u8]) -> Result<Advertisement, String> {
    let frame = EthernetFrame::new_checked(frame).map_err(|e| format!("Ethernet: {e}"))?;
    let header = EthernetRepr::parse(&frame).map_err(|e| format!("Ethernet: {e}"))?;
    if header.ethertype != EthernetProtocol::Ipv6 {
        return Err(format!("EtherType {} is not IPv6", header.ethertype));
    }
    let ip = Ipv6Packet::new_checked(frame.payload()).map_err(|e| format!("IPv6: {e}"))?;
    let ip_repr = Ipv6Repr::parse(&ip).map_err(|e| format!("IPv6: {e}"))?;
    if ip_repr.next_header != IpProtocol::Icmpv6 {
        return Err(format!("next header {} is not ICMPv6", ip_repr.next_header));
    }
    let icmp = Icmpv6Packet::new_checked(ip.payload()).map_err(|e| format!("ICMPv6: {e}"))?;
    if !icmp.verify_checksum(&ip_repr.src_addr, &ip_repr.dst_addr) {
        return Err(format!(
            "ICMPv6 checksum {:#06x} does not verify",
            icmp.checksum()
        ));
    }
    match Icmpv6Repr::parse(&ip_repr.src_addr, &ip_repr.dst_addr, &icmp, &caps())
        .map_err(|e| format!("ICMPv6: {e}"))?
    {
        Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr,
            lladdr,
        }) => Ok(Advertisement {
            eth_dst: header.dst_addr.0,
            eth_src: header.src_addr.0,
            src: ip_repr.src_addr,
            dst: ip_repr.dst_addr,
            hop_limit: ip_repr.hop_limit,
            solicited: flags.contains(NdiscNeighborFlags::SOLICITED),
            override_: flags.contains(NdiscNeighborFlags::OVERRIDE),
            router: flags.contains(NdiscNeighborFlags::ROUTER),
            target: target_addr,
            tlla: lladdr.map(|l| {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&l.as_bytes()[..6]);
                mac
            }),
        }),
        other => Err(format!("not a Neighbor Advertisement: {other:?}")),
    }
}

// ---------------------------------------------------------------- MLD

/// MLDv1 Multicast Listener Report (RFC 2710 §3.6).
pub const ICMPV6_MLD_V1_REPORT: u8 = 131;
/// MLDv1 Multicast Listener Done.
pub const ICMPV6_MLD_V1_DONE: u8 = 132;
/// MLDv2 Multicast Listener Report (RFC 3810 §5.2).
pub const ICMPV6_MLD_V2_REPORT: u8 = 143;
/// MLDv2 record types (RFC 3810 §5.2.12): the state change records a join
/// and a leave produce.
pub const MLD_CHANGE_TO_INCLUDE: u8 = 3;
pub const MLD_CHANGE_TO_EXCLUDE: u8 = 4;
pub const MLD_BLOCK_OLD_SOURCES: u8 = 6;

/// What one MLD message says: its ICMPv6 type and, per group it names, the
/// record type (MLDv2) or 0 (MLDv1, where the type says it all) and the
/// number of sources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MldMessage {
    pub icmp_type: u8,
    pub records: Vec<MldRecord>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MldRecord {
    pub record_type: u8,
    pub group: Ipv6Addr,
    pub sources: u16,
}

/// Parses `frame` as an MLD report or done (behind the Hop-by-Hop header
/// with the Router Alert that RFC 3810 §5 requires, or none); `None` for
/// anything else.
pub fn parse_mld(frame: &[u8]) -> Option<MldMessage> {
    let ethernet = EthernetFrame::new_checked(frame).ok()?;
    if EthernetRepr::parse(&ethernet).ok()?.ethertype != EthernetProtocol::Ipv6 {
        return None;
    }
    let ip = Ipv6Packet::new_checked(ethernet.payload()).ok()?;
    let mut next = ip.next_header();
    let mut payload = ip.payload();
    if next == IpProtocol::HopByHop {
        let header = Ipv6ExtHeader::new_checked(payload).ok()?;
        next = header.next_header();
        // Header Extension Length counts 8-octet units after the first 8.
        let length = (usize::from(*payload.get(1)?) + 1) * 8;
        payload = payload.get(length..)?;
    }
    if next != IpProtocol::Icmpv6 {
        return None;
    }
    let icmp = Icmpv6Packet::new_checked(payload).ok()?;
    let icmp_type = u8::from(icmp.msg_type());
    let body = payload.get(4..)?;
    let records = match icmp_type {
        ICMPV6_MLD_V1_REPORT | ICMPV6_MLD_V1_DONE => {
            // Maximum Response Delay, Reserved, then the group.
            let group: [u8; 16] = body.get(4..20)?.try_into().ok()?;
            vec![MldRecord {
                record_type: 0,
                group: Ipv6Addr::from(group),
                sources: 0,
            }]
        }
        ICMPV6_MLD_V2_REPORT => {
            let count = u16::from_be_bytes(body.get(2..4)?.try_into().ok()?);
            let mut records = Vec::new();
            let mut at = 4;
            for _ in 0..count {
                let record = body.get(at..at + 20)?;
                let sources = u16::from_be_bytes([record[2], record[3]]);
                let group: [u8; 16] = record[4..20].try_into().ok()?;
                records.push(MldRecord {
                    record_type: record[0],
                    group: Ipv6Addr::from(group),
                    sources,
                });
                // Type, aux data length (in 32-bit words), source count, group.
                at += 20 + 16 * usize::from(sources) + 4 * usize::from(record[1]);
            }
            records
        }
        _ => return None,
    };
    Some(MldMessage { icmp_type, records })
}

// ---------------------------------------------------------------- other traffic

/// A TCP SYN over IPv4.
pub fn ipv4_tcp(
    eth_dst: Mac,
    eth_src: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port,
        dst_port,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(0x1234_5678),
        ack_number: None,
        window_len: 64240,
        window_scale: None,
        max_seg_size: Some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let mut segment = vec![0u8; tcp.buffer_len()];
    tcp.emit(
        &mut TcpPacket::new_unchecked(&mut segment[..]),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        &caps(),
    );
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: segment.len(),
        hop_limit: 64,
    };
    let mut packet = vec![0u8; ip.buffer_len() + segment.len()];
    let mut p = Ipv4Packet::new_unchecked(&mut packet[..]);
    ip.emit(&mut p, &caps());
    p.payload_mut().copy_from_slice(&segment);
    ethernet(eth_dst, eth_src, ETHERTYPE_IPV4, &packet)
}

/// A UDP datagram over IPv6.
pub fn ipv6_udp(
    eth_dst: Mac,
    eth_src: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    dst_port: u16,
    data: &[u8],
) -> Vec<u8> {
    let udp = UdpRepr {
        src_port: 40000,
        dst_port,
    };
    let mut datagram = vec![0u8; 8 + data.len()];
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut datagram[..]),
        &IpAddress::Ipv6(src),
        &IpAddress::Ipv6(dst),
        data.len(),
        |payload| payload.copy_from_slice(data),
        &caps(),
    );
    ipv6(eth_dst, eth_src, src, dst, IpProtocol::Udp, 64, &datagram)
}

/// An ICMPv6 echo request (type 128).
pub fn ipv6_echo_request(
    eth_dst: Mac,
    eth_src: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    data: &[u8],
) -> Vec<u8> {
    let echo = Icmpv6Repr::EchoRequest {
        ident: 0x4242,
        seq_no: 1,
        data,
    };
    let mut icmp = vec![0u8; echo.buffer_len()];
    echo.emit(
        &src,
        &dst,
        &mut Icmpv6Packet::new_unchecked(&mut icmp[..]),
        &caps(),
    );
    ipv6(eth_dst, eth_src, src, dst, IpProtocol::Icmpv6, 64, &icmp)
}

// ---------------------------------------------------------------- mutation

pub fn set_u8(frame: &mut [u8], offset: usize, value: u8) {
    frame[offset] = value;
}

pub fn set_u16(frame: &mut [u8], offset: usize, value: u16) {
    frame[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
}

pub fn set_bytes(frame: &mut [u8], offset: usize, value: &[u8]) {
    frame[offset..offset + value.len()].copy_from_slice(value);
}

/// `frame`, changed by `f`.
pub fn mutated(frame: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = frame.to_vec();
    f(&mut out);
    out
}

/// The first `len` bytes of `frame`.
pub fn truncated(frame: &[u8], len: usize) -> Vec<u8> {
    frame[..len.min(frame.len())].to_vec()
}

/// `frame` extended to `len` bytes with `fill` (Ethernet pads to 60 with zeros;
/// a non-zero fill shows whether the padding was touched).
pub fn padded(frame: &[u8], len: usize, fill: u8) -> Vec<u8> {
    let mut out = frame.to_vec();
    if out.len() < len {
        out.resize(len, fill);
    }
    out
}

/// Recomputes the ICMPv6 checksum of an untagged IPv6 frame after its bytes
/// were changed, over the pseudo-header and the IPv6 payload length's worth of
/// message (or what the frame holds of it).
pub fn refresh_icmpv6_checksum(frame: &mut [u8]) {
    let src = Ipv6Addr::from(
        <[u8; 16]>::try_from(&frame[offset::IPV6_SRC..offset::IPV6_SRC + 16]).unwrap(),
    );
    let dst = Ipv6Addr::from(
        <[u8; 16]>::try_from(&frame[offset::IPV6_DST..offset::IPV6_DST + 16]).unwrap(),
    );
    let payload_len = u16::from_be_bytes([
        frame[offset::IPV6_PAYLOAD_LEN],
        frame[offset::IPV6_PAYLOAD_LEN + 1],
    ]) as usize;
    let end = (offset::ICMPV6 + payload_len).min(frame.len());
    Icmpv6Packet::new_unchecked(&mut frame[offset::ICMPV6..end]).fill_checksum(&src, &dst);
}

/// Formats bytes as hex, 16 per line, for failure messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, chunk)| {
            let line: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            format!("{:04x}: {}", i * 16, line.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Offsets where `a` and `b` differ (and the lengths, when they do).
pub fn diff(a: &[u8], b: &[u8]) -> String {
    let mut parts = Vec::new();
    if a.len() != b.len() {
        parts.push(format!("length {} vs {}", a.len(), b.len()));
    }
    let differing: Vec<String> = a
        .iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| format!("@{i}: {x:02x}!={y:02x}"))
        .collect();
    if !differing.is_empty() {
        parts.push(differing.join(" "));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MLDv2 report as Linux sends it for a join: IPv6 to ff02::16,
    /// Hop-by-Hop with Router Alert and PadN, one CHANGE_TO_EXCLUDE record.
    fn mld_v2_join(group: Ipv6Addr) -> Vec<u8> {
        let mut ip = vec![0x60, 0, 0, 0, 0, 36, NEXT_HEADER_HOP_BY_HOP, 1];
        ip.extend_from_slice(&Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1).octets());
        ip.extend_from_slice(&Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16).octets());
        ip.extend_from_slice(&[58, 0, 5, 2, 0, 0, 1, 0]);
        ip.extend_from_slice(&[ICMPV6_MLD_V2_REPORT, 0, 0, 0, 0, 0, 0, 1]);
        ip.extend_from_slice(&[MLD_CHANGE_TO_EXCLUDE, 0, 0, 0]);
        ip.extend_from_slice(&group.octets());
        ethernet(
            multicast_mac(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16)),
            OUR_MAC,
            ETHERTYPE_IPV6,
            &ip,
        )
    }

    #[test]
    fn mld_reports_are_read_behind_the_hop_by_hop_header() {
        let group = solicited_node(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100));
        let message = parse_mld(&mld_v2_join(group)).expect("an MLD report");
        assert_eq!(message.icmp_type, ICMPV6_MLD_V2_REPORT);
        assert_eq!(
            message.records,
            [MldRecord {
                record_type: MLD_CHANGE_TO_EXCLUDE,
                group,
                sources: 0
            }]
        );
        // A record count past the end is not read into the void.
        let mut cut = mld_v2_join(group);
        cut[14 + 40 + 8 + 7] = 2;
        assert_eq!(parse_mld(&cut), None);
        // An NS is not MLD.
        let ns = neighbor_solicitation(
            PEER_MAC,
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100),
            Some(PEER_MAC),
        );
        assert_eq!(parse_mld(&ns), None);
    }

    const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const PEER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xab, 0xcdef);
    const PEER6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);

    #[test]
    fn arp_request_layout() {
        let f = arp_request(PEER_MAC, PEER4, VIP4);
        assert_eq!(f.len(), 42);
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[14..22], &[0, 1, 0x08, 0, 6, 4, 0, 1]);
        assert_eq!(&f[offset::ARP_TPA..offset::ARP_TPA + 4], &VIP4.octets());
    }

    #[test]
    fn arp_reply_round_trip() {
        let reply = expected_arp_reply(&arp_request(PEER_MAC, PEER4, VIP4), OUR_MAC);
        let parsed = parse_arp_reply(&reply).unwrap();
        assert_eq!(
            parsed,
            ArpReply {
                eth_dst: PEER_MAC,
                eth_src: OUR_MAC,
                sha: OUR_MAC,
                spa: VIP4,
                tha: PEER_MAC,
                tpa: PEER4
            }
        );
    }

    #[test]
    fn ns_layouts() {
        assert_eq!(
            neighbor_solicitation(PEER_MAC, PEER6, VIP6, Some(PEER_MAC)).len(),
            86
        );
        assert_eq!(neighbor_solicitation(PEER_MAC, PEER6, VIP6, None).len(), 78);
        assert_eq!(
            ns_with_nonce(PEER_MAC, PEER6, VIP6, [1, 2, 3, 4, 5, 6]).len(),
            94
        );
        let f = dad_solicitation(PEER_MAC, VIP6);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0xff, 0xab, 0xcd, 0xef]);
        assert_eq!(
            &f[offset::IPV6_DST..offset::IPV6_DST + 16],
            &solicited_node(VIP6).octets()
        );
        assert_eq!(f[offset::ICMPV6_TYPE], ICMPV6_NEIGHBOR_SOLICITATION);
    }

    #[test]
    fn na_round_trip() {
        let na = expected_neighbor_advertisement(
            &neighbor_solicitation(PEER_MAC, PEER6, VIP6, None),
            OUR_MAC,
        );
        assert_eq!(na.len(), offset::NA_FRAME_LEN);
        let a = parse_neighbor_advertisement(&na).unwrap();
        assert_eq!(
            (a.src, a.dst, a.target, a.tlla),
            (VIP6, PEER6, VIP6, Some(OUR_MAC))
        );
        assert!(a.solicited && a.override_ && !a.router);
        let dad = expected_neighbor_advertisement(&dad_solicitation(PEER_MAC, VIP6), OUR_MAC);
        let a = parse_neighbor_advertisement(&dad).unwrap();
        assert_eq!((a.eth_dst, a.dst), (ALL_NODES_MAC, ALL_NODES));
        assert!(!a.solicited && a.override_);
    }

    #[test]
    fn checksum_refresh_keeps_valid_frames_valid() {
        let f = neighbor_solicitation(PEER_MAC, PEER6, VIP6, Some(PEER_MAC));
        let g = mutated(&f, |g| refresh_icmpv6_checksum(g));
        assert_eq!(f, g);
        let broken = mutated(&f, |g| g[offset::ICMPV6_CHECKSUM] ^= 1);
        assert_ne!(f, broken);
    }
}
