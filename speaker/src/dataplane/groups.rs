//! MLD memberships of the daemon: the solicited-node group
//! (`ff02::1:ffXX:XXXX`, RFC 4291 §2.7.1) of every IPv6 VIP it answers for
//! is joined with `IPV6_ADD_MEMBERSHIP` on a socket of its own per
//! interface, held for as long as a VIP needs the group.
//!
//! Why: a switch that snoops MLD (RFC 4541) forwards a group's frames only
//! to ports that reported a listener. The VIP is deliberately not an
//! address of the interface, so the kernel joins nothing for it, and
//! `SIOCADDMULTI` ([`crate::interfaces::set_multicast_mac`]) only opens the
//! NIC's filter, without a report. A socket membership makes the kernel
//! send the MLDv2 report (RFC 3810 §6.1), answer queries for as long as the
//! socket lives, and report the leave when it is dropped.
//!
//! Why `SIOCADDMULTI` stays as well: the pinned maps keep answering across
//! a restart of the speaker, but a membership dies with the process's
//! socket. The link-level entry is not tied to a socket, so the NIC keeps
//! accepting solicitations from the old process's exit until the new one
//! joins again. A snooping switch, meanwhile, sees the old process's leave
//! (an MLDv2 report changing the group to include nothing), queries the
//! group, hears no answer, and may stop forwarding it after its last
//! listener query time (about 2 s with RFC 3810's defaults) until the new
//! speaker's report arrives: new clients' multicast solicitations may go
//! unanswered for that part of a restart; unicast ones (NUD, the neighbour
//! caches of clients that already know the VIP) are not affected.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv6Addr},
};

use socket2::{Domain, Socket, Type};
use tracing::{debug, info};

use crate::error::Error;

/// The solicited-node multicast group of `address`: `ff02::1:ff00:0/104`
/// with the address's low 24 bits (RFC 4291 §2.7.1).
pub fn solicited_node_group(address: &Ipv6Addr) -> Ipv6Addr {
    let o = address.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// One group on one interface (by index).
pub type Membership = (u32, Ipv6Addr);

/// Which memberships to add and which to drop.
#[derive(Debug, Default, PartialEq, Eq)]
struct GroupPlan {
    join: Vec<Membership>,
    leave: Vec<Membership>,
}

/// Compares the joined memberships with those the `vips` (address,
/// interface index) need; VIPs sharing their low 24 bits share a group.
fn plan(joined: &BTreeSet<Membership>, vips: impl IntoIterator<Item = (IpAddr, u32)>) -> GroupPlan {
    let needed: BTreeSet<Membership> = vips
        .into_iter()
        .filter_map(|(address, ifindex)| match address {
            IpAddr::V6(v6) => Some((ifindex, solicited_node_group(&v6))),
            IpAddr::V4(_) => None,
        })
        .collect();
    GroupPlan {
        join: needed.difference(joined).copied().collect(),
        leave: joined.difference(&needed).copied().collect(),
    }
}

/// The daemon's memberships; dropping it leaves every group (the kernel
/// reports the leaves as the sockets close).
#[derive(Default)]
pub struct GroupMemberships {
    /// One socket per interface index, open while it holds a membership.
    sockets: BTreeMap<u32, Socket>,
    joined: BTreeSet<Membership>,
}

impl GroupMemberships {
    /// What is joined now.
    pub fn joined(&self) -> &BTreeSet<Membership> {
        &self.joined
    }

    /// Joins the groups of `vips` (address, interface index: the VIPs in
    /// the maps) not joined yet and leaves those no VIP needs any more.
    /// Returns what failed, with why; a failed join is tried again at the
    /// next call.
    pub fn sync(&mut self, vips: impl IntoIterator<Item = (IpAddr, u32)>) -> Vec<Error> {
        let plan = plan(&self.joined, vips);
        let mut failed = Vec::new();
        for membership in plan.leave {
            if let Err(e) = self.leave(membership) {
                failed.push(e);
            }
        }
        for membership in plan.join {
            if let Err(e) = self.join(membership) {
                failed.push(e);
            }
        }
        failed
    }

    fn join(&mut self, (ifindex, group): Membership) -> Result<(), Error> {
        let socket = match self.sockets.entry(ifindex) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                // Unbound: it receives nothing, it only holds memberships.
                let socket = Socket::new(Domain::IPV6, Type::DGRAM, None)
                    .map_err(|e| Error::io("opening a socket for MLD memberships", e))?;
                entry.insert(socket)
            }
        };
        socket
            .join_multicast_v6(&group, ifindex)
            .map_err(|e| Error::io(format!("joining {group} on interface index {ifindex}"), e))?;
        self.joined.insert((ifindex, group));
        info!(
            event = "mldJoined",
            group = %group,
            ifindex,
            "joined the multicast group {group} on interface index {ifindex} (MLD report sent)"
        );
        Ok(())
    }

    fn leave(&mut self, (ifindex, group): Membership) -> Result<(), Error> {
        self.joined.remove(&(ifindex, group));
        let still_used = self.joined.iter().any(|(index, _)| *index == ifindex);
        let Some(socket) = self.sockets.get(&ifindex) else {
            return Ok(());
        };
        // A vanished interface took the kernel's side of the membership
        // with it; dropping ours then still succeeds (ipv6_sock_mc_drop
        // only skips the device part).
        let dropped = socket
            .leave_multicast_v6(&group, ifindex)
            .map_err(|e| Error::io(format!("leaving {group} on interface index {ifindex}"), e));
        if !still_used {
            self.sockets.remove(&ifindex);
            debug!("no more groups on interface index {ifindex}: closed its MLD socket");
        }
        dropped?;
        info!(
            event = "mldLeft",
            group = %group,
            ifindex,
            "left the multicast group {group} on interface index {ifindex}"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn group(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn the_group_is_ff02_1_ff_and_the_low_24_bits() {
        assert_eq!(
            solicited_node_group(&group("2001:db8::aa:bbcc:ddee")),
            group("ff02::1:ffcc:ddee")
        );
        assert_eq!(
            solicited_node_group(&group("fe80::1")),
            group("ff02::1:ff00:1")
        );
    }

    #[test]
    fn joins_what_is_needed_once_and_ignores_ipv4() {
        let vips = [
            (ip("2001:db8::1:100"), 2),
            // Same low 24 bits: the same group.
            (ip("2001:db8:ffff::1:100"), 2),
            // The same VIP on another interface: another membership.
            (ip("2001:db8::1:100"), 3),
            (ip("192.0.2.1"), 2),
        ];
        let plan = plan(&BTreeSet::new(), vips);
        assert_eq!(
            plan.join,
            [
                (2, group("ff02::1:ff01:100")),
                (3, group("ff02::1:ff01:100"))
            ]
        );
        assert!(plan.leave.is_empty());
    }

    #[test]
    fn leaves_a_group_only_when_its_last_vip_goes() {
        let joined: BTreeSet<Membership> = [
            (2, group("ff02::1:ff01:100")),
            (2, group("ff02::1:ff01:101")),
        ]
        .into();
        // 2001:db8::1:100 went, a VIP with the same low 24 bits stays.
        let plan_kept = plan(
            &joined,
            [(ip("2001:db8:1::1:100"), 2), (ip("2001:db8::1:101"), 2)],
        );
        assert_eq!(plan_kept, GroupPlan::default());
        let plan_left = plan(&joined, [(ip("2001:db8::1:101"), 2)]);
        assert_eq!(plan_left.leave, [(2, group("ff02::1:ff01:100"))]);
        assert!(plan_left.join.is_empty());
        assert_eq!(plan(&joined, []).leave.len(), 2);
    }

    #[test]
    fn a_join_on_a_missing_interface_fails_and_is_retried() {
        let mut groups = GroupMemberships::default();
        // No interface has this index.
        let failed = groups.sync([(ip("2001:db8::1"), 999_999)]);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(groups.joined().is_empty());
        assert_eq!(groups.sync([(ip("2001:db8::1"), 999_999)]).len(), 1);
    }
}
