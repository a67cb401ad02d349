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
    /// [`Timers::lan`]: memberlist's LAN timing, tolerant of stalls.
    #[default]
    Lan,
    /// [`Timers::fast_lan`]: sub-2-second failover, no tolerance for a
    /// speaker stalled for more than about a second.
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
    /// How long a suspected member has to refute before it is declared down.
    pub suspect_to_down: Duration,
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
}

impl Timers {
    /// Timers for speakers on one LAN: a crashed speaker is out of everybody's
    /// member set a median 1.13 s after the crash with three speakers (1.48 s
    /// with 100), at worst 2.05 s (three speakers; see
    /// [`Timers::max_detection_for`]).
    ///
    /// - `probe_rtt` 150 ms: a LAN round trip is well under 1 ms; the rest is
    ///   room for a speaker starved of CPU on a busy node (memberlist's LAN
    ///   profile allows 500 ms for 1 s periods).
    /// - `probe_period` 300 ms = 2 × rtt: after the direct ping times out the
    ///   indirect ping-req → ping → ack → forward chain has the other 150 ms,
    ///   as foca's docs ask (period > 2 × rtt is preferred).
    /// - `suspect_to_down` 600 ms = 2 periods: enough for the suspected
    ///   speaker to hear the suspicion (the next gossip, ≤ 100 ms) and refute
    ///   it; memberlist waits 4 periods for ≤ 10 nodes, which with its 1 s
    ///   period is why MetalLB fails over in 5–10 s.
    /// - `periodic_gossip` 100 ms: pushes a Down to others quickly; foca sends
    ///   nothing on this timer when there is no news, so it is free at rest.
    /// - `periodic_announce` 5 s: re-announces only to peers that are not live
    ///   members, so a converged cluster pays nothing for it.
    /// - `remove_down_after` 24 h: foca's default; a renewed identity rejoins
    ///   at once anyway, and a long memory refuses replays of old identities.
    pub fn fast_lan() -> Self {
        Self {
            probe_period: Duration::from_millis(300),
            probe_rtt: Duration::from_millis(150),
            indirect_probes: 3,
            suspect_to_down: Duration::from_millis(600),
            remove_down_after: Duration::from_secs(24 * 60 * 60),
            periodic_gossip: Duration::from_millis(100),
            periodic_announce: Duration::from_secs(5),
        }
    }

    /// hashicorp memberlist's `DefaultLANConfig` timing, which MetalLB runs
    /// with: a probe every 1 s answered within 500 ms, 3 indirect probes,
    /// gossip every 200 ms, and a suspicion of 4 probe periods
    /// (`SuspicionMult` 4 × log10(N) periods, with log10 taken as at least 1,
    /// so exact up to 10 speakers; foca's suspicion timer is fixed, so it does
    /// not grow with the cluster nor shrink with confirmations as memberlist's
    /// does). A speaker stalled or cut off for up to about 5 s (a ping plus
    /// the suspicion) keeps its IPs; a crash moves them after 5–8 s with
    /// three speakers, as with MetalLB. `periodic_announce` and
    /// `remove_down_after` are [`Timers::fast_lan`]'s: they cost nothing at
    /// rest.
    pub fn lan() -> Self {
        Self {
            probe_period: Duration::from_secs(1),
            probe_rtt: Duration::from_millis(500),
            indirect_probes: 3,
            suspect_to_down: Duration::from_secs(4),
            periodic_gossip: Duration::from_millis(200),
            ..Self::fast_lan()
        }
    }

    /// Worst-case time from a speaker's crash until every other speaker has
    /// dropped it from its member set, for any cluster of up to 1000
    /// speakers: `max_detection_for(1000)`, 3.65 s with `fast_lan()`. Use
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
    /// + suspect_to_down     the suspecting speaker declares it Down
    /// + r·periodic_gossip   the Down spreads, r = ⌈log4 N⌉ rounds (each
    ///                       speaker that has it tells 3 more per round)
    /// + probe_rtt           delivery and scheduling slack
    /// ```
    ///
    /// Exact (barring membership changes meanwhile) up to 5 speakers; beyond,
    /// exceeded with probability ≈ e^−7 ≈ 0.1 %. With `fast_lan()`: 2.05 s for
    /// 3 speakers (simulated worst of 300 crashes: 1.78 s), 3.55 s for 100
    /// (simulated worst of 300 crashes: 2.99 s, median 1.48 s). A speaker cut
    /// off from the others sees them go in the same time.
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

    pub(crate) fn validate(&self) -> Result<(), TimersError> {
        let named = [
            ("probe_period", self.probe_period),
            ("probe_rtt", self.probe_rtt),
            ("suspect_to_down", self.suspect_to_down),
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
            suspect_to_down_after: self.suspect_to_down,
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
            [1450, 1450, 2050, 2650, 3350]
        );
        assert_eq!(
            [ms(16), ms(17), ms(100), ms(1000)],
            [3350, 3450, 3550, 3650]
        );
        assert_eq!(timers.max_detection(), timers.max_detection_for(1000));
        timers.validate().unwrap();
        let config = timers.foca_config().unwrap();
        assert_eq!(config.max_packet_size.get() + SEAL_OVERHEAD, MAX_DATAGRAM);
    }

    #[test]
    fn lan_is_memberlists_lan_timing_and_slower_than_fast() {
        let lan = Profile::Lan.timers();
        assert_eq!(lan, Timers::lan());
        assert_eq!(Profile::default(), Profile::Lan);
        assert_eq!(Profile::Fast.timers(), Timers::fast_lan());
        assert_eq!(lan.probe_period, Duration::from_secs(1));
        assert_eq!(lan.probe_rtt, Duration::from_millis(500));
        assert_eq!(lan.suspect_to_down, 4 * lan.probe_period);
        assert_eq!(lan.periodic_gossip, Duration::from_millis(200));
        lan.validate().unwrap();
        // 3 periods until a probe, 1 for it, 4 s of suspicion, one gossip
        // round and the rtt of slack.
        assert_eq!(lan.max_detection_for(3).as_millis(), 8700);
        assert!(lan.max_detection() > Timers::fast_lan().max_detection());
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
    }
}
