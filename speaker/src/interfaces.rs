//! Network interfaces of the current network namespace: index and MAC by name.

use std::ffi::CString;

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
        Ok(Interface { name: name.to_owned(), index, mac })
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
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
