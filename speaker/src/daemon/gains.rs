//! Which (VIP, interface) pairs this process answers for, so that every
//! gain of ownership announces.
//!
//! A gain is judged against what this process has announced, not against
//! what the pinned maps held: after a restart the maps already hold the
//! adopted entries, and after a stall the cluster may have declared us down
//! and let another node announce its MAC meanwhile. In both cases the
//! neighbours may point elsewhere, so the gratuitous burst must go out
//! exactly as for a new owner (issue 10, item 5). Clients that resolve only
//! once and then keep sending otherwise stay on a node that no longer
//! answers until their neighbour entry goes stale (tens of seconds on
//! Linux: `base_reachable_time` plus `delay_first_probe_time`).

use std::{collections::BTreeMap, net::IpAddr};

use speaker_common::VlanPath;

use crate::{dataplane::sync::SyncReport, interfaces::Interface};

/// A (VIP, interface index, tags) entry; the interface (and so the MAC) it
/// was announced on. The same VIP untagged and on a VLAN of the same parent
/// are two entries.
type Answering = BTreeMap<(IpAddr, u32, VlanPath), Interface>;

/// What changed in this process's view by one sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transitions {
    /// Now answering and not announced before (or announced with another
    /// MAC): each needs a gratuitous burst.
    pub gained: Vec<(IpAddr, Interface, VlanPath)>,
    /// Announced before and no longer answered here: stop the schedule.
    pub lost: Vec<(IpAddr, u32, VlanPath)>,
}

/// This process's view: the pairs it answers for and has announced. Starts
/// empty in every process, whatever the pins hold.
#[derive(Clone, Debug, Default)]
pub struct AnsweringView {
    answering: Answering,
    /// Until the first sync: entries found in the maps and kept count as
    /// announced (set after a restart stop, see `restart`).
    adopted_announced: bool,
}

impl AnsweringView {
    /// Takes in what a sync left in the maps (added, MAC-updated and kept
    /// entries; an entry whose multicast join failed is still in the maps
    /// and still answered for ARP) and returns the gains and losses.
    pub fn update(&mut self, report: &SyncReport) -> Transitions {
        let now: Vec<&(IpAddr, Interface, VlanPath)> = report
            .added
            .iter()
            .chain(&report.updated_mac)
            .chain(&report.kept)
            .collect();
        let mut next = Answering::new();
        let mut transitions = Transitions::default();
        if std::mem::take(&mut self.adopted_announced) {
            for (ip, interface, vlan) in &report.kept {
                self.answering
                    .insert((*ip, interface.index, *vlan), interface.clone());
            }
        }
        for (ip, interface, vlan) in now {
            let key = (*ip, interface.index, *vlan);
            if self.answering.get(&key).map(|i| i.mac) != Some(interface.mac) {
                transitions.gained.push((*ip, interface.clone(), *vlan));
            }
            next.insert(key, interface.clone());
        }
        transitions.lost = self
            .answering
            .keys()
            .filter(|key| !next.contains_key(key))
            .copied()
            .collect();
        transitions
            .gained
            .sort_by_key(|(ip, i, vlan)| (*ip, i.index, *vlan));
        self.answering = next;
        transitions
    }

    /// The cluster declared us down (we rejoined as a new generation): others
    /// may have taken over and announced meanwhile, so everything still
    /// answered here counts as not announced and is announced again at the
    /// next sync.
    pub fn forget(&mut self) {
        self.answering.clear();
        self.adopted_announced = false;
    }

    /// The previous process stopped for a restart and its entries never
    /// stopped answering, with ownership held in every peer's view: what
    /// the first sync finds in the maps and keeps unchanged was announced
    /// (by that process) and needs no burst. Added or moved entries still do.
    pub fn adopt_announced(&mut self) {
        self.adopted_announced = true;
    }

    /// Every pair answered for, in address order.
    pub fn entries(&self) -> impl Iterator<Item = (IpAddr, &Interface, VlanPath)> {
        self.answering
            .iter()
            .map(|((ip, _, vlan), interface)| (*ip, interface, *vlan))
    }

    pub fn len(&self) -> usize {
        self.answering.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answering.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    fn entry(ip: &str, index: u32, mac: [u8; 6]) -> (IpAddr, Interface, VlanPath) {
        (
            ip.parse().unwrap(),
            Interface {
                name: format!("eth{index}"),
                index,
                mac,
            },
            VlanPath::UNTAGGED,
        )
    }

    fn keys(gained: &[(IpAddr, Interface, VlanPath)]) -> Vec<(String, u32)> {
        gained
            .iter()
            .map(|(ip, i, _)| (ip.to_string(), i.index))
            .collect()
    }

    fn kept(entries: &[(IpAddr, Interface, VlanPath)]) -> SyncReport {
        SyncReport {
            unchanged: entries.len(),
            kept: entries.to_vec(),
            ..SyncReport::default()
        }
    }

    #[test]
    fn after_a_restart_stop_only_new_entries_announce() {
        let mut view = AnsweringView::default();
        view.adopt_announced();
        let pinned = entry("192.0.2.100", 2, MAC_A);
        let added = entry("192.0.2.101", 2, MAC_A);
        let report = SyncReport {
            kept: vec![pinned.clone()],
            added: vec![added.clone()],
            ..SyncReport::default()
        };
        let transitions = view.update(&report);
        assert_eq!(keys(&transitions.gained), [("192.0.2.101".into(), 2)]);
        // Only the first sync trusts the pins: a later loss and regain announces.
        view.update(&kept(std::slice::from_ref(&added)));
        let again = view.update(&kept(&[added, pinned]));
        assert_eq!(keys(&again.gained), [("192.0.2.100".into(), 2)]);
        // A rejoin before the first sync withdraws the trust.
        let mut view = AnsweringView::default();
        view.adopt_announced();
        view.forget();
        let transitions = view.update(&kept(&[entry("192.0.2.100", 2, MAC_A)]));
        assert_eq!(transitions.gained.len(), 1);
    }

    #[test]
    fn adopted_pins_are_gains_for_a_new_process() {
        // A restart: the maps already hold both entries, nothing was added.
        let mut view = AnsweringView::default();
        let pinned = [
            entry("192.0.2.100", 2, MAC_A),
            entry("2001:db8::100", 2, MAC_A),
        ];
        let t = view.update(&kept(&pinned));
        assert_eq!(
            keys(&t.gained),
            [("192.0.2.100".into(), 2), ("2001:db8::100".into(), 2)]
        );
        assert!(t.lost.is_empty());
        // The next sync of the same set announces nothing again.
        assert_eq!(view.update(&kept(&pinned)), Transitions::default());
        assert_eq!(view.len(), 2);
    }

    #[test]
    fn new_entries_gain_and_removed_ones_are_lost() {
        let mut view = AnsweringView::default();
        let first = SyncReport {
            added: vec![entry("192.0.2.100", 2, MAC_A)],
            ..SyncReport::default()
        };
        assert_eq!(
            keys(&view.update(&first).gained),
            [("192.0.2.100".into(), 2)]
        );
        // The IP moved away (map entry removed), another one came.
        let second = SyncReport {
            added: vec![entry("192.0.2.101", 2, MAC_A)],
            removed: vec![("192.0.2.100".parse().unwrap(), 2, VlanPath::UNTAGGED)],
            ..SyncReport::default()
        };
        let t = view.update(&second);
        assert_eq!(keys(&t.gained), [("192.0.2.101".into(), 2)]);
        assert_eq!(
            t.lost,
            [("192.0.2.100".parse().unwrap(), 2, VlanPath::UNTAGGED)]
        );
        // Fail-back: the first IP comes back; a gain again.
        let third = SyncReport {
            added: vec![entry("192.0.2.100", 2, MAC_A)],
            kept: vec![entry("192.0.2.101", 2, MAC_A)],
            unchanged: 1,
            ..SyncReport::default()
        };
        assert_eq!(
            keys(&view.update(&third).gained),
            [("192.0.2.100".into(), 2)]
        );
    }

    #[test]
    fn a_new_mac_is_a_gain_and_failed_entries_are_not() {
        let mut view = AnsweringView::default();
        view.update(&kept(&[entry("192.0.2.100", 2, MAC_A)]));
        let new_mac = SyncReport {
            updated_mac: vec![entry("192.0.2.100", 2, MAC_B)],
            ..SyncReport::default()
        };
        assert_eq!(
            keys(&view.update(&new_mac).gained),
            [("192.0.2.100".into(), 2)]
        );
        // Could not be added: not answered, so neither gained nor lost later.
        let failed = SyncReport {
            kept: vec![entry("192.0.2.100", 2, MAC_B)],
            unchanged: 1,
            failed: vec![("192.0.2.102".parse().unwrap(), "map full".into())],
            ..SyncReport::default()
        };
        assert_eq!(view.update(&failed), Transitions::default());
    }

    #[test]
    fn after_being_declared_down_everything_held_is_announced_again() {
        let mut view = AnsweringView::default();
        let held = [
            entry("192.0.2.100", 2, MAC_A),
            entry("192.0.2.100", 3, MAC_B),
        ];
        view.update(&kept(&held));
        view.forget();
        assert!(view.is_empty());
        let t = view.update(&kept(&held));
        assert_eq!(
            keys(&t.gained),
            [("192.0.2.100".into(), 2), ("192.0.2.100".into(), 3)]
        );
        assert!(t.lost.is_empty());
    }

    #[test]
    fn a_vip_untagged_and_on_a_vlan_of_one_parent_are_two_entries() {
        let mut view = AnsweringView::default();
        let untagged = entry("192.0.2.100", 2, MAC_A);
        let tagged = (
            untagged.0,
            Interface {
                mac: MAC_B,
                ..untagged.1.clone()
            },
            VlanPath::single(100, false),
        );
        let t = view.update(&kept(&[untagged.clone(), tagged.clone()]));
        assert_eq!(t.gained, [untagged.clone(), tagged.clone()]);
        assert_eq!(view.len(), 2);
        // The VLAN entry goes: only it is lost.
        let t = view.update(&kept(std::slice::from_ref(&untagged)));
        assert_eq!(t.lost, [(untagged.0, 2, VlanPath::single(100, false))]);
        assert!(t.gained.is_empty());
    }
}
