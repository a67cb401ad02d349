//! The operator commands on the data plane (`speaker xdp …`, `speaker vip
//! …`): each does its work and returns what happened, for the command line
//! to print.

use std::{fmt, net::IpAddr};

use speaker_common::VlanPath;

use super::{attach, detach, sync, AttachMode, Attached, DataplaneMaps, PinDir, PASS, RESPONDER};
use crate::{
    error::{Error, Result},
    interfaces::{self, Interface},
};

/// `speaker xdp attach`.
#[derive(Debug)]
pub struct AttachReport {
    pub program: &'static str,
    pub interface: String,
    pub attached: Attached,
}

impl fmt::Display for AttachReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let AttachReport {
            program,
            interface,
            attached,
        } = self;
        match attached {
            Attached::New { native } => write!(
                f,
                "attached {program} to {interface} in {} mode",
                if *native { "native" } else { "generic" }
            ),
            Attached::Replaced => write!(f, "{interface}: replaced the attached program in place"),
        }
    }
}

/// Attaches the responder, or with `pass_through` the empty XDP_PASS
/// program (a veth peer needs one to receive the responder's XDP_TX frames).
pub fn attach_program(
    pins: &PinDir,
    interface: &str,
    mode: AttachMode,
    pass_through: bool,
) -> Result<AttachReport> {
    let program = if pass_through { PASS } else { RESPONDER };
    let attached = attach(pins, interface, mode, program)?;
    Ok(AttachReport {
        program,
        interface: interface.to_owned(),
        attached,
    })
}

/// `speaker xdp detach`: returns the line to print.
pub fn detach_program(pins: &PinDir, interface: &str) -> Result<String> {
    detach(pins, interface)?;
    Ok(format!("detached from {interface}"))
}

/// `speaker vip add`: the responder answers for `address` on `interface`
/// (requests tagged exactly with `vlan`), which for IPv6 also joins the
/// address's solicited-node group on the NIC's filter (the NIC must accept
/// the multicast NS frames for XDP to see them). No MLD membership: this
/// command exits at once, and a membership lives only as long as its
/// socket (the kernel would report the join and the leave a moment apart).
/// Behind an MLD-snooping switch a VIP added by hand is therefore reached
/// by unicast and flooded solicitations only; the daemon holds memberships
/// ([`super::groups`]).
pub fn add_vip(pins: &PinDir, address: IpAddr, interface: &str, vlan: VlanPath) -> Result<String> {
    let mut maps = DataplaneMaps::from_pins(pins)?;
    let interface = Interface::by_name(interface)?;
    maps.add_vip(address, interface.index, vlan, interface.mac)?;
    if let IpAddr::V6(v6) = address {
        let group = interfaces::solicited_node_mac(&v6);
        interfaces::set_multicast_mac(&interface.name, group, true)?;
    }
    Ok(format!(
        "answering for {address} on {}{} ({})",
        interface.name,
        on_vlan(vlan),
        interfaces::format_mac(&interface.mac)
    ))
}

/// `speaker vip del`: the reverse of [`add_vip`]; the solicited-node group
/// is left only when no other VIP on the interface shares it.
pub fn remove_vip(
    pins: &PinDir,
    address: IpAddr,
    interface: &str,
    vlan: VlanPath,
) -> Result<String> {
    let mut maps = DataplaneMaps::from_pins(pins)?;
    let ifindex = interfaces::index_of(interface)?;
    if !maps.remove_vip(address, ifindex, vlan)? {
        return Err(Error::NoSuchVip(address, interface.to_owned()));
    }
    if let IpAddr::V6(v6) = address {
        let remaining = maps.vips()?;
        sync::leave_group_unless_shared(
            interface,
            ifindex,
            &v6,
            remaining.iter().map(|vip| (vip.address, vip.ifindex)),
        )?;
    }
    Ok(format!(
        "no longer answering for {address} on {interface}{}",
        on_vlan(vlan)
    ))
}

/// " vlan 100" (the `speaker maps` notation), or nothing when untagged.
fn on_vlan(vlan: VlanPath) -> String {
    match crate::report::vlan_text(vlan) {
        Some(text) => format!(" vlan {text}"),
        None => String::new(),
    }
}
