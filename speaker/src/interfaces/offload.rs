//! Whether a NIC strips VLAN tags in hardware (ethtool's `rxvlan`,
//! `rx-vlan-hw-parse`: the kernel feature `NETIF_F_HW_VLAN_CTAG_RX`).
//!
//! Asked with the legacy `ETHTOOL_GFLAGS` request (include/uapi/linux/ethtool.h):
//! its `ETH_FLAG_RXVLAN` bit is that feature under a fixed number, whereas
//! `ETHTOOL_GFEATURES` numbers features by a kernel-internal enum that must
//! first be looked up by name. Like every ioctl here it answers for the
//! calling thread's network namespace.

use std::os::fd::AsRawFd;

use crate::error::{Error, Result};

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

const ETHTOOL_GFLAGS: u32 = 0x0000_0025;
/// `ETH_FLAG_RXVLAN`: RX VLAN offload (the tag is moved out of the frame).
const ETH_FLAG_RXVLAN: u32 = 1 << 8;

nix::ioctl_readwrite_bad!(ethtool_request, libc::SIOCETHTOOL, libc::ifreq);

/// True when `interface` hands received frames to the stack (and to native
/// XDP) with their 802.1Q tag removed.
pub fn strips_vlan_tags(interface: &str) -> Result<bool> {
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::io("opening a socket for SIOCETHTOOL", e.into()))?;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    let mut request = super::ifreq_named(interface)?;
    request.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: a valid socket; ifr_data points at an ethtool_value that
    // outlives the call, which is what ETHTOOL_GFLAGS reads and writes.
    match unsafe { ethtool_request(socket.as_raw_fd(), &mut request) } {
        Ok(_) => Ok(value.data & ETH_FLAG_RXVLAN != 0),
        // No ethtool operations at all: nothing is offloaded.
        Err(nix::errno::Errno::EOPNOTSUPP) => Ok(false),
        Err(nix::errno::Errno::ENODEV) => Err(Error::UnknownInterface(interface.to_owned())),
        Err(e) => Err(Error::io(
            format!("reading the offload flags of {interface} (ETHTOOL_GFLAGS)"),
            e.into(),
        )),
    }
}
