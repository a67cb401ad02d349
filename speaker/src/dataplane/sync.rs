//! Bringing the pinned VIP maps to a desired set by changing only the
//! difference. An entry that is already right is not touched: its answered
//! counter survives, and a restart or a re-list of the cluster state makes no
//! entry disappear, even for a moment.
//!
//! IPv6 VIPs also need the solicited-node group of the address joined on the
//! interface's receive filter (see [`interfaces::set_multicast_mac`]). The
//! group is left when the last VIP on that interface needing it goes: VIPs
//! whose low 24 bits agree share one group (RFC 4291 §2.7.1). The MLD
//! membership that makes snooping switches forward the group is the
//! daemon's, held in [`super::groups`] (why both: see there).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv6Addr},
};

use tracing::{debug, info, warn};

use speaker_common::VlanPath;

use super::{DataplaneMaps, VipRecord};
use crate::{
    error::Result,
    interfaces::{self, Interface},
};

/// One address to answer for on one interface, behind `vlan`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredVip {
    pub address: IpAddr,
    /// Where the program runs (a VLAN's parent) and the MAC it answers with.
    pub interface: Interface,
    pub vlan: VlanPath,
}

/// What [`apply`] changed. An entry whose map change succeeded but whose
/// multicast join failed is listed both where its map change is and in
/// `failed`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Each entry with the tags it is answered behind.
    pub added: Vec<(IpAddr, Interface, VlanPath)>,
    /// Address and interface index; the interface may be gone.
    pub removed: Vec<(IpAddr, u32, VlanPath)>,
    /// Entries kept (with their counters) whose interface MAC changed.
    pub updated_mac: Vec<(IpAddr, Interface, VlanPath)>,
    /// Desired entries that were already right and are kept as they are
    /// (adopted pins after a restart among them).
    pub kept: Vec<(IpAddr, Interface, VlanPath)>,
    pub unchanged: usize,
    /// Entries that could not be brought to the desired state, with why.
    pub failed: Vec<(IpAddr, String)>,
}

impl SyncReport {
    /// True when nothing was changed and nothing failed.
    pub fn is_noop(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.updated_mac.is_empty()
            && self.failed.is_empty()
    }
}

/// The difference between the maps and the desired set.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan<'a> {
    /// Map entries nobody wants, including every entry whose interface is gone.
    remove: Vec<(IpAddr, u32, VlanPath)>,
    update_mac: Vec<&'a DesiredVip>,
    add: Vec<&'a DesiredVip>,
    unchanged: Vec<&'a DesiredVip>,
    /// Desired entries on interfaces that no longer exist.
    vanished: Vec<&'a DesiredVip>,
}

/// Compares without side effects; `exists` tells whether an interface index
/// is still there. A (VIP, interface) desired twice counts once.
fn plan<'a>(
    current: &[VipRecord],
    desired: &'a [DesiredVip],
    exists: impl Fn(u32) -> bool,
) -> Plan<'a> {
    let mut plan = Plan::default();
    let mut wanted: BTreeMap<(IpAddr, u32, VlanPath), &DesiredVip> = BTreeMap::new();
    for vip in desired {
        if !exists(vip.interface.index) {
            plan.vanished.push(vip);
            continue;
        }
        wanted
            .entry((vip.address, vip.interface.index, vip.vlan))
            .or_insert(vip);
    }
    let in_maps: BTreeMap<(IpAddr, u32, VlanPath), [u8; 6]> = current
        .iter()
        .map(|record| ((record.address, record.ifindex, record.vlan), record.mac))
        .collect();
    plan.remove = in_maps
        .keys()
        .filter(|key| !wanted.contains_key(key))
        .copied()
        .collect();
    for (key, vip) in wanted {
        match in_maps.get(&key) {
            Some(mac) if *mac == vip.interface.mac => plan.unchanged.push(vip),
            Some(_) => plan.update_mac.push(vip),
            None => plan.add.push(vip),
        }
    }
    plan
}

/// Brings the maps to `desired`: removes what is not desired (and whatever
/// sits on an interface that is gone), adds what is missing, refreshes MACs
/// in place. A failure on one entry is logged and reported and does not stop
/// the others; only failing to read the maps at all is an error.
pub fn apply(maps: &mut DataplaneMaps, desired: &[DesiredVip]) -> Result<SyncReport> {
    let current = maps.vips()?;
    let plan = plan(&current, desired, |index| {
        interfaces::name_of(index).is_some()
    });
    let mut report = SyncReport::default();
    for vip in &plan.vanished {
        let why = format!(
            "interface {} (index {}) no longer exists",
            vip.interface.name, vip.interface.index
        );
        fail(&mut report, vip.address, why);
    }
    // What the maps hold as we go, for deciding which groups are still needed.
    let mut present: BTreeSet<(IpAddr, u32, VlanPath)> = current
        .iter()
        .map(|record| (record.address, record.ifindex, record.vlan))
        .collect();

    // Removals first: they free slots for the additions.
    let mut removed_v6 = Vec::new();
    for &(address, ifindex, vlan) in &plan.remove {
        match maps.remove_vip(address, ifindex, vlan) {
            Ok(_) => {
                let name = crate::interfaces::name_of(ifindex)
                    .unwrap_or_else(|| format!("interface index {ifindex} (gone)"));
                info!(
                    event = "vipRemoved",
                    ip = %address,
                    interface = name,
                    "VIP {address}: no longer answering on {name}"
                );
                present.remove(&(address, ifindex, vlan));
                report.removed.push((address, ifindex, vlan));
                if let IpAddr::V6(v6) = address {
                    removed_v6.push((v6, ifindex));
                }
            }
            Err(e) => fail(&mut report, address, format!("removing it: {e}")),
        }
    }

    for vip in &plan.update_mac {
        let interface = &vip.interface;
        match maps.add_vip(vip.address, interface.index, vip.vlan, interface.mac) {
            Ok(()) => {
                info!(
                    event = "vipMacUpdated",
                    ip = %vip.address,
                    interface = interface.name,
                    "VIP {}: MAC of {} is now {}",
                    vip.address,
                    interface.name,
                    interfaces::format_mac(&interface.mac)
                );
                report
                    .updated_mac
                    .push((vip.address, interface.clone(), vip.vlan));
            }
            Err(e) => fail(&mut report, vip.address, format!("updating its MAC: {e}")),
        }
    }
    for vip in &plan.add {
        let interface = &vip.interface;
        match maps.add_vip(vip.address, interface.index, vip.vlan, interface.mac) {
            Ok(()) => {
                info!(
                    event = "vipAdded",
                    ip = %vip.address,
                    interface = interface.name,
                    "VIP {}: answering on {}",
                    vip.address,
                    interface.name
                );
                present.insert((vip.address, interface.index, vip.vlan));
                report
                    .added
                    .push((vip.address, interface.clone(), vip.vlan));
            }
            Err(e) => fail(&mut report, vip.address, format!("adding it: {e}")),
        }
    }
    report.unchanged = plan.unchanged.len();
    report.kept = plan
        .unchanged
        .iter()
        .map(|vip| (vip.address, vip.interface.clone(), vip.vlan))
        .collect();

    // Every desired IPv6 VIP in the maps gets its group joined, not only the
    // new ones: SIOCADDMULTI sets one flag per address and interface
    // (dev_mc_add_global in net/core/dev_ioctl.c), so joining again is free
    // and repairs a join that failed on an earlier pass.
    let in_maps = plan
        .add
        .iter()
        .chain(&plan.update_mac)
        .chain(&plan.unchanged);
    for vip in in_maps {
        let IpAddr::V6(v6) = vip.address else {
            continue;
        };
        if !present.contains(&(vip.address, vip.interface.index, vip.vlan)) {
            continue;
        }
        // The current name: ioctls go by name, and a rename keeps the index.
        let Some(name) = interfaces::name_of(vip.interface.index) else {
            fail(&mut report, vip.address, "its interface vanished".into());
            continue;
        };
        if let Err(e) = join_group(&name, &v6) {
            fail(&mut report, vip.address, e.to_string());
        }
    }

    // Groups last, so that one still needed by an addition is never left.
    for (v6, ifindex) in removed_v6 {
        // A vanished interface took its receive filter with it.
        let Some(name) = interfaces::name_of(ifindex) else {
            continue;
        };
        let others = present
            .iter()
            .map(|&(address, ifindex, _)| (address, ifindex));
        if let Err(e) = leave_group_unless_shared(&name, ifindex, &v6, others) {
            fail(&mut report, IpAddr::V6(v6), e.to_string());
        }
    }
    if report.is_noop() {
        debug!("VIP maps already as desired ({} entries)", report.unchanged);
    }
    Ok(report)
}

fn fail(report: &mut SyncReport, address: IpAddr, why: String) {
    warn!(ip = %address, error = why, "VIP {address}: {why}");
    report.failed.push((address, why));
}

fn join_group(interface: &str, address: &Ipv6Addr) -> Result<()> {
    interfaces::set_multicast_mac(interface, interfaces::solicited_node_mac(address), true)
}

/// True when an IPv6 address among `others` (other than `address`) on
/// `ifindex` has the same solicited-node group as `address`.
pub fn group_shared(
    address: &Ipv6Addr,
    ifindex: u32,
    others: impl IntoIterator<Item = (IpAddr, u32)>,
) -> bool {
    let group = interfaces::solicited_node_mac(address);
    others.into_iter().any(|(other, other_ifindex)| {
        other_ifindex == ifindex
            && matches!(other, IpAddr::V6(other)
                if other != *address && interfaces::solicited_node_mac(&other) == group)
    })
}

/// Leaves the solicited-node group of `address` on `interface` (index
/// `ifindex`) unless another of `remaining` on it needs the same group;
/// true when it left.
pub fn leave_group_unless_shared(
    interface: &str,
    ifindex: u32,
    address: &Ipv6Addr,
    remaining: impl IntoIterator<Item = (IpAddr, u32)>,
) -> Result<bool> {
    if group_shared(address, ifindex, remaining) {
        return Ok(false);
    }
    let group = interfaces::solicited_node_mac(address);
    interfaces::set_multicast_mac(interface, group, false)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn record(address: &str, ifindex: u32, mac: [u8; 6]) -> VipRecord {
        VipRecord {
            address: ip(address),
            ifindex,
            vlan: VlanPath::UNTAGGED,
            mac,
            answered: 5,
            requests: 6,
            conflicts: 0,
            last_conflict: None,
        }
    }

    fn desired(address: &str, index: u32, mac: [u8; 6]) -> DesiredVip {
        DesiredVip {
            address: ip(address),
            interface: Interface {
                name: format!("eth{index}"),
                index,
                mac,
            },
            vlan: VlanPath::UNTAGGED,
        }
    }

    fn keys(vips: &[&DesiredVip]) -> Vec<(IpAddr, u32)> {
        vips.iter()
            .map(|v| (v.address, v.interface.index))
            .collect()
    }

    #[test]
    fn the_same_set_again_changes_nothing() {
        let current = [
            record("192.0.2.100", 2, MAC_A),
            record("2001:db8::100", 2, MAC_A),
        ];
        let wanted = [
            desired("2001:db8::100", 2, MAC_A),
            desired("192.0.2.100", 2, MAC_A),
        ];
        let plan = plan(&current, &wanted, |_| true);
        assert!(plan.remove.is_empty() && plan.add.is_empty() && plan.update_mac.is_empty());
        assert_eq!(plan.unchanged.len(), 2);
    }

    #[test]
    fn only_the_difference_is_planned() {
        let current = [
            record("192.0.2.100", 2, MAC_A),
            record("192.0.2.101", 2, MAC_A),
            record("192.0.2.102", 3, MAC_A),
        ];
        let wanted = [
            desired("192.0.2.100", 2, MAC_A),
            desired("192.0.2.102", 3, MAC_B),
            desired("192.0.2.103", 2, MAC_A),
            // The same VIP on a second interface is a separate entry.
            desired("192.0.2.100", 3, MAC_B),
        ];
        let plan = plan(&current, &wanted, |_| true);
        assert_eq!(plan.remove, [(ip("192.0.2.101"), 2, VlanPath::UNTAGGED)]);
        assert_eq!(keys(&plan.update_mac), [(ip("192.0.2.102"), 3)]);
        assert_eq!(
            keys(&plan.add),
            [(ip("192.0.2.100"), 3), (ip("192.0.2.103"), 2)]
        );
        assert_eq!(keys(&plan.unchanged), [(ip("192.0.2.100"), 2)]);
    }

    #[test]
    fn entries_on_vanished_interfaces_are_removed_and_not_added() {
        let current = [
            record("192.0.2.100", 2, MAC_A),
            record("192.0.2.100", 9, MAC_A),
        ];
        let wanted = [
            desired("192.0.2.100", 2, MAC_A),
            desired("192.0.2.100", 9, MAC_A),
            desired("192.0.2.104", 9, MAC_A),
        ];
        let plan = plan(&current, &wanted, |index| index != 9);
        assert_eq!(plan.remove, [(ip("192.0.2.100"), 9, VlanPath::UNTAGGED)]);
        assert!(plan.add.is_empty());
        assert_eq!(
            keys(&plan.vanished),
            [(ip("192.0.2.100"), 9), (ip("192.0.2.104"), 9)]
        );
    }

    #[test]
    fn a_duplicate_desired_entry_counts_once() {
        let wanted = [
            desired("192.0.2.100", 2, MAC_A),
            desired("192.0.2.100", 2, MAC_A),
        ];
        let plan = plan(&[], &wanted, |_| true);
        assert_eq!(plan.add.len(), 1);
    }

    #[test]
    fn groups_are_shared_by_the_low_24_bits_on_one_interface() {
        let vip = v6("2001:db8::1:100");
        let same_group = (ip("2001:db8:ffff::1:100"), 2);
        assert!(group_shared(&vip, 2, [same_group]));
        // On another interface, another group, or IPv4: not shared.
        assert!(!group_shared(&vip, 3, [same_group]));
        assert!(!group_shared(&vip, 2, [(ip("2001:db8::1:101"), 2)]));
        assert!(!group_shared(&vip, 2, [(ip("192.0.1.0"), 2)]));
        // The address itself does not keep its own group.
        assert!(!group_shared(&vip, 2, [(IpAddr::V6(vip), 2)]));
        assert!(!group_shared(&vip, 2, []));
    }
}
