//! Bond slaves of the interfaces the program is attached to.
//!
//! In native mode the kernel runs a bond's XDP program on each of its slaves
//! (`bond_xdp_set` in drivers/net/bonding/bond_main.c installs it on every
//! slave), and `ingress_ifindex` is then the slave's, while VIPs are keyed by
//! the bond. The program maps slave to master through `BOND_SLAVES`.
//!
//! A bridge's ports are not slaves in this sense: XDP on a bridge runs only
//! (generically) on frames the bridge itself receives, never on its ports, so
//! a port mapped to the bridge would answer from the wrong place.

use std::collections::{BTreeMap, BTreeSet};

use super::netlink::Link;

/// slave ifindex → master ifindex for every link enslaved (`IFLA_MASTER`)
/// to a bond among `masters`.
pub fn slaves_of(links: &[Link], masters: &BTreeSet<u32>) -> BTreeMap<u32, u32> {
    let bonds: BTreeSet<u32> = links
        .iter()
        .filter(|link| link.is_bond() && masters.contains(&link.index))
        .map(|link| link.index)
        .collect();
    links
        .iter()
        .filter_map(|link| Some((link.index, link.master?)))
        .filter(|(_, master)| bonds.contains(master))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, kind: Option<&str>, master: Option<u32>) -> Link {
        Link {
            index,
            name: format!("if{index}"),
            kind: kind.map(str::to_owned),
            master,
            ..Link::default()
        }
    }

    #[test]
    fn slaves_of_announced_bonds_only() {
        let links = [
            link(2, Some("bond"), None),
            link(3, None, Some(2)),
            link(4, None, Some(2)),
            link(5, Some("bond"), None),
            link(6, None, Some(5)),
            link(7, Some("bridge"), None),
            link(8, Some("veth"), Some(7)),
            link(9, None, None),
        ];
        let all: BTreeSet<u32> = [2, 5, 7, 9].into();
        assert_eq!(slaves_of(&links, &all), [(3, 2), (4, 2), (6, 5)].into());
        // bond 5 is not attached to: its slaves are not mapped.
        assert_eq!(slaves_of(&links, &[2, 7].into()), [(3, 2), (4, 2)].into());
        // A bridge's ports never are.
        assert!(slaves_of(&links, &[7].into()).is_empty());
        assert!(slaves_of(&links, &BTreeSet::new()).is_empty());
    }
}
