//! The little of rtnetlink (`include/uapi/linux/{netlink,rtnetlink,if_link}.h`)
//! the interface code needs: a dump of every link with its flags, MAC and
//! master, and a socket subscribed to link notifications.
//!
//! Netlink rather than /sys or getifaddrs(3): one dump carries the flags, the
//! MAC and the master of every link in one consistent snapshot (glibc's
//! getifaddrs is this same dump, minus IFLA_MASTER), and a netlink socket
//! answers for the network namespace of the thread that opened it, whereas
//! /sys shows the namespace it was mounted in.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// Byte offsets of the three headers we read and write, in host byte order
/// like everything on a netlink socket.
mod field {
    use std::ops::Range;

    // struct nlmsghdr
    pub const NLMSG_LEN: Range<usize> = 0..4;
    pub const NLMSG_TYPE: Range<usize> = 4..6;
    pub const NLMSG_FLAGS: Range<usize> = 6..8;
    pub const NLMSG_SEQ: Range<usize> = 8..12;
    pub const NLMSG_HEADER_LEN: usize = 16;

    // struct ifinfomsg (ifi_family at 0 stays AF_UNSPEC in requests)
    pub const IFI_INDEX: Range<usize> = 4..8;
    pub const IFI_FLAGS: Range<usize> = 8..12;
    pub const IFINFO_LEN: usize = 16;

    // struct rtattr
    pub const RTA_LEN: Range<usize> = 0..2;
    pub const RTA_TYPE: Range<usize> = 2..4;
    pub const RTA_HEADER_LEN: usize = 4;

    // struct nlmsgerr: the negative errno comes first
    pub const NLMSGERR_ERROR: Range<usize> = 0..4;

    /// Messages and attributes start on 4-byte boundaries (NLMSG_ALIGN, RTA_ALIGN).
    pub const ALIGN: usize = 4;
}

/// Message types (nlmsghdr.nlmsg_type).
mod kind {
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    pub const RTM_NEWLINK: u16 = 16;
    pub const RTM_GETLINK: u16 = 18;
}

/// Message flags (nlmsghdr.nlmsg_flags).
mod flag {
    pub const NLM_F_REQUEST: u16 = 0x1;
    /// The dump saw the table change under it; its parts may disagree.
    pub const NLM_F_DUMP_INTR: u16 = 0x10;
    /// NLM_F_ROOT | NLM_F_MATCH.
    pub const NLM_F_DUMP: u16 = 0x300;
}

/// Link attributes (rtattr.rta_type after RTM_NEWLINK's ifinfomsg).
mod attr {
    pub const IFLA_ADDRESS: u16 = 1;
    pub const IFLA_IFNAME: u16 = 3;
    pub const IFLA_MASTER: u16 = 10;
    /// Nested; holds IFLA_XDP_ATTACHED.
    pub const IFLA_XDP: u16 = 43;
    /// Inside IFLA_XDP: one byte, `XDP_ATTACHED_*`.
    pub const IFLA_XDP_ATTACHED: u16 = 2;
    /// Strips NLA_F_NESTED and NLA_F_NET_BYTEORDER.
    pub const TYPE_MASK: u16 = 0x3fff;
}

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFF_*` flags (`ifi_flags`).
    pub flags: u32,
    /// The link-layer address when it is six bytes long (Ethernet-like).
    pub mac: Option<[u8; 6]>,
    /// The bond or bridge this link is a port of.
    pub master: Option<u32>,
    /// How an XDP program is attached, if one is.
    pub xdp: XdpAttachment,
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
    fn from_kernel(value: u8) -> XdpAttachment {
        match value {
            1 => XdpAttachment::Native,
            2 => XdpAttachment::Generic,
            3 => XdpAttachment::Offloaded,
            4 => XdpAttachment::Multiple,
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

/// A NETLINK_ROUTE socket of the calling thread's network namespace.
pub(super) struct RouteSocket {
    fd: OwnedFd,
}

/// What one receive brought.
pub(super) enum Received {
    /// A datagram of this many bytes.
    Datagram(usize),
    /// The socket's buffer overflowed (ENOBUFS): notifications were lost.
    Overrun,
}

impl RouteSocket {
    /// Opens a socket subscribed to `groups` (0: requests only).
    pub fn open(groups: u32, nonblocking: bool) -> io::Result<Self> {
        let mut flags = SockFlag::SOCK_CLOEXEC;
        if nonblocking {
            flags |= SockFlag::SOCK_NONBLOCK;
        }
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            flags,
            SockProtocol::NetlinkRoute,
        )?;
        // Port id 0: the kernel picks a unique one.
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        Ok(RouteSocket { fd })
    }

    fn send(&self, message: &[u8]) -> io::Result<()> {
        let sent = socket::send(self.fd.as_raw_fd(), message, MsgFlags::empty())?;
        if sent != message.len() {
            return Err(io::Error::other("short netlink send"));
        }
        Ok(())
    }

    /// Receives one datagram into `buffer`. A non-blocking socket with
    /// nothing queued gives `ErrorKind::WouldBlock`.
    pub fn receive(&self, buffer: &mut [u8]) -> io::Result<Received> {
        // MSG_TRUNC makes the kernel return the datagram's real length, so a
        // truncated one is noticed instead of parsed short.
        match socket::recv(self.fd.as_raw_fd(), buffer, MsgFlags::MSG_TRUNC) {
            Ok(len) if len > buffer.len() => Err(io::Error::other(format!(
                "a netlink message of {len} bytes does not fit the {} byte buffer",
                buffer.len()
            ))),
            Ok(len) => Ok(Received::Datagram(len)),
            Err(nix::errno::Errno::ENOBUFS) => Ok(Received::Overrun),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsRawFd for RouteSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for RouteSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
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
    let socket = RouteSocket::open(0, false)?;
    socket.send(&getlink_request(SEQ))?;
    let mut buffer = vec![0u8; RECEIVE_BUFFER];
    let mut links = Vec::new();
    let mut interrupted = false;
    loop {
        let len = match socket.receive(&mut buffer)? {
            Received::Datagram(len) => len,
            // Only multicast delivery overruns; this socket joined no group.
            Received::Overrun => continue,
        };
        for message in messages(&buffer[..len]) {
            if message.seq != SEQ {
                continue;
            }
            interrupted |= message.flags & flag::NLM_F_DUMP_INTR != 0;
            match message.kind {
                kind::NLMSG_DONE => return Ok((!interrupted).then_some(links)),
                kind::NLMSG_ERROR => {
                    let errno = message
                        .payload
                        .get(field::NLMSGERR_ERROR)
                        .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                    if errno != 0 {
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                }
                kind::RTM_NEWLINK => links.extend(parse_link(message.payload)),
                _ => {}
            }
        }
    }
}

/// RTM_GETLINK with NLM_F_DUMP: every link, in every family.
fn getlink_request(seq: u32) -> [u8; field::NLMSG_HEADER_LEN + field::IFINFO_LEN] {
    let mut request = [0u8; field::NLMSG_HEADER_LEN + field::IFINFO_LEN];
    let len = request.len() as u32;
    request[field::NLMSG_LEN].copy_from_slice(&len.to_ne_bytes());
    request[field::NLMSG_TYPE].copy_from_slice(&kind::RTM_GETLINK.to_ne_bytes());
    request[field::NLMSG_FLAGS]
        .copy_from_slice(&(flag::NLM_F_REQUEST | flag::NLM_F_DUMP).to_ne_bytes());
    request[field::NLMSG_SEQ].copy_from_slice(&seq.to_ne_bytes());
    request
}

/// One netlink message of a datagram.
pub(super) struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

fn u16_at(bytes: &[u8], range: std::ops::Range<usize>) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(range)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], range: std::ops::Range<usize>) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(range)?.try_into().ok()?))
}

fn align(len: usize) -> usize {
    len.div_ceil(field::ALIGN) * field::ALIGN
}

/// The messages of one datagram; stops at the first malformed header.
pub(super) fn messages(datagram: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let len = u32_at(rest, field::NLMSG_LEN)? as usize;
        if len < field::NLMSG_HEADER_LEN || len > rest.len() {
            return None;
        }
        let message = Message {
            kind: u16_at(rest, field::NLMSG_TYPE)?,
            flags: u16_at(rest, field::NLMSG_FLAGS)?,
            seq: u32_at(rest, field::NLMSG_SEQ)?,
            payload: &rest[field::NLMSG_HEADER_LEN..len],
        };
        rest = rest.get(align(len)..).unwrap_or_default();
        Some(message)
    })
}

/// The attributes after a fixed header; stops at the first malformed one.
fn attributes(mut rest: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16_at(rest, field::RTA_LEN)? as usize;
        if len < field::RTA_HEADER_LEN || len > rest.len() {
            return None;
        }
        let kind = u16_at(rest, field::RTA_TYPE)? & attr::TYPE_MASK;
        let value = &rest[field::RTA_HEADER_LEN..len];
        rest = rest.get(align(len)..).unwrap_or_default();
        Some((kind, value))
    })
}

/// The link an RTM_NEWLINK payload describes; `None` without a name.
fn parse_link(payload: &[u8]) -> Option<Link> {
    if payload.len() < field::IFINFO_LEN {
        return None;
    }
    let mut link = Link {
        index: u32_at(payload, field::IFI_INDEX)?,
        name: String::new(),
        flags: u32_at(payload, field::IFI_FLAGS)?,
        mac: None,
        master: None,
        xdp: XdpAttachment::None,
    };
    for (kind, value) in attributes(&payload[align(field::IFINFO_LEN)..]) {
        match kind {
            attr::IFLA_IFNAME => {
                let name = value.split(|b| *b == 0).next().unwrap_or_default();
                link.name = String::from_utf8_lossy(name).into_owned();
            }
            attr::IFLA_ADDRESS => link.mac = value.try_into().ok(),
            attr::IFLA_MASTER => link.master = u32_at(value, 0..4).filter(|&m| m != 0),
            attr::IFLA_XDP => {
                if let Some((_, mode)) =
                    attributes(value).find(|(kind, _)| *kind == attr::IFLA_XDP_ATTACHED)
                {
                    link.xdp = XdpAttachment::from_kernel(mode.first().copied().unwrap_or(0));
                }
            }
            _ => {}
        }
    }
    (!link.name.is_empty()).then_some(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((field::RTA_HEADER_LEN + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align(out.len()), 0);
        out
    }

    fn newlink(index: u32, flags: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut payload = vec![0u8; field::IFINFO_LEN];
        payload[field::IFI_INDEX].copy_from_slice(&index.to_ne_bytes());
        payload[field::IFI_FLAGS].copy_from_slice(&flags.to_ne_bytes());
        for a in attrs {
            payload.extend_from_slice(a);
        }
        let mut message = vec![0u8; field::NLMSG_HEADER_LEN];
        let len = (field::NLMSG_HEADER_LEN + payload.len()) as u32;
        message[field::NLMSG_LEN].copy_from_slice(&len.to_ne_bytes());
        message[field::NLMSG_TYPE].copy_from_slice(&kind::RTM_NEWLINK.to_ne_bytes());
        message[field::NLMSG_SEQ].copy_from_slice(&7u32.to_ne_bytes());
        message.extend_from_slice(&payload);
        message
    }

    #[test]
    fn parses_a_bridge_port() {
        let mac = [0x02, 0, 0, 0, 0, 0x01];
        let mut datagram = newlink(
            4,
            0x1003,
            &[
                attribute(attr::IFLA_IFNAME, b"port0\0"),
                attribute(attr::IFLA_ADDRESS, &mac),
                attribute(attr::IFLA_MASTER, &9u32.to_ne_bytes()),
                attribute(
                    attr::IFLA_XDP | 0x8000,
                    &[
                        attribute(attr::IFLA_XDP_ATTACHED, &[2]),
                        attribute(3, &77u32.to_ne_bytes()),
                    ]
                    .concat(),
                ),
            ],
        );
        // A second message without a name is skipped, the third is read.
        datagram.extend(newlink(5, 0, &[]));
        datagram.extend(newlink(6, 0, &[attribute(attr::IFLA_IFNAME, b"lo\0")]));
        let links: Vec<Link> = messages(&datagram)
            .inspect(|m| assert_eq!((m.kind, m.seq), (kind::RTM_NEWLINK, 7)))
            .filter_map(|m| parse_link(m.payload))
            .collect();
        assert_eq!(
            links,
            [
                Link {
                    index: 4,
                    name: "port0".into(),
                    flags: 0x1003,
                    mac: Some(mac),
                    master: Some(9),
                    xdp: XdpAttachment::Generic,
                },
                Link {
                    index: 6,
                    name: "lo".into(),
                    flags: 0,
                    mac: None,
                    master: None,
                    xdp: XdpAttachment::None,
                },
            ]
        );
    }

    #[test]
    fn ignores_addresses_that_are_not_ethernet() {
        // An ipip tunnel's "link-layer address" is its IPv4 endpoint.
        let datagram = newlink(
            3,
            0,
            &[
                attribute(attr::IFLA_IFNAME, b"tunl0\0"),
                attribute(attr::IFLA_ADDRESS, &[0, 0, 0, 0]),
            ],
        );
        let link = messages(&datagram)
            .find_map(|m| parse_link(m.payload))
            .unwrap();
        assert_eq!(link.mac, None);
    }

    #[test]
    fn stops_at_a_truncated_message() {
        let mut datagram = newlink(4, 0, &[attribute(attr::IFLA_IFNAME, b"eth0\0")]);
        datagram.truncate(datagram.len() - 1);
        assert_eq!(messages(&datagram).count(), 0);
        assert_eq!(messages(&[]).count(), 0);
    }

    #[test]
    fn builds_the_dump_request() {
        let request = getlink_request(3);
        assert_eq!(u32_at(&request, field::NLMSG_LEN), Some(32));
        assert_eq!(u16_at(&request, field::NLMSG_TYPE), Some(kind::RTM_GETLINK));
        assert_eq!(u16_at(&request, field::NLMSG_FLAGS), Some(0x301));
        assert_eq!(u32_at(&request, field::NLMSG_SEQ), Some(3));
    }
}
