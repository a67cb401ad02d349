//! Hearing other nodes announce: at a graceful stop, the successor's first
//! gratuitous round for an IP is the sign that its responder now answers
//! for it (it programs its maps before it announces), so this node can
//! stop answering without a gap and with almost no overlap.
//!
//! One AF_PACKET socket per interface, bound with `ETH_P_ALL`: the frames
//! worth hearing are ARP and IPv6, and this runs for at most a few probe
//! periods at exit, so a second socket or a socket filter would buy nothing.
//! Our own responder consumes ARP requests for IPs it holds (XDP runs before
//! packet taps), but the round's gratuitous reply and Neighbor Advertisement
//! pass it.

use std::{
    io,
    net::IpAddr,
    os::fd::{AsRawFd, OwnedFd},
};

use nix::sys::socket::{
    bind, recv, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrLike,
};
use tokio::io::{unix::AsyncFd, Interest};

use super::frames::Announcement;

/// `ETH_P_ALL` (linux/if_ether.h): every protocol.
const ETH_P_ALL: u16 = 0x0003;
/// Larger than any frame of interest; longer ones are truncated and
/// rejected by the parser.
const FRAME_BUFFER: usize = 2048;

/// Another node announcing `ip` from `mac` on interface `ifindex`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    pub ip: IpAddr,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// Receives announcements on some interfaces, ignoring those sent with
/// `own` MACs (this node's own rounds, seen as outgoing frames).
pub struct AnnouncementListener {
    sockets: Vec<(u32, AsyncFd<OwnedFd>)>,
    own: Vec<[u8; 6]>,
}

impl AnnouncementListener {
    /// Opens one socket per interface index, in the calling thread's
    /// network namespace. Must be called inside a tokio runtime.
    pub fn open(ifindexes: &[u32], own: Vec<[u8; 6]>) -> io::Result<Self> {
        let mut sockets = Vec::new();
        for &ifindex in ifindexes {
            let socket = open_packet_socket(ifindex, ETH_P_ALL, true)?;
            // SAFETY: the descriptor is owned by the OwnedFd moved into the
            // AsyncFd, which closes it only when dropped.
            let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
                .map_err(io::Error::from)?;
            sockets.push((ifindex, socket));
        }
        Ok(AnnouncementListener { sockets, own })
    }

    /// Waits for the next announcement by another node. Pending forever
    /// without sockets.
    pub async fn next(&self) -> io::Result<Heard> {
        let mut buffer = [0u8; FRAME_BUFFER];
        loop {
            if self.sockets.is_empty() {
                return std::future::pending().await;
            }
            let ready = self
                .sockets
                .iter()
                .map(|(ifindex, fd)| Box::pin(async move { (*ifindex, fd.readable().await) }));
            let ((ifindex, guard), _, _) = futures::future::select_all(ready).await;
            let mut guard = guard?;
            let fd = guard.get_inner().as_raw_fd();
            match guard
                .try_io(|_| recv(fd, &mut buffer, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from))
            {
                Ok(Ok(len)) => {
                    if let Some(heard) = self.heard(ifindex, &buffer[..len]) {
                        return Ok(heard);
                    }
                }
                Ok(Err(e)) => return Err(e),
                // Spurious readiness; the guard cleared it.
                Err(_would_block) => {}
            }
        }
    }

    fn heard(&self, ifindex: u32, frame: &[u8]) -> Option<Heard> {
        let (ip, mac) = match Announcement::parse_received(frame).ok()? {
            Announcement::GratuitousArp { mac, ip, .. } => (IpAddr::V4(ip), mac),
            Announcement::NeighborAdvert { mac, ip } => (IpAddr::V6(ip), mac),
        };
        (!self.own.contains(&mac)).then_some(Heard { ip, ifindex, mac })
    }
}

/// An AF_PACKET/SOCK_RAW socket in the calling thread's namespace that
/// receives the frames of `protocol` (an EtherType, or `ETH_P_ALL`) on
/// interface `ifindex`; non-blocking when asked.
pub fn open_packet_socket(ifindex: u32, protocol: u16, nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    let fd = socket(AddressFamily::Packet, SockType::Raw, flags, None)?;
    // SAFETY: an all-zero sockaddr_ll is valid; bind reads the family,
    // protocol and interface index set below (packet(7)).
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = protocol.to_be();
    address.sll_ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index too large"))?;
    // SAFETY: a valid sockaddr_ll of the size passed; nix builds a LinkAddr
    // no other way.
    let link = unsafe {
        LinkAddr::from_raw(
            (&raw const address).cast(),
            Some(std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t),
        )
    }
    .ok_or_else(|| io::Error::other("nix refused the sockaddr_ll"))?;
    bind(fd.as_raw_fd(), &link)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn others_announcements_are_heard_and_our_own_are_not() {
        let listener = AnnouncementListener {
            sockets: Vec::new(),
            own: vec![[0x02, 0, 0, 0, 0, 0x0a]],
        };
        let theirs = [0x02, 0, 0, 0, 0, 0x0b];
        let ip: IpAddr = "192.0.2.100".parse().unwrap();
        for frame in Announcement::round(ip, theirs) {
            assert_eq!(
                listener.heard(3, &frame.to_frame()),
                Some(Heard {
                    ip,
                    ifindex: 3,
                    mac: theirs
                })
            );
        }
        let ours = Announcement::round(ip, [0x02, 0, 0, 0, 0, 0x0a]);
        assert_eq!(listener.heard(3, &ours[1].to_frame()), None);
        let v6: IpAddr = "2001:db8::100".parse().unwrap();
        let advert = Announcement::round(v6, theirs)[0].to_frame();
        assert_eq!(listener.heard(3, &advert).map(|h| h.ip), Some(v6));
        assert_eq!(listener.heard(3, &advert[..20]), None);
    }
}
