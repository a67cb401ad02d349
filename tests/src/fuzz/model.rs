//! The reference model of the responder: what `xdp_speaker` must do with a
//! frame, written for the tests from RFC 826, RFC 5227 §2.4, RFC 4861 §7.1,
//! §7.2.4, RFC 6085, RFC 8200 §4 and the documented reasons
//! (`docs/dataplane.md`, `speaker_common::Reason`), sharing no code with the
//! program. Fields are read with `smoltcp::wire`; each protocol's decision
//! is an ordered list of named rules, the first that applies giving the
//! outcome, in the order the docs' tables state.
//!
//! VLAN (IEEE 802.1Q §9.5, docs/dataplane.md "VLANs"): [`Model::tagged`]
//! checks the tag stack, judges the frame with its tags removed, looks VIPs
//! up with the tags' `VlanPath`, and puts the tags back into an answer.

use std::{
    cell::Cell,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags,
    NdiscRepr, RawHardwareAddress,
};
use speaker_common::{Reason, VlanPath};

use super::fixture::{Vip, VipKey};
use crate::frames::Mac;

pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

const ETHERNET_HEADER_LEN: usize = 14;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q C-tag and 802.1ad S-tag TPIDs.
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;
const TAG_LEN: usize = 4;

const ARP_LEN: usize = 28;
const IPV6_HEADER_LEN: usize = 40;
const ICMPV6_NS: u8 = 135;
const ICMPV6_NA: u8 = 136;
/// An NS or NA without options (RFC 4861 §4.3, §4.4).
const ND_FIXED_LEN: usize = 24;
const OPTION_SLLA: u8 = 1;
const OPTION_TLLA: u8 = 2;
/// The advertisement with a Target Link-Layer Address option, as a frame.
const NA_FRAME_LEN: usize = ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + ND_FIXED_LEN + 8;

/// The program walks this many Hop-by-Hop / Destination Options headers.
const EXTENSION_HEADERS_WALKED: usize = 3;
/// The longest ICMPv6 message whose options the program walks; `None`:
/// every message is walked to its real end (RFC 4861 §4.6 puts no limit on
/// the options). Kept as a knob for a program with a bound.
pub const OPTIONS_BOUND: Option<usize> = None;

/// What the model expects from one run of the program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub action: u32,
    /// The frame the program leaves: the input for a pass.
    pub output: Vec<u8>,
    /// The `REASONS` counter that moves by one; `None`: none moves.
    pub reason: Option<Reason>,
    /// The per-VIP counter that moves, with the VIP's index in the model.
    pub vip: Option<(usize, VipEffect)>,
    /// The rule that decided, for disagreement reports.
    pub rule: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VipEffect {
    Answered,
    Refused,
    /// A claim of the VIP for this MAC.
    Conflict(Mac),
}

pub struct Model {
    vips: Vec<Vip>,
    /// The VLAN path of the frame being decided: VIP lookups match it
    /// exactly (set by `classify` before any rule runs).
    lookup_vlan: Cell<VlanPath>,
    ingress_ifindex: u32,
    /// The dead-man switch has not tripped.
    control_plane_alive: bool,
}

/// One rule: its name (the RFC clause or documented check) and a test
/// that returns the outcome when the rule stops the frame.
struct Rule<F> {
    name: &'static str,
    apply: fn(&Model, &F) -> Option<Decision>,
}

/// A rule's outcome before the frame and rule name are attached.
enum Decision {
    Pass(Reason),
    Uncounted,
    Refuse(usize, Reason),
    Claim(usize, Reason, Mac),
    Answer(usize, Reason, Vec<u8>),
}

/// The outcome of the first rule that applies, in `lists` order.
fn first_match<F>(model: &Model, facts: &F, lists: &[&[Rule<F>]]) -> (Decision, &'static str) {
    for rule in lists.iter().copied().flatten() {
        if let Some(decision) = (rule.apply)(model, facts) {
            return (decision, rule.name);
        }
    }
    unreachable!("every rule list ends in an answer")
}

fn is_group(mac: Mac) -> bool {
    mac[0] & 1 != 0
}

fn mac_at(frame: &[u8], at: usize) -> Mac {
    frame[at..at + 6].try_into().expect("six bytes")
}

impl Model {
    pub fn new(vips: Vec<Vip>, ingress_ifindex: u32) -> Self {
        Model {
            vips,
            lookup_vlan: Cell::new(VlanPath::UNTAGGED),
            ingress_ifindex,
            control_plane_alive: true,
        }
    }

    pub fn set_control_plane_alive(&mut self, alive: bool) {
        self.control_plane_alive = alive;
    }

    pub fn vips(&self) -> &[Vip] {
        &self.vips
    }

    /// The VIP owned on the ingress interface with this address, on the
    /// frame's VLAN path.
    fn owned(&self, address: IpAddr) -> Option<usize> {
        let key = VipKey {
            address,
            ifindex: self.ingress_ifindex,
            vlan: self.lookup_vlan.get(),
        };
        self.vips.iter().position(|v| v.key() == key)
    }

    pub fn decide(&self, frame: &[u8]) -> Outcome {
        let (decision, rule) = self.classify(frame);
        let (action, output, reason, vip) = match decision {
            Decision::Pass(reason) => (XDP_PASS, frame.to_vec(), Some(reason), None),
            Decision::Uncounted => (XDP_PASS, frame.to_vec(), None, None),
            Decision::Refuse(vip, reason) => (
                XDP_PASS,
                frame.to_vec(),
                Some(reason),
                Some((vip, VipEffect::Refused)),
            ),
            Decision::Claim(vip, reason, mac) => (
                XDP_PASS,
                frame.to_vec(),
                Some(reason),
                (reason == Reason::Conflict).then_some((vip, VipEffect::Conflict(mac))),
            ),
            Decision::Answer(vip, reason, answer) => (
                XDP_TX,
                answer,
                Some(reason),
                Some((vip, VipEffect::Answered)),
            ),
        };
        Outcome {
            action,
            output,
            reason,
            vip,
            rule,
        }
    }

    fn classify(&self, frame: &[u8]) -> (Decision, &'static str) {
        let Ok(ethernet) = EthernetFrame::new_checked(frame) else {
            return (Decision::Pass(Reason::Truncated), "Ethernet header");
        };
        let ethertype = u16::from(ethernet.ethertype());
        if matches!(ethertype, TPID_8021Q | TPID_8021AD) {
            return self.tagged(frame);
        }
        self.lookup_vlan.set(VlanPath::UNTAGGED);
        self.payload(frame, ethertype)
    }

    fn payload(&self, frame: &[u8], ethertype: u16) -> (Decision, &'static str) {
        match ethertype {
            ETHERTYPE_ARP => self.arp(frame),
            ETHERTYPE_IPV6 => self.ipv6(frame),
            _ => (Decision::Uncounted, "neither ARP nor IPv6"),
        }
    }

    /// A tagged frame (IEEE 802.1Q §9.5: TPID + TCI per tag, VID the low 12
    /// bits of the TCI). Accepted stacks (docs/dataplane.md "VLANs"): one
    /// C-tag or S-tag, or an S-tag or C-tag around a C-tag. The tags name
    /// the VLAN path the VIP lookup must match exactly; what they carry is
    /// judged as if untagged, and an answer keeps the tags byte for byte
    /// (PCP and DEI included) in front of the rewritten payload.
    fn tagged(&self, frame: &[u8]) -> (Decision, &'static str) {
        let mut path: Vec<u16> = Vec::new();
        let mut at = ETHERNET_HEADER_LEN - 2;
        let mut ethertype = u16::from_be_bytes([frame[at], frame[at + 1]]);
        while matches!(ethertype, TPID_8021Q | TPID_8021AD) {
            if path.len() == 2 {
                return (Decision::Pass(Reason::Unsupported), "VLAN: a third tag");
            }
            // TPID at `at`, TCI at `at + 2`, the next EtherType at `at + 4`.
            let Some(tag) = frame.get(at..at + TAG_LEN + 2) else {
                return (
                    Decision::Pass(Reason::Truncated),
                    "VLAN: frame ends in a tag",
                );
            };
            let vid = u16::from_be_bytes([tag[2], tag[3]]) & 0x0fff;
            // 802.1Q Table 9-2: VID 0 is a priority tag (no VLAN), 0xfff is
            // reserved: neither names a VLAN a VIP is announced on.
            if vid == 0 || vid == 0x0fff {
                return (
                    Decision::Pass(Reason::Unsupported),
                    "VLAN: VID 0 or 4095 (802.1Q Table 9-2)",
                );
            }
            let service = ethertype == TPID_8021AD;
            path.push(if service { vid | VlanPath::AD } else { vid });
            ethertype = u16::from_be_bytes([tag[4], tag[5]]);
            at += TAG_LEN;
            // 802.1ad: an S-tag is only ever the outermost tag.
            if ethertype == TPID_8021AD {
                return (
                    Decision::Pass(Reason::Unsupported),
                    "VLAN: 802.1ad tag inside another",
                );
            }
        }
        let tags_len = path.len() * TAG_LEN;
        let vlan = VlanPath {
            outer: path[0],
            inner: path.get(1).copied().unwrap_or(0),
        };
        // The frame as if untagged: both MACs, then the payload's EtherType.
        let tag_bytes = &frame[ETHERNET_HEADER_LEN - 2..ETHERNET_HEADER_LEN - 2 + tags_len];
        let mut untagged = frame[..ETHERNET_HEADER_LEN - 2].to_vec();
        untagged.extend_from_slice(&frame[ETHERNET_HEADER_LEN - 2 + tags_len..]);
        self.lookup_vlan.set(vlan);
        let (decision, rule) = self.payload(&untagged, ethertype);
        let decision = match decision {
            Decision::Answer(vip, reason, answer) => {
                let mut tagged = answer[..ETHERNET_HEADER_LEN - 2].to_vec();
                tagged.extend_from_slice(tag_bytes);
                tagged.extend_from_slice(&answer[ETHERNET_HEADER_LEN - 2..]);
                Decision::Answer(vip, reason, tagged)
            }
            other => other,
        };
        (decision, rule)
    }

    // ------------------------------------------------------------ ARP

    fn arp(&self, frame: &[u8]) -> (Decision, &'static str) {
        let payload = &frame[ETHERNET_HEADER_LEN..];
        if payload.len() < ARP_LEN {
            return (Decision::Pass(Reason::Truncated), "ARP: 28 bytes");
        }
        // smoltcp parses Ethernet/IPv4 ARP only: anything else is an error.
        let repr = ArpRepr::parse(&ArpPacket::new_unchecked(payload)).ok();
        let facts = ArpFacts {
            frame: frame.to_vec(),
            eth_dst: mac_at(frame, 0),
            eth_src: mac_at(frame, 6),
            repr: repr.map(|repr| match repr {
                ArpRepr::EthernetIpv4 {
                    operation,
                    source_hardware_addr,
                    source_protocol_addr,
                    target_protocol_addr,
                    ..
                } => ArpFields {
                    operation,
                    sha: source_hardware_addr.0,
                    spa: source_protocol_addr,
                    tpa: target_protocol_addr,
                },
                #[allow(unreachable_patterns)]
                _ => unreachable!("smoltcp parses Ethernet/IPv4 ARP only"),
            }),
        };
        first_match(self, &facts, &[ARP_RULES])
    }

    // ------------------------------------------------------------ IPv6

    fn ipv6(&self, frame: &[u8]) -> (Decision, &'static str) {
        let ip = &frame[ETHERNET_HEADER_LEN..];
        if ip.len() < IPV6_HEADER_LEN {
            return (Decision::Pass(Reason::Truncated), "IPv6 header");
        }
        let packet = Ipv6Packet::new_unchecked(ip);
        // RFC 8200 §4: walk Hop-by-Hop and Destination Options headers to
        // the upper layer.
        let mut next = packet.next_header();
        let mut at = IPV6_HEADER_LEN;
        let mut walked = 0;
        loop {
            match next {
                IpProtocol::Icmpv6 => break,
                // RFC 8200 §4.1: Hop-by-Hop only right after the IPv6 header;
                // the kernel drops a packet with one elsewhere.
                IpProtocol::HopByHop if walked > 0 => {
                    return (
                        Decision::Pass(Reason::Malformed),
                        "RFC 8200 §4.1: Hop-by-Hop header not first",
                    )
                }
                IpProtocol::HopByHop | IpProtocol::Ipv6Opts => {}
                IpProtocol::Ipv6Route
                | IpProtocol::Ipv6Frag
                | IpProtocol::IpSecEsp
                | IpProtocol::IpSecAh
                | IpProtocol::Unknown(135 | 139 | 140) => {
                    return (
                        Decision::Pass(Reason::Unsupported),
                        "extension header not parsed",
                    )
                }
                _ => return (Decision::Uncounted, "IPv6, not ICMPv6"),
            }
            if walked == EXTENSION_HEADERS_WALKED {
                return (
                    Decision::Pass(Reason::Unsupported),
                    "extension header chain longer than walked",
                );
            }
            let Some(header) = ip.get(at..at + 2) else {
                return (
                    Decision::Pass(Reason::Truncated),
                    "extension header past the frame",
                );
            };
            next = IpProtocol::from(header[0]);
            at += 8 * (header[1] as usize + 1);
            walked += 1;
        }
        if packet.version() != 6 {
            return (Decision::Pass(Reason::Malformed), "IPv6 version 6");
        }
        let l4 = ETHERNET_HEADER_LEN + at;
        let Some(type_code) = frame.get(l4..l4 + 2) else {
            return (Decision::Pass(Reason::Truncated), "ICMPv6 type and code");
        };
        let kind = type_code[0];
        if kind != ICMPV6_NS && kind != ICMPV6_NA {
            return (Decision::Pass(Reason::OtherTraffic), "ICMPv6, not NS/NA");
        }
        if frame.len() < l4 + ND_FIXED_LEN {
            return (Decision::Pass(Reason::Truncated), "NS/NA: 24 bytes");
        }
        let facts = NdFacts {
            frame: frame.to_vec(),
            l4,
            extensions_len: at - IPV6_HEADER_LEN,
            code: type_code[1],
        };
        if kind == ICMPV6_NA {
            first_match(self, &facts, &[ND_HEADER_RULES, NA_RULES])
        } else {
            first_match(self, &facts, &[ND_HEADER_RULES, NS_RULES])
        }
    }

    /// RFC 4861 §7.2.4: the advertisement for a solicitation of `vip`.
    fn advertisement(&self, ns: &NdFacts, vip: usize) -> Vec<u8> {
        let our_mac = self.vips[vip].mac;
        let target = ns.target();
        let dad = ns.source().is_unspecified();
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let (eth_dst, ip_dst, flags) = if dad {
            (
                [0x33, 0x33, 0, 0, 0, 1],
                all_nodes,
                NdiscNeighborFlags::OVERRIDE,
            )
        } else {
            (
                ns.eth_src(),
                ns.source(),
                NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
            )
        };
        // The option may be omitted for a unicast solicitation; the program
        // omits it when the request's frame is too short to hold it.
        let with_option = ns.to_solicited_node_group() || ns.frame.len() >= NA_FRAME_LEN;
        let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
            flags,
            target_addr: target,
            lladdr: with_option.then(|| RawHardwareAddress::from(EthernetAddress(our_mac))),
        });
        let ip = Ipv6Repr {
            src_addr: target,
            dst_addr: ip_dst,
            next_header: IpProtocol::Icmpv6,
            payload_len: na.buffer_len(),
            hop_limit: 255,
        };
        let mut out = vec![0u8; ETHERNET_HEADER_LEN + ip.buffer_len() + na.buffer_len()];
        let mut ethernet = EthernetFrame::new_unchecked(&mut out[..]);
        EthernetRepr {
            src_addr: EthernetAddress(our_mac),
            dst_addr: EthernetAddress(eth_dst),
            ethertype: EthernetProtocol::Ipv6,
        }
        .emit(&mut ethernet);
        let mut packet = Ipv6Packet::new_unchecked(ethernet.payload_mut());
        ip.emit(&mut packet);
        na.emit(
            &target,
            &ip_dst,
            &mut Icmpv6Packet::new_unchecked(packet.payload_mut()),
            &smoltcp::phy::ChecksumCapabilities::default(),
        );
        out
    }

    /// RFC 826: the request turned into the reply in place (padding kept).
    fn arp_reply(&self, arp: &ArpFacts, fields: &ArpFields, vip: usize) -> Vec<u8> {
        let our_mac = EthernetAddress(self.vips[vip].mac);
        let mut out = arp.frame.to_vec();
        let mut ethernet = EthernetFrame::new_unchecked(&mut out[..]);
        ethernet.set_dst_addr(EthernetAddress(arp.eth_src));
        ethernet.set_src_addr(our_mac);
        let mut packet = ArpPacket::new_unchecked(ethernet.payload_mut());
        packet.set_operation(ArpOperation::Reply);
        packet.set_source_hardware_addr(our_mac.as_bytes());
        packet.set_source_protocol_addr(&fields.tpa.octets());
        packet.set_target_hardware_addr(&fields.sha);
        packet.set_target_protocol_addr(&fields.spa.octets());
        out
    }
}

// ---------------------------------------------------------------- ARP rules

struct ArpFacts {
    frame: Vec<u8>,
    eth_dst: Mac,
    eth_src: Mac,
    /// `None`: not Ethernet/IPv4 ARP.
    repr: Option<ArpFields>,
}

struct ArpFields {
    operation: ArpOperation,
    sha: Mac,
    spa: Ipv4Addr,
    tpa: Ipv4Addr,
}

impl ArpFacts {
    fn fields(&self) -> &ArpFields {
        self.repr.as_ref().expect("checked by the format rule")
    }
}

const ARP_RULES: &[Rule<ArpFacts>] = &[
    Rule {
        name: "RFC 826: Ethernet/IPv4 (hrd 1, pro 0x0800, hln 6, pln 4)",
        apply: |_, a| {
            a.repr
                .is_none()
                .then_some(Decision::Pass(Reason::Malformed))
        },
    },
    Rule {
        name: "sender hardware address and Ethernet source unicast",
        apply: |_, a| {
            (is_group(a.fields().sha) || is_group(a.eth_src))
                .then_some(Decision::Pass(Reason::Malformed))
        },
    },
    Rule {
        name: "operation request or reply",
        apply: |_, a| {
            (!matches!(
                a.fields().operation,
                ArpOperation::Request | ArpOperation::Reply
            ))
            .then_some(Decision::Pass(Reason::ArpNotRequest))
        },
    },
    Rule {
        name: "RFC 5227 §2.4: sender IP is our VIP",
        apply: |m, a| {
            let f = a.fields();
            let vip = m.owned(f.spa.into())?;
            Some(if f.sha == m.vips[vip].mac {
                Decision::Claim(vip, Reason::Looped, f.sha)
            } else {
                Decision::Claim(vip, Reason::Conflict, f.sha)
            })
        },
    },
    Rule {
        name: "operation request",
        apply: |_, a| {
            (a.fields().operation != ArpOperation::Request)
                .then_some(Decision::Pass(Reason::ArpNotRequest))
        },
    },
    Rule {
        name: "target IP owned on the ingress interface",
        apply: |m, a| {
            m.owned(a.fields().tpa.into())
                .is_none()
                .then_some(Decision::Pass(Reason::NotOwned))
        },
    },
    Rule {
        name: "Ethernet destination broadcast or the VIP's MAC",
        apply: |m, a| {
            let vip = m.owned(a.fields().tpa.into())?;
            (a.eth_dst != [0xff; 6] && a.eth_dst != m.vips[vip].mac)
                .then_some(Decision::Refuse(vip, Reason::WrongEthDestination))
        },
    },
    Rule {
        name: "dead-man switch",
        apply: |m, a| {
            let vip = m.owned(a.fields().tpa.into())?;
            (!m.control_plane_alive).then_some(Decision::Refuse(vip, Reason::HeartbeatStale))
        },
    },
    Rule {
        name: "RFC 826: reply",
        apply: |m, a| {
            let f = a.fields();
            let vip = m.owned(f.tpa.into())?;
            Some(Decision::Answer(
                vip,
                Reason::ArpAnswered,
                m.arp_reply(a, f, vip),
            ))
        },
    },
];

// ---------------------------------------------------------------- NDP rules

struct NdFacts {
    frame: Vec<u8>,
    /// Where the ICMPv6 message starts in the frame.
    l4: usize,
    extensions_len: usize,
    code: u8,
}

impl NdFacts {
    fn ip(&self) -> Ipv6Packet<&[u8]> {
        Ipv6Packet::new_unchecked(&self.frame[ETHERNET_HEADER_LEN..])
    }
    fn eth_dst(&self) -> Mac {
        mac_at(&self.frame, 0)
    }
    fn eth_src(&self) -> Mac {
        mac_at(&self.frame, 6)
    }
    fn source(&self) -> Ipv6Addr {
        self.ip().src_addr()
    }
    fn destination(&self) -> Ipv6Addr {
        self.ip().dst_addr()
    }
    fn payload_len(&self) -> usize {
        self.ip().payload_len() as usize
    }
    /// The ICMPv6 message's length by the IPv6 header (checked first).
    fn icmp_len(&self) -> usize {
        self.payload_len() - self.extensions_len
    }
    fn message(&self) -> &[u8] {
        &self.frame[self.l4..self.l4 + self.icmp_len()]
    }
    fn target(&self) -> Ipv6Addr {
        let t: [u8; 16] = self.frame[self.l4 + 8..self.l4 + 24]
            .try_into()
            .expect("16 bytes");
        Ipv6Addr::from(t)
    }
    fn flags(&self) -> u8 {
        self.frame[self.l4 + 4]
    }
    fn checksum_ok(&self) -> bool {
        Icmpv6Packet::new_unchecked(self.message())
            .verify_checksum(&self.source(), &self.destination())
    }
    /// RFC 4861 §4.6: the options, each `(type, length in units, data)`;
    /// `None` when one has length 0 or they do not end where the message
    /// does (§7.1.1, §7.1.2).
    fn options(&self) -> Option<Vec<(u8, u8, &[u8])>> {
        let message = self.message();
        let mut at = ND_FIXED_LEN;
        let mut options = Vec::new();
        while at < message.len() {
            let kind = message[at];
            let units = *message.get(at + 1)?;
            if units == 0 {
                return None;
            }
            let end = at + 8 * units as usize;
            options.push((kind, units, message.get(at + 2..end)?));
            at = end;
        }
        (at == message.len()).then_some(options)
    }
    fn has_slla(&self) -> bool {
        self.options()
            .is_some_and(|o| o.iter().any(|(kind, _, _)| *kind == OPTION_SLLA))
    }
    /// The address an advertisement claims the target for: its (last,
    /// Ethernet-sized) Target Link-Layer Address option, else the frame's
    /// Ethernet source.
    fn claimed_mac(&self) -> Mac {
        self.options()
            .and_then(|o| {
                o.iter()
                    .rev()
                    .find(|(kind, units, _)| *kind == OPTION_TLLA && *units == 1)
                    .map(|(_, _, data)| mac_at(data, 0))
            })
            .unwrap_or_else(|| self.eth_src())
    }
    /// ff02::1:ffXX:XXXX of the target (RFC 4291 §2.7.1).
    fn to_solicited_node_group(&self) -> bool {
        let t = self.target().octets();
        let group = Ipv6Addr::from([
            0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, t[13], t[14], t[15],
        ]);
        self.destination() == group
    }
    /// RFC 2464 §7: 33:33 and the last four bytes of the group.
    fn group_mac(&self) -> Mac {
        let d = self.destination().octets();
        [0x33, 0x33, d[12], d[13], d[14], d[15]]
    }
}

/// Checks both messages share, before anything is looked up.
const ND_HEADER_RULES: &[Rule<NdFacts>] = &[
    Rule {
        name: "the frame holds the IPv6 payload length",
        apply: |_, n| {
            (n.payload_len() < n.extensions_len
                || n.frame.len() < ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + n.payload_len())
            .then_some(Decision::Pass(Reason::Truncated))
        },
    },
    Rule {
        name: "ICMPv6 length within the options walk's bound",
        apply: |_, n| {
            OPTIONS_BOUND
                .is_some_and(|bound| n.icmp_len() > bound)
                .then_some(Decision::Pass(Reason::Unsupported))
        },
    },
    Rule {
        name: "RFC 4861 §7.1: ICMPv6 length ≥ 24, options in 8-octet units",
        apply: |_, n| {
            (n.icmp_len() < ND_FIXED_LEN || n.icmp_len() % 8 != 0)
                .then_some(Decision::Pass(Reason::Malformed))
        },
    },
    Rule {
        name: "RFC 4861 §7.1: hop limit 255, code 0",
        apply: |_, n| {
            (n.ip().hop_limit() != 255 || n.code != 0).then_some(Decision::Pass(Reason::Malformed))
        },
    },
    Rule {
        name: "RFC 4861 §7.1: target not multicast",
        apply: |_, n| {
            n.target()
                .is_multicast()
                .then_some(Decision::Pass(Reason::Malformed))
        },
    },
    Rule {
        name: "Ethernet source unicast",
        apply: |_, n| is_group(n.eth_src()).then_some(Decision::Pass(Reason::Malformed)),
    },
];

/// After [`ND_HEADER_RULES`].
const NA_RULES: &[Rule<NdFacts>] = &[
    Rule {
        name: "NA for an address we do not own: other ICMPv6",
        apply: |m, n| {
            m.owned(n.target().into())
                .is_none()
                .then_some(Decision::Pass(Reason::OtherTraffic))
        },
    },
    Rule {
        name: "RFC 4861 §7.1.2: checksum",
        apply: |_, n| (!n.checksum_ok()).then_some(Decision::Pass(Reason::BadChecksum)),
    },
    Rule {
        name: "RFC 4861 §7.1.2: option lengths",
        apply: |_, n| {
            n.options()
                .is_none()
                .then_some(Decision::Pass(Reason::Malformed))
        },
    },
    Rule {
        name: "RFC 4861 §7.1.2: S flag clear when sent to a multicast address",
        apply: |_, n| {
            (n.destination().is_multicast() && n.flags() & 0x40 != 0)
                .then_some(Decision::Pass(Reason::Malformed))
        },
    },
    Rule {
        name: "RFC 5227 §2.4 for IPv6: NA claiming our VIP",
        apply: |m, n| {
            let vip = m.owned(n.target().into())?;
            let mac = n.claimed_mac();
            Some(if mac == m.vips[vip].mac {
                Decision::Claim(vip, Reason::Looped, mac)
            } else {
                Decision::Claim(vip, Reason::Conflict, mac)
            })
        },
    },
];

/// After [`ND_HEADER_RULES`].
const NS_RULES: &[Rule<NdFacts>] = &[
    Rule {
        name: "source not multicast",
        apply: |_, n| {
            n.source()
                .is_multicast()
                .then_some(Decision::Pass(Reason::Malformed))
        },
    },
    Rule {
        name: "RFC 4861 §7.1.1: to the target's solicited-node group, or unicast \
               to the target when the source is specified",
        apply: |_, n| {
            (!n.to_solicited_node_group()
                && (n.source().is_unspecified() || n.destination() != n.target()))
            .then_some(Decision::Pass(Reason::Malformed))
        },
    },
    Rule {
        name: "target owned on the ingress interface",
        apply: |m, n| {
            m.owned(n.target().into())
                .is_none()
                .then_some(Decision::Pass(Reason::NotOwned))
        },
    },
    Rule {
        name: "RFC 4861 §7.1.1: checksum",
        apply: |_, n| (!n.checksum_ok()).then_some(Decision::Pass(Reason::BadChecksum)),
    },
    Rule {
        name: "RFC 4861 §7.1.1: option lengths; no SLLA from ::",
        apply: |_, n| {
            (n.options().is_none() || (n.source().is_unspecified() && n.has_slla()))
                .then_some(Decision::Pass(Reason::Malformed))
        },
    },
    Rule {
        name: "Ethernet destination: the VIP's MAC, or the group's (RFC 6085: \
               the VIP's MAC for a group destination too)",
        apply: |m, n| {
            let vip = m.owned(n.target().into())?;
            let to_us = n.eth_dst() == m.vips[vip].mac;
            let to_group = n.to_solicited_node_group() && n.eth_dst() == n.group_mac();
            (!to_us && !to_group).then_some(Decision::Refuse(vip, Reason::WrongEthDestination))
        },
    },
    Rule {
        name: "dead-man switch",
        apply: |m, n| {
            let vip = m.owned(n.target().into())?;
            (!m.control_plane_alive).then_some(Decision::Refuse(vip, Reason::HeartbeatStale))
        },
    },
    Rule {
        name: "RFC 4861 §7.2.4: advertisement",
        apply: |m, n| {
            let vip = m.owned(n.target().into())?;
            Some(Decision::Answer(
                vip,
                Reason::NsAnswered,
                m.advertisement(n, vip),
            ))
        },
    },
];

#[cfg(test)]
mod tests {
    //! The model against frames and answers built independently by
    //! `crate::frames` (and the responder's kernel table tests): if the
    //! model drifts from the documented rules, these fail without a kernel.

    use super::*;
    use crate::{
        frames::{self, Ns, OTHER_MAC, OUR_MAC, PEER_MAC},
        fuzz::fixture::{self, INGRESS_IFINDEX, OUR_MAC_B, VIP4_A, VIP4_B, VIP6_A},
    };

    const PEER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const PEER6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);

    fn model() -> Model {
        Model::new(fixture::vips(), INGRESS_IFINDEX)
    }

    fn vip_index(m: &Model, address: IpAddr) -> usize {
        m.owned(address).expect("a VIP of the ingress interface")
    }

    #[test]
    fn arp_request_for_a_vip_is_answered_from_its_mac() {
        let m = model();
        let request = frames::arp_request(PEER_MAC, PEER4, VIP4_B);
        let outcome = m.decide(&request);
        assert_eq!(outcome.action, XDP_TX);
        assert_eq!(outcome.reason, Some(Reason::ArpAnswered));
        assert_eq!(
            outcome.output,
            frames::expected_arp_reply(&request, OUR_MAC_B)
        );
        assert_eq!(
            outcome.vip,
            Some((vip_index(&m, VIP4_B.into()), VipEffect::Answered))
        );
    }

    #[test]
    fn arp_claims_of_a_vip_are_conflicts_or_looped() {
        let m = model();
        let claim = m.decide(&frames::gratuitous_arp(OTHER_MAC, VIP4_A, 2));
        assert_eq!(claim.reason, Some(Reason::Conflict));
        assert_eq!(
            claim.vip,
            Some((vip_index(&m, VIP4_A.into()), VipEffect::Conflict(OTHER_MAC)))
        );
        let own = m.decide(&frames::gratuitous_arp(OUR_MAC, VIP4_A, 1));
        assert_eq!((own.reason, own.vip), (Some(Reason::Looped), None));
    }

    #[test]
    fn arp_refusals_count_for_the_vip() {
        let mut m = model();
        let unicast_elsewhere = frames::arp_unicast_request(OTHER_MAC, PEER_MAC, PEER4, VIP4_A);
        let refused = m.decide(&unicast_elsewhere);
        assert_eq!(refused.reason, Some(Reason::WrongEthDestination));
        assert_eq!(refused.output, unicast_elsewhere);
        m.set_control_plane_alive(false);
        let stale = m.decide(&frames::arp_request(PEER_MAC, PEER4, VIP4_A));
        assert_eq!(stale.reason, Some(Reason::HeartbeatStale));
        assert_eq!(
            stale.vip,
            Some((vip_index(&m, VIP4_A.into()), VipEffect::Refused))
        );
    }

    #[test]
    fn vips_of_another_interface_are_not_owned() {
        let m = model();
        let request = frames::arp_request(PEER_MAC, PEER4, fixture::VIP4_ELSEWHERE);
        assert_eq!(m.decide(&request).reason, Some(Reason::NotOwned));
    }

    #[test]
    fn solicitations_are_answered_like_the_table_tests_expect() {
        let m = model();
        for request in [
            frames::neighbor_solicitation(PEER_MAC, PEER6, VIP6_A, Some(PEER_MAC)),
            frames::neighbor_solicitation(PEER_MAC, PEER6, VIP6_A, None),
            frames::dad_solicitation(PEER_MAC, VIP6_A),
            Ns::unreachability(OUR_MAC, PEER_MAC, PEER6, VIP6_A)
                .with_slla(None)
                .build(),
            frames::ns_with_nonce(PEER_MAC, PEER6, VIP6_A, [1, 2, 3, 4, 5, 6]),
            // RFC 6085: the group destination at our unicast MAC.
            Ns {
                eth_dst: OUR_MAC,
                ..Ns::resolution(PEER_MAC, PEER6, VIP6_A)
            }
            .build(),
        ] {
            let outcome = m.decide(&request);
            assert_eq!(outcome.reason, Some(Reason::NsAnswered), "{}", outcome.rule);
            assert_eq!(
                outcome.output,
                frames::expected_neighbor_advertisement(&request, OUR_MAC),
                "\n{}",
                frames::hex(&request)
            );
        }
    }

    #[test]
    fn solicitation_rules_refuse_what_rfc_4861_forbids() {
        let m = model();
        let dad_with_slla = Ns::dad(PEER_MAC, VIP6_A).with_slla(Some(PEER_MAC)).build();
        assert_eq!(m.decide(&dad_with_slla).reason, Some(Reason::Malformed));
        let mut hop_limit = Ns::resolution(PEER_MAC, PEER6, VIP6_A);
        hop_limit.hop_limit = 254;
        assert_eq!(m.decide(&hop_limit.build()).reason, Some(Reason::Malformed));
        let mut broken = frames::neighbor_solicitation(PEER_MAC, PEER6, VIP6_A, None);
        broken[frames::offset::ICMPV6_CHECKSUM] ^= 1;
        assert_eq!(m.decide(&broken).reason, Some(Reason::BadChecksum));
    }

    /// RFC 8200 §4.1: Hop-by-Hop only right after the IPv6 header. The
    /// program answered this one when the fuzzer was written (issue 7).
    #[test]
    fn hop_by_hop_after_another_header_is_malformed() {
        let m = model();
        let ns = frames::neighbor_solicitation(PEER_MAC, PEER6, VIP6_A, Some(PEER_MAC));
        let first = frames::with_extension_headers(&ns, &[(0, 1), (60, 1)]);
        assert_eq!(m.decide(&first).reason, Some(Reason::NsAnswered));
        let later = frames::with_extension_headers(&ns, &[(60, 1), (0, 1)]);
        assert_eq!(m.decide(&later).reason, Some(Reason::Malformed));
    }

    /// RFC 4861 §7.1.2: an advertisement to a multicast address with the
    /// Solicited flag set is invalid, so it claims nothing.
    #[test]
    fn solicited_advertisement_to_a_group_is_malformed() {
        let m = model();
        let mut na = frames::neighbor_advertisement(OTHER_MAC, VIP6_A, VIP6_A, Some(OTHER_MAC));
        assert_eq!(m.decide(&na).reason, Some(Reason::Conflict));
        na[frames::offset::NDP_FLAGS] |= 0x40;
        frames::refresh_icmpv6_checksum(&mut na);
        assert_eq!(m.decide(&na).reason, Some(Reason::Malformed));
    }

    #[test]
    fn advertisements_claiming_a_vip() {
        let m = model();
        let other = frames::neighbor_advertisement(OTHER_MAC, VIP6_A, VIP6_A, Some(OTHER_MAC));
        assert_eq!(
            m.decide(&other).vip,
            Some((vip_index(&m, VIP6_A.into()), VipEffect::Conflict(OTHER_MAC)))
        );
        let own = frames::neighbor_advertisement(OUR_MAC, VIP6_A, VIP6_A, None);
        assert_eq!(m.decide(&own).reason, Some(Reason::Looped));
    }

    fn vlan_vip_index(m: &Model, address: IpAddr, vlan: VlanPath) -> usize {
        m.vips()
            .iter()
            .position(|v| v.address == address && v.vlan == vlan && v.ifindex == INGRESS_IFINDEX)
            .expect("a VLAN VIP of the ingress interface")
    }

    #[test]
    fn tagged_requests_are_looked_up_on_their_vlan() {
        let m = model();
        let request = frames::arp_request(PEER_MAC, PEER4, VIP4_A);
        // VIP4_A is untagged and on 802.1Q 300, not on 100.
        let on_100 = frames::vlan_tagged(&request, frames::ETHERTYPE_VLAN, 100);
        assert_eq!(m.decide(&on_100).reason, Some(Reason::NotOwned));
        // PCP 5 and DEI set: ignored for the lookup, kept in the answer.
        let mut on_300 = frames::vlan_tagged(&request, frames::ETHERTYPE_VLAN, 300);
        on_300[14] |= 0xb0;
        let outcome = m.decide(&on_300);
        assert_eq!(outcome.action, XDP_TX);
        let mut expected = frames::vlan_tagged(
            &frames::expected_arp_reply(&request, fixture::VLAN_MAC),
            frames::ETHERTYPE_VLAN,
            300,
        );
        expected[14] |= 0xb0;
        assert_eq!(outcome.output, expected);
        assert_eq!(
            outcome.vip,
            Some((
                vlan_vip_index(&m, VIP4_A.into(), fixture::VLAN_Q300),
                VipEffect::Answered
            ))
        );
        // The QinQ VIP: answered with both tags, not with the inner one only.
        let qinq = frames::arp_request(PEER_MAC, PEER4, fixture::VIP4_QINQ);
        let inner = frames::vlan_tagged(&qinq, frames::ETHERTYPE_VLAN, 100);
        assert_eq!(m.decide(&inner).reason, Some(Reason::NotOwned));
        let stacked = frames::vlan_tagged(&inner, frames::ETHERTYPE_QINQ, 200);
        assert_eq!(m.decide(&stacked).action, XDP_TX);
        // An untagged request for a VLAN-only VIP misses.
        let untagged = frames::arp_request(PEER_MAC, PEER4, fixture::VIP4_VLAN);
        assert_eq!(m.decide(&untagged).reason, Some(Reason::NotOwned));
    }

    #[test]
    fn tag_stacks_the_program_does_not_parse_are_unsupported() {
        let m = model();
        let request = frames::arp_request(PEER_MAC, PEER4, VIP4_A);
        let q = frames::ETHERTYPE_VLAN;
        let ad = frames::ETHERTYPE_QINQ;
        let priority_only = frames::vlan_tagged(&request, q, 0);
        let reserved = frames::vlan_tagged(&request, q, 4095);
        let ad_inside = frames::vlan_tagged(&frames::vlan_tagged(&request, ad, 5), q, 6);
        let three = frames::vlan_tagged(
            &frames::vlan_tagged(&frames::vlan_tagged(&request, q, 1), q, 2),
            ad,
            3,
        );
        for frame in [priority_only, reserved, ad_inside, three] {
            assert_eq!(m.decide(&frame).reason, Some(Reason::Unsupported));
        }
        let cut = &frames::vlan_tagged(&request, q, 100)[..16];
        assert_eq!(m.decide(cut).reason, Some(Reason::Truncated));
    }

    #[test]
    fn tagged_and_other_traffic() {
        let m = model();
        let tcp = frames::ipv4_tcp(OUR_MAC, PEER_MAC, PEER4, VIP4_A, 1, 80);
        let outcome = m.decide(&tcp);
        assert_eq!((outcome.action, outcome.reason), (XDP_PASS, None));
    }
}
