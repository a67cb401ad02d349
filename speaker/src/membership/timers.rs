//! SWIM timing: how fast a crashed speaker is noticed, and what it costs.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use super::seal::SEAL_OVERHEAD;

/// Largest datagram we send, seal included: below a 1500-byte Ethernet MTU
/// with room for IP/UDP headers and an encapsulation (VXLAN adds 50), the
/// RFC 8085 §3.2 advice for UDP without path-MTU discovery.
pub const MAX_DATAGRAM: usize = 1400;

/// How many times each membership change is piggybacked on outgoing
/// packets. Only the speaker that raised a suspicion declares the member
/// down (foca has no per-speaker suspicion timers), so a speaker that misses
/// every copy of that Down keeps a dead member until it probes it itself —
/// tens of seconds in a large cluster. With T copies per speaker, about
/// N·e^−T speakers of N miss one: measured 5 % of crashes in a 100-node
/// simulation with memberlist's 8; 1e-5 with 16. The cost is a few hundred
/// bytes per speaker per membership change.
const UPDATE_TRANSMISSIONS: u8 = 16;

/// How many random members each periodic gossip goes to (memberlist's
/// `GossipNodes`).
const GOSSIP_FANOUT: usize = 3;

/// One random live member is asked for its member list every this many
/// announce periods.
const ROSTER_REFRESH_ANNOUNCES: u32 = 6;

/// Probe periods after which some speaker has started probing a crashed
/// member. foca probes its members in a shuffled round-robin, so with K
/// other members one prober comes back to a given member at most 2K−1
/// periods later (3 periods with three speakers: an exact bound). With
/// N−1 probers each visiting the member with probability ≈ 1/(N−1) per
/// period, nobody has started after w periods with probability ≈ e^−w;
/// capping w at 7 leaves ≈ 0.1 %.
const MAX_PROBE_WAIT_PERIODS: u32 = 7;

/// The cluster size [`Timers::max_detection`] assumes.
const LARGEST_CLUSTER: usize = 1000;

/// A named set of [`Timers`] (`--memberlist-profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// [`Timers::lan`]: failover in under 2 s, tolerant of a speaker
    /// stopped for up to 1 s and of lossy links.
    #[default]
    Lan,
    /// [`Timers::fast_lan`]: failover in under 1 s, no tolerance for a
    /// speaker stopped for more than about half a second.
    Fast,
}

impl Profile {
    pub fn timers(self) -> Timers {
        match self {
            Profile::Lan => Timers::lan(),
            Profile::Fast => Timers::fast_lan(),
        }
    }
}

/// SWIM timers, one set for the whole cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    /// Every period each speaker pings one member (shuffled round-robin).
    pub probe_period: Duration,
    /// How long a ping waits for its ack before asking others to ping.
    pub probe_rtt: Duration,
    /// How many members are asked to ping on our behalf.
    pub indirect_probes: u8,
    /// The shortest suspicion: how long a suspected member has to refute
    /// once enough other members confirmed the suspicion (see
    /// `membership::suspicion`).
    pub suspect_to_down: Duration,
    /// The longest suspicion, with no confirmation: what a member gets
    /// when only we, perhaps the sick one, cannot reach it.
    pub suspect_to_down_max: Duration,
    /// Our probe timeout and period are stretched by up to this factor
    /// while our own probes fail (Lifeguard's local health; 1 = off).
    pub awareness_max_multiplier: u8,
    /// How long a down identity is remembered (and refused).
    pub remove_down_after: Duration,
    /// How often pending membership changes are pushed to a few members.
    pub periodic_gossip: Duration,
    /// How often we announce ourselves to peers that are not live members
    /// (seeds and `Gossip::join` peers) and to one member we believe down;
    /// heals partitions. Every sixth time, one random live member is also
    /// asked for its member list, to find members that were missed.
    pub periodic_announce: Duration,
}

/// Timers that foca would refuse or that cannot detect anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimersError {
    #[error("gossip timer {0} must not be zero")]
    Zero(&'static str),
    #[error("gossip probe_rtt ({rtt:?}) must be shorter than probe_period ({period:?})")]
    RttNotBelowPeriod { rtt: Duration, period: Duration },
    #[error(
        "gossip suspect_to_down_max ({max:?}) must not be shorter than suspect_to_down ({min:?})"
    )]
    SuspicionMaxBelowMin { min: Duration, max: Duration },
}

impl Timers {
    /// Failover in under a second, no tolerance for stalls: a speaker
    /// stopped for more than about 0.6 s (probe period + shortest
    /// suspicion) is declared down and its IPs move, then come back when it
    /// resumes. Simulated with three speakers (80 crashes): crash → dropped
    /// by both others median 0.78 s, p95 1.05 s.
    ///
    /// The same shape as [`Timers::lan`] at 40–50 % of its timing: probe
    /// 200 ms with a 100 ms rtt (still 100× a LAN round trip), suspicion
    /// 400 ms when confirmed and 2.4 s when not.
    pub fn fast_lan() -> Self {
        Self {
            probe_period: Duration::from_millis(200),
            probe_rtt: Duration::from_millis(100),
            indirect_probes: 3,
            suspect_to_down: Duration::from_millis(400),
            suspect_to_down_max: Duration::from_millis(2400),
            awareness_max_multiplier: 8,
            remove_down_after: Duration::from_secs(24 * 60 * 60),
            periodic_gossip: Duration::from_millis(100),
            periodic_announce: Duration::from_secs(5),
        }
    }

    /// The default: a crash moves IPs in under 2 s, a speaker stopped for
    /// up to 1 s keeps them, and random loss does not make anyone flap.
    /// Simulated with three speakers (80 crashes): crash → dropped by both
    /// others median 1.58 s, p95 2.33 s, worst 2.49 s. Measured from
    /// outside (`cargo xtask bench failover`, 20 kills): kill -9 → the
    /// successor answers median 1.63 s, p95 1.75 s, worst 1.95 s.
    ///
    /// How the numbers follow from the targets (kill -9 of the owner: median
    /// ≤ 2 s, p95 ≤ 3 s; owner stopped 1 s: no change). A crash is detected
    /// after `wait + probe_period + suspicion`: `wait` until some speaker
    /// probes the dead one (≈ half a period on average with two probers),
    /// one period because foca raises Suspect only at the next probe tick,
    /// then the suspicion, shortened to `suspect_to_down` by the other
    /// prober's confirmation. A stopped speaker is declared down no sooner
    /// than `probe_period + suspect_to_down` after it stopped (a probe sent
    /// just as it stopped), so that sum must exceed 1 s plus the time to
    /// resume, read the queued pings and refute: 0.4 + 0.9 = 1.3 s leaves
    /// 0.3 s, tens of times what a resumed speaker needs to refute. A
    /// shorter period buys a shorter `wait` for the same sum; 0.4 s keeps
    /// the period at 2 × rtt with an rtt (200 ms) still far above a LAN
    /// round trip under load.
    ///
    /// - `probe_period` 400 ms, `probe_rtt` 200 ms: period = 2 × rtt, so
    ///   the indirect ping-req → ping → ack → forward chain has the other
    ///   200 ms (foca's docs prefer period > 2 × rtt).
    /// - `suspect_to_down` 0.9 s confirmed, `suspect_to_down_max` 5.4 s
    ///   unconfirmed (memberlist's `SuspicionMaxTimeoutMult` 6): a speaker
    ///   that only we cannot reach — we are the likely culprit — gets 5.4 s.
    ///   Under 10 % loss a failed probe is refuted well within either.
    /// - `periodic_gossip` 100 ms: suspicions reach the suspect (who refutes)
    ///   and Downs reach everybody fast; foca sends nothing on this timer
    ///   when there is no news, so it is free at rest.
    /// - `awareness_max_multiplier` 8: memberlist's.
    /// - `periodic_announce` 5 s: re-announces only to peers that are not
    ///   live members, so a converged cluster pays nothing for it.
    /// - `remove_down_after` 24 h: foca's default; a renewed identity rejoins
    ///   at once anyway, and a long memory refuses replays of old identities.
    ///
    /// Not tolerated: a speaker stopped for 2 s is declared down and rejoins
    /// (it keeps its own view of the others: see `Core`'s stall check), which
    /// moves no IP unless it owned one.
    pub fn lan() -> Self {
        Self {
            probe_period: Duration::from_millis(400),
            probe_rtt: Duration::from_millis(200),
            suspect_to_down: Duration::from_millis(900),
            suspect_to_down_max: Duration::from_millis(5400),
            ..Self::fast_lan()
        }
    }

    /// Worst-case time from a speaker's crash until every other speaker has
    /// dropped it from its member set, for any cluster of up to 1000
    /// speakers: `max_detection_for(1000)`, 4.8 s with `lan()`, 2.6 s with
    /// `fast_lan()`. Use
    /// [`Timers::max_detection_for`] when the cluster size is known.
    pub fn max_detection(&self) -> Duration {
        self.max_detection_for(LARGEST_CLUSTER)
    }

    /// Worst-case time from a crash until the other `cluster_size − 1`
    /// speakers have all dropped the crashed one:
    ///
    /// ```text
    ///   w·probe_period      until someone starts probing it,
    ///                       w = min(2·(N−1)−1, 7) (see MAX_PROBE_WAIT_PERIODS)
    /// + probe_period        that probe fails; foca raises Suspect at the next tick
    /// + suspect_to_down     a confirmed suspicion runs out: every other prober
    ///                       fails too, and confirms, within the same w periods
    /// + r·periodic_gossip   the Down spreads, r = ⌈log4 N⌉ rounds (each
    ///                       speaker that has it tells 3 more per round)
    /// + probe_rtt           delivery and scheduling slack
    /// ```
    ///
    /// Exact (barring membership changes meanwhile, and with healthy probers
    /// whose local health does not stretch their periods) up to 5 speakers;
    /// beyond, exceeded with probability ≈ e^−7 ≈ 0.1 % per confirmer. With
    /// three speakers: 2.8 s `lan()` (simulated worst of 80 crashes 2.49 s),
    /// 1.4 s `fast_lan()` (1.15 s). A speaker cut off from all the others
    /// gets no confirmations and sees them go later, within
    /// [`Timers::max_unconfirmed_detection_for`].
    pub fn max_detection_for(&self, cluster_size: usize) -> Duration {
        let others = cluster_size.saturating_sub(1).max(1) as u32;
        let probe_wait = (2 * others - 1).min(MAX_PROBE_WAIT_PERIODS);
        let mut gossip_rounds = 1;
        while 4usize.pow(gossip_rounds) < cluster_size {
            gossip_rounds += 1;
        }
        self.probe_period * (probe_wait + 1)
            + self.suspect_to_down
            + self.periodic_gossip * gossip_rounds
            + self.probe_rtt
    }

    /// [`Timers::max_detection_for`] when nobody confirms our suspicions
    /// (we are the one cut off): the longest suspicion instead of the
    /// shortest.
    pub fn max_unconfirmed_detection_for(&self, cluster_size: usize) -> Duration {
        self.max_detection_for(cluster_size) - self.suspect_to_down + self.suspect_to_down_max
    }

    /// How late a timer may run before the core concludes it was stopped
    /// or starved and restarts its suspicions: half a probe rtt. A busy
    /// tokio runtime is late by milliseconds; anything near an rtt would
    /// turn into a false suspicion if acted upon.
    pub fn stall_threshold(&self) -> Duration {
        self.probe_rtt / 2
    }

    pub(crate) fn validate(&self) -> Result<(), TimersError> {
        let named = [
            ("probe_period", self.probe_period),
            ("probe_rtt", self.probe_rtt),
            ("suspect_to_down", self.suspect_to_down),
            ("suspect_to_down_max", self.suspect_to_down_max),
            ("remove_down_after", self.remove_down_after),
            ("periodic_gossip", self.periodic_gossip),
            ("periodic_announce", self.periodic_announce),
        ];
        if let Some((name, _)) = named.iter().find(|(_, value)| value.is_zero()) {
            return Err(TimersError::Zero(name));
        }
        if self.indirect_probes == 0 {
            return Err(TimersError::Zero("indirect_probes"));
        }
        if self.awareness_max_multiplier == 0 {
            return Err(TimersError::Zero("awareness_max_multiplier"));
        }
        if self.suspect_to_down_max < self.suspect_to_down {
            return Err(TimersError::SuspicionMaxBelowMin {
                min: self.suspect_to_down,
                max: self.suspect_to_down_max,
            });
        }
        if self.probe_rtt >= self.probe_period {
            return Err(TimersError::RttNotBelowPeriod {
                rtt: self.probe_rtt,
                period: self.probe_period,
            });
        }
        Ok(())
    }

    pub(crate) fn foca_config(&self) -> Result<foca::Config, TimersError> {
        self.validate()?;
        let one = NonZeroUsize::MIN;
        let every = |frequency, num_members| {
            Some(foca::PeriodicParams {
                frequency,
                num_members,
            })
        };
        Ok(foca::Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: NonZeroUsize::new(usize::from(self.indirect_probes))
                .unwrap_or(one),
            max_transmissions: NonZeroU8::new(UPDATE_TRANSMISSIONS).unwrap_or(NonZeroU8::MIN),
            // Never used as such: the core takes foca's down timer and hands
            // it back when its own suspicion (min..max) runs out.
            suspect_to_down_after: self.suspect_to_down_max,
            remove_down_after: Some(self.remove_down_after),
            max_packet_size: NonZeroUsize::new(MAX_DATAGRAM - SEAL_OVERHEAD).unwrap_or(one),
            // A speaker declared down hears it at once and rejoins with a
            // renewed identity instead of talking into the void.
            notify_down_members: true,
            // Asking a random live member for its roster is only a safety net
            // (peers come from the seeds and `join`), and its reply is a full
            // packet: every 30 s at fast_lan's 5 s announce period.
            periodic_announce: every(self.periodic_announce * ROSTER_REFRESH_ANNOUNCES, one),
            periodic_announce_to_down_members: every(self.periodic_announce, one),
            periodic_gossip: every(
                self.periodic_gossip,
                NonZeroUsize::new(GOSSIP_FANOUT).unwrap_or(one),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_lan_detects_within_the_documented_bound() {
        let timers = Timers::fast_lan();
        let ms = |n| timers.max_detection_for(n).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(5)],
            [1000, 1000, 1400, 1800, 2300]
        );
        assert_eq!(
            [ms(16), ms(17), ms(100), ms(1000)],
            [2300, 2400, 2500, 2600]
        );
        assert_eq!(timers.max_detection(), timers.max_detection_for(1000));
        assert_eq!(timers.max_unconfirmed_detection_for(3).as_millis(), 3400);
        timers.validate().unwrap();
        let config = timers.foca_config().unwrap();
        assert_eq!(config.max_packet_size.get() + SEAL_OVERHEAD, MAX_DATAGRAM);
    }

    #[test]
    fn lan_is_the_default_and_slower_than_fast() {
        let lan = Profile::Lan.timers();
        assert_eq!(lan, Timers::lan());
        assert_eq!(Profile::default(), Profile::Lan);
        assert_eq!(Profile::Fast.timers(), Timers::fast_lan());
        assert_eq!(lan.probe_period, Duration::from_millis(400));
        assert_eq!(lan.probe_rtt, lan.probe_period / 2);
        assert_eq!(lan.suspect_to_down_max, 6 * lan.suspect_to_down);
        lan.validate().unwrap();
        // A speaker stopped for 1 s must have time to refute.
        assert!(lan.probe_period + lan.suspect_to_down >= Duration::from_millis(1300));
        // 3 periods until a probe, 1 for it, 0.9 s of confirmed suspicion,
        // one gossip round and the rtt of slack.
        assert_eq!(lan.max_detection_for(3).as_millis(), 2800);
        assert_eq!(lan.max_detection().as_millis(), 4800);
        assert_eq!(lan.max_unconfirmed_detection_for(3).as_millis(), 7300);
        assert!(lan.max_detection() > Timers::fast_lan().max_detection());
        assert_eq!(lan.stall_threshold(), Duration::from_millis(100));
    }

    #[test]
    fn impossible_timers_are_refused() {
        let mut timers = Timers::fast_lan();
        timers.probe_rtt = timers.probe_period;
        assert!(matches!(
            timers.validate(),
            Err(TimersError::RttNotBelowPeriod { .. })
        ));
        let mut timers = Timers::fast_lan();
        timers.suspect_to_down = Duration::ZERO;
        assert_eq!(timers.validate(), Err(TimersError::Zero("suspect_to_down")));
        let mut timers = Timers::fast_lan();
        timers.indirect_probes = 0;
        assert_eq!(timers.validate(), Err(TimersError::Zero("indirect_probes")));
        let mut timers = Timers::fast_lan();
        timers.awareness_max_multiplier = 0;
        assert_eq!(
            timers.validate(),
            Err(TimersError::Zero("awareness_max_multiplier"))
        );
        let mut timers = Timers::fast_lan();
        timers.suspect_to_down_max = timers.suspect_to_down / 2;
        assert!(matches!(
            timers.validate(),
            Err(TimersError::SuspicionMaxBelowMin { .. })
        ));
    }
}
