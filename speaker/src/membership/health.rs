//! Local health (Lifeguard's "local health multiplier", memberlist's
//! `awareness`): how much this speaker trusts its own view of the others.
//!
//! SWIM assumes a prober that fails to hear an ack is right about the
//! target. A speaker starved of CPU, stopped, or behind a lossy link is
//! wrong about everybody at once, and its suspicions are what makes the
//! healthy ones flap. So every sign that the problem may be ours — a probe
//! that got no ack, having to refute a suspicion of ourselves, having been
//! stopped — raises a score, every probe that was answered lowers it, and
//! our probe timeout and probe period are stretched by `score + 1`: a sick
//! speaker probes less often and waits longer before suspecting anyone.
//! (Lifeguard, Dadgar et al. 2018, §IV-A; memberlist's `awareness.go`.)

use std::time::Duration;

/// Score between 0 and `max_multiplier − 1`; timeouts are multiplied by
/// `score + 1`, so at most by `max_multiplier` (memberlist's
/// `AwarenessMaxMultiplier`, 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHealth {
    score: u8,
    max_multiplier: u8,
}

impl LocalHealth {
    /// Healthy. `max_multiplier` 1 turns the scaling off.
    pub fn new(max_multiplier: u8) -> Self {
        Self {
            score: 0,
            max_multiplier: max_multiplier.max(1),
        }
    }

    /// 0 is healthy.
    pub fn score(&self) -> u8 {
        self.score
    }

    /// Our probe got neither a direct nor an indirect ack. Without nacks
    /// (foca has none) we cannot tell our fault from the target's, so every
    /// first failure counts, as memberlist does when no helper can nack.
    pub fn probe_failed(&mut self) {
        self.raise();
    }

    /// Our probe was acked: the path out and back works.
    pub fn probe_succeeded(&mut self) {
        self.score = self.score.saturating_sub(1);
    }

    /// Someone suspected us and we had to refute: they did not hear us in
    /// time, most likely because we were slow.
    pub fn refuted_suspicion(&mut self) {
        self.raise();
    }

    /// Our timers ran late by more than a stall: we were stopped or starved.
    pub fn stalled(&mut self) {
        self.raise();
    }

    /// `timeout` stretched by our score.
    pub fn scale(&self, timeout: Duration) -> Duration {
        timeout * (u32::from(self.score) + 1)
    }

    fn raise(&mut self) {
        self.score = (self.score + 1).min(self.max_multiplier - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(500);

    #[test]
    fn failures_stretch_timeouts_up_to_the_cap() {
        let mut health = LocalHealth::new(8);
        assert_eq!(health.scale(PERIOD), PERIOD);
        health.probe_failed();
        assert_eq!(health.scale(PERIOD), 2 * PERIOD);
        health.refuted_suspicion();
        health.stalled();
        assert_eq!((health.score(), health.scale(PERIOD)), (3, 4 * PERIOD));
        for _ in 0..20 {
            health.probe_failed();
        }
        assert_eq!((health.score(), health.scale(PERIOD)), (7, 8 * PERIOD));
    }

    #[test]
    fn answered_probes_bring_it_back_one_step_each() {
        let mut health = LocalHealth::new(8);
        for _ in 0..3 {
            health.probe_failed();
        }
        health.probe_succeeded();
        assert_eq!(health.score(), 2);
        health.probe_succeeded();
        health.probe_succeeded();
        health.probe_succeeded();
        assert_eq!((health.score(), health.scale(PERIOD)), (0, PERIOD));
    }

    #[test]
    fn a_multiplier_of_one_or_zero_disables_it() {
        for max in [0, 1] {
            let mut health = LocalHealth::new(max);
            health.probe_failed();
            health.stalled();
            assert_eq!(health.scale(PERIOD), PERIOD, "max {max}");
        }
    }
}
