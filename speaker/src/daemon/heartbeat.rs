//! The dead-man heartbeat on a thread of its own.
//!
//! The XDP program stops answering when the heartbeat is older than the
//! limit. Refreshed from the daemon's event loop, it aged while that loop
//! re-elected (0.57 s for 10,000 services at idle, far longer on a node with
//! a small CPU request), so a busy speaker could trip its own switch. Here a
//! dedicated OS thread (not a tokio task: a runtime whose workers are all busy
//! would starve a task too) writes it every period, as long as the daemon's
//! [`Health`] says the daemon is alive: idle, or busy for less than the stall
//! limit. A daemon stuck inside one piece of work past the limit, or gone
//! (its [`Health`] dropped), stops the refreshes, and the switch trips.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::{error, warn};

use crate::dataplane::HeartbeatWriter;

/// How often the thread refreshes: well under the 100 ms the heartbeat
/// may age during re-election, and a syscall every 50 ms costs nothing.
pub const REFRESH_PERIOD: Duration = Duration::from_millis(50);

/// How long one piece of daemon work (a batch of changes, a map sync) may run
/// before the daemon is taken for wedged. Generous: a full re-election on a
/// throttled node is slow but not dead.
pub const STALL_LIMIT: Duration = Duration::from_secs(60);

/// The daemon's side: cheap to update from the event loop (one atomic store
/// per piece of work).
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<HealthState>,
}

#[derive(Debug)]
struct HealthState {
    epoch: Instant,
    /// Nanoseconds since `epoch` when the current work began; 0: idle.
    busy_since: AtomicU64,
    /// Set when the daemon is gone.
    closed: AtomicBool,
}

/// Marks the daemon busy while alive.
#[must_use = "the daemon counts as busy only while the guard lives"]
pub struct Busy<'a>(&'a HealthState);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy_since.store(0, Ordering::Release);
    }
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Health {
            inner: Arc::new(HealthState {
                epoch: Instant::now(),
                busy_since: AtomicU64::new(0),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The daemon is working until the guard drops. Guards do not nest:
    /// dropping any marks the daemon idle.
    pub fn busy(&self) -> Busy<'_> {
        let since = self.inner.epoch.elapsed().as_nanos().max(1) as u64;
        self.inner.busy_since.store(since, Ordering::Release);
        Busy(&self.inner)
    }

    /// The daemon is gone: no more heartbeats.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    /// Alive: not closed, and idle or busy for at most `stall_limit`.
    pub fn alive(&self, stall_limit: Duration) -> bool {
        if self.inner.closed.load(Ordering::Acquire) {
            return false;
        }
        match self.inner.busy_since.load(Ordering::Acquire) {
            0 => true,
            since => {
                let now = self.inner.epoch.elapsed().as_nanos() as u64;
                Duration::from_nanos(now.saturating_sub(since)) <= stall_limit
            }
        }
    }
}

/// What the thread writes to; the kernel map in the daemon, a recorder in
/// tests.
pub trait HeartbeatSink: Send + 'static {
    fn beat(&mut self) -> crate::error::Result<()>;
}

impl HeartbeatSink for HeartbeatWriter {
    fn beat(&mut self) -> crate::error::Result<()> {
        HeartbeatWriter::beat(self)
    }
}

/// The running thread; stops (and is joined) when dropped.
pub struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    pub fn spawn(
        mut sink: impl HeartbeatSink,
        health: Health,
        period: Duration,
        stall_limit: Duration,
    ) -> std::io::Result<Heartbeat> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                let mut withheld = false;
                // Logged once per run of failures, not every period.
                let mut failing = false;
                loop {
                    if health.alive(stall_limit) {
                        if withheld {
                            warn!("daemon responsive again: heartbeat resumed");
                            withheld = false;
                        }
                        match sink.beat() {
                            Ok(()) if failing => {
                                warn!("refreshing the heartbeat works again");
                                failing = false;
                            }
                            Ok(()) => {}
                            Err(e) if !failing => {
                                error!(error = %e, "refreshing the heartbeat: {e}");
                                failing = true;
                            }
                            Err(_) => {}
                        }
                    } else if !withheld {
                        error!(
                            "daemon busy for over {stall_limit:?} or gone: heartbeat withheld, \
                             the dead-man switch will stop the answers"
                        );
                        withheld = true;
                    }
                    match stopped.recv_timeout(period) {
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        _ => return,
                    }
                }
            })?;
        Ok(Heartbeat {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Instant>>>);

    impl HeartbeatSink for Recorder {
        fn beat(&mut self) -> crate::error::Result<()> {
            self.0.lock().unwrap().push(Instant::now());
            Ok(())
        }
    }

    impl Recorder {
        fn count(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    const PERIOD: Duration = Duration::from_millis(5);

    #[test]
    fn beats_while_the_daemon_is_busy_within_the_limit() {
        let health = Health::new();
        let recorder = Recorder::default();
        let _thread = Heartbeat::spawn(
            recorder.clone(),
            health.clone(),
            PERIOD,
            Duration::from_secs(5),
        )
        .unwrap();
        let busy = health.busy();
        // The busy daemon does no beating itself; the thread goes on.
        std::thread::sleep(Duration::from_millis(100));
        drop(busy);
        let beats = recorder.0.lock().unwrap().clone();
        assert!(beats.len() >= 5, "only {} beats in 100 ms", beats.len());
        let longest = beats.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(longest < Duration::from_millis(100), "a {longest:?} gap");
    }

    #[test]
    fn withholds_beats_when_the_daemon_is_stuck_or_gone() {
        let health = Health::new();
        let recorder = Recorder::default();
        let thread = Heartbeat::spawn(
            recorder.clone(),
            health.clone(),
            PERIOD,
            Duration::from_millis(30),
        )
        .unwrap();
        let busy = health.busy();
        std::thread::sleep(Duration::from_millis(80));
        let during = recorder.count();
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(
            recorder.count(),
            during,
            "beats went on past the stall limit"
        );
        assert!(!health.alive(Duration::from_millis(30)));
        drop(busy);
        std::thread::sleep(Duration::from_millis(40));
        let resumed = recorder.count();
        assert!(resumed > during, "no beat once the daemon was idle again");
        health.close();
        std::thread::sleep(Duration::from_millis(30));
        let closed = recorder.count();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(recorder.count(), closed, "beats after the daemon closed");
        drop(thread);
    }

    #[test]
    fn dropping_the_handle_stops_the_thread() {
        let recorder = Recorder::default();
        let thread =
            Heartbeat::spawn(recorder.clone(), Health::new(), PERIOD, STALL_LIMIT).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(thread);
        let after = recorder.count();
        assert!(after >= 1);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(recorder.count(), after);
    }
}
