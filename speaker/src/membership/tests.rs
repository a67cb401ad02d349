//! Scenarios: the sans-IO core on a simulated LAN, then the tokio driver over
//! real UDP on 127.0.0.1.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use foca::State;

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn key() -> Key {
    Key::from_bytes([0x42; 32])
}

fn names(indices: &[usize]) -> BTreeSet<String> {
    indices
        .iter()
        .map(|&i| SimulatedLan::node_name(i))
        .collect()
}

/// `count` speakers sharing `key()`; every one after the first joins the
/// first. Runs until they agree.
fn converged_lan(count: usize) -> SimulatedLan {
    let mut lan = SimulatedLan::new(Timers::fast_lan());
    for _ in 0..count {
        lan.add_speaker(Some(&key()));
    }
    for index in 1..count {
        lan.join(index, &[0]);
    }
    lan.run_until(5 * SECOND, SimulatedLan::converged)
        .expect("speakers converge");
    lan
}

fn assert_stays_converged(lan: &mut SimulatedLan, span: Duration) {
    let diverged = lan.run_until(span, |lan| !lan.converged());
    assert_eq!(diverged, None, "member sets diverged");
}

fn nobody_else_has(lan: &SimulatedLan, others: &[usize], node: usize) -> bool {
    let name = SimulatedLan::node_name(node);
    others.iter().all(|&i| !lan.members(i).contains(&name))
}

fn everybody_has(lan: &SimulatedLan, others: &[usize], node: usize) -> bool {
    let name = SimulatedLan::node_name(node);
    others.iter().all(|&i| lan.members(i).contains(&name))
}

#[test]
fn three_speakers_converge_on_the_same_set() {
    let mut lan = SimulatedLan::new(Timers::fast_lan());
    for _ in 0..3 {
        lan.add_speaker(Some(&key()));
    }
    assert_eq!(
        lan.members(0),
        &names(&[0]),
        "alone, a speaker is its own member"
    );
    lan.join(1, &[0]);
    lan.join(2, &[0]);
    let took = lan
        .run_until(5 * SECOND, SimulatedLan::converged)
        .expect("converge");
    // node-2 learns node-1 from node-0's reply to its announce.
    assert!(took < Timers::fast_lan().probe_period, "took {took:?}");
    for index in 0..3 {
        assert_eq!(lan.members(index), &names(&[0, 1, 2]));
        assert_eq!(lan.speaker(index).stats().members, 3);
        assert_eq!(lan.speaker(index).stats().auth_failures, 0);
    }
    // A healthy LAN produces no false suspicion.
    assert_stays_converged(&mut lan, 30 * SECOND);
}

#[test]
fn silent_speaker_is_suspect_but_stays_a_member_until_declared_down() {
    let timers = Timers::fast_lan();
    let mut lan = converged_lan(3);
    lan.cut_off(2);
    let suspect = |lan: &SimulatedLan| {
        [0, 1]
            .iter()
            .any(|&i| lan.speaker(i).state_of("node-2") == Some(State::Suspect))
    };
    lan.run_until(10 * SECOND, suspect)
        .expect("node-2 becomes suspect");
    assert!(everybody_has(&lan, &[0, 1], 2), "suspect is still a member");

    // Nobody drops it while the suspicion runs.
    let dropped_early = lan.run_until(timers.suspect_to_down - Duration::from_millis(1), |lan| {
        !everybody_has(lan, &[0, 1], 2)
    });
    assert_eq!(dropped_early, None);

    lan.run_until(timers.max_detection(), |lan| {
        nobody_else_has(lan, &[0, 1], 2)
    })
    .expect("declared down after the suspicion");
    for index in [0, 1] {
        assert_eq!(lan.speaker(index).state_of("node-2"), Some(State::Down));
        assert_eq!(lan.members(index), &names(&[0, 1]));
    }
    // The silent speaker, for its part, is left with itself.
    lan.run_until(timers.max_detection(), |lan| lan.members(2) == &names(&[2]))
        .expect("the cut-off speaker sees the others go");
}

/// Crashes the last of `count` speakers at `trials` different points of the
/// probe cycle; returns how long the others took to drop it, each time.
fn crash_detection_times(count: usize, trials: u32) -> Vec<Duration> {
    let timers = Timers::fast_lan();
    let victim = count - 1;
    let others: Vec<usize> = (0..victim).collect();
    (0..trials)
        .map(|trial| {
            let mut lan = converged_lan(count);
            lan.run_for(Duration::from_millis(2000 + u64::from(trial) * 37));
            lan.crash(victim);
            lan.run_until(4 * timers.max_detection(), |lan| {
                nobody_else_has(lan, &others, victim)
            })
            .expect("crashed speaker removed")
        })
        .collect()
}

#[test]
fn crashed_speaker_is_removed_within_max_detection() {
    let timers = Timers::fast_lan();
    for (count, trials) in [(3, 60), (12, 20)] {
        let times = crash_detection_times(count, trials);
        let worst = times.iter().max().copied().unwrap_or_default();
        let mean = times.iter().sum::<Duration>() / trials;
        let bound = timers.max_detection_for(count);
        eprintln!("crash → dropped everywhere, {count} speakers: mean {mean:?}, worst {worst:?}, bound {bound:?}");
        assert!(worst <= bound, "{count} speakers: {worst:?} > {bound:?}");
        assert!(bound <= timers.max_detection());
    }
}

#[test]
fn leaving_speaker_is_removed_at_once() {
    let timers = Timers::fast_lan();
    let mut lan = converged_lan(3);
    lan.run_for(SECOND);
    lan.leave(2);
    let took = lan
        .run_until(timers.max_detection(), |lan| {
            nobody_else_has(lan, &[0, 1], 2)
        })
        .expect("left speaker removed");
    // One datagram's flight, not a suspicion.
    assert!(took < Duration::from_millis(5), "took {took:?}");
    assert_eq!(lan.speaker(0).state_of("node-2"), Some(State::Down));
    assert_eq!(lan.members(1), &names(&[0, 1]));
}

#[test]
fn leave_reaches_a_larger_cluster_quickly() {
    let timers = Timers::fast_lan();
    let mut lan = converged_lan(12);
    lan.run_for(SECOND);
    lan.leave(11);
    let others: Vec<usize> = (0..11).collect();
    let took = lan
        .run_until(timers.max_detection(), |lan| {
            nobody_else_has(lan, &others, 11)
        })
        .expect("left speaker removed everywhere");
    // The direct recipients at once, the rest within a few gossip rounds.
    assert!(took < 3 * timers.periodic_gossip, "took {took:?}");
}

#[test]
fn restarted_speaker_rejoins_under_a_new_generation() {
    let timers = Timers::fast_lan();
    let mut lan = converged_lan(3);
    lan.crash(2);
    lan.run_until(2 * timers.max_detection(), |lan| {
        nobody_else_has(lan, &[0, 1], 2)
    })
    .expect("crash detected");

    lan.start(2, 2, Some(&key()));
    lan.join(2, &[0]);
    let took = lan
        .run_until(5 * SECOND, SimulatedLan::converged)
        .expect("rejoined");
    assert!(took < Duration::from_millis(10), "took {took:?}");
    assert_eq!(lan.speaker(0).state_of("node-2"), Some(State::Alive));
    // The old generation's Down does not shadow the new one.
    assert_stays_converged(&mut lan, 10 * SECOND);
}

#[test]
fn restart_faster_than_detection_never_drops_the_member() {
    let timers = Timers::fast_lan();
    let mut lan = converged_lan(3);
    lan.crash(2);
    lan.run_for(timers.probe_period);
    lan.start(2, 2, Some(&key()));
    lan.join(2, &[0]);
    let dropped = lan.run_until(5 * timers.max_detection(), |lan| {
        !everybody_has(lan, &[0, 1], 2)
    });
    assert_eq!(
        dropped, None,
        "node-2 was dropped although it came back at once"
    );
    assert!(lan.converged());
}

#[test]
fn restart_with_a_refused_identity_renews_itself() {
    // A crash loop inside one wall-clock second restarts with the same
    // generation; the others remember that identity as Down (it left), tell
    // it so, and it rejoins as the next generation.
    let mut lan = converged_lan(3);
    lan.leave(2);
    lan.run_until(SECOND, |lan| nobody_else_has(lan, &[0, 1], 2))
        .expect("left");
    lan.start(2, 1, Some(&key()));
    lan.join(2, &[0, 1]);
    lan.run_until(5 * SECOND, SimulatedLan::converged)
        .expect("rejoined");
    assert_eq!(lan.speaker(2).identity().generation, 2);
    assert_eq!(lan.speaker(2).stats().rejoins, 1);
}

#[test]
fn partitioned_speaker_rejoins_when_the_partition_heals() {
    let timers = Timers::fast_lan();
    let mut lan = converged_lan(3);
    lan.cut_off(2);
    lan.run_until(2 * timers.max_detection(), |lan| {
        nobody_else_has(lan, &[0, 1], 2) && lan.members(2) == &names(&[2])
    })
    .expect("both sides give up on each other");
    lan.reconnect(2);
    // node-2 announces to its seed, is told it is down, renews and rejoins.
    let took = lan
        .run_until(3 * timers.periodic_announce, SimulatedLan::converged)
        .expect("healed");
    assert!(
        took <= timers.periodic_announce + timers.probe_period,
        "took {took:?}"
    );
    assert!(lan.speaker(2).identity().generation > 1);
}

#[test]
fn join_announces_only_to_peers_that_are_not_members() {
    let mut lan = converged_lan(3);
    let now = lan.now();
    let live = [SimulatedLan::addr(0), SimulatedLan::addr(2)];
    let core = lan.speaker_mut(1);
    core.join(now, live, PeerSource::Discovered);
    assert_eq!(
        core.take_outgoing().count(),
        0,
        "members are not announced to"
    );
    let stranger = SimulatedLan::addr(7);
    core.join(
        now,
        [stranger, SimulatedLan::addr(1)],
        PeerSource::Discovered,
    );
    let sent: Vec<Datagram> = core.take_outgoing().collect();
    assert_eq!(sent.len(), 1, "one announce, none to ourselves");
    assert_eq!(sent[0].to, stranger);
}

#[test]
fn discovered_peers_expire_and_seeds_do_not() {
    let timers = Timers::fast_lan();
    let own = SimulatedLan::addr(0);
    let identity = SpeakerId {
        node: "alone".into(),
        gossip_addr: own,
        generation: 1,
    };
    let mut core = Core::new(identity, &timers, None, 1, Duration::ZERO).unwrap();
    let (seed, discovered) = (SimulatedLan::addr(1), SimulatedLan::addr(2));
    core.join(Duration::ZERO, [seed], PeerSource::Seed);
    core.join(Duration::ZERO, [discovered], PeerSource::Discovered);
    let announced_to = |core: &mut Core| -> BTreeSet<SocketAddr> {
        core.take_outgoing().map(|datagram| datagram.to).collect()
    };
    assert_eq!(announced_to(&mut core), BTreeSet::from([seed, discovered]));

    core.handle_timers(timers.periodic_announce);
    assert_eq!(announced_to(&mut core), BTreeSet::from([seed, discovered]));

    let mut now = timers.periodic_announce;
    while now <= PEER_EXPIRY + timers.periodic_announce {
        now = core.next_deadline().expect("announce timer");
        core.handle_timers(now);
        core.take_outgoing().for_each(drop);
    }
    core.handle_timers(now + timers.periodic_announce);
    assert_eq!(announced_to(&mut core), BTreeSet::from([seed]));
    assert_eq!(core.members(), &BTreeSet::from(["alone".to_string()]));
}

#[test]
fn speaker_with_another_key_never_becomes_a_member() {
    for intruder_key in [Some(Key::from_bytes([0x43; 32])), None] {
        let mut lan = converged_lan(3);
        let intruder = lan.add_speaker(intruder_key.as_ref());
        lan.join(intruder, &[0, 1, 2]);
        let intruder_addr = SimulatedLan::addr(intruder);
        let mut from_intruder = [0u64; 3];
        lan.run_watching(
            3 * Timers::fast_lan().periodic_announce,
            |from, datagram| {
                if from == intruder_addr {
                    let to = (0..3)
                        .find(|&i| SimulatedLan::addr(i) == datagram.to)
                        .unwrap();
                    from_intruder[to] += 1;
                }
            },
        );
        for index in 0..3 {
            assert_eq!(
                lan.members(index),
                &names(&[0, 1, 2]),
                "key {intruder_key:?}"
            );
            // Announces at start and on every periodic announce.
            assert!(from_intruder[index] >= 3, "{from_intruder:?}");
            assert_eq!(
                lan.speaker(index).stats().auth_failures,
                from_intruder[index]
            );
        }
        assert_eq!(lan.members(intruder), &names(&[intruder]));
    }
}

#[test]
fn stray_datagrams_from_unknown_senders_are_counted_and_ignored() {
    let mut lan = SimulatedLan::new(Timers::fast_lan());
    let lone = lan.add_speaker(Some(&key()));
    let stranger: SocketAddr = "192.0.2.9:40000".parse().unwrap();
    for length in [0, 1, 40, 400, 1400] {
        lan.inject(stranger, SimulatedLan::addr(lone), vec![0x5a; length]);
    }
    lan.run_for(Duration::from_millis(1));
    let stats = lan.speaker(lone).stats();
    assert_eq!((stats.auth_failures, stats.stray_datagrams), (5, 5));
    let now = lan.now();
    assert!(!lan.speaker(lone).key_mismatch(now));
}

#[test]
fn known_speaker_with_another_key_is_a_mismatch_until_it_stops() {
    let mut lan = SimulatedLan::new(Timers::fast_lan());
    let lone = lan.add_speaker(Some(&key()));
    let other = lan.add_speaker(Some(&Key::from_bytes([0x43; 32])));
    // Each was told about the other (node addresses), as the daemon does.
    lan.join(lone, &[other]);
    lan.join(other, &[lone]);
    let failing = lan.run_until(3 * Timers::fast_lan().periodic_announce, |lan| {
        lan.speaker(lone).key_mismatch(lan.now())
    });
    assert!(failing.is_some(), "{:?}", lan.speaker(lone).stats());
    assert_eq!(lan.speaker(lone).stats().stray_datagrams, 0);
    assert_eq!(lan.members(lone), &names(&[lone]));

    // The other speaker goes away (or is fixed): the verdict clears alone.
    lan.crash(other);
    lan.run_for(KEY_MISMATCH_WINDOW + SECOND);
    let now = lan.now();
    assert!(!lan.speaker(lone).key_mismatch(now));
}

#[test]
fn replacing_the_key_ends_the_mismatch_and_lets_speakers_meet() {
    let mut lan = SimulatedLan::new(Timers::fast_lan());
    let old_key = Key::from_bytes([0x43; 32]);
    let first = lan.add_speaker(Some(&key()));
    let second = lan.add_speaker(Some(&old_key));
    lan.join(first, &[second]);
    lan.join(second, &[first]);
    lan.run_until(3 * Timers::fast_lan().periodic_announce, |lan| {
        lan.speaker(second).key_mismatch(lan.now())
    })
    .expect("the second speaker notices the mismatch");
    lan.speaker_mut(second).set_key(Some(&key()));
    let now = lan.now();
    assert!(!lan.speaker(second).key_mismatch(now));
    lan.run_until(5 * SECOND, SimulatedLan::converged)
        .expect("same key: they meet");
    assert_eq!(lan.members(second), &names(&[first, second]));
}

#[test]
fn tampered_datagram_is_rejected_and_counted() {
    let mut lan = converged_lan(3);
    let mut captured = None;
    let (from0, to1) = (SimulatedLan::addr(0), SimulatedLan::addr(1));
    lan.run_watching(SECOND, |from, datagram| {
        if from == from0 && datagram.to == to1 && captured.is_none() {
            captured = Some(datagram.bytes.to_vec());
        }
    });
    let original = captured.expect("node-0 talked to node-1");
    let before = lan.speaker(1).stats();
    for position in [0, 5, original.len() / 2, original.len() - 1] {
        let mut tampered = original.clone();
        tampered[position] ^= 0x80;
        lan.inject(from0, to1, tampered);
    }
    lan.run_for(Duration::from_millis(1));
    let after = lan.speaker(1).stats();
    assert_eq!(after.auth_failures - before.auth_failures, 4);
    assert_eq!(after.rejected, before.rejected);
    assert!(lan.converged());
}

#[test]
fn gossip_bandwidth_for_3_and_100_speakers() {
    let timers = Timers::fast_lan();
    let three = simulate_bandwidth(3, 20, &timers);
    let hundred = simulate_bandwidth(100, 10, &timers);
    eprintln!("gossip bandwidth, sealed, per speaker: 3 speakers {three:.0} B/s, 100 speakers {hundred:.0} B/s");
    // One ping and one ack out per probe period, plus acks to others' pings:
    // a few hundred bytes per probe period, whatever the cluster size.
    assert!(three > 100.0 && three < 3_000.0, "{three}");
    assert!(hundred > 100.0 && hundred < 5_000.0, "{hundred}");
}

mod udp {
    use super::*;

    use tokio::sync::watch;
    use tokio::time::{timeout, Instant};

    fn config(node: &str, seeds: Vec<SocketAddr>) -> GossipConfig {
        GossipConfig {
            node: node.into(),
            bind: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            keyring: Some(Keyring::single(key())),
            keyring_files: None,
            timers: Timers::fast_lan(),
            seeds,
        }
    }

    async fn wait_for(
        members: &mut watch::Receiver<BTreeSet<String>>,
        want: impl Fn(&BTreeSet<String>) -> bool,
    ) {
        timeout(Duration::from_secs(5), members.wait_for(want))
            .await
            .expect("in time")
            .expect("gossip task alive");
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[tokio::test]
    async fn three_speakers_converge_and_see_a_leave_at_once() {
        let (a, mut a_members) = Gossip::start(config("a", vec![])).await.unwrap();
        assert_eq!(*a_members.borrow(), set(&["a"]));
        let (b, mut b_members) = Gossip::start(config("b", vec![a.advertised_addr()]))
            .await
            .unwrap();
        let seeds = vec![a.advertised_addr(), b.advertised_addr()];
        let (c, mut c_members) = Gossip::start(config("c", seeds)).await.unwrap();

        let all = set(&["a", "b", "c"]);
        for members in [&mut a_members, &mut b_members, &mut c_members] {
            wait_for(members, |m| *m == all).await;
        }

        let started = Instant::now();
        c.leave().await;
        let without_c = set(&["a", "b"]);
        for members in [&mut a_members, &mut b_members] {
            wait_for(members, |m| *m == without_c).await;
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(250),
            "leave seen after {took:?}"
        );

        // The leaver's task is gone; leaving again is harmless.
        c.leave().await;
        assert!(c_members.changed().await.is_err());

        let stats = a.stats();
        assert!(
            stats.packets_sent > 0 && stats.packets_received > 0,
            "{stats:?}"
        );
        assert_eq!(stats.auth_failures, 0);
        assert_eq!(stats.members, 2);
        assert!(
            stats.bytes_sent > stats.packets_sent * 29,
            "sealed sizes: {stats:?}"
        );
        a.leave().await;
        b.leave().await;
    }

    #[tokio::test]
    async fn join_after_start_brings_speakers_together() {
        let (a, mut a_members) = Gossip::start(config("a", vec![])).await.unwrap();
        let (b, mut b_members) = Gossip::start(config("b", vec![])).await.unwrap();
        assert_eq!(*b_members.borrow(), set(&["b"]));
        b.join(vec![a.advertised_addr()]);
        wait_for(&mut a_members, |m| *m == set(&["a", "b"])).await;
        wait_for(&mut b_members, |m| *m == set(&["a", "b"])).await;
        a.leave().await;
        b.leave().await;
    }

    #[tokio::test]
    async fn unspecified_bind_needs_an_advertise_address() {
        let mut config = config("a", vec![]);
        config.bind = "0.0.0.0:0".parse().unwrap();
        let Err(error) = Gossip::start(config.clone()).await else {
            panic!("started without an advertise address");
        };
        assert!(
            matches!(error, GossipError::AdvertiseRequired(_)),
            "{error}"
        );

        config.advertise = Some("127.0.0.1:0".parse().unwrap());
        let (gossip, _members) = Gossip::start(config).await.unwrap();
        assert_ne!(gossip.advertised_addr().port(), 0);
        gossip.leave().await;
    }

    #[tokio::test]
    async fn invalid_timers_are_refused_before_binding() {
        let mut config = config("a", vec![]);
        config.timers.probe_rtt = config.timers.probe_period;
        let Err(error) = Gossip::start(config).await else {
            panic!("started with rtt = period");
        };
        assert!(matches!(error, GossipError::Timers(_)), "{error}");
    }
}
