//! The membership settle gate: when the election may start using gossip's
//! member set.
//!
//! Right after start a speaker knows only itself; electing then would claim
//! every IP. So with gossip the reconciler starts with an empty member set
//! (nobody wins, nothing is written) and the gate hands it the real set once
//! membership has *settled*: the cluster source has described the cluster
//! once, and either every node that could gossip (has an address) is a member,
//! or the settle deadline has passed (a node that is down never joins).
//! Being alone at the deadline while the others' datagrams fail
//! authentication is a different matter: our key differs from theirs, and
//! claiming every IP would put a second MAC on each; the gate waits and says
//! so instead.
//!
//! No I/O and no clock of its own: the daemon feeds it inputs with the
//! current time and does what the returned [`Step`] says.

use std::{collections::BTreeSet, time::Duration};

use tokio::time::Instant;

/// How long to wait before looking again when a key mismatch kept the gate
/// closed at its deadline.
pub const KEY_MISMATCH_RETRY: Duration = Duration::from_secs(5);

/// What the gate tells the daemon after an input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// A member set for the reconciler.
    pub hand: Option<BTreeSet<String>>,
    /// Something worth a log line.
    pub event: Option<GateEvent>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateEvent {
    /// Every node that could gossip is a member.
    SettledByMembers,
    /// The deadline passed: electing with the members seen so far.
    SettledByTime,
    /// At the deadline we are alone while the others' gossip fails
    /// authentication; the gate stays closed and looks again later.
    KeyMismatch,
}

#[derive(Clone, Debug)]
pub struct SettleGate {
    /// The cluster source's first complete description has arrived.
    synced: bool,
    settled: bool,
    /// The newest member set gossip reported.
    members: Option<BTreeSet<String>>,
    /// Nodes that could gossip (those with an address).
    candidates: BTreeSet<String>,
    /// When to settle by time; `None` until gossip runs.
    deadline: Option<Instant>,
}

impl SettleGate {
    /// With gossip: closed until membership settles.
    pub fn closed() -> Self {
        SettleGate {
            synced: false,
            settled: false,
            members: None,
            candidates: BTreeSet::new(),
            deadline: None,
        }
    }

    /// Without gossip there is nothing to wait for but the source.
    pub fn without_gossip() -> Self {
        SettleGate {
            settled: true,
            ..SettleGate::closed()
        }
    }

    /// Whether the maps may be brought to what the reconciler decides: the
    /// source has described the cluster and membership has settled.
    pub fn is_open(&self) -> bool {
        self.synced && self.settled
    }

    pub fn is_settled(&self) -> bool {
        self.settled
    }

    /// When the daemon must call [`Self::deadline_reached`]; `None`: no
    /// timer needed.
    pub fn wake_at(&self) -> Option<Instant> {
        if self.settled || !self.synced || self.members.is_none() {
            return None;
        }
        self.deadline
    }

    /// Gossip started at `now`; it settles by time after `settle_time`.
    pub fn gossip_started(&mut self, now: Instant, settle_time: Duration) {
        self.deadline = Some(now + settle_time);
    }

    /// The cluster source's first complete description arrived.
    pub fn source_synced(&mut self) -> Step {
        self.synced = true;
        self.check()
    }

    /// The nodes that could gossip: every Node with an address.
    pub fn nodes_known(&mut self, candidates: BTreeSet<String>) -> Step {
        self.candidates = candidates;
        self.check()
    }

    /// Gossip reported its member set.
    pub fn members_reported(&mut self, members: BTreeSet<String>) -> Step {
        self.members = Some(members.clone());
        if self.settled {
            // Once settled, every report goes straight to the election.
            return Step {
                hand: Some(members),
                event: None,
            };
        }
        self.check()
    }

    /// The time from [`Self::wake_at`] came; `key_mismatch`: peers' gossip
    /// fails authentication.
    pub fn deadline_reached(&mut self, now: Instant, key_mismatch: bool) -> Step {
        let due = self.wake_at().is_some_and(|at| at <= now);
        if !due {
            return Step::default();
        }
        let alone = self.members.as_ref().is_some_and(|m| m.len() <= 1);
        if alone && key_mismatch {
            self.deadline = Some(now + KEY_MISMATCH_RETRY);
            return Step {
                hand: None,
                event: Some(GateEvent::KeyMismatch),
            };
        }
        self.settle(GateEvent::SettledByTime)
    }

    /// Settles when every candidate is a member.
    fn check(&mut self) -> Step {
        if self.settled || !self.synced {
            return Step::default();
        }
        let Some(members) = &self.members else {
            return Step::default();
        };
        if self.candidates.is_subset(members) {
            return self.settle(GateEvent::SettledByMembers);
        }
        Step::default()
    }

    fn settle(&mut self, why: GateEvent) -> Step {
        self.settled = true;
        Step {
            hand: self.members.clone(),
            event: Some(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE_TIME: Duration = Duration::from_secs(3);

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    /// A gate with gossip started now.
    fn started() -> SettleGate {
        let mut gate = SettleGate::closed();
        gate.gossip_started(Instant::now(), SETTLE_TIME);
        gate
    }

    fn settled_with(members: &[&str], event: GateEvent) -> Step {
        Step {
            hand: Some(set(members)),
            event: Some(event),
        }
    }

    #[test]
    fn without_gossip_only_the_source_opens_it() {
        let mut gate = SettleGate::without_gossip();
        assert!(!gate.is_open());
        assert_eq!(gate.wake_at(), None);
        assert_eq!(gate.source_synced(), Step::default());
        assert!(gate.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn settles_once_every_node_with_an_address_is_a_member() {
        let mut gate = started();
        assert_eq!(gate.nodes_known(set(&["a", "b", "c"])), Step::default());
        assert_eq!(gate.source_synced(), Step::default());
        assert_eq!(gate.members_reported(set(&["a"])), Step::default());
        assert_eq!(gate.members_reported(set(&["a", "b"])), Step::default());
        assert!(!gate.is_open());
        assert_eq!(
            gate.members_reported(set(&["a", "b", "c"])),
            settled_with(&["a", "b", "c"], GateEvent::SettledByMembers)
        );
        assert!(gate.is_open());
        assert_eq!(gate.wake_at(), None, "no timer once settled");
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_settles_before_the_source_has_described_the_cluster() {
        let mut gate = started();
        gate.nodes_known(set(&["a"]));
        assert_eq!(gate.members_reported(set(&["a"])), Step::default());
        assert_eq!(gate.wake_at(), None, "the deadline waits for the source");
        tokio::time::advance(SETTLE_TIME * 2).await;
        assert_eq!(
            gate.deadline_reached(Instant::now(), false),
            Step::default()
        );
        assert!(!gate.is_settled());
        assert_eq!(
            gate.source_synced(),
            settled_with(&["a"], GateEvent::SettledByMembers)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_never_joins_is_given_up_at_the_deadline() {
        let start = Instant::now();
        let mut gate = started();
        gate.source_synced();
        gate.nodes_known(set(&["a", "b", "down"]));
        gate.members_reported(set(&["a", "b"]));
        assert_eq!(gate.wake_at(), Some(start + SETTLE_TIME));

        tokio::time::advance(SETTLE_TIME - Duration::from_millis(1)).await;
        assert_eq!(
            gate.deadline_reached(Instant::now(), false),
            Step::default(),
            "woken early: nothing happens"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            gate.deadline_reached(Instant::now(), false),
            settled_with(&["a", "b"], GateEvent::SettledByTime)
        );
        assert!(gate.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn after_settling_every_report_is_handed_on() {
        let mut gate = started();
        gate.source_synced();
        gate.nodes_known(set(&["a", "b"]));
        gate.members_reported(set(&["a", "b"]));
        assert_eq!(
            gate.members_reported(set(&["a"])),
            Step {
                hand: Some(set(&["a"])),
                event: None
            }
        );
        // A new node does not close the gate again.
        assert_eq!(gate.nodes_known(set(&["a", "b", "c"])), Step::default());
        assert!(gate.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn alone_with_failing_authentication_waits_and_retries() {
        let mut gate = started();
        gate.source_synced();
        gate.nodes_known(set(&["a", "b"]));
        gate.members_reported(set(&["a"]));
        tokio::time::advance(SETTLE_TIME).await;
        assert_eq!(
            gate.deadline_reached(Instant::now(), true),
            Step {
                hand: None,
                event: Some(GateEvent::KeyMismatch)
            }
        );
        assert!(!gate.is_open());
        assert_eq!(gate.wake_at(), Some(Instant::now() + KEY_MISMATCH_RETRY));

        // Still mismatched at the retry: still closed.
        tokio::time::advance(KEY_MISMATCH_RETRY).await;
        assert_eq!(
            gate.deadline_reached(Instant::now(), true).event,
            Some(GateEvent::KeyMismatch)
        );
        // The keys agree again (or the failures stop): settles by time.
        tokio::time::advance(KEY_MISMATCH_RETRY).await;
        assert_eq!(
            gate.deadline_reached(Instant::now(), false),
            settled_with(&["a"], GateEvent::SettledByTime)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failing_authentication_with_company_is_not_a_key_mismatch() {
        let mut gate = started();
        gate.source_synced();
        gate.nodes_known(set(&["a", "b", "c"]));
        gate.members_reported(set(&["a", "b"]));
        tokio::time::advance(SETTLE_TIME).await;
        assert_eq!(
            gate.deadline_reached(Instant::now(), true),
            settled_with(&["a", "b"], GateEvent::SettledByTime)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_members_reported_means_no_timer() {
        let mut gate = started();
        gate.source_synced();
        gate.nodes_known(set(&["a"]));
        assert_eq!(gate.wake_at(), None);
        tokio::time::advance(SETTLE_TIME * 3).await;
        assert_eq!(
            gate.deadline_reached(Instant::now(), false),
            Step::default()
        );
        assert!(!gate.is_settled());
    }

    #[test]
    fn a_cluster_of_nodes_without_addresses_settles_on_the_first_report() {
        let mut gate = SettleGate::closed();
        gate.source_synced();
        gate.nodes_known(BTreeSet::new());
        assert_eq!(
            gate.members_reported(set(&["a"])),
            settled_with(&["a"], GateEvent::SettledByMembers)
        );
    }
}
