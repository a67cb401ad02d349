//! When the rounds of one announcement go out: a burst right after the IP is
//! gained, then (optionally) periodic rounds for as long as it is held.
//!
//! The instants are offsets from the gain, each slept to with
//! `sleep_until(start + offset)`, so a slow round never shifts the later ones.
//! Time comes from a [`Clock`]: tokio's in the daemon, a hand-driven one in
//! tests (tokio's own paused clock needs its `test-util` feature, which this
//! crate does not enable).

use std::time::Duration;

use futures::future::BoxFuture;

use super::AnnounceConfig;

/// A monotonic clock the schedules sleep on.
pub trait Clock: Send + Sync + 'static {
    /// Time since this clock's epoch.
    fn now(&self) -> Duration;
    /// Completes once [`now`](Self::now) has reached `deadline`.
    fn sleep_until(&self, deadline: Duration) -> BoxFuture<'static, ()>;
}

/// tokio's clock; sleeping needs a runtime with time enabled.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    epoch: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        TokioClock {
            epoch: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn sleep_until(&self, deadline: Duration) -> BoxFuture<'static, ()> {
        match self.epoch.checked_add(deadline) {
            Some(at) => Box::pin(tokio::time::sleep_until(at)),
            None => Box::pin(std::future::pending()),
        }
    }
}

/// The offsets (from the moment the IP was gained) of every round, in order:
///
/// - the burst: `k * interval` for every `k` with `k * interval < window`,
///   always including 0 (MetalLB: at once, then every 1.1 s for 5 s, i.e.
///   0, 1.1, 2.2, 3.3 and 4.4 s); a zero `interval` means the single round 0;
/// - then, when `periodic` is set (and not zero), `m * periodic` for every
///   `m >= 1` with `m * periodic >= window`: the periodic grid starts at the
///   gain, and its instants inside the burst are left out because the burst
///   already covers them. Endless.
pub fn round_offsets(config: &AnnounceConfig) -> impl Iterator<Item = Duration> {
    let AnnounceConfig {
        interval,
        window,
        periodic,
    } = *config;
    let burst = (0u32..).map_while(move |k| {
        let at = interval.checked_mul(k)?;
        (k == 0 || (!interval.is_zero() && at < window)).then_some(at)
    });
    let periodic = periodic
        .filter(|p| !p.is_zero())
        .into_iter()
        .flat_map(move |p| {
            let first = window.as_nanos().div_ceil(p.as_nanos()).max(1);
            let first = u32::try_from(first).unwrap_or(u32::MAX);
            (first..).map_while(move |m| p.checked_mul(m))
        });
    burst.chain(periodic)
}

/// Calls `round` at `start + offset` (on `clock`) for every offset, in order.
pub async fn run(
    clock: &dyn Clock,
    start: Duration,
    offsets: impl Iterator<Item = Duration>,
    mut round: impl FnMut(),
) {
    for offset in offsets {
        let Some(at) = start.checked_add(offset) else {
            return;
        };
        clock.sleep_until(at).await;
        round();
    }
}

/// A clock that moves only when a test says so, for exact instants without
/// tokio's `test-util`. Use it on a current-thread runtime (`#[tokio::test]`):
/// [`advance`](Self::advance) steps from deadline to deadline and lets the
/// woken tasks run at each one.
#[cfg(test)]
#[derive(Clone, Default)]
pub struct ManualClock {
    state: std::sync::Arc<std::sync::Mutex<ManualState>>,
}

#[cfg(test)]
#[derive(Default)]
struct ManualState {
    now: Duration,
    sleepers: Vec<(Duration, std::task::Waker)>,
}

#[cfg(test)]
impl ManualClock {
    fn state(&self) -> std::sync::MutexGuard<'_, ManualState> {
        self.state.lock().unwrap()
    }

    /// Lets every runnable task run until it waits again.
    pub async fn settle(&self) {
        for _ in 0..32 {
            tokio::task::yield_now().await;
        }
    }

    /// Moves time forward by `by`, stopping at every deadline on the way.
    pub async fn advance(&self, by: Duration) {
        let target = self.now() + by;
        loop {
            self.settle().await;
            let mut state = self.state();
            let next = state
                .sleepers
                .iter()
                .map(|(deadline, _)| *deadline)
                .filter(|deadline| *deadline <= target)
                .min();
            let Some(next) = next else {
                state.now = target;
                break;
            };
            state.now = state.now.max(next);
            let (due, waiting) = std::mem::take(&mut state.sleepers)
                .into_iter()
                .partition(|(deadline, _)| *deadline <= next);
            state.sleepers = waiting;
            drop(state);
            for (_, waker) in due {
                waker.wake();
            }
        }
        self.settle().await;
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Duration {
        self.state().now
    }

    fn sleep_until(&self, deadline: Duration) -> BoxFuture<'static, ()> {
        let clock = self.clone();
        Box::pin(std::future::poll_fn(move |cx| {
            let mut state = clock.state();
            if state.now >= deadline {
                return std::task::Poll::Ready(());
            }
            state.sleepers.push((deadline, cx.waker().clone()));
            std::task::Poll::Pending
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config(interval: u64, window: u64, periodic: Option<u64>) -> AnnounceConfig {
        AnnounceConfig {
            interval: ms(interval),
            window: ms(window),
            periodic: periodic.map(ms),
        }
    }

    fn first(config: &AnnounceConfig, n: usize) -> Vec<Duration> {
        round_offsets(config).take(n).collect()
    }

    #[test]
    fn metallb_burst_is_five_rounds_in_five_seconds() {
        let offsets: Vec<Duration> = round_offsets(&AnnounceConfig::default()).collect();
        assert_eq!(offsets, [0, 1100, 2200, 3300, 4400].map(ms));
    }

    #[test]
    fn a_round_on_the_window_edge_is_left_out() {
        assert_eq!(
            first(&config(1000, 3000, None), 10),
            [0, 1000, 2000].map(ms)
        );
        assert_eq!(
            first(&config(1000, 3001, None), 10),
            [0, 1000, 2000, 3000].map(ms)
        );
    }

    #[test]
    fn zero_interval_or_window_is_one_round() {
        assert_eq!(first(&config(0, 5000, None), 10), [ms(0)]);
        assert_eq!(first(&config(1100, 0, None), 10), [ms(0)]);
    }

    #[test]
    fn periodic_rounds_follow_the_burst_on_their_own_grid() {
        assert_eq!(
            first(&config(1100, 5000, Some(30_000)), 8),
            [0, 1100, 2200, 3300, 4400, 30_000, 60_000, 90_000].map(ms)
        );
        // 2 s and 4 s fall inside the burst; the grid resumes at 6 s.
        assert_eq!(
            first(&config(1100, 5000, Some(2000)), 8),
            [0, 1100, 2200, 3300, 4400, 6000, 8000, 10_000].map(ms)
        );
        // A periodic instant on the window edge is kept.
        assert_eq!(
            first(&config(1100, 5000, Some(2500)), 7),
            [0, 1100, 2200, 3300, 4400, 5000, 7500].map(ms)
        );
    }

    #[test]
    fn zero_periodic_is_no_periodic() {
        assert_eq!(first(&config(1100, 5000, Some(0)), 10).len(), 5);
    }

    #[test]
    fn periodic_without_a_burst_window() {
        assert_eq!(
            first(&config(1100, 0, Some(1000)), 4),
            [0, 1000, 2000, 3000].map(ms)
        );
    }

    #[test]
    fn offsets_are_increasing() {
        for c in [
            AnnounceConfig::default(),
            config(1100, 5000, Some(700)),
            config(300, 1000, Some(1000)),
            config(1, 50, Some(3)),
        ] {
            let offsets = first(&c, 200);
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "{c:?}: {offsets:?}"
            );
        }
    }

    #[tokio::test]
    async fn run_calls_round_at_each_offset() {
        let clock = ManualClock::default();
        let recorded = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (clock, recorded) = (clock.clone(), recorded.clone());
            async move {
                let start = clock.now();
                run(&clock, start, [0, 1100, 2200].map(ms).into_iter(), || {
                    recorded.lock().unwrap().push(clock.now() - start)
                })
                .await
            }
        });
        clock.advance(ms(1099)).await;
        assert_eq!(*recorded.lock().unwrap(), [ms(0)]);
        clock.advance(ms(5000)).await;
        assert_eq!(*recorded.lock().unwrap(), [0, 1100, 2200].map(ms));
        task.await.unwrap();
    }

    #[tokio::test]
    async fn tokio_clock_sleeps_until_the_deadline() {
        let clock = TokioClock::new();
        clock.sleep_until(ms(30)).await;
        assert!(clock.now() >= ms(30));
        // Deadlines in the past complete at once.
        clock.sleep_until(ms(0)).await;
    }
}
