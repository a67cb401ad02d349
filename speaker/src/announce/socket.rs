//! Sending whole Ethernet frames out of one interface with an AF_PACKET
//! socket, and a per-interface cache of such sockets.

use std::{
    collections::HashMap,
    io, mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{Arc, Mutex},
};

use super::{frames, FrameSink};
use crate::interfaces::Interface;

/// An AF_PACKET/SOCK_RAW socket bound to one interface index, for sending
/// only: it is bound with protocol 0, so the kernel queues no received
/// frames to it.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    /// Opens a socket in the network namespace of the calling thread.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        // Non-blocking: a full transmit queue is a counted failure, never a
        // stalled runtime thread.
        // SAFETY: plain syscall, no pointers.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let address = link_address(ifindex, 0, None);
        // SAFETY: `address` is a valid sockaddr_ll of the size passed.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&address as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Sends one complete Ethernet frame (header included) as is.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let ethertype = frames::ethertype_of(frame).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "shorter than an Ethernet header",
            )
        })?;
        // The protocol in the address sets skb->protocol, which qdiscs and
        // offloads look at; the destination is only informative for SOCK_RAW.
        let address = link_address(self.ifindex, ethertype, frames::destination_of(frame));
        // SAFETY: `frame` and `address` are valid for the lengths passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&address as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        match sent {
            n if n < 0 => Err(io::Error::last_os_error()),
            n if n as usize != frame.len() => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {n} of {} bytes", frame.len()),
            )),
            _ => Ok(()),
        }
    }
}

fn link_address(ifindex: u32, ethertype: u16, destination: Option<[u8; 6]>) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut address: libc::sockaddr_ll = unsafe { mem::zeroed() };
    address.sll_family = libc::AF_PACKET as libc::c_ushort;
    address.sll_protocol = ethertype.to_be();
    address.sll_ifindex = ifindex as libc::c_int;
    if let Some(mac) = destination {
        address.sll_halen = mac.len() as u8;
        address.sll_addr[..mac.len()].copy_from_slice(&mac);
    }
    address
}

/// The [`FrameSink`] of the daemon: one [`PacketSocket`] per interface
/// index, opened on first use (in the namespace of the thread that sends)
/// and dropped after any error, so that the next frame reopens it (the
/// interface may have been recreated under the same index, or be gone).
#[derive(Debug, Default)]
pub struct PacketSockets {
    sockets: Mutex<HashMap<u32, Arc<PacketSocket>>>,
}

impl PacketSockets {
    pub fn new() -> Self {
        Self::default()
    }

    fn socket(&self, ifindex: u32) -> io::Result<Arc<PacketSocket>> {
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(socket) = sockets.get(&ifindex) {
            return Ok(socket.clone());
        }
        let socket = Arc::new(PacketSocket::open(ifindex)?);
        sockets.insert(ifindex, socket.clone());
        Ok(socket)
    }

    fn forget(&self, ifindex: u32) {
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        sockets.remove(&ifindex);
    }

    /// Interface indexes with an open socket.
    pub fn open_ifindexes(&self) -> Vec<u32> {
        let sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        let mut indexes: Vec<u32> = sockets.keys().copied().collect();
        indexes.sort_unstable();
        indexes
    }
}

impl FrameSink for PacketSockets {
    fn send(&self, interface: &Interface, frame: &[u8]) -> io::Result<()> {
        let result = self
            .socket(interface.index)
            .and_then(|socket| socket.send(frame));
        if result.is_err() {
            self.forget(interface.index);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn am_root() -> bool {
        // SAFETY: plain syscall.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn missing_interface_is_an_error_and_is_not_cached() {
        if !am_root() {
            // AF_PACKET needs CAP_NET_RAW; tests/tests/announce_lab.rs covers sending.
            return;
        }
        let sockets = PacketSockets::new();
        let gone = Interface {
            name: "gone".to_owned(),
            index: u32::MAX >> 1,
            mac: [2, 0, 0, 0, 0, 1],
        };
        let frame = frames::Announcement::round("192.0.2.1".parse().unwrap(), gone.mac)[0];
        let err = sockets.send(&gone, &frame.to_frame()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");
        assert!(sockets.open_ifindexes().is_empty());
    }
}
