//! Lifeguard rules on the simulated LAN (time is simulated, so every test is
//! under "paused time"): local health, suspicion with confirmations, and the
//! stall-resume re-check, with the `lan` and `fast` profiles.

use std::time::Duration;

use super::*;

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn key() -> Key {
    Key::from_bytes([0x42; 32])
}

fn converged(timers: Timers, count: usize) -> SimulatedLan {
    let mut lan = SimulatedLan::new(timers);
    for _ in 0..count {
        lan.add_speaker(Some(&key()));
    }
    for index in 1..count {
        lan.join(index, &[0]);
    }
    lan.run_until(5 * SECOND, SimulatedLan::converged)
        .expect("speakers converge");
    // Past the join news, as in steady state.
    lan.run_for(3 * SECOND);
    lan
}

fn has(lan: &SimulatedLan, viewer: usize, node: usize) -> bool {
    lan.members(viewer).contains(&SimulatedLan::node_name(node))
}

fn nobody_else_has(lan: &SimulatedLan, others: &[usize], node: usize) -> bool {
    others.iter().all(|&i| !has(lan, i, node))
}

/// Runs `span` and fails if any running speaker's member set loses anyone.
fn assert_nobody_dropped(lan: &mut SimulatedLan, span: Duration, what: &str) {
    let dropped = lan.run_until(span, |lan| !lan.converged());
    assert_eq!(dropped, None, "{what}: member sets diverged");
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Crash of the last of three speakers at `trials` points of the probe
/// cycle: time until both others dropped it, sorted.
fn crash_detection(timers: &Timers, trials: u32) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..trials)
        .map(|trial| {
            let mut lan = converged(timers.clone(), 3);
            lan.run_for(Duration::from_millis(u64::from(trial) * 53));
            lan.crash(2);
            lan.run_until(4 * timers.max_detection(), |lan| {
                nobody_else_has(lan, &[0, 1], 2)
            })
            .expect("crashed speaker removed")
        })
        .collect();
    times.sort();
    times
}

#[test]
fn crash_failover_meets_the_profile_targets() {
    // The lab adds the successor's announcement and the client's probe
    // interval (≤ 50 ms) on top of these.
    for (name, timers, median_target, p95_target) in [
        ("lan", Timers::lan(), 1800 * MS, 2700 * MS),
        ("fast", Timers::fast_lan(), 900 * MS, 1400 * MS),
    ] {
        let times = crash_detection(&timers, 80);
        let (median, p95) = (percentile(&times, 50), percentile(&times, 95));
        let worst = *times.last().unwrap();
        let bound = timers.max_detection_for(3);
        eprintln!(
            "{name}: crash → dropped, 3 speakers, 80 trials: median {median:?}, p95 {p95:?}, \
             worst {worst:?}, bound {bound:?}"
        );
        assert!(median <= median_target, "{name}: median {median:?}");
        assert!(p95 <= p95_target, "{name}: p95 {p95:?}");
        assert!(worst <= bound, "{name}: {worst:?} > {bound:?}");
    }
}

#[test]
fn lan_keeps_a_speaker_stopped_for_a_second() {
    let timers = Timers::lan();
    // At many phases of the probe cycle: the worst case is a stop just
    // after a probe of the stopped speaker went out.
    for trial in 0..30 {
        let mut lan = converged(timers.clone(), 3);
        lan.run_for(Duration::from_millis(trial * 37));
        lan.pause(2);
        assert_nobody_dropped(&mut lan, SECOND, "while stopped");
        lan.resume(2);
        assert_nobody_dropped(&mut lan, 10 * SECOND, "after resuming");
        let resumed = lan.speaker(2).stats();
        assert_eq!(resumed.rejoins, 0, "trial {trial}");
        assert_eq!(resumed.stalls, 1, "the stop went unnoticed");
    }
}

#[test]
fn a_speaker_stopped_for_two_seconds_never_drops_the_others() {
    // Two seconds is past what `lan` can tolerate with a 2 s median crash
    // failover (probe period + shortest suspicion = 1.5 s): the others
    // declare the stopped speaker down and it rejoins. What must not happen
    // is the reverse — the resumed speaker acting on its own timeouts and
    // dropping the others, which would make a non-owner take over an IP.
    let timers = Timers::lan();
    for trial in 0..20 {
        let mut lan = converged(timers.clone(), 3);
        lan.run_for(Duration::from_millis(trial * 37));
        lan.pause(2);
        lan.run_for(2 * SECOND);
        lan.resume(2);
        let dropped_by_2 = lan.run_until(10 * SECOND, |lan| !has(lan, 2, 0) || !has(lan, 2, 1));
        assert_eq!(
            dropped_by_2, None,
            "trial {trial}: the stopped speaker dropped a peer"
        );
        assert!(lan.converged(), "trial {trial}");
        for index in [0, 1] {
            assert_eq!(lan.speaker(index).stats().rejoins, 0, "trial {trial}");
        }
    }
}

#[test]
fn fast_drops_a_speaker_stopped_for_a_second() {
    // The trade `fast` makes, checked so the docs stay true.
    let mut lan = converged(Timers::fast_lan(), 3);
    lan.pause(2);
    let dropped = lan.run_until(2 * SECOND, |lan| nobody_else_has(lan, &[0, 1], 2));
    assert!(dropped.is_some());
}

#[test]
fn ten_percent_loss_for_thirty_seconds_declares_nobody_down() {
    for seed_run in 0..3 {
        let mut lan = converged(Timers::lan(), 3);
        lan.run_for(Duration::from_millis(seed_run * 77));
        lan.set_loss(0.10);
        assert_nobody_dropped(&mut lan, 30 * SECOND, "under 10 % loss");
        lan.set_loss(0.0);
        lan.run_for(2 * SECOND);
        let suspicions: u64 = (0..3).map(|i| lan.speaker(i).stats().suspicions).sum();
        for index in 0..3 {
            assert_eq!(lan.speaker(index).stats().rejoins, 0);
        }
        // The loss did cause failed probes; they were refuted in time.
        eprintln!("10 % loss, run {seed_run}: {suspicions} suspicions, none became a Down");
        assert!(
            suspicions > 0,
            "the loss never failed a probe: test too weak"
        );
    }
}

#[test]
fn unconfirmed_suspicion_lasts_max_and_confirmed_one_min() {
    let timers = Timers::lan();
    let mut lan = converged(timers.clone(), 3);
    // Node 0 is the sick one: it hears nobody, so it suspects both others,
    // but nobody can confirm. Nodes 1 and 2 both suspect node 0 and confirm
    // each other.
    lan.cut_off(0);
    let started = lan
        .run_until(5 * SECOND, |lan| {
            lan.speaker(0).suspicion_deadline("node-1").is_some()
        })
        .map(|_| lan.now())
        .expect("node 0 suspects node 1");
    let deadline = lan.speaker(0).suspicion_deadline("node-1").unwrap();
    assert_eq!(deadline - started, timers.suspect_to_down_max);

    let others_dropped_0 = lan
        .run_until(5 * SECOND, |lan| nobody_else_has(lan, &[1, 2], 0))
        .map(|_| lan.now())
        .expect("the others drop the silent node with confirmations");
    assert!(
        others_dropped_0 < started + timers.suspect_to_down_max,
        "confirmed suspicion must be faster than max"
    );
    for index in [1, 2] {
        assert!(lan.speaker(index).stats().confirmations >= 1);
    }
    // Node 0 still has node 1: nobody confirmed its suspicion.
    assert!(lan.now() < deadline && has(&lan, 0, 1));
    lan.run_until(deadline - lan.now() - MS, |lan| !has(lan, 0, 1));
    assert!(has(&lan, 0, 1), "dropped before max without confirmations");
    lan.run_for(timers.probe_period);
    assert!(!has(&lan, 0, 1), "still a member after max");
}

#[test]
fn refutation_cancels_the_suspicion() {
    let timers = Timers::lan();
    let mut lan = converged(timers.clone(), 3);
    lan.cut_off(2);
    lan.run_until(5 * SECOND, |lan| {
        [0, 1]
            .iter()
            .any(|&i| lan.speaker(i).suspicion_deadline("node-2").is_some())
    })
    .expect("node 2 suspected");
    lan.reconnect(2);
    lan.run_until(timers.suspect_to_down, |lan| {
        [0, 1]
            .iter()
            .all(|&i| lan.speaker(i).suspicion_deadline("node-2").is_none())
    })
    .expect("the refutation ends every suspicion of node 2");
    assert_nobody_dropped(&mut lan, 10 * SECOND, "after the refutation");
    assert_eq!(lan.speaker(2).stats().rejoins, 0);
}

#[test]
fn a_resumed_speaker_restarts_its_suspicions_instead_of_acting_on_them() {
    let timers = Timers::lan();
    let mut lan = converged(timers.clone(), 3);
    lan.cut_off(2);
    lan.run_until(5 * SECOND, |lan| {
        lan.speaker(0).suspicion_deadline("node-2").is_some()
    })
    .expect("node 0 suspects node 2");
    // Node 0 is stopped past its suspicion's end; node 2 comes back.
    lan.pause(0);
    lan.reconnect(2);
    lan.run_for(timers.suspect_to_down_max + SECOND);
    let resumed_at = lan.now();
    lan.resume(0);
    lan.run_for(MS);
    if let Some(deadline) = lan.speaker(0).suspicion_deadline("node-2") {
        assert!(
            deadline >= resumed_at + timers.suspect_to_down,
            "suspicion not restarted: {deadline:?}"
        );
    }
    assert!(
        has(&lan, 0, 2),
        "declared down on a timeout that ran out while stopped"
    );
    assert_eq!(lan.speaker(0).stats().stalls, 1);
    assert_nobody_dropped(&mut lan, 10 * SECOND, "after resuming");
}

#[test]
fn a_late_timer_is_a_stall_and_moves_the_queue() {
    let timers = Timers::lan();
    let identity = SpeakerId {
        node: "alone".into(),
        gossip_addr: SimulatedLan::addr(0),
        generation: 1,
    };
    let mut core = Core::new(identity, &timers, None, 1, Duration::ZERO).unwrap();
    let due = core.next_deadline().expect("the announce timer");
    // Late by less than the threshold: an ordinary busy runtime.
    core.handle_timers(due + timers.stall_threshold());
    assert_eq!(core.stats().stalls, 0);
    let due = core.next_deadline().unwrap();
    let late = due + 10 * SECOND;
    core.handle_timers(late);
    assert_eq!(core.stats().stalls, 1);
    assert_eq!(core.stats().local_health, 1);
    // The overdue timer ran at once; the one after it keeps its spacing.
    assert_eq!(core.next_deadline(), Some(late + timers.periodic_announce));
}

#[test]
fn failed_probes_raise_local_health_and_answered_ones_lower_it() {
    let timers = Timers::lan();
    let mut lan = converged(timers.clone(), 3);
    assert_eq!(lan.speaker(0).stats().local_health, 0);
    lan.cut_off(0);
    lan.run_until(10 * SECOND, |lan| lan.speaker(0).stats().local_health >= 2)
        .expect("node 0's failed probes raise its score");
    lan.reconnect(0);
    lan.run_until(30 * SECOND, |lan| lan.speaker(0).stats().local_health == 0)
        .expect("answered probes bring the score back");
}
