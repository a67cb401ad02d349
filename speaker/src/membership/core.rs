//! The SWIM protocol without I/O: foca plus sealing, a timer queue and the
//! member set, driven by explicit time and explicit datagrams. The tokio
//! driver and the simulated network both drive this same type.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::{Arc, Mutex};

use foca::{Foca, Incarnation, Message, OwnedNotification, PostcardCodec, Runtime, State, Timer};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::health::LocalHealth;
use super::hold::{HoldRequest, Holds, REQUEST_COPIES};
use super::identity::SpeakerId;
use super::keyring::Keyring;
use super::seal::{Key, OpenError, Opened, PacketSeal};
use super::suspicion::{SuspectReport, SuspectReports, Suspicions};
use super::timers::{Timers, TimersError};

/// Peers given to `join` and not refreshed for this long are forgotten:
/// three of MetalLB's 5-minute speaker-pod listings.
pub const PEER_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// How many authentication failures from known speakers, within
/// [`KEY_MISMATCH_WINDOW`], mean our key differs from theirs. A peer that
/// cannot open our datagrams keeps announcing to us every
/// `periodic_announce` and on every probe, so a real mismatch crosses this
/// at once; a handful of stray datagrams from elsewhere never counts.
pub const KEY_MISMATCH_FAILURES: usize = 3;
/// Failures older than this are forgotten: the verdict clears by itself a
/// window after the failing datagrams stop (a peer restarted with our key).
pub const KEY_MISMATCH_WINDOW: Duration = Duration::from_secs(20);

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipStats {
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
    /// Datagrams dropped because they did not authenticate under our key
    /// (or were plaintext while we have a key, or sealed while we have none).
    pub auth_failures: u64,
    /// Of `auth_failures`, those from addresses that are neither peers we
    /// were told about nor members: port scans, other gossip meshes. They
    /// never make us conclude that our key is wrong.
    pub stray_datagrams: u64,
    /// Of `auth_failures`, datagrams in the sealed format of speakers from
    /// before the keyring (a mixed cluster during an upgrade).
    pub old_format: u64,
    /// Authentic datagrams refused as replays (already seen, older than the
    /// window, or from a sender's previous process); not authentication
    /// failures.
    pub replayed: u64,
    /// Authentic datagrams opened by a key of the keyring other than the
    /// primary: peers still sending with a key being rotated out.
    pub opened_by_secondary_key: u64,
    /// Authentic datagrams foca refused (undecodable, from ourselves, ...).
    pub rejected: u64,
    /// Datagrams the socket refused to send (driver only).
    pub send_errors: u64,
    /// Times the cluster declared us down and we rejoined as a new generation.
    pub rejoins: u64,
    /// Size of the current member set, ourselves included.
    pub members: usize,
    /// Times our timers ran so late that we must have been stopped or
    /// starved (see [`Timers::stall_threshold`]); each restarted our
    /// suspicions instead of acting on them.
    pub stalls: u64,
    /// Suspicions we started because our own probe failed.
    pub suspicions: u64,
    /// Other speakers' reports that shortened one of our suspicions.
    pub confirmations: u64,
    /// Our local health score now: 0 healthy, probe timeouts and periods
    /// are stretched by `local_health + 1`.
    pub local_health: u8,
}

/// A sealed datagram to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub to: SocketAddr,
    pub bytes: bytes::Bytes,
}

/// Where a peer address came from, which decides whether it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerSource {
    /// Configured seeds: kept for the lifetime of the process.
    Seed,
    /// Discovered from the cluster: kept while refreshed within [`PEER_EXPIRY`].
    Discovered,
}

type Swim = Foca<SpeakerId, PostcardCodec, SmallRng, SuspectReports>;

/// What foca asked for during one call, applied right after it.
#[derive(Default)]
struct Requests {
    datagrams: Vec<(SocketAddr, Vec<u8>)>,
    timers: Vec<(Duration, Timer<SpeakerId>)>,
    notifications: Vec<OwnedNotification<SpeakerId>>,
}

impl Runtime<SpeakerId> for Requests {
    fn notify(&mut self, notification: foca::Notification<'_, SpeakerId>) {
        self.notifications.push(notification.to_owned());
    }

    fn send_to(&mut self, to: SpeakerId, data: &[u8]) {
        self.datagrams.push((to.gossip_addr, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<SpeakerId>, after: Duration) {
        self.timers.push((after, event));
    }
}

enum Duty {
    Foca(Timer<SpeakerId>),
    AnnounceToPeers,
    /// A restart hold (see `hold`) may have ended.
    HoldEnds,
    /// A suspicion may have run out: see [`Suspicions::take_expired`].
    CheckSuspicions,
}

/// A queued timer. Ordered by deadline, then by submission: a lagging driver
/// then still hands foca a probe's `SendIndirectProbe` before the next
/// `ProbeRandomMember`, the order foca's `Timer: Ord` exists to restore.
struct Due {
    at: Duration,
    seq: u64,
    duty: Duty,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One speaker's membership protocol state.
pub struct Core {
    swim: Swim,
    requests: Requests,
    seal: PacketSeal,
    due: BinaryHeap<Reverse<Due>>,
    next_seq: u64,
    /// Addresses to announce to while they are not live members; `None` =
    /// a seed, `Some(t)` = discovered, last refreshed at `t`.
    peers: BTreeMap<SocketAddr, Option<Duration>>,
    announce_every: Duration,
    members: BTreeSet<String>,
    outgoing: VecDeque<Datagram>,
    stats: GossipStats,
    opened: Vec<u8>,
    now: Duration,
    left: bool,
    /// Set while leaving on request, so the resulting Defunct is expected.
    leaving: bool,
    /// When the latest authentication failures from known speakers
    /// happened, newest last, at most [`KEY_MISMATCH_FAILURES`].
    known_auth_failures: VecDeque<Duration>,
    /// Restarting peers kept as members whatever foca thinks (`hold`).
    holds: Holds,
    health: LocalHealth,
    suspicions: Suspicions,
    /// Reports foca's broadcast handler decoded, drained after every call.
    reports: Arc<Mutex<Vec<SuspectReport>>>,
    /// Our direct probe is out and its outcome is not known yet.
    probing: bool,
    /// Our generation and the highest incarnation we have sent: a higher
    /// one means we refuted a suspicion of ourselves.
    own_incarnation: (u32, Incarnation),
    stall_threshold: Duration,
}

impl Core {
    /// A speaker that knows nobody yet, sealing with a single `key`.
    pub fn new(
        identity: SpeakerId,
        timers: &Timers,
        key: Option<&Key>,
        rng_seed: u64,
        now: Duration,
    ) -> Result<Core, TimersError> {
        let keyring = key.cloned().map(Keyring::single);
        Self::with_keyring(identity, timers, keyring.as_ref(), rng_seed, now)
    }

    /// A speaker that knows nobody yet. `rng_seed` drives foca's member
    /// choices only (nonces come from the OS-seeded generator).
    pub fn with_keyring(
        identity: SpeakerId,
        timers: &Timers,
        keyring: Option<&Keyring>,
        rng_seed: u64,
        now: Duration,
    ) -> Result<Core, TimersError> {
        let config = timers.foca_config()?;
        let seal = PacketSeal::new(keyring, identity.gossip_addr);
        let members = BTreeSet::from([identity.node.clone()]);
        let own_incarnation = (identity.generation, 0);
        let (report_handler, reports) = SuspectReports::new();
        let mut core = Core {
            swim: Foca::with_custom_broadcast(
                identity,
                config,
                SmallRng::seed_from_u64(rng_seed),
                PostcardCodec,
                report_handler,
            ),
            requests: Requests::default(),
            seal,
            due: BinaryHeap::new(),
            next_seq: 0,
            peers: BTreeMap::new(),
            announce_every: timers.periodic_announce,
            members,
            outgoing: VecDeque::new(),
            stats: GossipStats::default(),
            opened: Vec::new(),
            now,
            left: false,
            leaving: false,
            known_auth_failures: VecDeque::new(),
            holds: Holds::default(),
            health: LocalHealth::new(timers.awareness_max_multiplier),
            suspicions: Suspicions::new(timers.suspect_to_down, timers.suspect_to_down_max),
            reports,
            probing: false,
            own_incarnation,
            stall_threshold: timers.stall_threshold(),
        };
        core.stats.members = 1;
        core.schedule(timers.periodic_announce, Duty::AnnounceToPeers);
        Ok(core)
    }

    pub fn identity(&self) -> &SpeakerId {
        self.swim.identity()
    }

    /// Node names of the members foca considers up (Alive or Suspect), and
    /// always ourselves.
    pub fn members(&self) -> &BTreeSet<String> {
        &self.members
    }

    pub fn stats(&self) -> GossipStats {
        self.stats
    }

    /// foca's view of a node: the state of its newest known identity.
    pub fn state_of(&self, node: &str) -> Option<foca::State> {
        self.swim
            .iter_membership_state()
            .filter(|member| member.id().node == node)
            .max_by_key(|member| member.id().generation)
            .map(|member| member.state())
    }

    /// When our own suspicion of `node` runs out and we declare it down,
    /// unless it refutes first; `None` when we do not suspect it.
    pub fn suspicion_deadline(&self, node: &str) -> Option<Duration> {
        self.suspicions.deadline_for(node)
    }

    /// Whether datagrams from known speakers keep failing authentication:
    /// [`KEY_MISMATCH_FAILURES`] of them within [`KEY_MISMATCH_WINDOW`]
    /// before `now`.
    pub fn key_mismatch(&self, now: Duration) -> bool {
        key_mismatch_at(&self.known_auth_failures, now)
    }

    /// The times [`Core::key_mismatch`] judges by, for a driver that asks
    /// between calls into the core.
    pub fn known_auth_failures(&self) -> &VecDeque<Duration> {
        &self.known_auth_failures
    }

    /// Seals and opens with `key` from now on (`None`: plaintext), e.g. after
    /// the key file was rotated. Failures under the old key are forgotten.
    pub fn set_key(&mut self, key: Option<&Key>) {
        self.set_keyring(key.cloned().map(Keyring::single).as_ref());
    }

    /// Seals with `keyring`'s primary and opens with any of its keys from
    /// now on (`None`: plaintext). Failures under the old keys are forgotten.
    pub fn set_keyring(&mut self, keyring: Option<&Keyring>) {
        self.seal.set_keyring(keyring);
        self.known_auth_failures.clear();
    }

    /// When [`Core::handle_timers`] next has work.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.due.peek().map(|Reverse(due)| due.at)
    }

    /// Sealed datagrams produced so far, to be sent in order.
    pub fn take_outgoing(&mut self) -> impl Iterator<Item = Datagram> + '_ {
        self.outgoing.drain(..)
    }

    /// Adds or refreshes peers and announces to those that are not live
    /// members yet. Idempotent: peers already in the cluster cost nothing.
    pub fn join(
        &mut self,
        now: Duration,
        peers: impl IntoIterator<Item = SocketAddr>,
        source: PeerSource,
    ) {
        self.advance_clock(now);
        let own = self.identity().gossip_addr;
        let live = self.live_addrs();
        let mut fresh = Vec::new();
        for peer in peers.into_iter().filter(|peer| *peer != own) {
            let refreshed = match source {
                PeerSource::Seed => None,
                PeerSource::Discovered => Some(now),
            };
            match self.peers.get_mut(&peer) {
                Some(None) => {}
                Some(last) => *last = refreshed,
                None => {
                    self.peers.insert(peer, refreshed);
                }
            }
            if !live.contains(&peer) {
                fresh.push(peer);
            }
        }
        self.announce_to(fresh);
    }

    /// Feeds one received datagram.
    pub fn handle_packet(&mut self, now: Duration, from: SocketAddr, datagram: &[u8]) {
        self.advance_clock(now);
        if self.left {
            return;
        }
        self.stats.packets_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        let opened = self.seal.open(self.now, datagram, &mut self.opened);
        if let Err(OpenError::Replayed(why)) = opened {
            self.stats.replayed += 1;
            tracing::debug!("gossip: dropped a replayed datagram from {from}: {why}");
            return;
        }
        if let Ok(Opened::Key(secondary)) = opened {
            if secondary > 0 {
                self.stats.opened_by_secondary_key += 1;
                tracing::trace!("gossip: datagram from {from} opened by keyring key {secondary}");
            }
        }
        if let Err(reason) = opened {
            self.stats.auth_failures += 1;
            if reason == OpenError::OldFormat {
                self.stats.old_format += 1;
                if self.stats.old_format == 1 {
                    tracing::warn!("gossip: {from} sent a datagram in the format of speakers before the keyring; {reason}");
                }
            }
            if !self.is_known(from) {
                self.stats.stray_datagrams += 1;
                if self.stats.stray_datagrams.is_power_of_two() {
                    tracing::info!(
                        "gossip: ignored {} unauthenticated datagram(s) from unknown senders, \
                         the last from {from}: {reason}",
                        self.stats.stray_datagrams
                    );
                }
                return;
            }
            if self.known_auth_failures.len() == KEY_MISMATCH_FAILURES {
                self.known_auth_failures.pop_front();
            }
            self.known_auth_failures.push_back(self.now);
            // A key mismatch otherwise only shows as a speaker alone in its
            // member set; say so, at a rate that halves as it goes on.
            let known = self.stats.auth_failures - self.stats.stray_datagrams;
            if known.is_power_of_two() {
                tracing::warn!(
                    "gossip: {known} datagrams from known speakers failed authentication, \
                     the last from {from}: {reason}; do all speakers share the same gossip key?",
                );
            }
            return;
        }
        if let Some(request) = HoldRequest::decode(&self.opened) {
            self.grant_hold(&request);
            return;
        }
        if let Err(reason) = self.swim.handle_data(&self.opened, &mut self.requests) {
            self.stats.rejected += 1;
            tracing::debug!("gossip: foca refused datagram from {from}: {reason}");
        }
        self.apply_requests();
    }

    /// Runs every timer due at or before `now`.
    pub fn handle_timers(&mut self, now: Duration) {
        self.advance_clock(now);
        while self.next_deadline().is_some_and(|at| at <= now) {
            let Some(Reverse(due)) = self.due.pop() else {
                break;
            };
            if self.left {
                continue;
            }
            match due.duty {
                Duty::Foca(timer) => {
                    let probe_tick = matches!(timer, Timer::ProbeRandomMember(_));
                    let outcome_pending = probe_tick && std::mem::take(&mut self.probing);
                    if let Err(reason) = self.swim.handle_timer(timer, &mut self.requests) {
                        tracing::debug!("gossip: timer: {reason}");
                    }
                    // foca reports a failed probe at the next probe tick and
                    // says nothing of one that succeeded. (A failure counts
                    // when it starts a suspicion, in `start_suspicion`.)
                    let failed = self.requests.notifications.iter().any(|notification| {
                        matches!(notification, OwnedNotification::ProbeFailed(..))
                    });
                    if outcome_pending && !failed {
                        self.health.probe_succeeded();
                    }
                    self.apply_requests();
                }
                Duty::CheckSuspicions => {
                    for declare_down in self.suspicions.take_expired(now) {
                        if let Err(reason) =
                            self.swim.handle_timer(declare_down, &mut self.requests)
                        {
                            tracing::debug!("gossip: suspicion: {reason}");
                        }
                    }
                    self.apply_requests();
                }
                Duty::AnnounceToPeers => {
                    self.schedule(self.announce_every, Duty::AnnounceToPeers);
                    self.peers.retain(|_, refreshed| {
                        refreshed.is_none_or(|at| now.saturating_sub(at) < PEER_EXPIRY)
                    });
                    self.announce_to_absent_peers();
                }
                Duty::HoldEnds => self.refresh_members(),
            }
        }
    }

    /// Declares ourselves down to the others, who drop us at once, and stops.
    ///
    /// foca's leave gossips to `indirect_probes` random members; two more
    /// rounds cover a lost datagram and reach more members of a large cluster
    /// directly (the rest hear it epidemically).
    pub fn leave(&mut self, now: Duration) {
        self.advance_clock(now);
        if self.left {
            return;
        }
        self.leaving = true;
        if let Err(reason) = self.swim.leave_cluster(&mut self.requests) {
            tracing::warn!("gossip: leave: {reason}");
        }
        for _ in 0..2 {
            if let Err(reason) = self.swim.gossip(&mut self.requests) {
                tracing::debug!("gossip: leave: {reason}");
            }
        }
        self.apply_requests();
        self.left = true;
        self.due.clear();
    }

    /// Moves our clock to `now`; if a timer was due long before `now` we
    /// were stopped (SIGSTOP, CPU throttling, a pause) and the time that
    /// passed is not evidence against anybody: the others could not reach
    /// us, not the reverse. Every pending timer moves by the gap, so the
    /// probe in flight gets its full rtt after we resume (its ack may be
    /// among the datagrams the driver reads first), and every suspicion
    /// starts over, giving the suspect a whole timeout in which we listen.
    fn advance_clock(&mut self, now: Duration) {
        if let Some(due) = self.next_deadline() {
            let late = now.saturating_sub(due);
            if late > self.stall_threshold && !self.left {
                self.stats.stalls += 1;
                self.health.stalled();
                tracing::info!(
                    "gossip: our timers ran {} ms late (stopped or starved); \
                     restarting suspicions instead of acting on them",
                    late.as_millis()
                );
                let queued = std::mem::take(&mut self.due);
                self.due = queued
                    .into_iter()
                    .map(|Reverse(mut entry)| {
                        entry.at += late;
                        Reverse(entry)
                    })
                    .collect();
                self.now = self.now.max(now);
                for deadline in self.suspicions.restart(self.now) {
                    self.schedule_at(deadline, Duty::CheckSuspicions);
                }
                return;
            }
        }
        self.now = self.now.max(now);
    }

    fn schedule_at(&mut self, at: Duration, duty: Duty) {
        let after = at.saturating_sub(self.now);
        self.schedule(after, duty);
    }

    fn schedule(&mut self, after: Duration, duty: Duty) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.due.push(Reverse(Due {
            at: self.now + after,
            seq,
            duty,
        }));
    }

    /// A speaker we were told about (seed, discovered node or pod) or one
    /// that is a member.
    fn is_known(&self, from: SocketAddr) -> bool {
        self.peers.contains_key(&from)
            || self
                .swim
                .iter_members()
                .any(|member| member.id().gossip_addr == from)
    }

    fn live_addrs(&self) -> BTreeSet<SocketAddr> {
        self.swim
            .iter_members()
            .map(|member| member.id().gossip_addr)
            .collect()
    }

    fn announce_to_absent_peers(&mut self) {
        let live = self.live_addrs();
        let absent: Vec<_> = self
            .peers
            .keys()
            .copied()
            .filter(|peer| !live.contains(peer))
            .collect();
        self.announce_to(absent);
    }

    fn announce_to(&mut self, peers: Vec<SocketAddr>) {
        for peer in peers {
            if let Err(reason) = self
                .swim
                .announce(SpeakerId::unknown_at(peer), &mut self.requests)
            {
                tracing::debug!("gossip: announce to {peer}: {reason}");
            }
        }
        self.apply_requests();
    }

    fn apply_requests(&mut self) {
        for (to, packet) in std::mem::take(&mut self.requests.datagrams) {
            let bytes = self.seal.seal(&packet);
            self.stats.packets_sent += 1;
            self.stats.bytes_sent += bytes.len() as u64;
            self.outgoing.push_back(Datagram { to, bytes });
        }
        let mut notifications = std::mem::take(&mut self.requests.notifications);
        notifications.retain(|notification| self.observe_traffic(notification));
        for (after, timer) in std::mem::take(&mut self.requests.timers) {
            match timer {
                // foca's fixed suspicion is replaced by ours (see
                // `suspicion`): the timer is kept and handed back to foca
                // when our deadline passes, so foca still checks that the
                // member did not refute meanwhile.
                Timer::ChangeSuspectToDown { .. } => self.start_suspicion(timer),
                // Lifeguard: a speaker in poor health probes less often and
                // waits longer for acks. Both scale alike so that foca's
                // indirect stage still ends before the next probe starts.
                Timer::SendIndirectProbe { .. } | Timer::ProbeRandomMember(_) => {
                    self.schedule(self.health.scale(after), Duty::Foca(timer));
                }
                _ => self.schedule(after, Duty::Foca(timer)),
            }
        }
        self.count_reports();
        // A refutation (the suspect alive at a higher incarnation), someone
        // else's Down or a restart under a new generation ends our suspicion.
        let swim = &self.swim;
        self.suspicions.retain(|suspect, incarnation| {
            swim.iter_membership_state().any(|member| {
                member.id() == suspect
                    && member.incarnation() == incarnation
                    && member.state() == State::Suspect
            })
        });
        self.stats.local_health = self.health.score();
        if notifications.is_empty() {
            return;
        }
        for notification in &notifications {
            self.log_notification(notification);
        }
        // Renewed because someone told us we are down: the members that
        // think so are not live for us either, so foca's own rejoin gossip
        // may reach nobody; announce the new identity to our peers now
        // rather than at the next announce period.
        if notifications
            .iter()
            .any(|notification| matches!(notification, OwnedNotification::Rejoin(_)))
        {
            self.announce_to_absent_peers();
        }
        self.refresh_members();
    }

    /// Ourselves, foca's live members and the held nodes.
    fn refresh_members(&mut self) {
        let swim = &self.swim;
        self.holds.expire(self.now, |node| {
            swim.iter_members()
                .filter(|member| member.id().node == node)
                .map(|member| member.id().generation)
                .max()
        });
        self.members = std::iter::once(self.identity().node.clone())
            .chain(
                self.swim
                    .iter_members()
                    .map(|member| member.id().node.clone()),
            )
            .chain(self.holds.nodes(self.now).map(str::to_owned))
            .collect();
        self.stats.members = self.members.len();
    }

    /// Asks every live member to hold us for `window` (we are restarting and
    /// will not answer probes meanwhile); see `hold`. Then stops, like
    /// [`Core::leave`] but without telling anyone we left.
    pub fn request_hold(&mut self, now: Duration, window: Duration) {
        self.advance_clock(now);
        if self.left {
            return;
        }
        let request = HoldRequest {
            node: self.identity().node.clone(),
            generation: self.identity().generation,
            window,
        }
        .encode();
        for to in self.live_addrs() {
            for _ in 0..REQUEST_COPIES {
                self.requests.datagrams.push((to, request.clone()));
            }
        }
        self.apply_requests();
        self.left = true;
        self.due.clear();
    }

    /// A member asked to be held through its restart; strangers are not.
    fn grant_hold(&mut self, request: &HoldRequest) {
        let known = self
            .swim
            .iter_members()
            .any(|member| member.id().node == request.node);
        if !known {
            tracing::debug!(
                "gossip: ignored a hold request from non-member {}",
                request.node
            );
            return;
        }
        if let Some(until) = self.holds.grant(self.now, request) {
            tracing::info!(
                event = "memberHeld",
                node = request.node,
                "gossip: {} is restarting; kept as a member for up to {:?}",
                request.node,
                until.saturating_sub(self.now)
            );
            self.schedule(until.saturating_sub(self.now), Duty::HoldEnds);
        }
        self.refresh_members();
    }

    /// Takes in what foca's traffic notifications say about our health;
    /// returns whether the notification is about membership.
    fn observe_traffic(&mut self, notification: &OwnedNotification<SpeakerId>) -> bool {
        match notification {
            OwnedNotification::DataSent(header) => {
                if matches!(header.message, Message::Ping(_)) {
                    self.probing = true;
                }
                let sent = (header.src.generation, header.src_incarnation);
                if header.src.generation > self.own_incarnation.0 {
                    self.own_incarnation = sent;
                } else if sent > self.own_incarnation {
                    self.own_incarnation = sent;
                    self.health.refuted_suspicion();
                }
                false
            }
            OwnedNotification::ProbeFailed(..) | OwnedNotification::DataReceived(_) => false,
            _ => true,
        }
    }

    /// Our probe of a member failed and foca made it Suspect: start our
    /// suspicion and tell the others, whose own failed probes confirm it.
    fn start_suspicion(&mut self, declare_down: Timer<SpeakerId>) {
        let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = &declare_down
        else {
            return;
        };
        let report = SuspectReport {
            by: self.identity().clone(),
            suspect: member_id.clone(),
            incarnation: *incarnation,
        };
        let Some((deadline, confirmed)) =
            self.suspicions
                .start(self.now, declare_down, self.members.len())
        else {
            return;
        };
        self.stats.confirmations += confirmed as u64;
        // Only a first failure counts against our health: foca re-arms the
        // timer every time it probes a member that is already suspect.
        self.health.probe_failed();
        self.stats.suspicions += 1;
        self.schedule_at(deadline, Duty::CheckSuspicions);
        if let Err(reason) = self.swim.add_broadcast(&report.encode()) {
            tracing::debug!("gossip: suspicion report: {reason}");
        }
        tracing::debug!(
            "gossip: our probe of {} failed; declaring it down in {} ms unless refuted",
            report.suspect.node,
            deadline.saturating_sub(self.now).as_millis()
        );
    }

    /// Counts the suspicion reports foca decoded during the last call.
    fn count_reports(&mut self) {
        let reports = std::mem::take(
            &mut *self
                .reports
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let us = self.swim.identity().node.clone();
        for report in reports {
            if let Some(deadline) = self.suspicions.confirm(self.now, &us, report) {
                self.stats.confirmations += 1;
                self.schedule_at(deadline, Duty::CheckSuspicions);
            }
        }
    }

    fn log_notification(&mut self, notification: &OwnedNotification<SpeakerId>) {
        let us = &self.swim.identity().node;
        match notification {
            OwnedNotification::MemberUp(id) => {
                tracing::info!(
                    event = "memberUp",
                    node = id.node,
                    "gossip: {} ({}) is up",
                    id.node,
                    id.gossip_addr
                );
            }
            OwnedNotification::MemberDown(id) => {
                tracing::info!(
                    event = "memberDown",
                    node = id.node,
                    "gossip: {} ({}) is down",
                    id.node,
                    id.gossip_addr
                );
            }
            OwnedNotification::Rename(old, new) => tracing::debug!(
                "gossip: {} ({}) restarted: generation {} replaces {}",
                new.node,
                new.gossip_addr,
                new.generation,
                old.generation
            ),
            OwnedNotification::Active => tracing::info!("gossip: {us} joined the cluster"),
            OwnedNotification::Idle => {
                tracing::warn!(
                    "gossip: {us} reaches no other speaker; it is alone in its member set"
                );
            }
            // Our own leave ends in Defunct too: only warn when we did not ask.
            OwnedNotification::Defunct if self.leaving => tracing::debug!("gossip: {us} is out"),
            OwnedNotification::Defunct => {
                tracing::warn!("gossip: the cluster declared {us} down and it cannot rejoin");
            }
            OwnedNotification::Rejoin(id) => {
                self.stats.rejoins += 1;
                tracing::warn!(
                    "gossip: the cluster declared {us} down; rejoining as generation {}",
                    id.generation
                );
            }
            OwnedNotification::DataSent(_)
            | OwnedNotification::DataReceived(_)
            | OwnedNotification::ProbeFailed(..) => {}
        }
    }
}

/// [`Core::key_mismatch`] over a list of failure times, newest last.
pub fn key_mismatch_at(failures: &VecDeque<Duration>, now: Duration) -> bool {
    failures.len() >= KEY_MISMATCH_FAILURES
        && failures
            .iter()
            .rev()
            .nth(KEY_MISMATCH_FAILURES - 1)
            .is_some_and(|oldest| now.saturating_sub(*oldest) < KEY_MISMATCH_WINDOW)
}
