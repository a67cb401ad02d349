//! Network interfaces of the current network namespace: index and MAC by
//! name, which of them to announce on ([`discovery`]), and noticing when they
//! change ([`watch`]).
//!
//! Everything here answers for the network namespace of the calling thread:
//! the kernel is asked through sockets (netlink, ioctl) created by that
//! thread, never through /sys, whose view is that of the namespace it was
//! mounted from.

pub mod bonds;
pub mod discovery;
mod netlink;
pub mod offload;
pub mod vlan;
pub mod watch;

use std::ffi::CString;

pub use self::{
    discovery::{announce_interfaces, select, ExcludeList},
    watch::LinkWatcher,
};
use crate::error::{Error, Result};

/// An interface as the responder needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}

impl Interface {
    pub fn by_name(name: &str) -> Result<Self> {
        let index = index_of(name)?;
        let mac = mac_of(name)?;
        Ok(Interface {
            name: name.to_owned(),
            index,
            mac,
        })
    }
}

pub fn index_of(name: &str) -> Result<u32> {
    let c_name = CString::new(name).map_err(|_| Error::UnknownInterface(name.to_owned()))?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(Error::UnknownInterface(name.to_owned()));
    }
    Ok(index)
}

/// The name of interface `index`, if it exists in this namespace.
pub fn name_of(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer is IF_NAMESIZE long, as the call requires.
    let ret = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if ret.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

fn mac_of(name: &str) -> Result<[u8; 6]> {
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| Error::io("listing interface addresses", e.into()))?;
    addrs
        .filter(|a| a.interface_name == name)
        .find_map(|a| a.address?.as_link_addr()?.addr())
        .filter(|mac| *mac != [0; 6])
        .ok_or_else(|| Error::NoMacAddress(name.to_owned()))
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The Ethernet address of the solicited-node group of `addr` (RFC 4291
/// §2.7.1 mapped by RFC 2464 §7): 33:33:ff plus the address's low 24 bits.
pub fn solicited_node_mac(addr: &std::net::Ipv6Addr) -> [u8; 6] {
    let o = addr.octets();
    [0x33, 0x33, 0xff, o[13], o[14], o[15]]
}

/// Adds (`join`) or removes a link-layer multicast address on the interface's
/// receive filter. A NIC drops Neighbor Solicitations for groups it was not
/// told about before XDP runs (Cilium #44311), and the VIP is deliberately not
/// an address of the interface, so nothing else joins its group. The entry
/// stays after this process exits, like the pinned maps.
pub fn set_multicast_mac(interface: &str, mac: [u8; 6], join: bool) -> Result<()> {
    use std::os::fd::AsRawFd;
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet6,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::io("opening a socket for SIOCADDMULTI", e.into()))?;
    let mut request = ifreq_named(interface)?;
    // SAFETY: writing the sockaddr member of the union.
    unsafe {
        request.ifr_ifru.ifru_hwaddr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
        for (dst, src) in request.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *dst = src as libc::c_char;
        }
    }
    let op = if join {
        libc::SIOCADDMULTI
    } else {
        libc::SIOCDELMULTI
    };
    // SAFETY: a valid socket and a fully initialised ifreq.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), op as _, &request) };
    if ret != 0 {
        let err = std::io::Error::last_os_error();
        // Leaving a group that is not joined is not an error worth stopping for.
        if !join && err.raw_os_error() == Some(libc::ENOENT) {
            return Ok(());
        }
        return Err(Error::io(
            format!("updating the multicast filter of {interface}"),
            err,
        ));
    }
    Ok(())
}

/// An all-zero `ifreq` naming `interface`, for interface ioctls.
fn ifreq_named(interface: &str) -> Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if interface.len() >= request.ifr_name.len() {
        return Err(Error::UnknownInterface(interface.to_owned()));
    }
    for (dst, src) in request.ifr_name.iter_mut().zip(interface.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(request)
}
