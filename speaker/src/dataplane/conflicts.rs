//! Turns the program's per-VIP conflict records into log lines: the daemon
//! reads the maps every check and logs each (VIP, interface) whose count
//! moved, naming the other MAC. The Kubernetes `IPConflict` event is not
//! raised yet (issue 7).

use std::{collections::BTreeMap, net::IpAddr};

use tracing::warn;

use super::VipRecord;
use crate::interfaces::format_mac;

/// What a watch saw newly since its last look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewConflict {
    pub address: IpAddr,
    pub ifindex: u32,
    /// Claims since the last look.
    pub claims: u64,
    pub mac: [u8; 6],
}

/// Conflict counts already reported, per (VIP, interface).
#[derive(Default)]
pub struct ConflictWatch {
    seen: BTreeMap<(IpAddr, u32), u64>,
}

impl ConflictWatch {
    /// The conflicts whose count moved since the last call. A record whose
    /// count went down (the slot was handed to a new VIP entry) starts over.
    pub fn observe(&mut self, records: &[VipRecord]) -> Vec<NewConflict> {
        let mut fresh = Vec::new();
        let mut seen = BTreeMap::new();
        for record in records {
            let key = (record.address, record.ifindex);
            let before = self.seen.get(&key).copied().unwrap_or(0);
            let before = if record.conflicts < before { 0 } else { before };
            if let (true, Some(last)) = (record.conflicts > before, record.last_conflict) {
                fresh.push(NewConflict {
                    address: record.address,
                    ifindex: record.ifindex,
                    claims: record.conflicts - before,
                    mac: last.mac,
                });
            }
            seen.insert(key, record.conflicts);
        }
        self.seen = seen;
        fresh
    }

    /// [`observe`](Self::observe), logging each new conflict.
    pub fn log(&mut self, records: &[VipRecord]) {
        for conflict in self.observe(records) {
            let interface = crate::interfaces::name_of(conflict.ifindex)
                .unwrap_or_else(|| format!("ifindex {}", conflict.ifindex));
            warn!(
                event = "IPConflict",
                ip = %conflict.address,
                interface,
                mac = format_mac(&conflict.mac),
                claims = conflict.claims,
                "IP conflict: {} on {interface} claimed by {} ({} frame(s) since the last check)",
                conflict.address,
                format_mac(&conflict.mac),
                conflict.claims
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dataplane::Conflict;

    const OTHER: [u8; 6] = [2, 0x77, 0, 0, 0, 2];

    fn record(conflicts: u64) -> VipRecord {
        VipRecord {
            address: "192.0.2.10".parse().unwrap(),
            ifindex: 3,
            vlan: speaker_common::VlanPath::UNTAGGED,
            mac: [2, 0x5e, 0, 0, 0, 0x10],
            answered: 0,
            requests: 0,
            conflicts,
            last_conflict: (conflicts > 0).then_some(Conflict {
                mac: OTHER,
                age: Duration::from_secs(1),
            }),
        }
    }

    #[test]
    fn reports_each_rise_once() {
        let mut watch = ConflictWatch::default();
        assert!(watch.observe(&[record(0)]).is_empty());
        let first = watch.observe(&[record(2)]);
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].claims, first[0].mac), (2, OTHER));
        assert!(watch.observe(&[record(2)]).is_empty(), "no new claims");
        assert_eq!(watch.observe(&[record(5)])[0].claims, 3);
    }

    #[test]
    fn a_reset_slot_starts_over() {
        let mut watch = ConflictWatch::default();
        watch.observe(&[record(4)]);
        assert_eq!(watch.observe(&[record(1)])[0].claims, 1);
        // A VIP seen with conflicts at the first look is reported too.
        assert_eq!(ConflictWatch::default().observe(&[record(7)])[0].claims, 7);
    }
}
