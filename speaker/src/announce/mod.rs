//! Unsolicited announcements from userspace when this node gains an IP, so
//! that neighbours replace the previous owner's MAC at once instead of after
//! their cache times out (MetalLB `internal/layer2`: `Gratuitous` after every
//! (re)announcement).
//!
//! - [`frames`]: the frames of one round (gratuitous ARP request + reply for
//!   IPv4, an unsolicited Neighbor Advertisement for IPv6).
//! - [`schedule`]: when the rounds go out (a burst at 0, 1.1, …, 4.4 s, then
//!   the optional periodic re-announcement of MetalLB #1761/#2910).
//! - [`socket`]: the AF_PACKET sender, one socket per interface.
//! - [`listen`]: hearing another node's rounds (the successor's, at a
//!   graceful stop).
//!
//! [`Announcer`] ties them together: one tokio task per (IP, interface)
//! schedule. Losing the IP cancels it at once: the old owner sends nothing
//! more. Send failures (interface deleted mid-burst, ENETDOWN) are logged,
//! counted per IP and never stop any schedule.

pub mod frames;
pub mod listen;
pub mod schedule;
pub mod socket;

use std::{
    collections::{BTreeMap, HashMap},
    fmt, io,
    net::IpAddr,
    ops::Deref,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread,
    time::Duration,
};

use tokio::{runtime::Handle, sync::oneshot, task::JoinHandle};

pub use self::{
    frames::{Announcement, ArpOperation},
    schedule::{Clock, TokioClock},
    socket::{PacketSocket, PacketSockets},
};
use crate::interfaces::{format_mac, Interface};

/// When announcements go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// Between the rounds of the burst (MetalLB: 1.1 s).
    pub interval: Duration,
    /// How long the burst lasts (MetalLB: 5 s, so 5 rounds).
    pub window: Duration,
    /// Re-announce every `periodic` for as long as the IP is held
    /// (`--gratuitous-interval`; MetalLB #1761, #2910). `None`: burst only.
    pub periodic: Option<Duration>,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            interval: Duration::from_millis(1100),
            window: Duration::from_secs(5),
            periodic: None,
        }
    }
}

/// Where the frames of a round go. [`PacketSockets`] in the daemon; tests
/// record instead.
pub trait FrameSink: Send + Sync + 'static {
    /// Sends one complete Ethernet frame out of `interface`.
    fn send(&self, interface: &Interface, frame: &[u8]) -> io::Result<()>;
}

/// A running schedule is keyed by the IP and the index of the interface it
/// is announced on: the same IP can be announced on several interfaces.
type ScheduleKey = (IpAddr, u32);

/// Announces IPs this node gains. A cheap handle: clones share the
/// schedules and counters; the schedules stop when the last clone is dropped.
#[derive(Clone)]
pub struct Announcer {
    inner: Arc<Inner>,
}

struct Inner {
    config: AnnounceConfig,
    runtime: Handle,
    state: Arc<State>,
}

/// What the schedule tasks share with the handle.
struct State {
    sink: Arc<dyn FrameSink>,
    clock: Arc<dyn Clock>,
    schedules: Mutex<HashMap<ScheduleKey, Running>>,
    counters: Mutex<Counters>,
    next_generation: AtomicU64,
}

#[derive(Default)]
struct Counters {
    sent: BTreeMap<IpAddr, u64>,
    failures: BTreeMap<IpAddr, u64>,
}

struct Running {
    /// Tells a finished task apart from its replacement after a restart.
    generation: u64,
    /// Checked before every frame: `abort` alone would let a round that is
    /// being sent on another worker thread finish.
    cancelled: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Running {
    fn stop(self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

impl Announcer {
    /// An announcer sending with AF_PACKET sockets. Must be called inside a
    /// tokio runtime (it panics otherwise); the schedules run on it.
    pub fn new(config: AnnounceConfig) -> Self {
        Self::with_sink(config, Arc::new(PacketSockets::new()))
    }

    /// An announcer sending through `sink`. Must be called inside a tokio
    /// runtime (it panics otherwise).
    pub fn with_sink(config: AnnounceConfig, sink: Arc<dyn FrameSink>) -> Self {
        Self::with_clock(config, sink, Arc::new(TokioClock::new()))
    }

    /// An announcer sending through `sink` on the time of `clock`. Must be
    /// called inside a tokio runtime (it panics otherwise).
    pub fn with_clock(
        config: AnnounceConfig,
        sink: Arc<dyn FrameSink>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::on_runtime(config, sink, clock, Handle::current())
    }

    fn on_runtime(
        config: AnnounceConfig,
        sink: Arc<dyn FrameSink>,
        clock: Arc<dyn Clock>,
        runtime: Handle,
    ) -> Self {
        Announcer {
            inner: Arc::new(Inner {
                config,
                runtime,
                state: Arc::new(State {
                    sink,
                    clock,
                    schedules: Mutex::new(HashMap::new()),
                    counters: Mutex::new(Counters::default()),
                    next_generation: AtomicU64::new(0),
                }),
            }),
        }
    }

    pub fn config(&self) -> AnnounceConfig {
        self.inner.config
    }

    /// Starts announcing `ip` on `interface`: a round at once, the rest of
    /// the burst, then the periodic rounds. A schedule already running for
    /// (ip, interface index) is replaced, so the burst starts over.
    pub fn gained(&self, ip: IpAddr, interface: &Interface) {
        let state = &self.inner.state;
        let start = state.clock.now();
        let key = (ip, interface.index);
        let generation = state.next_generation.fetch_add(1, Ordering::Relaxed);
        let cancelled = Arc::new(AtomicBool::new(false));
        let task = announce(
            state.clone(),
            ip,
            interface.clone(),
            start,
            self.inner.config,
            generation,
            cancelled.clone(),
        );
        let mut schedules = state.schedules();
        let restarted = schedules.remove(&key).map(Running::stop).is_some();
        // Spawned under the lock: the task cannot look for its entry before
        // it is inserted.
        let task = self.inner.runtime.spawn(task);
        schedules.insert(
            key,
            Running {
                generation,
                cancelled,
                task,
            },
        );
        drop(schedules);
        tracing::info!(
            event = "gratuitousStarted",
            ip = %ip,
            interface = interface.name,
            "announcing {ip} on {} (index {}, {}){}",
            interface.name,
            interface.index,
            format_mac(&interface.mac),
            if restarted { ", burst restarted" } else { "" }
        );
    }

    /// Stops announcing `ip` on interface `ifindex` at once.
    pub fn lost(&self, ip: IpAddr, ifindex: u32) {
        let running = self.inner.state.schedules().remove(&(ip, ifindex));
        if let Some(running) = running {
            running.stop();
            tracing::debug!("stopped announcing {ip} on interface index {ifindex}");
        }
    }

    /// Stops every schedule on interface `ifindex` (the interface is gone or
    /// no longer announced on).
    pub fn lost_interface(&self, ifindex: u32) {
        let mut schedules = self.inner.state.schedules();
        let keys: Vec<ScheduleKey> = schedules
            .keys()
            .filter(|(_, index)| *index == ifindex)
            .copied()
            .collect();
        for key in keys {
            if let Some(running) = schedules.remove(&key) {
                running.stop();
                tracing::debug!("stopped announcing {} on interface index {ifindex}", key.0);
            }
        }
    }

    /// Frames sent per IP since this announcer started (MetalLB's
    /// `gratuitous_sent`).
    pub fn sent(&self) -> BTreeMap<IpAddr, u64> {
        self.inner.state.counters().sent.clone()
    }

    /// Frames that could not be sent, per IP.
    pub fn failures(&self) -> BTreeMap<IpAddr, u64> {
        self.inner.state.counters().failures.clone()
    }

    /// The schedules still running (burst or periodic), sorted.
    pub fn active(&self) -> Vec<(IpAddr, u32)> {
        let mut keys: Vec<ScheduleKey> = self
            .inner
            .state
            .schedules()
            .iter()
            // A task ends itself only by removing its entry; one that ended
            // otherwise had its runtime shut down.
            .filter(|(_, running)| !running.task.is_finished())
            .map(|(key, _)| *key)
            .collect();
        keys.sort_unstable();
        keys
    }
}

impl fmt::Debug for Announcer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Announcer")
            .field("config", &self.inner.config)
            .field("active", &self.active())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for (_, running) in self.state.schedules().drain() {
            running.stop();
        }
    }
}

impl State {
    fn schedules(&self) -> MutexGuard<'_, HashMap<ScheduleKey, Running>> {
        // A panicking holder cannot leave the map half-updated.
        self.schedules.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn counters(&self) -> MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send_round(&self, ip: IpAddr, interface: &Interface, cancelled: &AtomicBool) {
        for announcement in Announcement::round(ip, interface.mac) {
            if cancelled.load(Ordering::SeqCst) {
                return;
            }
            let result = self.sink.send(interface, &announcement.to_frame());
            let mut counters = self.counters();
            match result {
                Ok(()) => *counters.sent.entry(ip).or_default() += 1,
                Err(e) => {
                    *counters.failures.entry(ip).or_default() += 1;
                    drop(counters);
                    tracing::warn!(
                        ip = %ip,
                        interface = interface.name,
                        error = %e,
                        "announcing {ip}: {} not sent on {} (index {}): {e}",
                        announcement.kind(),
                        interface.name,
                        interface.index
                    );
                }
            }
        }
    }

    /// Removes the schedule of a task that ran out of rounds, unless it was
    /// already replaced or stopped.
    fn finished(&self, key: ScheduleKey, generation: u64) {
        let mut schedules = self.schedules();
        if schedules
            .get(&key)
            .is_some_and(|r| r.generation == generation)
        {
            schedules.remove(&key);
        }
    }
}

async fn announce(
    state: Arc<State>,
    ip: IpAddr,
    interface: Interface,
    start: Duration,
    config: AnnounceConfig,
    generation: u64,
    cancelled: Arc<AtomicBool>,
) {
    let offsets = schedule::round_offsets(&config);
    schedule::run(&*state.clock, start, offsets, || {
        if !cancelled.load(Ordering::SeqCst) {
            state.send_round(ip, &interface, &cancelled);
        }
    })
    .await;
    state.finished((ip, interface.index), generation);
}

/// An [`Announcer`] on a thread of its own, running a current-thread tokio
/// runtime, for callers without a runtime (one-shot commands, tests). The
/// thread is created by the caller and so lives in the caller's network
/// namespace; every socket it opens does too. Dropping this stops the
/// thread and every schedule.
pub struct AnnouncerThread {
    announcer: Announcer,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl AnnouncerThread {
    /// Sending with AF_PACKET sockets.
    pub fn spawn(config: AnnounceConfig) -> io::Result<Self> {
        Self::spawn_with_sink(config, Arc::new(PacketSockets::new()))
    }

    pub fn spawn_with_sink(config: AnnounceConfig, sink: Arc<dyn FrameSink>) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let clock = Arc::new(TokioClock::new());
        let announcer = Announcer::on_runtime(config, sink, clock, runtime.handle().clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("announcer".to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    // Either a stop or the sender dropped: both mean stop.
                    let _ = stopped.await;
                });
            })?;
        Ok(AnnouncerThread {
            announcer,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn announcer(&self) -> &Announcer {
        &self.announcer
    }
}

impl Deref for AnnouncerThread {
    type Target = Announcer;

    fn deref(&self) -> &Announcer {
        &self.announcer
    }
}

impl Drop for AnnouncerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
