//! Schedules on a hand-driven clock ([`schedule::ManualClock`]): every frame
//! is recorded with the exact instant it was handed to the sink, so rounds
//! are counted at the instants MetalLB uses, without sockets.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
};

use super::{schedule::ManualClock, *};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100));
const V4_OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 101));
const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100));

fn interface(index: u32) -> Interface {
    Interface {
        name: format!("eth{index}"),
        index,
        mac: [0x02, 0x5e, 0, 0, 0, index as u8],
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One frame as the sink saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Recorded {
    /// Since the recorder was made (the test's start).
    at: Duration,
    ifindex: u32,
    announcement: Announcement,
}

/// Records frames (parsed back, so every one is well-formed) and fails
/// every send on the interfaces in `failing`.
struct Recorder {
    clock: Arc<dyn Clock>,
    frames: Mutex<Vec<Recorded>>,
    failing: Mutex<BTreeSet<u32>>,
}

impl Recorder {
    fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Recorder {
            clock,
            frames: Mutex::new(Vec::new()),
            failing: Mutex::new(BTreeSet::new()),
        })
    }

    fn fail_on(&self, ifindex: u32) {
        self.failing.lock().unwrap().insert(ifindex);
    }

    fn frames(&self) -> Vec<Recorded> {
        self.frames.lock().unwrap().clone()
    }

    /// The instants of the frames for `ip` on `ifindex`.
    fn instants(&self, ip: IpAddr, ifindex: u32) -> Vec<Duration> {
        self.frames()
            .into_iter()
            .filter(|f| f.announcement.ip() == ip && f.ifindex == ifindex)
            .map(|f| f.at)
            .collect()
    }
}

impl FrameSink for Recorder {
    fn send(&self, interface: &Interface, frame: &[u8]) -> io::Result<()> {
        if self.failing.lock().unwrap().contains(&interface.index) {
            return Err(io::Error::from_raw_os_error(libc::ENXIO));
        }
        let announcement = Announcement::parse(frame).expect("a well-formed announcement");
        self.frames.lock().unwrap().push(Recorded {
            at: self.clock.now(),
            ifindex: interface.index,
            announcement,
        });
        Ok(())
    }
}

fn announcer(config: AnnounceConfig) -> (Announcer, Arc<Recorder>, ManualClock) {
    let clock = ManualClock::default();
    let recorder = Recorder::new(Arc::new(clock.clone()));
    let announcer = Announcer::with_clock(config, recorder.clone(), Arc::new(clock.clone()));
    (announcer, recorder, clock)
}

/// `instants` with every element repeated `n` times (n frames per round).
fn each(instants: &[u64], n: usize) -> Vec<Duration> {
    instants
        .iter()
        .flat_map(|&t| std::iter::repeat_n(ms(t), n))
        .collect()
}

const BURST: [u64; 5] = [0, 1100, 2200, 3300, 4400];

#[tokio::test]
async fn burst_is_five_rounds_at_metallb_instants() {
    let (announcer, recorder, clock) = announcer(AnnounceConfig::default());
    let eth = interface(2);
    announcer.gained(V4, &eth);
    announcer.gained(V6, &eth);
    assert_eq!(announcer.active(), [(V4, 2), (V6, 2)]);

    clock.advance(ms(4399)).await;
    assert_eq!(recorder.instants(V4, 2), each(&BURST[..4], 2));
    clock.advance(ms(20_000)).await;

    assert_eq!(recorder.instants(V4, 2), each(&BURST, 2));
    assert_eq!(recorder.instants(V6, 2), each(&BURST, 1));
    // Each IPv4 round is a request then a reply, from the interface's MAC.
    let v4: Vec<Announcement> = recorder
        .frames()
        .into_iter()
        .map(|f| f.announcement)
        .filter(|a| a.ip() == V4)
        .collect();
    for round in v4.chunks(2) {
        assert_eq!(round, Announcement::round(V4, eth.mac));
    }
    assert_eq!(announcer.sent(), BTreeMap::from([(V4, 10), (V6, 5)]));
    assert!(announcer.failures().is_empty());
    assert!(announcer.active().is_empty(), "the burst is over");
}

#[tokio::test]
async fn lost_cancels_at_once() {
    let (announcer, recorder, clock) = announcer(AnnounceConfig::default());
    announcer.gained(V4, &interface(2));
    announcer.gained(V6, &interface(2));
    clock.advance(ms(1500)).await;
    announcer.lost(V4, 2);
    assert_eq!(announcer.active(), [(V6, 2)]);
    clock.advance(ms(20_000)).await;

    assert_eq!(recorder.instants(V4, 2), each(&[0, 1100], 2));
    assert_eq!(recorder.instants(V6, 2), each(&BURST, 1), "others go on");
    assert_eq!(announcer.sent()[&V4], 4);
}

#[tokio::test]
async fn lost_just_before_a_round_sends_nothing_more() {
    let (announcer, recorder, clock) = announcer(AnnounceConfig::default());
    announcer.gained(V6, &interface(2));
    clock.advance(ms(2199)).await;
    announcer.lost(V6, 2);
    clock.advance(ms(10_000)).await;
    assert_eq!(recorder.instants(V6, 2), each(&[0, 1100], 1));
}

#[tokio::test]
async fn regaining_restarts_the_burst() {
    let (announcer, recorder, clock) = announcer(AnnounceConfig::default());
    announcer.gained(V4, &interface(2));
    clock.advance(ms(2000)).await;
    announcer.gained(V4, &interface(2));
    assert_eq!(announcer.active(), [(V4, 2)]);
    clock.advance(ms(20_000)).await;

    let restarted = BURST.map(|t| t + 2000);
    let mut expected = vec![0, 1100];
    expected.extend(restarted);
    assert_eq!(recorder.instants(V4, 2), each(&expected, 2));
    assert!(announcer.active().is_empty());
}

#[tokio::test]
async fn lost_then_regained_starts_a_new_burst() {
    let (announcer, recorder, clock) = announcer(AnnounceConfig::default());
    announcer.gained(V6, &interface(2));
    clock.advance(ms(1000)).await;
    announcer.lost(V6, 2);
    clock.advance(ms(1000)).await;
    announcer.gained(V6, &interface(2));
    clock.advance(ms(20_000)).await;
    let mut expected = vec![0];
    expected.extend(BURST.map(|t| t + 2000));
    assert_eq!(recorder.instants(V6, 2), each(&expected, 1));
}

#[tokio::test]
async fn periodic_rounds_continue_until_lost() {
    let config = AnnounceConfig {
        periodic: Some(ms(2000)),
        ..AnnounceConfig::default()
    };
    let (announcer, recorder, clock) = announcer(config);
    announcer.gained(V6, &interface(3));
    clock.advance(ms(10_500)).await;
    assert_eq!(announcer.active(), [(V6, 3)], "held: still announcing");
    announcer.lost(V6, 3);
    clock.advance(ms(60_000)).await;

    assert_eq!(
        recorder.instants(V6, 3),
        each(&[0, 1100, 2200, 3300, 4400, 6000, 8000, 10_000], 1)
    );
    assert!(announcer.active().is_empty());
}

#[tokio::test]
async fn failures_are_counted_and_stop_nothing() {
    let (announcer, recorder, clock) = announcer(AnnounceConfig::default());
    recorder.fail_on(7);
    announcer.gained(V4_OTHER, &interface(7));
    announcer.gained(V4, &interface(2));
    announcer.gained(V6, &interface(7));
    clock.advance(ms(20_000)).await;

    assert_eq!(
        announcer.failures(),
        BTreeMap::from([(V4_OTHER, 10), (V6, 5)])
    );
    assert_eq!(announcer.sent(), BTreeMap::from([(V4, 10)]));
    assert_eq!(recorder.instants(V4, 2), each(&BURST, 2));
    assert!(announcer.active().is_empty(), "failing bursts still end");
}

#[tokio::test]
async fn one_ip_on_two_interfaces_is_two_schedules() {
    let (announcer, recorder, clock) = announcer(AnnounceConfig::default());
    announcer.gained(V4, &interface(2));
    announcer.gained(V4, &interface(3));
    assert_eq!(announcer.active(), [(V4, 2), (V4, 3)]);
    clock.advance(ms(1000)).await;
    announcer.lost(V4, 2);
    clock.advance(ms(20_000)).await;

    assert_eq!(recorder.instants(V4, 2), each(&[0], 2));
    assert_eq!(recorder.instants(V4, 3), each(&BURST, 2));
    let macs: BTreeSet<[u8; 6]> = recorder
        .frames()
        .into_iter()
        .filter(|f| f.ifindex == 3)
        .map(|f| match f.announcement {
            Announcement::GratuitousArp { mac, .. } | Announcement::NeighborAdvert { mac, .. } => {
                mac
            }
        })
        .collect();
    assert_eq!(macs, BTreeSet::from([interface(3).mac]));
    assert_eq!(announcer.sent()[&V4], 12);
}

#[tokio::test]
async fn lost_interface_stops_only_its_schedules() {
    let (announcer, recorder, clock) = announcer(AnnounceConfig::default());
    announcer.gained(V4, &interface(2));
    announcer.gained(V6, &interface(2));
    announcer.gained(V6, &interface(3));
    clock.advance(ms(500)).await;
    announcer.lost_interface(2);
    assert_eq!(announcer.active(), [(V6, 3)]);
    clock.advance(ms(20_000)).await;
    assert_eq!(recorder.instants(V4, 2).len(), 2);
    assert_eq!(recorder.instants(V6, 2).len(), 1);
    assert_eq!(recorder.instants(V6, 3), each(&BURST, 1));
}

#[tokio::test]
async fn losing_what_was_never_gained_is_harmless() {
    let (announcer, recorder, clock) = announcer(AnnounceConfig::default());
    announcer.lost(V4, 2);
    announcer.lost_interface(9);
    clock.advance(ms(10_000)).await;
    assert!(recorder.frames().is_empty());
    assert!(announcer.active().is_empty());
}

#[tokio::test]
async fn dropping_the_last_handle_stops_everything() {
    let (announcer, recorder, clock) = announcer(AnnounceConfig {
        periodic: Some(ms(1000)),
        ..AnnounceConfig::default()
    });
    let clone = announcer.clone();
    announcer.gained(V4, &interface(2));
    clock.advance(ms(500)).await;
    drop(announcer);
    clock.advance(ms(1000)).await;
    assert_eq!(recorder.instants(V4, 2).len(), 4, "a clone keeps it going");
    drop(clone);
    clock.advance(ms(10_000)).await;
    assert_eq!(recorder.instants(V4, 2).len(), 4);
}

#[test]
fn announcer_thread_runs_without_a_caller_runtime() {
    let clock = TokioClock::new();
    let recorder = Recorder::new(Arc::new(clock));
    let config = AnnounceConfig {
        interval: ms(20),
        window: ms(50),
        periodic: None,
    };
    let announcer = AnnouncerThread::spawn_with_sink(config, recorder.clone()).unwrap();
    announcer.gained(V4, &interface(2));
    announcer.gained(V6, &interface(2));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !announcer.active().is_empty() && std::time::Instant::now() < deadline {
        thread::sleep(ms(10));
    }
    assert_eq!(announcer.sent(), BTreeMap::from([(V4, 6), (V6, 3)]));
    drop(announcer);
}
