//! Suspicion with independent confirmations (Lifeguard §IV-B, memberlist's
//! `suspicion.go`): how long a member we suspect gets before we declare it
//! down.
//!
//! foca's own suspicion is a fixed `suspect_to_down_after` started by the
//! one speaker whose probe failed. That speaker may be the sick one (stopped,
//! starved, behind a lossy link), and a fixed timer short enough for a fast
//! failover is too short for a real member to refute. So the decision is
//! ours: a suspicion starts at `max` and shrinks logarithmically toward
//! `min` as other members tell us that *their own* probes of the same member
//! failed. Those confirmations are the only evidence that the problem is the
//! suspect's and not ours.
//!
//! Each speaker whose probe of X (at incarnation i) fails sends a small
//! custom broadcast, a [`SuspectReport`] "`by` suspects X at i", which foca
//! piggybacks and relays like its own updates. Re-gossip of foca's Suspect
//! update would not do: it does not name who suspected, so one speaker's
//! opinion relayed by three others would look like three.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::{
    BroadcastHandler, Codec, Incarnation, Invalidates, Member, PostcardCodec, State, Timer,
};

use super::identity::SpeakerId;

/// How many confirmations bring a suspicion down to `min`, given the size
/// of the member set (ourselves included): the members other than us and
/// the suspect, at most 2 (memberlist's `SuspicionMult − 2` with its
/// default 4). With nobody left to confirm (2 speakers), `min` at once.
pub fn expected_confirmations(members: usize) -> u32 {
    members.saturating_sub(2).min(2) as u32
}

/// memberlist's formula: `max − (max − min)·log(c + 1)/log(k + 1)`, never
/// below `min`; with `k` = 0 expected confirmations, `min`.
pub fn suspicion_timeout(min: Duration, max: Duration, expected: u32, confirmed: u32) -> Duration {
    if expected == 0 || max <= min {
        return min;
    }
    let fraction = f64::from(confirmed + 1).ln() / f64::from(expected + 1).ln();
    let shrink = (max - min).mul_f64(fraction.min(1.0));
    (max - shrink).max(min)
}

/// "`by`'s probe of `suspect` at `incarnation` failed."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspectReport {
    pub by: SpeakerId,
    pub suspect: SpeakerId,
    pub incarnation: Incarnation,
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable suspicion report: {0}")]
pub struct UndecodableReport(String);

impl SuspectReport {
    /// Two foca members back to back, in foca's own codec: the reporter
    /// (state unused) and the suspect at the suspected incarnation.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        let reporter = Member::new(self.by.clone(), 0, State::Alive);
        let suspect = Member::new(self.suspect.clone(), self.incarnation, State::Suspect);
        for member in [reporter, suspect] {
            // Encoding into a Vec cannot run out of room.
            let _ = PostcardCodec.encode_member(&member, &mut bytes);
        }
        bytes
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Self, UndecodableReport> {
        let member = |bytes: &mut &[u8]| -> Result<Member<SpeakerId>, UndecodableReport> {
            PostcardCodec
                .decode_member(bytes)
                .map_err(|e| UndecodableReport(e.to_string()))
        };
        let reporter = member(&mut bytes)?;
        let suspect = member(&mut bytes)?;
        if !bytes.is_empty() || suspect.state() != State::Suspect {
            return Err(UndecodableReport("trailing bytes or wrong state".into()));
        }
        Ok(Self {
            by: reporter.id().clone(),
            incarnation: suspect.incarnation(),
            suspect: suspect.id().clone(),
        })
    }

    fn key(&self) -> ReportKey {
        ReportKey {
            by: self.by.node.clone(),
            suspect: self.suspect.node.clone(),
            generation: self.suspect.generation,
            incarnation: self.incarnation,
        }
    }
}

/// Identifies a report while foca disseminates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportKey {
    by: String,
    suspect: String,
    generation: u32,
    incarnation: Incarnation,
}

impl Invalidates for ReportKey {
    /// A newer report by the same speaker about the same member replaces
    /// the older one: only the latest suspicion matters.
    fn invalidates(&self, other: &Self) -> bool {
        self.by == other.by
            && self.suspect == other.suspect
            && (self.generation, self.incarnation) >= (other.generation, other.incarnation)
    }
}

/// How many distinct reports we remember to refuse re-dissemination of;
/// far more than a cluster produces within `max`.
const REMEMBERED_REPORTS: usize = 512;

/// foca's handler for [`SuspectReport`]s: new ones go to the core's inbox
/// and are relayed, repeats are dropped.
pub struct SuspectReports {
    inbox: Arc<Mutex<Vec<SuspectReport>>>,
    seen: VecDeque<ReportKey>,
}

impl SuspectReports {
    /// The handler and the inbox the core drains after each call into foca.
    pub fn new() -> (Self, Arc<Mutex<Vec<SuspectReport>>>) {
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let handler = Self {
            inbox: Arc::clone(&inbox),
            seen: VecDeque::new(),
        };
        (handler, inbox)
    }
}

impl BroadcastHandler<SpeakerId> for SuspectReports {
    type Key = ReportKey;
    type Error = UndecodableReport;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&SpeakerId>,
    ) -> Result<Option<ReportKey>, UndecodableReport> {
        let report = SuspectReport::decode(data)?;
        let key = report.key();
        if self.seen.contains(&key) {
            return Ok(None);
        }
        if self.seen.len() == REMEMBERED_REPORTS {
            self.seen.pop_front();
        }
        self.seen.push_back(key.clone());
        self.inbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(report);
        Ok(Some(key))
    }
}

/// One member we suspect, at one incarnation.
struct Suspicion {
    suspect: SpeakerId,
    incarnation: Incarnation,
    started: Duration,
    expected: u32,
    confirmed_by: BTreeSet<String>,
    /// foca's own down timer, handed back to foca when ours runs out: foca
    /// then checks that the member is still suspect at this incarnation.
    declare_down: Timer<SpeakerId>,
}

/// The suspicions this speaker runs, and reports that came before ours.
pub struct Suspicions {
    min: Duration,
    max: Duration,
    running: Vec<Suspicion>,
    /// Reports about members we do not (yet) suspect ourselves, with when
    /// they arrived; kept for `max`, since our own probe may fail later.
    early: Vec<(Duration, SuspectReport)>,
}

impl Suspicions {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            running: Vec::new(),
            early: Vec::new(),
        }
    }

    /// Starts a suspicion for foca's `ChangeSuspectToDown` timer; returns
    /// its deadline and how many earlier reports confirm it, or `None` if it
    /// is no such timer or already running (foca re-arms it each time it
    /// probes the suspect again).
    pub fn start(
        &mut self,
        now: Duration,
        declare_down: Timer<SpeakerId>,
        members: usize,
    ) -> Option<(Duration, usize)> {
        let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = &declare_down
        else {
            return None;
        };
        if self.find(member_id, *incarnation).is_some() {
            return None;
        }
        let (suspect, incarnation) = (member_id.clone(), *incarnation);
        self.early
            .retain(|(at, _)| now.saturating_sub(*at) < self.max);
        let confirmed_by = self
            .early
            .iter()
            .filter(|(_, report)| report.suspect == suspect && report.incarnation == incarnation)
            .map(|(_, report)| report.by.node.clone())
            .collect();
        self.running.push(Suspicion {
            suspect,
            incarnation,
            started: now,
            expected: expected_confirmations(members),
            confirmed_by,
            declare_down,
        });
        self.running
            .last()
            .map(|s| (self.deadline_of(s), s.confirmed_by.len()))
    }

    /// Counts a report from another speaker; returns the new deadline if it
    /// shortened one of our suspicions.
    pub fn confirm(&mut self, now: Duration, us: &str, report: SuspectReport) -> Option<Duration> {
        if report.by.node == us || report.suspect.node == report.by.node {
            return None;
        }
        let Some(index) = self.find(&report.suspect, report.incarnation) else {
            let max = self.max;
            self.early.retain(|(at, _)| now.saturating_sub(*at) < max);
            self.early.push((now, report));
            return None;
        };
        let suspicion = &mut self.running[index];
        if !suspicion.confirmed_by.insert(report.by.node.clone()) {
            return None;
        }
        Some(self.deadline_of(&self.running[index]))
    }

    /// Ends suspicions that `still_suspect` no longer holds for (refuted,
    /// declared down by someone else, renamed).
    pub fn retain(&mut self, still_suspect: impl Fn(&SpeakerId, Incarnation) -> bool) {
        self.running
            .retain(|s| still_suspect(&s.suspect, s.incarnation));
    }

    /// foca's down timers for suspicions whose deadline has passed.
    pub fn take_expired(&mut self, now: Duration) -> Vec<Timer<SpeakerId>> {
        let (min, max) = (self.min, self.max);
        let (expired, running) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|s| deadline(min, max, s) <= now);
        self.running = running;
        expired.into_iter().map(|s| s.declare_down).collect()
    }

    /// After we were stopped: every suspicion starts over from `now`, since
    /// the suspects had no chance to refute while we could not hear them.
    /// Returns the new deadlines.
    pub fn restart(&mut self, now: Duration) -> Vec<Duration> {
        for suspicion in &mut self.running {
            suspicion.started = now;
        }
        self.running.iter().map(|s| self.deadline_of(s)).collect()
    }

    /// When our suspicion of `node` runs out, if we suspect it.
    pub fn deadline_for(&self, node: &str) -> Option<Duration> {
        self.running
            .iter()
            .filter(|s| s.suspect.node == node)
            .map(|s| self.deadline_of(s))
            .min()
    }

    fn find(&self, suspect: &SpeakerId, incarnation: Incarnation) -> Option<usize> {
        self.running
            .iter()
            .position(|s| &s.suspect == suspect && s.incarnation == incarnation)
    }

    fn deadline_of(&self, suspicion: &Suspicion) -> Duration {
        deadline(self.min, self.max, suspicion)
    }
}

fn deadline(min: Duration, max: Duration, suspicion: &Suspicion) -> Duration {
    let confirmed = suspicion.confirmed_by.len() as u32;
    suspicion.started + suspicion_timeout(min, max, suspicion.expected, confirmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(6);

    fn speaker(node: &str) -> SpeakerId {
        SpeakerId {
            node: node.into(),
            gossip_addr: "10.0.0.1:7946".parse().unwrap(),
            generation: 1,
        }
    }

    fn down_timer(node: &str, incarnation: Incarnation) -> Timer<SpeakerId> {
        Timer::ChangeSuspectToDown {
            member_id: speaker(node),
            incarnation,
            token: 0,
        }
    }

    fn report(by: &str, suspect: &str, incarnation: Incarnation) -> SuspectReport {
        SuspectReport {
            by: speaker(by),
            suspect: speaker(suspect),
            incarnation,
        }
    }

    #[test]
    fn timeout_shrinks_logarithmically_from_max_to_min() {
        let timeout = |k, c| suspicion_timeout(MIN, MAX, k, c);
        assert_eq!(timeout(2, 0), MAX);
        // 6 − 5·log 2 / log 3 = 2.845 s
        assert_eq!(timeout(2, 1).as_millis(), 2845);
        assert_eq!(timeout(2, 2), MIN);
        assert_eq!(timeout(2, 5), MIN);
        assert_eq!(timeout(1, 0), MAX);
        assert_eq!(timeout(1, 1), MIN);
        assert_eq!(timeout(0, 0), MIN, "nobody can confirm: min");
        assert_eq!(
            [0, 1, 2, 3, 4, 10, 100].map(expected_confirmations),
            [0, 0, 0, 1, 2, 2, 2]
        );
    }

    #[test]
    fn without_confirmations_the_suspect_gets_max() {
        let mut suspicions = Suspicions::new(MIN, MAX);
        let start = Duration::from_secs(10);
        assert_eq!(
            suspicions.start(start, down_timer("x", 3), 4),
            Some((start + MAX, 0))
        );
        assert!(suspicions.take_expired(start + MAX - MIN).is_empty());
        assert_eq!(
            suspicions.take_expired(start + MAX),
            vec![down_timer("x", 3)]
        );
        assert!(suspicions.take_expired(start + 2 * MAX).is_empty());
    }

    #[test]
    fn distinct_confirmations_shrink_it_and_repeats_do_not() {
        let mut suspicions = Suspicions::new(MIN, MAX);
        let start = Duration::from_secs(10);
        suspicions.start(start, down_timer("x", 3), 4);
        let second = Duration::from_millis(100);
        // Our own report and one for another incarnation do not count.
        assert_eq!(suspicions.confirm(start, "us", report("us", "x", 3)), None);
        assert_eq!(suspicions.confirm(start, "us", report("b", "x", 2)), None);
        let after_b = suspicions.confirm(start + second, "us", report("b", "x", 3));
        assert_eq!(
            after_b.map(|at| (at - start).as_millis()),
            Some(2845),
            "6 − 5·log 2 / log 3 s"
        );
        assert_eq!(suspicions.confirm(start, "us", report("b", "x", 3)), None);
        let after_c = suspicions.confirm(start + second, "us", report("c", "x", 3));
        assert_eq!(after_c, Some(start + MIN));
        assert_eq!(suspicions.take_expired(start + MIN).len(), 1);
    }

    #[test]
    fn reports_that_came_first_count_when_our_probe_fails_too() {
        let mut suspicions = Suspicions::new(MIN, MAX);
        let start = Duration::from_secs(10);
        suspicions.confirm(start, "us", report("b", "x", 3));
        // Three members: one other could confirm, and did.
        let at = start + Duration::from_millis(400);
        assert_eq!(
            suspicions.start(at, down_timer("x", 3), 3),
            Some((at + MIN, 1))
        );
        // Too old a report is not evidence any more.
        let mut suspicions = Suspicions::new(MIN, MAX);
        suspicions.confirm(start, "us", report("b", "x", 3));
        let late = start + MAX;
        assert_eq!(
            suspicions.start(late, down_timer("x", 3), 3),
            Some((late + MAX, 0))
        );
    }

    #[test]
    fn a_refutation_ends_the_suspicion_and_a_restart_pushes_it_back() {
        let mut suspicions = Suspicions::new(MIN, MAX);
        let start = Duration::from_secs(10);
        suspicions.start(start, down_timer("x", 3), 2);
        suspicions.start(start, down_timer("y", 0), 2);
        let resumed = start + Duration::from_millis(900);
        assert_eq!(
            suspicions.restart(resumed),
            vec![resumed + MIN, resumed + MIN]
        );
        // x refuted: it is alive at a higher incarnation.
        suspicions.retain(|id, _| id.node != "x");
        assert_eq!(suspicions.take_expired(start + MIN), vec![]);
        assert_eq!(
            suspicions.take_expired(resumed + MIN),
            vec![down_timer("y", 0)]
        );
    }

    #[test]
    fn reports_round_trip_and_repeats_are_not_relayed() {
        let report = report("b", "x", 7);
        let bytes = report.encode();
        assert_eq!(SuspectReport::decode(&bytes).unwrap(), report);
        assert!(SuspectReport::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(SuspectReport::decode(&[bytes.as_slice(), &[0]].concat()).is_err());

        let (mut handler, inbox) = SuspectReports::new();
        assert!(handler.receive_item(&bytes, None).unwrap().is_some());
        assert!(handler.receive_item(&bytes, None).unwrap().is_none());
        assert_eq!(
            inbox.lock().unwrap().as_slice(),
            std::slice::from_ref(&report)
        );
        let newer = SuspectReport {
            incarnation: 8,
            ..report.clone()
        };
        assert!(newer.key().invalidates(&report.key()));
        assert!(!report.key().invalidates(&newer.key()));
    }
}
