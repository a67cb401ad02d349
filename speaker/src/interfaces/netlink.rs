//! Links as rtnetlink describes them, through rust-netlink's
//! `netlink-packet-route` (message types) and `netlink-sys` (the socket): a
//! dump of every link with its flags, MAC, master, kind and VLAN data, and a
//! socket subscribed to link notifications.
//!
//! Netlink rather than /sys or getifaddrs(3): one dump carries all of it for
//! every link in one consistent snapshot (glibc's getifaddrs is this same
//! dump, minus IFLA_MASTER and IFLA_LINKINFO), and a netlink socket answers
//! for the network namespace of the thread that opened it, whereas /sys shows
//! the namespace it was mounted in.
//!
//! rtnetlink's `Connection` is not used: it needs a Tokio runtime, and link
//! dumps are also made from plain threads (inside setns(2) in the labs) and
//! from synchronous code running on runtime threads, where blocking on a
//! second runtime would panic. A plain socket created by the calling thread
//! keeps the namespace rule of [`super`] obvious.

use std::io;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
};
use netlink_packet_route::{
    link::{
        InfoData, InfoKind, InfoVlan, LinkAttribute, LinkInfo, LinkMessage, LinkXdp, VlanProtocol,
        XdpAttached,
    },
    RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Multicast groups (the legacy RTMGRP_* bit mask bound at `bind`).
pub(super) mod group {
    pub const RTMGRP_LINK: u32 = 0x1;
}

/// Large enough for any one datagram: the kernel sizes dump parts by the
/// reader's buffer, up to 32 KiB (`netlink_dump`).
pub(super) const RECEIVE_BUFFER: usize = 64 * 1024;

/// A dump that raced a change is started again this many times at most.
const DUMP_ATTEMPTS: usize = 5;

/// A link as one RTM_NEWLINK message describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFF_*` flags (`ifi_flags`).
    pub flags: u32,
    /// The link-layer address when it is six bytes long (Ethernet-like).
    pub mac: Option<[u8; 6]>,
    /// The bond or bridge this link is a port of (`IFLA_MASTER`).
    pub master: Option<u32>,
    /// How an XDP program is attached, if one is.
    pub xdp: XdpAttachment,
    /// The driver kind (`IFLA_INFO_KIND`: "bond", "bridge", "vlan", "veth"…);
    /// `None` for physical NICs, which carry no link info.
    pub kind: Option<String>,
    /// The link this one is stacked on (`IFLA_LINK`): a VLAN device's parent.
    /// For other kinds it may name a link of another namespace (a veth's
    /// peer), so it is only read for VLAN devices.
    pub parent: Option<u32>,
    /// The tag of a VLAN device (`IFLA_VLAN_ID`, `IFLA_VLAN_PROTOCOL`).
    pub vlan: Option<VlanTag>,
}

/// The tag a VLAN device adds and strips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    pub vid: u16,
    /// TPID 0x88a8 (802.1ad service tag) rather than 0x8100.
    pub ad: bool,
}

impl Link {
    pub fn is_bond(&self) -> bool {
        self.kind.as_deref() == Some("bond")
    }
}

/// `XDP_ATTACHED_*` (include/uapi/linux/if_link.h): where the kernel runs
/// the link's XDP program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpAttachment {
    #[default]
    None,
    /// In the driver (`XDP_ATTACHED_DRV`).
    Native,
    /// In the generic network stack (`XDP_ATTACHED_SKB`).
    Generic,
    /// On the NIC (`XDP_ATTACHED_HW`).
    Offloaded,
    /// Several modes at once (`XDP_ATTACHED_MULTI`).
    Multiple,
}

impl XdpAttachment {
    fn from_kernel(value: &XdpAttached) -> XdpAttachment {
        match value {
            XdpAttached::Driver => XdpAttachment::Native,
            XdpAttached::SocketBuffer => XdpAttachment::Generic,
            XdpAttached::Hardware => XdpAttachment::Offloaded,
            XdpAttached::Multiple => XdpAttachment::Multiple,
            _ => XdpAttachment::None,
        }
    }

    /// The name metrics and reports use.
    pub fn name(self) -> &'static str {
        match self {
            XdpAttachment::None => "none",
            XdpAttachment::Native => "native",
            XdpAttachment::Generic => "generic",
            XdpAttachment::Offloaded => "offload",
            XdpAttachment::Multiple => "multiple",
        }
    }
}

/// What one receive brought.
pub(super) enum Received {
    /// A datagram of this many bytes.
    Datagram(usize),
    /// The socket's buffer overflowed (ENOBUFS): notifications were lost.
    Overrun,
}

/// Opens a NETLINK_ROUTE socket of the calling thread's network namespace,
/// subscribed to `groups` (0: requests only).
pub(super) fn open_socket(groups: u32, nonblocking: bool) -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    // Port id 0: the kernel picks a unique one.
    socket.bind(&SocketAddr::new(0, groups))?;
    socket.set_non_blocking(nonblocking)?;
    Ok(socket)
}

/// Receives one datagram into `buffer`. A non-blocking socket with nothing
/// queued gives `ErrorKind::WouldBlock`.
pub(super) fn receive(socket: &Socket, buffer: &mut [u8]) -> io::Result<Received> {
    let capacity = buffer.len();
    // MSG_TRUNC makes the kernel return the datagram's real length, so a
    // truncated one is noticed instead of parsed short.
    match socket.recv(&mut &mut buffer[..], libc::MSG_TRUNC) {
        Ok(len) if len > capacity => Err(io::Error::other(format!(
            "a netlink message of {len} bytes does not fit the {capacity} byte buffer"
        ))),
        Ok(len) => Ok(Received::Datagram(len)),
        Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Received::Overrun),
        Err(e) => Err(e),
    }
}

/// Every link of the calling thread's network namespace, in index order.
pub(super) fn dump_links() -> io::Result<Vec<Link>> {
    for _ in 0..DUMP_ATTEMPTS {
        if let Some(links) = dump_once()? {
            return Ok(links);
        }
    }
    Err(io::Error::other(format!(
        "the interface list kept changing during {DUMP_ATTEMPTS} netlink dumps in a row"
    )))
}

/// One RTM_GETLINK dump; `None` when the kernel flagged it interrupted.
fn dump_once() -> io::Result<Option<Vec<Link>>> {
    const SEQ: u32 = 1;
    let socket = open_socket(0, false)?;
    let request = getlink_request(SEQ);
    if socket.send(&request, 0)? != request.len() {
        return Err(io::Error::other("short netlink send"));
    }
    let mut buffer = vec![0u8; RECEIVE_BUFFER];
    let mut links = Vec::new();
    let mut interrupted = false;
    loop {
        let len = match receive(&socket, &mut buffer)? {
            Received::Datagram(len) => len,
            // Only multicast delivery overruns; this socket joined no group.
            Received::Overrun => continue,
        };
        for message in messages(&buffer[..len]) {
            let message = message?;
            if message.header.sequence_number != SEQ {
                continue;
            }
            interrupted |= message.header.flags & NLM_F_DUMP_INTR != 0;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok((!interrupted).then_some(links)),
                NetlinkPayload::Error(error) => {
                    if let Some(code) = error.code {
                        return Err(io::Error::from_raw_os_error(-code.get()));
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    links.extend(link_of(&link));
                }
                _ => {}
            }
        }
    }
}

/// RTM_GETLINK with NLM_F_DUMP: every link, in every family.
fn getlink_request(seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(LinkMessage::default())),
    );
    message.finalize();
    let mut request = vec![0u8; message.buffer_len()];
    message.serialize(&mut request);
    request
}

/// The messages of one datagram. A message that does not parse ends the
/// datagram with an error: its length field cannot be trusted to find the
/// next one.
fn messages(
    datagram: &[u8],
) -> impl Iterator<Item = io::Result<NetlinkMessage<RouteNetlinkMessage>>> + '_ {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = NetlinkBuffer::new_checked(rest)
            .map(|buffer| buffer.length() as usize)
            .and_then(|len| {
                let message = NetlinkMessage::deserialize(&rest[..len])?;
                Ok((len, message))
            });
        match parsed {
            Ok((len, message)) => {
                // Messages start on 4-byte boundaries (NLMSG_ALIGN).
                rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
                Some(Ok(message))
            }
            Err(e) => {
                rest = &[];
                Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("an rtnetlink message does not parse: {e}"),
                )))
            }
        }
    })
}

/// The link an RTM_NEWLINK message describes; `None` without a name.
pub(super) fn link_of(message: &LinkMessage) -> Option<Link> {
    let mut link = Link {
        index: message.header.index,
        flags: message.header.flags.bits(),
        ..Link::default()
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Address(address) => link.mac = address.as_slice().try_into().ok(),
            LinkAttribute::Controller(master) => link.master = Some(*master).filter(|&m| m != 0),
            LinkAttribute::Link(parent) => link.parent = Some(*parent).filter(|&p| p != 0),
            LinkAttribute::Xdp(xdp) => {
                if let Some(attached) = xdp.iter().find_map(|x| match x {
                    LinkXdp::Attached(attached) => Some(attached),
                    _ => None,
                }) {
                    link.xdp = XdpAttachment::from_kernel(attached);
                }
            }
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind_name(kind)),
                        LinkInfo::Data(InfoData::Vlan(vlan)) => link.vlan = vlan_tag(vlan),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if link.vlan.is_none() {
        // IFLA_LINK of a veth names its peer, possibly in another namespace.
        link.parent = None;
    }
    (!link.name.is_empty()).then_some(link)
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Other(name) => name.clone(),
        known => known.to_string(),
    }
}

fn vlan_tag(attributes: &[InfoVlan]) -> Option<VlanTag> {
    let vid = attributes.iter().find_map(|a| match a {
        InfoVlan::Id(vid) => Some(*vid),
        _ => None,
    })?;
    // The kernel always reports the protocol; 802.1Q is its default.
    let ad = attributes
        .iter()
        .any(|a| matches!(a, InfoVlan::Protocol(VlanProtocol::Ieee8021Ad)));
    Some(VlanTag { vid, ad })
}

/// Builders of RTM_NEWLINK messages as the kernel sends them, for tests of
/// everything that reads links.
#[cfg(test)]
pub(crate) mod fixtures {
    use netlink_packet_route::link::{LinkFlags, LinkHeader};

    use super::*;

    pub fn newlink(index: u32, flags: u32, attributes: Vec<LinkAttribute>) -> LinkMessage {
        let header = LinkHeader {
            index,
            flags: LinkFlags::from_bits_retain(flags),
            ..LinkHeader::default()
        };
        let mut message = LinkMessage::default();
        message.header = header;
        message.attributes = attributes;
        message
    }

    /// `message` in a datagram, as one dump part carries it.
    pub fn datagram(messages: &[LinkMessage], seq: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for link in messages {
            let mut header = NetlinkHeader::default();
            header.sequence_number = seq;
            let mut message = NetlinkMessage::new(
                header,
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link.clone())),
            );
            message.finalize();
            let start = out.len();
            out.resize(start + message.buffer_len(), 0);
            message.serialize(&mut out[start..]);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        out
    }

    pub fn kind(kind: InfoKind) -> LinkAttribute {
        LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)])
    }

    pub fn vlan(parent: u32, vid: u16, protocol: VlanProtocol) -> Vec<LinkAttribute> {
        vec![
            LinkAttribute::Link(parent),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vlan),
                LinkInfo::Data(InfoData::Vlan(vec![
                    InfoVlan::Id(vid),
                    InfoVlan::Protocol(protocol),
                ])),
            ]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::{fixtures::*, *};

    fn parse(datagram: &[u8]) -> Vec<Link> {
        messages(datagram)
            .map(|m| m.expect("parses"))
            .filter_map(|m| match m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => link_of(&l),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn parses_a_bridge_port() {
        let mac = [0x02, 0, 0, 0, 0, 0x01];
        let datagram = datagram(
            &[
                newlink(
                    4,
                    0x1003,
                    vec![
                        LinkAttribute::IfName("port0".into()),
                        LinkAttribute::Address(mac.to_vec()),
                        LinkAttribute::Controller(9),
                        // A veth's IFLA_LINK is its peer: not a parent.
                        LinkAttribute::Link(5),
                        kind(InfoKind::Veth),
                        LinkAttribute::Xdp(vec![
                            LinkXdp::Attached(XdpAttached::SocketBuffer),
                            LinkXdp::ProgId(77),
                        ]),
                    ],
                ),
                // Without a name: skipped; the next one is read.
                newlink(5, 0, vec![]),
                newlink(6, 0, vec![LinkAttribute::IfName("lo".into())]),
            ],
            7,
        );
        assert_eq!(
            parse(&datagram),
            [
                Link {
                    index: 4,
                    name: "port0".into(),
                    flags: 0x1003,
                    mac: Some(mac),
                    master: Some(9),
                    xdp: XdpAttachment::Generic,
                    kind: Some("veth".into()),
                    parent: None,
                    vlan: None,
                },
                Link {
                    index: 6,
                    name: "lo".into(),
                    ..Link::default()
                },
            ]
        );
    }

    #[test]
    fn parses_bonds_and_vlan_devices() {
        let mut eth0_100 = vlan(2, 100, VlanProtocol::Ieee8021Q);
        eth0_100.push(LinkAttribute::IfName("eth0.100".into()));
        let mut eth0_200 = vlan(2, 200, VlanProtocol::Ieee8021Ad);
        eth0_200.push(LinkAttribute::IfName("eth0.200".into()));
        let links = parse(&datagram(
            &[
                newlink(
                    3,
                    0,
                    vec![LinkAttribute::IfName("bond0".into()), kind(InfoKind::Bond)],
                ),
                newlink(8, 0, eth0_100),
                newlink(9, 0, eth0_200),
            ],
            1,
        ));
        assert!(links[0].is_bond());
        assert_eq!(links[0].kind.as_deref(), Some("bond"));
        assert_eq!(
            (links[1].parent, links[1].vlan),
            (
                Some(2),
                Some(VlanTag {
                    vid: 100,
                    ad: false
                })
            )
        );
        assert_eq!(links[1].kind.as_deref(), Some("vlan"));
        assert!(!links[1].is_bond());
        assert_eq!(links[2].vlan, Some(VlanTag { vid: 200, ad: true }));
    }

    #[test]
    fn ignores_addresses_that_are_not_ethernet() {
        // An ipip tunnel's "link-layer address" is its IPv4 endpoint.
        let datagram = datagram(
            &[newlink(
                3,
                0,
                vec![
                    LinkAttribute::IfName("tunl0".into()),
                    LinkAttribute::Address(vec![0, 0, 0, 0]),
                ],
            )],
            1,
        );
        assert_eq!(parse(&datagram)[0].mac, None);
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_short_list() {
        let mut datagram = datagram(
            &[newlink(4, 0, vec![LinkAttribute::IfName("eth0".into())])],
            1,
        );
        datagram.truncate(datagram.len() - 4);
        let parsed: Vec<_> = messages(&datagram).collect();
        assert_eq!(parsed.len(), 1);
        let error = parsed[0].as_ref().unwrap_err().to_string();
        assert!(error.contains("does not parse"), "{error}");
        assert_eq!(messages(&[]).count(), 0);
    }

    #[test]
    fn builds_the_dump_request() {
        let request = getlink_request(3);
        let header = NetlinkBuffer::new_checked(&request[..]).unwrap();
        assert_eq!(header.length() as usize, request.len());
        assert_eq!(header.length(), 32, "nlmsghdr + ifinfomsg");
        assert_eq!(header.message_type(), 18, "RTM_GETLINK");
        assert_eq!(header.flags(), 0x301, "NLM_F_REQUEST | NLM_F_DUMP");
        assert_eq!(header.sequence_number(), 3);
    }
}
