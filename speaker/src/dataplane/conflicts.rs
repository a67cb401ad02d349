//! Turns the program's per-VIP conflict records into reports: the daemon
//! reads the maps every check ([`super::ownership`]) and reports each
//! (VIP, interface) whose count moved, naming the other MAC: a WARN log
//! line each time, and — once per burst — a Kubernetes `IPConflict` event
//! (sent by the daemon, which knows the Services owning the IP).
//!
//! Claims this node expects are not reported: while it hands an IP over at
//! a stop, and for [`RELEASE_QUIET`] after it released one, the successor's
//! gratuitous ARP / unsolicited NA reaches our entry before (or just as) it
//! is removed. The map's counter still counts them: it is a true
//! observation, and `speaker maps` and `xdp_speaker_ip_conflicts` show it.
//! Since the removal and the next check race, a rise is reported at the
//! check after the one that saw it, and only if the entry is still in the
//! maps and the IP is not quiet then: one check period (1 s) late, without
//! false alarms at every failover.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use tracing::{debug, warn};

use super::VipRecord;
use crate::interfaces::format_mac;

/// A rise after this long without one for the same IP starts a new burst
/// (and so another Kubernetes event): a continuous claim is one event, a
/// claim that comes back later is another.
pub const BURST_GAP: Duration = Duration::from_secs(60);

/// How long after releasing an IP its claims are expected (the successor
/// announces it) and not reported.
pub const RELEASE_QUIET: Duration = Duration::from_secs(5);

/// What a watch saw newly since its last look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewConflict {
    pub address: IpAddr,
    pub ifindex: u32,
    /// Claims since the last look.
    pub claims: u64,
    pub mac: [u8; 6],
    /// The first report for this IP in [`BURST_GAP`]: what a Kubernetes
    /// event is raised for.
    pub new_burst: bool,
}

/// Conflict counts already seen, per (VIP, interface), and what is due.
#[derive(Default)]
pub struct ConflictWatch {
    seen: BTreeMap<(IpAddr, u32), u64>,
    /// Rises seen at the last look, reported at the next one if still due.
    pending: Vec<NewConflict>,
    /// IPs whose claims are expected until then (handover, release).
    quiet: BTreeMap<IpAddr, Instant>,
    /// When each IP was last reported, for bursts.
    last_report: BTreeMap<IpAddr, Instant>,
}

impl ConflictWatch {
    /// Claims of `address` are expected until `until`: they are counted in
    /// the map but not reported.
    pub fn quiet(&mut self, address: IpAddr, until: Instant) {
        let entry = self.quiet.entry(address).or_insert(until);
        *entry = (*entry).max(until);
    }

    fn is_quiet(&self, address: IpAddr, now: Instant) -> bool {
        self.quiet.get(&address).is_some_and(|until| now < *until)
    }

    /// The conflicts to report now: the rises of the last look whose entry
    /// is still in `records` and whose IP is not quiet. A record whose
    /// count went down (the slot was handed to a new VIP entry) starts
    /// over.
    pub fn observe(&mut self, records: &[VipRecord], now: Instant) -> Vec<NewConflict> {
        let present: BTreeSet<(IpAddr, u32)> =
            records.iter().map(|r| (r.address, r.ifindex)).collect();
        let mut due: Vec<NewConflict> = std::mem::take(&mut self.pending)
            .into_iter()
            .filter(|c| present.contains(&(c.address, c.ifindex)))
            .filter(|c| {
                let quiet = self.is_quiet(c.address, now);
                if quiet {
                    debug!(
                        ip = %c.address,
                        "{}: {} claim(s) by {} while handing it over or just after                          releasing it: expected, not reported",
                        c.address,
                        c.claims,
                        format_mac(&c.mac)
                    );
                }
                !quiet
            })
            .collect();
        let mut seen = BTreeMap::new();
        for record in records {
            let key = (record.address, record.ifindex);
            let before = self.seen.get(&key).copied().unwrap_or(0);
            let before = if record.conflicts < before { 0 } else { before };
            if let (true, Some(last)) = (record.conflicts > before, record.last_conflict) {
                self.pending.push(NewConflict {
                    address: record.address,
                    ifindex: record.ifindex,
                    claims: record.conflicts - before,
                    mac: last.mac,
                    new_burst: false,
                });
            }
            seen.insert(key, record.conflicts);
        }
        self.seen = seen;
        for conflict in &mut due {
            conflict.new_burst = self
                .last_report
                .get(&conflict.address)
                .is_none_or(|last| now.duration_since(*last) >= BURST_GAP);
            self.last_report.insert(conflict.address, now);
        }
        self.quiet.retain(|_, until| now < *until);
        self.last_report
            .retain(|_, last| now.duration_since(*last) < BURST_GAP);
        due
    }

    /// [`observe`](Self::observe), logging each conflict due; returns them.
    pub fn log(&mut self, records: &[VipRecord], now: Instant) -> Vec<NewConflict> {
        let due = self.observe(records, now);
        for conflict in &due {
            let interface = crate::interfaces::name_of(conflict.ifindex)
                .unwrap_or_else(|| format!("ifindex {}", conflict.ifindex));
            warn!(
                event = "IPConflict",
                ip = %conflict.address,
                interface,
                mac = format_mac(&conflict.mac),
                claims = conflict.claims,
                "IP conflict: {} on {interface} claimed by {} ({} frame(s))",
                conflict.address,
                format_mac(&conflict.mac),
                conflict.claims
            );
        }
        due
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

    /// Two looks per rise: the one that sees it, the one that reports it.
    fn look(watch: &mut ConflictWatch, conflicts: u64, at: Instant) -> Vec<NewConflict> {
        watch.observe(&[record(conflicts)], at)
    }

    #[test]
    fn reports_each_rise_once_at_the_next_look() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut watch = ConflictWatch::default();
        assert!(look(&mut watch, 0, t).is_empty());
        assert!(
            look(&mut watch, 2, t + s(1)).is_empty(),
            "not before the next look"
        );
        let first = look(&mut watch, 2, t + s(2));
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].claims, first[0].mac), (2, OTHER));
        assert!(look(&mut watch, 2, t + s(3)).is_empty(), "no new claims");
        look(&mut watch, 5, t + s(4));
        assert_eq!(look(&mut watch, 5, t + s(5))[0].claims, 3);
    }

    #[test]
    fn a_reset_slot_starts_over() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut watch = ConflictWatch::default();
        look(&mut watch, 4, t);
        look(&mut watch, 1, t + s(1));
        assert_eq!(look(&mut watch, 1, t + s(2))[0].claims, 1);
        // A VIP seen with conflicts at the first look is reported too.
        let mut fresh = ConflictWatch::default();
        look(&mut fresh, 7, t);
        assert_eq!(look(&mut fresh, 7, t + s(1))[0].claims, 7);
    }

    #[test]
    fn one_burst_is_one_new_burst_however_long_it_lasts() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut watch = ConflictWatch::default();
        let mut bursts = Vec::new();
        // Claims every second for three minutes (and the look reporting
        // the last of them): one burst.
        for i in 0..=180u64 {
            for c in look(&mut watch, (i + 1).min(180), t + s(i)) {
                bursts.push((i, c.new_burst));
            }
        }
        assert_eq!(bursts.len(), 180, "every rise is reported (logged)");
        assert_eq!(
            bursts.iter().filter(|(_, new)| *new).count(),
            1,
            "one event for the whole burst"
        );
        // Quiet for BURST_GAP, then claimed again: a new burst.
        let later = t + s(180) + BURST_GAP;
        look(&mut watch, 500, later);
        let again = look(&mut watch, 500, later + s(1));
        assert!(again[0].new_burst, "{again:?}");
        // Shortly after: the same burst.
        look(&mut watch, 501, later + s(20));
        assert!(!look(&mut watch, 501, later + s(21))[0].new_burst);
    }

    #[test]
    fn bursts_are_per_ip() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut other = record(1);
        other.address = "192.0.2.11".parse().unwrap();
        let mut watch = ConflictWatch::default();
        watch.observe(&[record(1)], t);
        let first = watch.observe(&[record(1), other.clone()], t + s(1));
        assert!(first[0].new_burst);
        let second = watch.observe(&[record(1), other], t + s(2));
        assert_eq!(second[0].address, "192.0.2.11".parse::<IpAddr>().unwrap());
        assert!(second[0].new_burst, "another IP, another burst");
    }

    #[test]
    fn claims_of_an_ip_being_handed_over_or_just_released_are_not_reported() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let vip: IpAddr = "192.0.2.10".parse().unwrap();
        let mut watch = ConflictWatch::default();
        look(&mut watch, 0, t);
        // Handing over until t + 10 s: the successor's announcements.
        watch.quiet(vip, t + s(10));
        look(&mut watch, 3, t + s(1));
        assert!(look(&mut watch, 3, t + s(2)).is_empty());
        // The map counted them; a later claim after the window is news.
        look(&mut watch, 4, t + s(11));
        let later = look(&mut watch, 4, t + s(12));
        assert_eq!((later.len(), later[0].claims), (1, 1));
    }

    #[test]
    fn a_rise_whose_entry_is_removed_before_the_next_look_is_not_reported() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut watch = ConflictWatch::default();
        look(&mut watch, 0, t);
        // Seen while still ours; the entry is gone at the next look (the
        // IP moved to the node that announced it).
        look(&mut watch, 2, t + s(1));
        assert!(watch.observe(&[], t + s(2)).is_empty());
    }
}
