//! Rejects sealed datagrams that were already accepted once.
//!
//! Every sealed datagram carries, inside the authenticated payload, who sent
//! it (the sender's advertised gossip address), the sender's epoch (the
//! microsecond its process started sealing, strictly increasing within a
//! process) and a counter that starts at 1 per epoch. Per sender we keep the
//! newest epoch and, for it, the anti-replay window of RFC 4303 §3.4.3: the
//! highest counter seen and a 64-bit map of which of the 64 counters below it
//! arrived, so reordering within 64 datagrams is accepted and every repeat is
//! not. The window is only updated after the datagram authenticated (§3.4.3:
//! "the receive window is updated only if the integrity verification
//! succeeds"), so forged datagrams cannot move it.
//!
//! Restarts: a restarted speaker starts a newer epoch, which replaces the old
//! window at once. Datagrams of an older epoch are replays of a previous
//! process, unless the sender has said nothing acceptable for
//! [`STALE_EPOCH_GRACE`]: then its clock may have stepped back across a
//! restart, and the older epoch is taken as a new start (the only replays
//! that window lets through are a silent speaker's previous process, whose
//! identity foca already knows to be older).
//!
//! Memory is bounded: at most [`MAX_SENDERS`] senders are tracked, and the
//! one heard from least recently makes room for a new one. Only datagrams
//! that authenticated create entries, so only key holders can fill the table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Senders tracked at once; a cluster has one per speaker, so this is far
/// above any real cluster while keeping the table at a few hundred KiB.
pub const MAX_SENDERS: usize = 4096;

/// Counters accepted below the highest one seen (RFC 4303's window size).
pub const WINDOW: u64 = 64;

/// How long a sender must have been silent before an older epoch from it is
/// taken as a restart with a clock that went back.
pub const STALE_EPOCH_GRACE: Duration = Duration::from_secs(20);

/// Why an authentic datagram was refused as a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    #[error("counter already seen")]
    Duplicate,
    #[error("counter older than the {WINDOW}-datagram window")]
    TooOld,
    #[error("epoch older than the sender's current one (a previous process)")]
    StaleEpoch,
}

/// Where one sender's datagrams have got to.
#[derive(Debug, Clone, Copy)]
struct SenderWindow {
    epoch: u64,
    /// Highest counter accepted in `epoch`.
    top: u64,
    /// Bit `i` set: counter `top - i` was accepted.
    seen: u64,
    /// When the last datagram from this sender was accepted.
    heard: Duration,
}

impl SenderWindow {
    fn starting(epoch: u64, counter: u64, now: Duration) -> Self {
        Self {
            epoch,
            top: counter,
            seen: 1,
            heard: now,
        }
    }

    fn accept(&mut self, counter: u64, now: Duration) -> Result<(), Replay> {
        if counter > self.top {
            let ahead = counter - self.top;
            self.seen = if ahead >= WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.top = counter;
        } else {
            let behind = self.top - counter;
            if behind >= WINDOW {
                return Err(Replay::TooOld);
            }
            let bit = 1u64 << behind;
            if self.seen & bit != 0 {
                return Err(Replay::Duplicate);
            }
            self.seen |= bit;
        }
        self.heard = now;
        Ok(())
    }
}

/// The anti-replay state of one receiver.
#[derive(Debug)]
pub struct ReplayGuard {
    senders: HashMap<SocketAddr, SenderWindow>,
    capacity: usize,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::with_capacity(MAX_SENDERS)
    }
}

impl ReplayGuard {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            senders: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records an authentic datagram, or says why it is a replay.
    pub fn accept(
        &mut self,
        sender: SocketAddr,
        epoch: u64,
        counter: u64,
        now: Duration,
    ) -> Result<(), Replay> {
        if let Some(window) = self.senders.get_mut(&sender) {
            if epoch == window.epoch {
                return window.accept(counter, now);
            }
            let silent = now.saturating_sub(window.heard) >= STALE_EPOCH_GRACE;
            if epoch < window.epoch && !silent {
                return Err(Replay::StaleEpoch);
            }
            *window = SenderWindow::starting(epoch, counter, now);
            return Ok(());
        }
        if self.senders.len() >= self.capacity {
            self.forget_least_recent();
        }
        self.senders
            .insert(sender, SenderWindow::starting(epoch, counter, now));
        Ok(())
    }

    /// Senders currently tracked.
    #[cfg(test)]
    pub fn senders(&self) -> usize {
        self.senders.len()
    }

    fn forget_least_recent(&mut self) {
        let oldest = self
            .senders
            .iter()
            .min_by_key(|(_, window)| window.heard)
            .map(|(sender, _)| *sender);
        if let Some(sender) = oldest {
            self.senders.remove(&sender);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "192.0.2.11:7946";
    const B: &str = "192.0.2.12:7946";

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn in_order_counters_are_accepted_once() {
        let mut guard = ReplayGuard::default();
        for counter in 1..=200 {
            assert_eq!(guard.accept(addr(A), 7, counter, secs(1)), Ok(()));
        }
        assert_eq!(
            guard.accept(addr(A), 7, 200, secs(1)),
            Err(Replay::Duplicate)
        );
        assert_eq!(
            guard.accept(addr(A), 7, 199, secs(1)),
            Err(Replay::Duplicate)
        );
    }

    #[test]
    fn reordering_within_the_window_is_accepted_and_repeats_are_not() {
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.accept(addr(A), 7, 100, secs(1)), Ok(()));
        // 63 behind the top is the last slot of the window.
        for late in [99, 50, 37] {
            assert_eq!(guard.accept(addr(A), 7, late, secs(1)), Ok(()), "{late}");
        }
        assert_eq!(
            guard.accept(addr(A), 7, 50, secs(1)),
            Err(Replay::Duplicate)
        );
        assert_eq!(guard.accept(addr(A), 7, 36, secs(1)), Err(Replay::TooOld));
        // The window slides: 37 falls out once 101 arrives, 38 is still in.
        assert_eq!(guard.accept(addr(A), 7, 101, secs(1)), Ok(()));
        assert_eq!(guard.accept(addr(A), 7, 37, secs(1)), Err(Replay::TooOld));
        assert_eq!(guard.accept(addr(A), 7, 38, secs(1)), Ok(()));
        // A jump past the window clears it.
        assert_eq!(guard.accept(addr(A), 7, 1000, secs(1)), Ok(()));
        assert_eq!(guard.accept(addr(A), 7, 999, secs(1)), Ok(()));
        assert_eq!(guard.accept(addr(A), 7, 101, secs(1)), Err(Replay::TooOld));
    }

    #[test]
    fn senders_have_separate_windows() {
        let mut guard = ReplayGuard::default();
        assert_eq!(guard.accept(addr(A), 7, 1, secs(1)), Ok(()));
        assert_eq!(guard.accept(addr(B), 7, 1, secs(1)), Ok(()));
        assert_eq!(guard.accept(addr(B), 7, 1, secs(1)), Err(Replay::Duplicate));
        assert_eq!(guard.senders(), 2);
    }

    #[test]
    fn a_restart_starts_a_new_epoch_and_the_old_one_is_refused() {
        let mut guard = ReplayGuard::default();
        for counter in 1..=10 {
            guard.accept(addr(A), 7, counter, secs(1)).unwrap();
        }
        // The restarted process counts from 1 again, in a newer epoch.
        assert_eq!(guard.accept(addr(A), 8, 1, secs(2)), Ok(()));
        assert_eq!(guard.accept(addr(A), 8, 2, secs(2)), Ok(()));
        // Anything of the previous process is a replay now, even a counter
        // that process never reached.
        assert_eq!(
            guard.accept(addr(A), 7, 5, secs(3)),
            Err(Replay::StaleEpoch)
        );
        assert_eq!(
            guard.accept(addr(A), 7, 11, secs(3)),
            Err(Replay::StaleEpoch)
        );
        assert_eq!(guard.accept(addr(A), 8, 3, secs(3)), Ok(()));
    }

    #[test]
    fn an_older_epoch_after_a_long_silence_is_a_restart_with_a_clock_stepped_back() {
        let mut guard = ReplayGuard::default();
        guard.accept(addr(A), 700, 1, secs(1)).unwrap();
        let later = secs(1) + STALE_EPOCH_GRACE;
        assert_eq!(
            guard.accept(addr(A), 500, 1, later - Duration::from_millis(1)),
            Err(Replay::StaleEpoch)
        );
        assert_eq!(guard.accept(addr(A), 500, 1, later), Ok(()));
        assert_eq!(guard.accept(addr(A), 500, 1, later), Err(Replay::Duplicate));
    }

    #[test]
    fn the_sender_heard_least_recently_makes_room() {
        let mut guard = ReplayGuard::with_capacity(3);
        let senders: Vec<SocketAddr> = (1..=4)
            .map(|i| addr(&format!("192.0.2.{i}:7946")))
            .collect();
        guard.accept(senders[0], 1, 1, secs(1)).unwrap();
        guard.accept(senders[1], 1, 1, secs(2)).unwrap();
        guard.accept(senders[2], 1, 1, secs(3)).unwrap();
        // Sender 0 is heard again, so sender 1 is now the least recent.
        guard.accept(senders[0], 1, 2, secs(4)).unwrap();
        guard.accept(senders[3], 1, 1, secs(5)).unwrap();
        assert_eq!(guard.senders(), 3);
        // Forgotten: its window starts over (bounded memory's price).
        assert_eq!(guard.accept(senders[1], 1, 1, secs(6)), Ok(()));
        // Kept: still refused.
        assert_eq!(
            guard.accept(senders[3], 1, 1, secs(6)),
            Err(Replay::Duplicate)
        );
        assert_eq!(guard.senders(), 3);
    }
}
