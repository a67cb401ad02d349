//! Keeping `BOND_SLAVES` equal to the slaves of the bonds the program is
//! attached to (see [`crate::interfaces::bonds`]): entries of slaves
//! released, of bonds no longer announced on or of links gone are removed.

use std::collections::BTreeMap;

use tracing::info;

use super::DataplaneMaps;
use crate::error::Result;

/// What to change in the map to reach the desired slave → master pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BondSlavePlan {
    /// New slaves, and slaves moved to another master.
    pub set: Vec<(u32, u32)>,
    /// Slaves no longer enslaved to an announced bond.
    pub remove: Vec<u32>,
}

impl BondSlavePlan {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// Compares without side effects.
pub fn plan(desired: &BTreeMap<u32, u32>, current: &BTreeMap<u32, u32>) -> BondSlavePlan {
    BondSlavePlan {
        set: desired
            .iter()
            .filter(|(slave, master)| current.get(slave) != Some(master))
            .map(|(slave, master)| (*slave, *master))
            .collect(),
        remove: current
            .keys()
            .filter(|slave| !desired.contains_key(slave))
            .copied()
            .collect(),
    }
}

/// Brings `BOND_SLAVES` to `desired`; returns what was changed. Stops at the
/// first failing map update (the next link change or sync retries).
pub fn apply(maps: &mut DataplaneMaps, desired: &BTreeMap<u32, u32>) -> Result<BondSlavePlan> {
    let current: BTreeMap<u32, u32> = maps.bond_slaves()?.into_iter().collect();
    let plan = plan(desired, &current);
    for &(slave, master) in &plan.set {
        maps.set_bond_slave(slave, master)?;
        info!("bond slave: answering on interface index {slave} for its bond (index {master})");
    }
    for &slave in &plan.remove {
        maps.remove_bond_slave(slave)?;
        info!("bond slave: interface index {slave} is no longer a slave of an announced bond");
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(u32, u32)]) -> BTreeMap<u32, u32> {
        list.iter().copied().collect()
    }

    #[test]
    fn changes_only_the_difference() {
        let current = pairs(&[(3, 2), (4, 2), (6, 5)]);
        // 4 released, 6 moved to bond 9, 7 enslaved; 3 unchanged.
        let desired = pairs(&[(3, 2), (6, 9), (7, 2)]);
        assert_eq!(
            plan(&desired, &current),
            BondSlavePlan {
                set: vec![(6, 9), (7, 2)],
                remove: vec![4],
            }
        );
        assert!(plan(&current, &current).is_empty());
        assert_eq!(plan(&BTreeMap::new(), &current).remove, [3, 4, 6]);
        assert_eq!(plan(&current, &BTreeMap::new()).set.len(), 3);
    }
}
